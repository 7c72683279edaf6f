//! Rate-limited logging of what a guest makes the VMM say.
//!
//! A guest can make the VMM warn as often as it likes (a malformed virtio
//! request, an MSI to nowhere, a BAR moved where nothing maps). Like the
//! kernel's `printk_ratelimited` (and QEMU's guest-error logging, which is
//! off unless asked for), each call site of [`guest_warn!`] /
//! [`guest_info!`] logs at most [`BURST`] messages per [`INTERVAL`]; the
//! first message after a window in which some were dropped carries their
//! number as a `suppressed=N` field. The log file is bounded on top of
//! that (see [`crate::logfile`]). Debug and trace lines (unhandled port or
//! MMIO accesses) are not limited: they are off unless asked for
//! (`VIREO_LOG=debug`), and the file's cap still holds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The messages one call site may log per [`INTERVAL`] (the kernel's
/// `DEFAULT_RATELIMIT_BURST`).
pub const BURST: u32 = 10;
/// The length of a window (the kernel's `DEFAULT_RATELIMIT_INTERVAL`).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One call site's budget.
#[derive(Debug)]
pub struct RateLimit {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    /// Dropped since the last message logged.
    suppressed: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    /// A fresh budget (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a message may be logged now; if so, `Some(n)`: how many
    /// were dropped since the last one logged.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`RateLimit::check`] at `now`.
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = w
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= INTERVAL);
        if expired {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged >= BURST {
            w.suppressed += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// `tracing::warn!` for something the guest did, limited per call site to
/// [`BURST`] messages per [`INTERVAL`].
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        match LIMIT.check() {
            Some(0) => tracing::warn!($($arg)+),
            Some(suppressed) => tracing::warn!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

/// `tracing::info!` for something the guest did (a reset), limited as
/// [`guest_warn!`] is.
macro_rules! guest_info {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        match LIMIT.check() {
            Some(0) => tracing::info!($($arg)+),
            Some(suppressed) => tracing::info!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

pub(crate) use {guest_info, guest_warn};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_dropped_are_counted() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        for i in 0..BURST {
            assert_eq!(limit.check_at(t0), Some(0), "message {i}");
        }
        for _ in 0..25 {
            assert_eq!(limit.check_at(t0 + Duration::from_secs(1)), None);
        }
        // A new window: the first message tells how many were dropped.
        let t1 = t0 + INTERVAL;
        assert_eq!(limit.check_at(t1), Some(25));
        assert_eq!(limit.check_at(t1), Some(0));
    }
}
