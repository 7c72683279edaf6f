//! The VMM's append-only files, kept to a bounded allocation: COM1's
//! `--serial-log`, the debug port's `--debug-log` and the VMM's own log
//! (its stderr, vireod's `vmm.log`).
//!
//! Readers follow these files by byte offset (vireod follows `serial.log`
//! as it grows and reads the tail of `vmm.log` to explain an exit), so
//! offsets never change. A guest writing forever (or making the VMM log
//! forever) would still fill the host: once more than [`Trim::cap`] bytes
//! lie between what was freed already and the file's end, the old part is
//! punched out (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, whole
//! pages), keeping the newest [`Trim::keep`] bytes or more intact. The
//! size goes on growing; the allocated blocks stay under the cap, and the
//! punched part reads as zeros (readers find it with `SEEK_HOLE` and skip
//! it). A filesystem that cannot punch holes (tmpfs, ext4, xfs and btrfs
//! can) gets one warning and a file that grows as before.
//!
//! A reader that is still reading the part about to be punched would not
//! know whether the bytes it read were the guest's or the hole's zeros. So
//! a reader holds an open file description (OFD) read lock on the range it
//! reads (`F_OFD_SETLK`, `F_RDLCK`) while it checks for holes and reads,
//! and the VMM takes a write lock on the range it punches, without ever
//! waiting: when a reader holds part of it, the punch is put off until a
//! later write. A reader holds its lock for one `pread`; should it stall
//! inside one (stopped, starved) while the file grows by another page, the
//! VMM punches anyway ([`LogFile::overruns`] counts those), and the reader
//! finds the hole when it checks again after its read.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// The most of COM1's log file kept allocated beyond what was punched out
/// already (2 MiB, virtlogd's `max_size`): reaching past it frees the old
/// part.
pub const SERIAL_FILE_CAP: u64 = 2 * 1024 * 1024;
/// The newest bytes of COM1's log file that are never punched out (1 MiB):
/// far more than vireod's 64 KiB backlog, which it rebuilds from the file's
/// tail after an engine restart.
pub const SERIAL_FILE_KEEP: u64 = 1024 * 1024;

/// The same limits for the VMM's own log and the debug port's: 2 MiB
/// allocated at most, the newest 1 MiB kept (vireod reads only the last
/// lines of the VMM's log).
pub const LOG_FILE_CAP: u64 = 2 * 1024 * 1024;
/// See [`LOG_FILE_CAP`].
pub const LOG_FILE_KEEP: u64 = 1024 * 1024;

/// How much of a log file stays allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Punch once more than this lies between the freed part and the end.
    pub cap: u64,
    /// Keep at least this many of the newest bytes.
    pub keep: u64,
}

impl Default for Trim {
    fn default() -> Self {
        Self {
            cap: SERIAL_FILE_CAP,
            keep: SERIAL_FILE_KEEP,
        }
    }
}

impl Trim {
    /// Checked limits: `keep` at least one page, `cap` at least a page more
    /// than `keep`, so every punch frees whole pages.
    pub fn new(cap: u64, keep: u64) -> Result<Self, String> {
        let page = page_size();
        // Offsets are `off_t`: anything past its range is not a size.
        let max = i64::MAX.unsigned_abs();
        if cap > max || keep > max {
            return Err(format!(
                "a log file's cap ({cap} bytes) and what it keeps ({keep} bytes) must be at \
                 most {max} bytes"
            ));
        }
        if keep < page {
            return Err(format!(
                "a log file must keep at least one page ({page} bytes), not {keep}"
            ));
        }
        if keep.checked_add(page).is_none_or(|least| cap < least) {
            return Err(format!(
                "a log file's cap ({cap} bytes) must be at least a page more than what it \
                 keeps ({keep} bytes)"
            ));
        }
        Ok(Self { cap, keep })
    }
}

/// The host's page size, the unit a hole is punched in.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes and returns plain integers.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Frees the old part of one file: what [`LogFile`] and [`StderrLog`]
/// share.
#[derive(Debug)]
struct Punch {
    /// Everything before this (page-aligned) offset has been punched out.
    freed: u64,
    /// `None` once the filesystem refused a punch.
    trim: Option<Trim>,
    page: u64,
    /// Punches made while a reader held part of the range (it had stalled
    /// inside a read for a page of output).
    overruns: u64,
    /// What to call the file in the one warning (`None` for stderr, whose
    /// warning would come back here through its own writer).
    what: Option<&'static str>,
}

impl Punch {
    /// Trims a file that is `start` bytes long now: only what is written
    /// after that (from the next page on) is ever punched out, never what
    /// was there before (an earlier run's output, another program's).
    fn new(trim: Trim, what: Option<&'static str>, start: u64) -> Self {
        let page = page_size();
        Self {
            freed: start.div_ceil(page).saturating_mul(page),
            trim: Some(trim),
            page,
            overruns: 0,
            what,
        }
    }

