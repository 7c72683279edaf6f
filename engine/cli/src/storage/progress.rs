//! Feedback and file output for long operations: the percentage line
//! ([`Meter`]) and a download's file written behind ([`WriteBehind`]).

use std::io::IsTerminal;

use super::format::pretty;

/// A download's file, whose writeback to disk the kernel is asked to start
/// every few MiB as they arrive, so the sync before the rename finds little
/// left to do.
pub(super) struct WriteBehind {
    pub(super) file: std::fs::File,
    pub(super) written: u64,
    pub(super) started: u64,
}

impl std::io::Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= 8 << 20 {
            // SAFETY: sync_file_range(2) takes a descriptor `self.file`
            // keeps open and plain integers; it touches no memory of ours.
            // A hint only: the sync_all that follows reports errors.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A percentage line on stderr while a long operation runs, when stderr is
/// a terminal.
pub(super) struct Meter {
    label: Option<&'static str>,
    last: Option<u64>,
}

impl Meter {
    pub(super) fn new(label: Option<&'static str>) -> Self {
        let label = label.filter(|_| std::io::stderr().is_terminal());
        Self { label, last: None }
    }

    pub(super) fn show(&mut self, done: u64, total: u64) {
        let Some(label) = self.label else { return };
        let pct = if total == 0 {
            100
        } else {
            (u128::from(done) * 100 / u128::from(total)) as u64
        };
        if self.last != Some(pct) {
            self.last = Some(pct);
            eprint!(
                "\r{label}: {pct:3}% ({} of {})",
                pretty(done),
                pretty(total)
            );
        }
    }

    pub(super) fn finish(&mut self) {
        if self.label.is_some() && self.last.is_some() {
            eprintln!();
        }
    }
}
