//! The `<serial><log>` file, rolled over as virtlogd rolls it, and the
//! record of how far into the VMM's `serial.log` it has got.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The size a `<serial><log>` file is rolled over at: 2 MiB, virtlogd's
/// default `max_size`. (For tests only, `VIREO_SERIAL_LOG_MAX_SIZE`
/// overrides it.)
pub const LOG_MAX_SIZE: u64 = 2 * 1024 * 1024;
/// How many rolled-over `<log>` files are kept (FILE.0 the newest …
/// FILE.2): virtlogd's default `max_backups`.
pub const LOG_MAX_BACKUPS: usize = 3;
/// How far before the size limit a line end is looked for, so that a
/// rollover does not split a line (virtlogd's 80).
const LOG_LINE_LOOKBACK: usize = 80;

/// A domain's `<serial><log>` file, rolled over as virtlogd rolls it.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    /// The current file's size.
    len: u64,
    max_size: u64,
}

impl RotatingLog {
    /// Goes on writing `file` (opened by [`open_log`]) at `path`, rolled
    /// over at [`LOG_MAX_SIZE`].
    pub fn new(file: File, path: PathBuf) -> std::io::Result<Self> {
        Self::with_max_size(file, path, log_max_size())
    }

    /// The same, rolled over at `max_size` bytes (at least 1).
    pub fn with_max_size(file: File, path: PathBuf, max_size: u64) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            len,
            max_size: max_size.max(1),
        })
    }

    /// Appends `buf`, rolling over whenever the file would pass its size.
    pub fn write(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let room = self.max_size.saturating_sub(self.len);
            if room == 0 {
                // Full (or larger than the limit when it was opened).
                self.rollover()?;
                continue;
            }
            if buf.len() as u64 <= room {
                self.file.write_all(buf)?;
                self.len += buf.len() as u64;
                return Ok(());
            }
            // As much as fits, up to its last line end if one is near.
            let mut take = room as usize;
            let near = take.saturating_sub(LOG_LINE_LOOKBACK);
            if let Some(nl) = buf[near..take].iter().rposition(|&b| b == b'\n') {
                take = near + nl + 1;
            }
            self.file.write_all(&buf[..take])?;
            buf = &buf[take..];
            self.rollover()?;
        }
        Ok(())
    }

    /// FILE.1 → FILE.2, FILE.0 → FILE.1, FILE → FILE.0, then a new FILE.
    fn rollover(&mut self) -> std::io::Result<()> {
        for i in (0..LOG_MAX_BACKUPS).rev() {
            let from = match i {
                0 => self.path.clone(),
                _ => backup_path(&self.path, i - 1),
            };
            match std::fs::rename(&from, backup_path(&self.path, i)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = create_log(&self.path, true)?;
        self.len = self.file.metadata()?.len();
        Ok(())
    }

    /// Where it is written.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the current file to its disk.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// The `<log>`'s backup number `i` (FILE.0 is the newest).
pub fn backup_path(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// [`LOG_MAX_SIZE`], unless a test set `VIREO_SERIAL_LOG_MAX_SIZE`.
fn log_max_size() -> u64 {
    std::env::var("VIREO_SERIAL_LOG_MAX_SIZE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(LOG_MAX_SIZE)
}

fn create_log(path: &Path, append: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).mode(0o600);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path)
}

/// Opens (creating, mode 0600) the `<serial><log file>` of a domain
/// starting now: appended to if `append`, else emptied, its rolled-over
/// backups removed (as virtlogd truncates).
pub fn open_log(path: &Path, append: bool) -> Result<File, String> {
    let reason = |e: std::io::Error| {
        format!(
            "serial log '{}': {}",
            path.display(),
            crate::vmm::io_reason(&e)
        )
    };
    let file = create_log(path, append).map_err(reason)?;
    if !append {
        for i in 0..LOG_MAX_BACKUPS {
            match std::fs::remove_file(backup_path(path, i)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(reason(e)),
                _ => {}
            }
        }
    }
    Ok(file)
}

/// The offset in the VMM's `serial.log` up to which the `<log>` has
/// everything, kept beside it (`serial.logged` in the domain's runtime
/// directory) so that an engine started again while the domain runs
/// appends what was printed meanwhile. One write of a fixed-width line
/// ([`MARK_LEN`] bytes), rewritten in place after each write to the
/// `<log>` (so an engine killed between the two appends at most that
/// write's bytes again); only the next engine reads it, once this one is
/// gone, and only its first line.
#[derive(Debug)]
pub(super) struct LogMark {
    file: File,
    path: PathBuf,
}

/// The mark's line: 20 digits (any `u64`) and a newline.
const MARK_LEN: usize = 21;

impl LogMark {
    /// Where the mark of the `<log>` fed from `source` is kept.
    pub(super) fn path(source: &Path) -> PathBuf {
        source.with_file_name("serial.logged")
    }

    /// The mark of a new start: nothing logged yet (whatever the file held
    /// is dropped).
    pub(super) fn create(source: &Path) -> std::io::Result<Self> {
        let mark = Self::open_with(source, true)?;
        mark.set(0)?;
        Ok(mark)
    }

    /// The mark left by an earlier engine, to go on from.
    pub(super) fn open(source: &Path) -> std::io::Result<Self> {
        Self::open_with(source, false)
    }

    fn open_with(source: &Path, truncate: bool) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(source);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .mode(0o600)
            .open(&path)?;
        Ok(Self { file, path })
    }

    /// The offset recorded, or why there is none (a warning is logged).
    pub(super) fn get(&self) -> Option<u64> {
        self.read()
            .inspect_err(|e| {
                tracing::warn!(
                    "'{}': {e}; serial output printed while no engine ran is not logged",
                    self.path.display()
                );
            })
            .ok()
    }

    /// The offset on the mark's first line.
    fn read(&self) -> Result<u64, String> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; MARK_LEN];
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read the serial log's mark: {e}")),
            }
        }
        // The first line, which a whole field ends: 20 digits at most.
        let line = match buf[..n].iter().position(|&b| b == b'\n') {
            Some(end) => &buf[..end],
            None if n < MARK_LEN => &buf[..n],
            None => return Err("the serial log's mark is too long for an offset".into()),
        };
        std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "the serial log's mark '{}' is not an offset",
                    String::from_utf8_lossy(line).escape_debug()
                )
            })
    }

    /// Records that the `<log>` has everything before `offset`.
    pub(super) fn set(&self, offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let line = format!("{offset:020}\n");
        debug_assert_eq!(line.len(), MARK_LEN);
        self.file.write_all_at(line.as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::testing::stream;

    #[test]
    fn a_mark_is_read_from_its_first_line_and_created_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        let path = LogMark::path(&source);
        // Garbage longer than the line, hand edits: no offset, but the
        // next `set` makes it one again.
        std::fs::write(&path, "garbage garbage garbage garbage\n").unwrap();
        let mark = LogMark::open(&source).unwrap();
        assert!(mark.read().unwrap_err().contains("too long"));
        assert_eq!(mark.get(), None);
        mark.set(123).unwrap();
        assert_eq!(mark.read(), Ok(123));
        std::fs::write(&path, "garbage\n").unwrap();
        let e = LogMark::open(&source).unwrap().read().unwrap_err();
        assert!(e.contains("'garbage' is not an offset"), "{e}");
        // A long mark (digits after the line) is read to its newline.
        std::fs::write(&path, "00000000000000000042\n99999999999\n").unwrap();
        assert_eq!(LogMark::open(&source).unwrap().get(), Some(42));
        std::fs::write(&path, "7\n").unwrap();
        assert_eq!(LogMark::open(&source).unwrap().get(), Some(7));
        // Digits past the field are not part of an offset.
        std::fs::write(&path, "0000000000000000004210").unwrap();
        let e = LogMark::open(&source).unwrap().read().unwrap_err();
        assert!(e.contains("too long"), "{e}");
        std::fs::write(&path, "").unwrap();
        assert!(LogMark::open(&source).unwrap().get().is_none());
        // A new start drops whatever was there.
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let mark = LogMark::create(&source).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MARK_LEN as u64);
        assert_eq!(mark.get(), Some(0));
        mark.set(u64::MAX).unwrap();
        assert_eq!(LogMark::open(&source).unwrap().get(), Some(u64::MAX));
    }

    #[test]
    fn the_log_rolls_over_as_virtlogd_keeping_three_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("com1.log");
        let files = |path: &Path| -> Vec<Vec<u8>> {
            // Oldest first: FILE.2, FILE.1, FILE.0, FILE.
            (0..LOG_MAX_BACKUPS)
                .rev()
                .map(|i| backup_path(path, i))
                .chain([path.to_owned()])
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        };
        let mut log =
            RotatingLog::with_max_size(open_log(&path, false).unwrap(), path.clone(), 200).unwrap();
        // Uneven writes, some longer than a file.
        let mut at = 0u64;
        for n in [5u64, 150, 90, 1, 700, 33, 64, 400, 2, 199, 301].repeat(3) {
            log.write(&stream(at..at + n)).unwrap();
            at += n;
            let got = files(&path);
            assert!(got.len() <= LOG_MAX_BACKUPS + 1);
            assert!(
                !backup_path(&path, LOG_MAX_BACKUPS).exists(),
                "a 4th backup"
            );
            let all = got.concat();
            assert_eq!(
                all,
                stream(at - all.len() as u64..at),
                "not the newest output"
            );
            for (i, f) in got.iter().enumerate() {
                assert!(f.len() <= 200, "file {i} has {} bytes", f.len());
                if i + 1 < got.len() {
                    // Full, or cut after a line end within the 80 bytes
                    // before the limit (looked for, as virtlogd does, in
                    // the write that would pass it).
                    assert!(
                        f.len() == 200 || (f.len() > 200 - 80 && f.last() == Some(&b'\n')),
                        "file {i} cut after {} bytes",
                        f.len()
                    );
                }
            }
        }
        assert_eq!(files(&path).len(), LOG_MAX_BACKUPS + 1);
        drop(log);

        // A line longer than the look-back is cut at the limit.
        let long = vec![b'x'; 500];
        let mut log =
            RotatingLog::with_max_size(open_log(&path, false).unwrap(), path.clone(), 200).unwrap();
        assert_eq!(files(&path).len(), 1, "append='off' removes the backups");
        // Lines are kept whole when their end is near the limit.
        log.write(&stream(0..250)).unwrap();
        let lens: Vec<usize> = files(&path).iter().map(Vec::len).collect();
        assert_eq!(lens, [184, 66]);
        let mut log =
            RotatingLog::with_max_size(open_log(&path, false).unwrap(), path.clone(), 200).unwrap();
        log.write(&long).unwrap();
        let lens: Vec<usize> = files(&path).iter().map(Vec::len).collect();
        assert_eq!(lens, [200, 200, 100]);
        drop(log);

        // append='on' goes on in the current file, and a file already
        // past the limit is rolled over before anything more is written.
        let log = RotatingLog::with_max_size(open_log(&path, true).unwrap(), path.clone(), 200);
        log.unwrap().write(b"more\n").unwrap();
        let lens: Vec<usize> = files(&path).iter().map(Vec::len).collect();
        assert_eq!(lens, [200, 200, 105]);
        let mut log =
            RotatingLog::with_max_size(open_log(&path, true).unwrap(), path.clone(), 50).unwrap();
        log.write(b"x").unwrap();
        let lens: Vec<usize> = files(&path).iter().map(Vec::len).collect();
        assert_eq!(lens, [200, 200, 105, 1]);
    }
}