    /// The file is now `end` bytes long: punches out the whole pages before
    /// the newest `keep` bytes once more than `cap` are allocated.
    fn after_write(&mut self, file: &File, end: u64) {
        let Some(trim) = self.trim else { return };
        if end.saturating_sub(self.freed) <= trim.cap {
            return;
        }
        let to = end.saturating_sub(trim.keep) / self.page * self.page;
        if to <= self.freed {
            return;
        }
        let len = to - self.freed;
        let locked = match range_lock(file, libc::F_WRLCK, self.freed, len) {
            Ok(true) => true,
            Ok(false) => {
                // A reader is reading the old part: put the punch off,
                // unless it has stalled there for a page of output.
                if end - self.freed <= trim.cap + self.page {
                    return;
                }
                self.overruns += 1;
                false
            }
            // No locks here (e.g. not a regular file): punch as before.
            Err(_) => false,
        };
        let punched = punch_hole(file, self.freed, len);
        if locked {
            let _ = range_lock(file, libc::F_UNLCK, self.freed, len);
        }
        match punched {
            Ok(()) => self.freed = to,
            Err(e) => {
                // Once, on stderr (the VMM's log): the file grows as before.
                if let Some(what) = self.what {
                    tracing::warn!(
                        "cannot free the old part of the {what} ({e}): it grows without bound"
                    );
                }
                self.trim = None;
            }
        }
    }
}

/// An append-only log file with its old part punched out.
#[derive(Debug)]
pub struct LogFile {
    file: File,
    /// The offset after the last byte written: the file's size.
    end: u64,
    punch: Punch,
}

impl LogFile {
    /// Appends to `file` (opened for appending), from its current size on;
    /// `what` names it in the warning should punching fail. What the file
    /// held already is never punched out.
    pub fn new(file: File, trim: Trim, what: &'static str) -> io::Result<Self> {
        let end = file.metadata()?.len();
        Ok(Self {
            file,
            end,
            punch: Punch::new(trim, Some(what), end),
        })
    }

    /// Appends `buf`, then punches out the old part if the cap is passed.
    pub fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.end += buf.len() as u64;
        self.punch.after_write(&self.file, self.end);
        Ok(())
    }

    /// The file's size: every byte ever appended.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Everything before this offset has been punched out.
    pub fn freed(&self) -> u64 {
        self.punch.freed
    }

    /// The limits, or `None` once the filesystem refused to punch.
    pub fn trim(&self) -> Option<Trim> {
        self.punch.trim
    }

    /// How many punches a reader's stalled read could not put off.
    pub fn overruns(&self) -> u64 {
        self.punch.overruns
    }
}

/// Takes (`F_RDLCK`, `F_WRLCK`) or drops (`F_UNLCK`) an open file
/// description lock on `len` bytes at `offset`, without waiting. `Ok(false)`:
/// another description holds a conflicting lock.
pub fn range_lock(file: &File, kind: libc::c_int, offset: u64, len: u64) -> io::Result<bool> {
    let (Ok(start), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let lock = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        // OFD locks want 0 here.
        l_pid: 0,
    };
    // SAFETY: fcntl(F_OFD_SETLK) on a descriptor `file` owns and keeps open
    // for the call, with a pointer to a `flock` that lives across it.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Deallocates `len` bytes at `offset` of `file`, keeping its size (the
/// range reads as zeros).
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    loop {
        // SAFETY: fallocate on a descriptor `file` owns and keeps open for
        // the call; the other arguments are plain integers.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The VMM's own log on stderr, for `tracing_subscriber`'s `with_writer`:
/// when asked to (`--trim-stderr`: vireod's `vmm.log`, a file it creates
/// for this VMM alone) and stderr is a regular file, its old part is
/// punched out after each event as [`LogFile`]'s is, from the size it had
/// at start on. The file's size is asked each time (`fstat`), since panics
/// and `eprintln!` write to it too.
#[derive(Debug)]
pub struct StderrLog {
    /// A duplicate of stderr and what was punched, if it is trimmed.
    file: Mutex<Option<(File, Punch)>>,
}

impl StderrLog {
    /// Trims stderr to `trim` if there is one and stderr is a regular
    /// file; `None`: stderr as it is (a file shared with others, say).
    pub fn new(trim: Option<Trim>) -> Self {
        use std::os::fd::{AsFd, OwnedFd};
        let file = trim.and_then(|trim| {
            let file = io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map(|fd: OwnedFd| File::from(fd))
                .ok()?;
            Self::of(file, trim)
        });
        Self {
            file: Mutex::new(file),
        }
    }

    /// `file` (stderr) and its punch, if it is a regular file.
    fn of(file: File, trim: Trim) -> Option<(File, Punch)> {
        let meta = file.metadata().ok().filter(|m| m.is_file())?;
        let punch = Punch::new(trim, None, meta.len());
        Some((file, punch))
    }

    fn trim(&self) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((file, punch)) = guard.as_mut()
            && let Ok(meta) = file.metadata()
        {
            punch.after_write(file, meta.len());
        }
    }
}

/// One event's writer: stderr, trimmed when dropped.
pub struct StderrWriter<'a>(&'a StderrLog);

