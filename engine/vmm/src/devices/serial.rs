//! COM1: vm-superio's 16550 UART, with output copied to a log file and to
//! every attached console client, and input from those clients.
//!
//! The log file (`--serial-log`, vireod's `serial.log` on the runtime
//! dir's tmpfs) is appended to for as long as the VM runs, and readers
//! (vireod) follow it by byte offset, so its offsets never change. It is a
//! [`LogFile`]: once more than [`SERIAL_FILE_CAP`] bytes are allocated,
//! its old part is punched out, keeping the newest [`SERIAL_FILE_KEEP`]
//! bytes or more (see [`crate::logfile`], which also says how a reader
//! keeps a punch out of the range it reads).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::bus::BusDevice;
use crate::devices::IrqLine;

/// Raises COM1's interrupt line as an edge.
pub struct IrqTrigger(pub IrqLine);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.pulse();
        Ok(())
    }
}

pub use crate::logfile::{LogFile, SERIAL_FILE_CAP, SERIAL_FILE_KEEP, Trim};

/// Where serial output goes. It outlives any one boot of the VM, so a reset
/// keeps the log and the attached clients.
#[derive(Debug, Clone, Default)]
pub struct SerialSink {
    inner: Arc<Mutex<SinkInner>>,
}

#[derive(Debug, Default)]
struct SinkInner {
    log: Option<LogFile>,
    clients: Vec<UnixStream>,
}

impl SerialSink {
    /// A sink that appends to `log` (if any), trimmed to the default
    /// [`Trim`].
    pub fn new(log: Option<File>) -> Self {
        Self::with_trim(log, Trim::default())
    }

