//! Reading the VMM's `serial.log`: the guest's bytes, told from the zeros
//! of a part the VMM punched out.
//!
//! vireo-vmm punches out the old part of the file (whole pages, its size
//! kept), but not a range on which a reader holds an open file description
//! read lock: it puts that punch off, without waiting, for up to a page of
//! output (its `logfile` module). So each read here takes such a lock on
//! the range it reads, asks `SEEK_HOLE` where the data ends, and reads only
//! up to there: every byte it reads is the guest's, and none is lost to a
//! punch that lands between the read and a check after it.
//!
//! Should the engine stall inside a read (stopped, starved) while the guest
//! prints another page, the VMM punches anyway. The check after the read
//! finds that (a hole never turns back into data, so what is data after
//! the read was data during it): only the bytes before the hole are kept
//! ([`Chunk::Overrun`]), never zeros.

use std::fs::File;
use std::io;
use std::time::Duration;

/// What one read of the VMM's file found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Nothing more yet.
    End,
    /// This many bytes, all the guest's.
    Bytes(usize),
    /// The read's offset had been punched out before the read: reading
    /// goes on at `next`, the data after the hole (or the end).
    Gap { next: u64 },
    /// The VMM punched while the read was under way (this reader had
    /// stalled in it for a page of output): the first `bytes` are the
    /// guest's, then reading goes on at `next`.
    Overrun { bytes: usize, next: u64 },
}

/// How often a read tries to lock a range the VMM is punching right now
/// (for a few microseconds), a millisecond apart, before it leaves the read
/// for the next round.
const LOCK_TRIES: u32 = 50;

/// Reads from `pos` into `buf`, telling the guest's bytes from the zeros
/// of a punched-out part.
pub(super) fn read_chunk(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<Chunk> {
    read_chunk_with(file, pos, buf, || {})
}

/// [`read_chunk`], running `between` after the read and before the check
/// that follows it (tests put a punch there).
pub(super) fn read_chunk_with(
    file: &File,
    pos: u64,
    buf: &mut [u8],
    between: impl FnOnce(),
) -> io::Result<Chunk> {
    use std::os::unix::fs::FileExt;
    let Some(_lock) = ReadLock::take(file, pos, buf.len() as u64) else {
        // The VMM is punching this range: read it next time.
        return Ok(Chunk::End);
    };
    // Where the data from `pos` ends: a hole, or the end of the file.
    let data_end = match seek(file, pos, libc::SEEK_HOLE) {
        Ok(at) => at,
        // At or past the end.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(Chunk::End),
        Err(e) => return Err(e),
    };
    if data_end <= pos {
        return Ok(Chunk::Gap {
            next: next_data(file, pos)?,
        });
    }
    let want = usize::try_from(data_end - pos).map_or(buf.len(), |n| n.min(buf.len()));
    let n = loop {
        match file.read_at(&mut buf[..want], pos) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        return Ok(Chunk::End);
    }
    between();
    // Only an overrun punches under the lock. (A filesystem without
    // SEEK_HOLE reports none; one that cannot tell cannot punch either.)
    let end = pos + n as u64;
    let hole = seek(file, pos, libc::SEEK_HOLE).unwrap_or(end);
    if hole >= end {
        return Ok(Chunk::Bytes(n));
    }
    Ok(Chunk::Overrun {
        bytes: (hole.saturating_sub(pos)) as usize,
        next: next_data(file, hole)?.max(hole),
    })
}

/// The first data at or after `from`; the file's end when there is none.
fn next_data(file: &File, from: u64) -> io::Result<u64> {
    match seek(file, from, libc::SEEK_DATA) {
        Ok(at) => Ok(at),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(file.metadata()?.len()),
        Err(e) => Err(e),
    }
}

/// `lseek(2)` with `whence` (SEEK_HOLE, SEEK_DATA), which std does not
/// offer.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a descriptor `file` owns and keeps open for the
    // call; the other arguments are plain integers. (Reads use pread, so
    // moving the file position does not matter.)
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    u64::try_from(at).map_err(|_| io::Error::last_os_error())
}

/// An open file description read lock on the range being read, which the
/// VMM does not punch (see the module docs); dropped after the read.
struct ReadLock<'a> {
    file: &'a File,
    start: libc::off_t,
    len: libc::off_t,
    held: bool,
}

impl<'a> ReadLock<'a> {
    /// Locks `len` bytes at `offset`, trying [`LOCK_TRIES`] times while the
    /// VMM punches there; `None` if it still does. A filesystem without
    /// locks gives an unheld lock: the check after the read still holds.
    fn take(file: &'a File, offset: u64, len: u64) -> Option<Self> {
        let (Ok(start), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Some(Self::unheld(file));
        };
        let mut lock = Self {
            file,
            start,
            len,
            held: false,
        };
        for _ in 0..LOCK_TRIES {
            match lock.fcntl(libc::F_RDLCK) {
                Ok(()) => {
                    lock.held = true;
                    return Some(lock);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return Some(Self::unheld(file)),
            }
        }
        None
    }

    fn unheld(file: &'a File) -> Self {
        Self {
            file,
            start: 0,
            len: 0,
            held: false,
        }
    }

    fn fcntl(&self, kind: libc::c_int) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let lock = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: self.start,
            l_len: self.len,
            // OFD locks want 0 here.
            l_pid: 0,
        };
        // SAFETY: fcntl(F_OFD_SETLK) on a descriptor `file` owns and keeps
        // open for the call, with a pointer to a `flock` that outlives it.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for ReadLock<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.fcntl(libc::F_UNLCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use vireo_vmm::logfile::{LogFile, Trim, page_size};

    use super::*;
    use crate::serial::testing::{open_append, stream};