impl Write for StderrWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl Drop for StderrWriter<'_> {
    fn drop(&mut self) {
        self.0.trim();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLog {
    type Writer = StderrWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn open_append(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn a_punch_waits_for_a_reader_in_the_old_part_for_at_most_a_page() {
        let page = page_size();
        let trim = Trim::new(4 * page, page).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = LogFile::new(open_append(&path), trim, "serial log").unwrap();
        let reader = File::open(&path).unwrap();
        log.append(&vec![b'a'; 4 * page as usize]).unwrap();
        assert_eq!(log.freed(), 0, "under the cap");
        // A reader reads the first page (as vireod does, under a lock).
        assert!(range_lock(&reader, libc::F_RDLCK, 0, page).unwrap());
        log.append(b"b").unwrap();
        assert_eq!(log.freed(), 0, "put off while the reader reads");
        assert_eq!(std::fs::read(&path).unwrap()[0], b'a');
        // The reader is done: the next write punches.
        assert!(range_lock(&reader, libc::F_UNLCK, 0, page).unwrap());
        log.append(b"c").unwrap();
        assert_eq!(log.freed(), 3 * page);
        assert_eq!(log.overruns(), 0);

        // A reader that stalls inside its read is overrun a page later.
        assert!(range_lock(&reader, libc::F_RDLCK, 3 * page, page).unwrap());
        log.append(&vec![b'd'; 3 * page as usize]).unwrap();
        assert_eq!(log.freed(), 3 * page, "put off");
        log.append(&vec![b'e'; page as usize - 2]).unwrap();
        assert_eq!(log.freed(), 3 * page, "put off for up to a page");
        log.append(b"f").unwrap();
        assert_eq!(log.freed(), 7 * page, "punched past the stalled reader");
        assert_eq!(log.overruns(), 1);
        let allocated = reader.metadata().unwrap().blocks() * 512;
        assert!(allocated <= trim.cap + page, "{allocated} bytes allocated");
    }

    #[test]
    fn what_a_file_held_before_is_never_punched_out() {
        let page = page_size();
        let trim = Trim::new(4 * page, page).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.log");
        // An earlier run's (or another program's) output, longer than the
        // cap and not page-aligned.
        let old = vec![b'o'; 5 * page as usize + 10];
        std::fs::write(&path, &old).unwrap();
        let mut log = LogFile::new(open_append(&path), trim, "debug log").unwrap();
        assert_eq!(log.freed(), 6 * page, "starts past the old part");
        log.append(&vec![b'n'; 3 * page as usize]).unwrap();
        assert_eq!(log.freed(), 6 * page, "under the cap of its own bytes");
        log.append(&vec![b'n'; 2 * page as usize]).unwrap();
        assert!(log.freed() > 6 * page, "its own old part is punched");
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..old.len()], &old[..], "the old part was touched");

        // The same for stderr, trimmed from the size it had at start.
        let err = dir.path().join("stderr.log");
        std::fs::write(&err, &old).unwrap();
        let (file, mut punch) = StderrLog::of(open_append(&err), trim).unwrap();
        (&file).write_all(&vec![b'n'; 5 * page as usize]).unwrap();
        punch.after_write(&file, file.metadata().unwrap().len());
        assert!(punch.freed > 6 * page, "its own old part is punched");
        let got = std::fs::read(&err).unwrap();
        assert_eq!(&got[..old.len()], &old[..], "the old part was touched");
    }

    #[test]
    fn stderr_is_trimmed_only_when_asked() {
        let log = StderrLog::new(None);
        assert!(log.file.lock().unwrap().is_none());
        // A pipe or terminal is never trimmed, asked or not.
        let (r, _w) = std::io::pipe().unwrap();
        assert!(
            StderrLog::of(File::from(std::os::fd::OwnedFd::from(r)), Trim::default()).is_none()
        );
    }

    #[test]
    fn limits_are_checked() {
        let page = page_size();
        assert!(Trim::new(SERIAL_FILE_CAP, SERIAL_FILE_KEEP).is_ok());
        assert!(Trim::new(LOG_FILE_CAP, LOG_FILE_KEEP).is_ok());
        assert!(
            Trim::new(4 * page, 0)
                .unwrap_err()
                .contains("at least one page")
        );
        assert!(
            Trim::new(page, page)
                .unwrap_err()
                .contains("at least a page more")
        );
        // Absurd values are refused, not overflowed.
        for (cap, keep) in [
            (u64::MAX, u64::MAX),
            (u64::MAX, u64::MAX - 1),
            (u64::MAX, page),
        ] {
            let e = Trim::new(cap, keep).unwrap_err();
            assert!(e.contains("must be at most"), "{e}");
        }
        let max = i64::MAX.unsigned_abs();
        assert!(
            Trim::new(max, max)
                .unwrap_err()
                .contains("at least a page more")
        );
    }
}
