//! Emulated devices. Each device is a state machine behind [`BusDevice`]
//! with no I/O of its own: it raises interrupts through [`Interrupt`] and
//! asks for machine-level actions through [`VmRequest`], so it can be unit
//! tested without a VM.
//!
//! [`BusDevice`]: crate::bus::BusDevice

use std::sync::Arc;

pub mod bochs;
pub mod cmos;
pub mod debug;
pub mod i8042;
pub mod pci;
pub mod pm;
pub mod serial;
pub mod virtio;

/// An interrupt line into the in-kernel irqchip (or a test double).
pub trait Interrupt: Send + Sync {
    /// Drives the line high or low (level-triggered sources).
    fn set_level(&self, high: bool);

    /// Raises and lowers the line: an edge.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// A shared interrupt line.
pub type IrqLine = Arc<dyn Interrupt>;

/// Something only the whole machine can do, asked for by a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRequest {
    /// Reset the machine (i8042 pulse, reset control register). A triple
    /// fault is not a reset here: it ends the VM as crashed.
    Reset,
    /// Power off (ACPI S5).
    PowerOff,
    /// isa-debug-exit: end the VM with this exit status.
    DebugExit(u8),
}

/// Where devices send [`VmRequest`]s.
pub trait RequestSink: Send + Sync {
    /// Asks the VM to act; returns at once.
    fn request(&self, req: VmRequest);
}

/// A shared request sink.
pub type Requests = Arc<dyn RequestSink>;

#[cfg(test)]
pub(crate) mod testing {
    //! Test doubles for device unit tests.

    use std::sync::Mutex;

    use super::*;

    /// Records every level an interrupt line was driven to.
    #[derive(Debug, Default)]
    pub struct RecordingIrq {
        pub levels: Mutex<Vec<bool>>,
    }

    impl RecordingIrq {
        /// Number of rising edges seen.
        pub fn rising_edges(&self) -> usize {
            let levels = self.levels.lock().unwrap();
            let mut prev = false;
            let mut n = 0;
            for &l in levels.iter() {
                if l && !prev {
                    n += 1;
                }
                prev = l;
            }
            n
        }

        /// The current level.
        pub fn level(&self) -> bool {
            self.levels.lock().unwrap().last().copied().unwrap_or(false)
        }
    }

    impl Interrupt for RecordingIrq {
        fn set_level(&self, high: bool) {
            self.levels.lock().unwrap().push(high);
        }
    }

    /// Records requests.
    #[derive(Debug, Default)]
    pub struct RecordingRequests {
        pub seen: Mutex<Vec<VmRequest>>,
    }

    impl RequestSink for RecordingRequests {
        fn request(&self, req: VmRequest) {
            self.seen.lock().unwrap().push(req);
        }
    }
}