    /// A sink that appends to `log` (if any), trimmed to `trim`.
    pub fn with_trim(log: Option<File>, trim: Trim) -> Self {
        let log = log.and_then(|f| match LogFile::new(f, trim, "serial log") {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("serial log not written: {e}");
                None
            }
        });
        Self {
            inner: Arc::new(Mutex::new(SinkInner {
                log,
                clients: Vec::new(),
            })),
        }
    }

    /// Attaches a console client: it receives everything written from now on.
    /// Writes to it never block the guest: a client that cannot keep up loses
    /// output and one that has gone is dropped. (The socket itself stays
    /// blocking, so the same connection can be read for console input.)
    pub fn attach(&self, client: UnixStream) -> io::Result<()> {
        self.lock().clients.push(client);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.lock();
        if let Some(log) = inner.log.as_mut() {
            // A full disk must not stop the guest's UART: drop the log.
            if log.append(buf).is_err() {
                inner.log = None;
            }
        }
        inner.clients.retain(|c| match send_nonblocking(c, buf) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends without blocking and without SIGPIPE, leaving the socket's own
/// blocking mode alone.
fn send_nonblocking(client: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes and the fd is owned by
    // `client`, which outlives the call.
    let n = unsafe {
        libc::send(
            client.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The UART as a bus device (8 ports at 0x3f8).
pub type Com1 = Serial<IrqTrigger, NoEvents, SerialSink>;

/// Creates COM1 raising `irq` and writing to `sink`.
pub fn com1(irq: IrqLine, sink: SerialSink) -> Com1 {
    Serial::new(IrqTrigger(irq), sink)
}

/// Wraps the UART for the bus.
pub struct SerialDevice(pub Com1);

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match u8::try_from(offset) {
            Ok(off) if off < 8 => self.0.read(off),
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset))
            && off < 8
        {
            // Errors are the trigger's (never fails) or the sink's (ignored).
            let _ = self.0.write(off, value);
        }
    }
}

/// Feeds console input to the guest, waiting while the UART's FIFO is full.
/// Returns when all bytes are queued or `stop()` says to give up.
pub fn feed_input(serial: &Mutex<SerialDevice>, mut bytes: &[u8], stop: impl Fn() -> bool) {
    while !bytes.is_empty() && !stop() {
        let n = {
            let mut dev = serial.lock().unwrap_or_else(|e| e.into_inner());
            let room = dev.0.fifo_capacity();
            let take = bytes.len().min(room);
            if take == 0 {
                0
            } else {
                dev.0.enqueue_raw_bytes(&bytes[..take]).unwrap_or(0)
            }
        };
        bytes = &bytes[n..];
        if n == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::devices::testing::RecordingIrq;
    use crate::logfile::page_size;

    #[test]
    fn output_reaches_log_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("serial.log");
        let sink = SerialSink::new(Some(File::create(&log_path).unwrap()));
        let (a, mut b) = UnixStream::pair().unwrap();
        sink.attach(a).unwrap();
        let mut dev = SerialDevice(com1(Arc::new(RecordingIrq::default()), sink));
        for &c in b"hi\n" {
            dev.write(0, &[c]);
        }
        assert_eq!(std::fs::read(&log_path).unwrap(), b"hi\n");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\n");
    }

    /// The byte at offset `i` of the test stream.
    fn pattern(i: u64) -> u8 {
        b"0123456789abcdefghijklmnopqrstuvwxyz\n"[(i % 37) as usize]
    }

    /// Where the first hole at or after `from` starts (the size if none).
    fn seek_hole(file: &File, from: u64) -> u64 {
        // SAFETY: lseek on a descriptor `file` owns; plain integers.
        let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
        assert!(at >= 0, "SEEK_HOLE: {}", io::Error::last_os_error());
        at as u64
    }

    /// Appends 1 MiB through a sink in uneven writes (the UART's are one
    /// byte; a few single bytes are mixed in) and checks after each that
    /// the size is what was written, the allocation stays under the cap,
    /// the newest `keep` bytes are intact and the old part is a hole.
    fn punches_within_the_cap(dir: &std::path::Path) {
        let page = page_size();
        let trim = Trim::new(16 * page, 4 * page).unwrap();
        let path = dir.join("serial.log");
        let sink = SerialSink::with_trim(Some(open_append(&path)), trim);
        let mut dev = SerialDevice(com1(Arc::new(RecordingIrq::default()), sink.clone()));
        let reader = File::open(&path).unwrap();
        let total = 1u64 << 20;
        let mut written = 0u64;
        let mut step = 0u64;
        let mut punched = false;
        while written < total {
            step += 1;
            let n = if step.is_multiple_of(7) {
                1
            } else {
                (step * 977) % 5000 + 1
            };
            let chunk: Vec<u8> = (written..written + n).map(pattern).collect();
            if n == 1 {
                dev.write(0, &chunk);
            } else {
                sink.clone().write_all(&chunk).unwrap();
            }
            written += n;
            let meta = reader.metadata().unwrap();
            assert_eq!(meta.len(), written, "offsets moved");
            let allocated = meta.blocks() * 512;
            assert!(
                allocated <= trim.cap + page,
                "{allocated} bytes allocated for a {written}-byte log (cap {})",
                trim.cap
            );
            let freed = sink.lock().log.as_ref().unwrap().freed();
            assert!(freed.is_multiple_of(page));
            assert!(written - freed <= trim.cap);
            if freed > 0 {
                punched = true;
                assert!(
                    written - freed >= trim.keep,
                    "punched into the newest bytes"
                );
                assert_eq!(seek_hole(&reader, 0), 0, "no hole at the start");
                assert!(seek_hole(&reader, freed) >= written, "a hole after {freed}");
            }
        }
        assert!(punched);
        let bytes = std::fs::read(&path).unwrap();
        let freed = sink.lock().log.as_ref().unwrap().freed();
        assert!(bytes[..freed as usize].iter().all(|&b| b == 0));
        assert!(
            bytes[freed as usize..]
                .iter()
                .zip(freed..)
                .all(|(&b, i)| b == pattern(i)),
            "the kept part differs from what was written"
        );
    }

    fn open_append(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn the_log_is_punched_within_the_cap_on_tmpfs() {
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("skipping: no /dev/shm (tmpfs) here");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        punches_within_the_cap(dir.path());
    }

    #[test]
    fn the_log_is_punched_within_the_cap_in_the_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        punches_within_the_cap(dir.path());
    }

    #[test]
    fn a_log_that_cannot_be_punched_goes_on_growing() {
        // /dev/null takes writes but not fallocate (ENODEV).
        let page = page_size();
        let trim = Trim::new(2 * page, page).unwrap();
        let sink =
            SerialSink::with_trim(Some(open_append(std::path::Path::new("/dev/null"))), trim);
        let mut w = sink.clone();
        for _ in 0..8 {
            w.write_all(&vec![b'x'; page as usize]).unwrap();
        }
        let inner = sink.lock();
        let log = inner.log.as_ref().expect("the log is kept");
        assert_eq!(log.end(), 8 * page);
        assert_eq!(log.freed(), 0);
        assert_eq!(log.trim(), None, "punching is not tried again");
    }

    #[test]
    fn gone_clients_are_dropped_without_failing_the_guest() {
        let sink = SerialSink::new(None);
        let (a, b) = UnixStream::pair().unwrap();
        sink.attach(a).unwrap();
        drop(b);
        let mut dev = SerialDevice(com1(Arc::new(RecordingIrq::default()), sink.clone()));
        dev.write(0, b"x");
        dev.write(0, b"y");
        assert!(sink.lock().clients.is_empty());
    }

    #[test]
    fn input_is_readable_from_the_receive_register() {
        let dev = Mutex::new(SerialDevice(com1(
            Arc::new(RecordingIrq::default()),
            SerialSink::new(None),
        )));
        feed_input(&dev, b"ab", || false);
        let mut d = dev.lock().unwrap();
        let mut b = [0u8];
        d.read(5, &mut b);
        assert_eq!(b[0] & 1, 1, "LSR data ready");
        d.read(0, &mut b);
        assert_eq!(b[0], b'a');
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut dev = SerialDevice(com1(
            Arc::new(RecordingIrq::default()),
            SerialSink::new(None),
        ));
        dev.read(0, &mut []);
        dev.write(0, &[]);
        dev.write(u64::MAX, &[1]);
        let mut b = [0u8; 4];
        dev.read(9, &mut b);
        assert_eq!(b[0], 0xff);
    }
}