    /// vireo-vmm's own log writer, punching past 4 pages and keeping 1.
    fn vmm_log(path: &std::path::Path) -> LogFile {
        let page = page_size();
        LogFile::new(
            open_append(path),
            Trim::new(4 * page, page).unwrap(),
            "serial log",
        )
        .unwrap()
    }

    #[test]
    fn a_punch_due_during_a_read_waits_until_the_read_is_done() {
        let page = page_size();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut vmm = vmm_log(&path);
        vmm.append(&stream(0..4 * page)).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = vec![0u8; page as usize];
        // The VMM passes its cap right after the engine's read, before the
        // check that follows it: the punch (which would have freed what was
        // just read, and the read been dropped) waits.
        let got = read_chunk_with(&file, 0, &mut buf, || {
            vmm.append(&stream(4 * page..4 * page + 1)).unwrap();
            assert_eq!(vmm.freed(), 0, "punched during the read");
        })
        .unwrap();
        assert_eq!(got, Chunk::Bytes(page as usize));
        assert_eq!(buf, stream(0..page));
        // The next write punches; the next read skips the hole.
        vmm.append(&stream(4 * page + 1..4 * page + 2)).unwrap();
        assert_eq!(vmm.freed(), 3 * page);
        assert_eq!(
            read_chunk(&file, page, &mut buf).unwrap(),
            Chunk::Gap { next: 3 * page }
        );
        assert_eq!(
            read_chunk(&file, 3 * page, &mut buf).unwrap(),
            Chunk::Bytes(page as usize)
        );
        assert_eq!(buf, stream(3 * page..4 * page));
    }

    #[test]
    fn a_reader_stalled_inside_a_read_is_overrun_but_never_shows_zeros() {
        let page = page_size();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut vmm = vmm_log(&path);
        vmm.append(&stream(0..4 * page)).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = vec![0u8; page as usize];
        // More than a page more while the read is held up.
        let got = read_chunk_with(&file, 0, &mut buf, || {
            vmm.append(&stream(4 * page..5 * page + 1)).unwrap();
        })
        .unwrap();
        assert_eq!(vmm.overruns(), 1);
        assert_eq!(
            got,
            Chunk::Overrun {
                bytes: 0,
                next: 4 * page
            }
        );
    }

    /// The VMM's writer appends a stream as fast as it can, punching all
    /// the way, while a reader follows it as vireod does, now and then
    /// falling behind, and yielding to it between each read and the check
    /// after it: every byte read is the stream's at its offset, read and
    /// skipped bytes add up to the stream, and a read loses what it read
    /// only when the VMM overran it (without the read locks, reads lost
    /// bytes to punches here).
    fn follow_a_punching_writer(dir: &std::path::Path) {
        const TOTAL: u64 = 8 << 20;
        let path = dir.join("serial.log");
        let mut vmm = vmm_log(&path);
        let file = File::open(&path).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut at = 0u64;
                let mut step = 0u64;
                while at < TOTAL {
                    step += 1;
                    let n = ((step * 7919) % 3000 + 1).min(TOTAL - at);
                    vmm.append(&stream(at..at + n)).unwrap();
                    at += n;
                    if step.is_multiple_of(64) {
                        std::thread::yield_now();
                    }
                }
                done.store(true, Ordering::Release);
                (vmm.freed(), vmm.overruns())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0u8; 8192];
        let (mut pos, mut read, mut skipped, mut gaps, mut overruns) = (0u64, 0u64, 0u64, 0, 0);
        let mut reads = 0u64;
        while pos < TOTAL {
            assert!(Instant::now() < deadline, "stuck at {pos}");
            reads += 1;
            if reads.is_multiple_of(32) {
                // Fall behind now and then.
                std::thread::sleep(Duration::from_millis(2));
            }
            let check = |bytes: &[u8], at: u64| {
                assert!(
                    bytes == stream(at..at + bytes.len() as u64),
                    "bytes at {at} differ"
                );
            };
            // The writer gets a turn inside the read's window.
            match read_chunk_with(&file, pos, &mut buf, std::thread::yield_now).unwrap() {
                Chunk::End => {
                    if done.load(Ordering::Acquire) && pos >= TOTAL {
                        break;
                    }
                    std::thread::yield_now();
                }
                Chunk::Bytes(n) => {
                    check(&buf[..n], pos);
                    read += n as u64;
                    pos += n as u64;
                }
                Chunk::Gap { next } => {
                    assert!(next > pos, "a gap to {next} at {pos}");
                    gaps += 1;
                    skipped += next - pos;
                    pos = next;
                }
                Chunk::Overrun { bytes, next } => {
                    check(&buf[..bytes], pos);
                    overruns += 1;
                    read += bytes as u64;
                    skipped += next - (pos + bytes as u64);
                    pos = next;
                }
            }
        }
        let (freed, vmm_overruns) = writer.join().unwrap();
        assert_eq!(read + skipped, TOTAL);
        assert!(freed > TOTAL / 2, "the VMM freed only {freed} bytes");
        assert!(gaps > 0, "the reader never fell behind a punch");
        assert!(
            overruns <= vmm_overruns,
            "{overruns} reads lost bytes to {vmm_overruns} punches over a reader"
        );
    }

    #[test]
    fn reads_racing_the_vmms_punches_on_tmpfs() {
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("skipping: no /dev/shm (tmpfs) here");
            return;
        }
        follow_a_punching_writer(tempfile::tempdir_in(shm).unwrap().path());
    }

    #[test]
    fn reads_racing_the_vmms_punches_in_the_temp_dir() {
        follow_a_punching_writer(tempfile::tempdir().unwrap().path());
    }
}
