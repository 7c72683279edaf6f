//! The debug port (0x402, as QEMU's isa-debugcon and SeaBIOS use it) and
//! isa-debug-exit (0xf4).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::devices::{Requests, VmRequest};
use crate::logfile::LogFile;

/// Bytes the guest writes to the debug port go to a log, whose old part is
/// punched out as the serial log's is (a [`LogFile`]).
#[derive(Debug)]
pub struct DebugCon {
    log: Option<Arc<Mutex<LogFile>>>,
    written: Arc<AtomicU64>,
}

impl DebugCon {
    /// A debug port that appends to `log`, counting bytes in `written`.
    pub fn new(log: Option<Arc<Mutex<LogFile>>>, written: Arc<AtomicU64>) -> Self {
        Self { log, written }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // QEMU's debugcon reads back 0xe9 so firmware can detect it.
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = 0xe9;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        self.written.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.log {
            let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.append(&[b]);
        }
    }
}

/// isa-debug-exit: a write of `v` ends the VM with status `(v << 1) | 1`.
pub struct DebugExit {
    requests: Requests,
}

impl DebugExit {
    /// A debug-exit port sending its request to `requests`.
    pub fn new(requests: Requests) -> Self {
        Self { requests }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.requests.request(VmRequest::DebugExit(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::devices::testing::RecordingRequests;
    use crate::logfile::{Trim, page_size};

    #[test]
    fn debugcon_logs_and_counts_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("debug.log");
        let page = page_size();
        let trim = Trim::new(2 * page, page).unwrap();
        let file = File::create(&path).unwrap();
        let log = Arc::new(Mutex::new(LogFile::new(file, trim, "debug log").unwrap()));
        let count = Arc::new(AtomicU64::new(0));
        let mut dev = DebugCon::new(Some(log.clone()), count.clone());
        dev.write(0, b"S");
        dev.write(0, &[]);
        dev.write(0, b"E");
        assert_eq!(std::fs::read(&path).unwrap(), b"SE");
        assert_eq!(count.load(Ordering::Relaxed), 2);
        let mut b = [0u8; 2];
        dev.read(0, &mut b);
        assert_eq!(b, [0xe9, 0]);
        // Its old part is punched out past the cap.
        for _ in 0..3 * page {
            dev.write(0, b"x");
        }
        let f = log.lock().unwrap();
        assert_eq!(f.end(), 3 * page + 2);
        assert_eq!(f.freed(), 2 * page);
    }

    #[test]
    fn debug_exit_requests_exit_with_the_value() {
        let req = Arc::new(RecordingRequests::default());
        let mut dev = DebugExit::new(req.clone());
        dev.write(0, &[7]);
        assert_eq!(*req.seen.lock().unwrap(), vec![VmRequest::DebugExit(7)]);
    }
}
