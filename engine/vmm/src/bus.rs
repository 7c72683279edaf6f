//! An address-range bus for port I/O or MMIO.
//!
//! Devices are inserted at non-overlapping ranges; an access resolves to the
//! device and the offset inside its range. The bus is built while the VM is
//! set up and then shared, read-only, by all vCPU threads; each device has
//! its own lock so vCPUs touching different devices do not contend.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A device that answers bus accesses.
pub trait BusDevice: Send {
    /// Fills `data` from the register at `offset` in the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` to the register at `offset` in the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared, lockable device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps one that is taken.
    #[error("range {new} overlaps the device at {existing}")]
    Overlap {
        /// The range asked for.
        new: BusRange,
        /// The range already taken.
        existing: BusRange,
    },
    /// A range of length zero, or one that wraps past the end of the space.
    #[error("invalid range of {len:#x} bytes at {base:#x}")]
    InvalidRange {
        /// Start address.
        base: u64,
        /// Length.
        len: u64,
    },
    /// No device answers at the address.
    #[error("no device at {0:#x}")]
    NoDevice(u64),
}

/// A half-open address range `[base, base + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BusRange {
    /// Start address.
    pub base: u64,
    /// Length in bytes (non-zero).
    pub len: u64,
}

impl BusRange {
    fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }

    fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..={:#x}", self.base, self.last())
    }
}

/// Devices keyed by the range they answer.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (BusRange, SharedDevice)>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.devices.values().map(|(r, _)| r))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `[base, base + len)`, refusing overlaps.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let new = BusRange { base, len };
        // Only the nearest range below and the nearest at-or-above can overlap.
        let below = self.devices.range(..base).next_back();
        let above = self.devices.range(base..).next();
        for (_, (existing, _)) in below.into_iter().chain(above) {
            if existing.overlaps(&new) {
                return Err(BusError::Overlap {
                    new,
                    existing: *existing,
                });
            }
        }
        self.devices.insert(base, (new, device));
        Ok(())
    }

    /// Removes the device whose range starts at `base`.
    pub fn remove(&mut self, base: u64) -> Option<SharedDevice> {
        self.devices.remove(&base).map(|(_, d)| d)
    }

    /// The device at `addr`, with `addr`'s offset inside its range.
    pub fn resolve(&self, addr: u64) -> Option<(BusRange, &SharedDevice, u64)> {
        let (_, (range, dev)) = self.devices.range(..=addr).next_back()?;
        (addr <= range.last()).then(|| (*range, dev, addr - range.base))
    }

    /// Reads from the device at `addr`. An access that straddles the end of
    /// the device's range is refused like an access to no device.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        let (range, dev, offset) = self.checked(addr, data.len())?;
        let _ = range;
        lock(dev).read(offset, data);
        Ok(())
    }

    /// Writes to the device at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), BusError> {
        let (_, dev, offset) = self.checked(addr, data.len())?;
        lock(dev).write(offset, data);
        Ok(())
    }

    fn checked(&self, addr: u64, len: usize) -> Result<(BusRange, &SharedDevice, u64), BusError> {
        let (range, dev, offset) = self.resolve(addr).ok_or(BusError::NoDevice(addr))?;
        let end = offset
            .checked_add(len as u64)
            .ok_or(BusError::NoDevice(addr))?;
        if end > range.len {
            return Err(BusError::NoDevice(addr));
        }
        Ok((range, dev, offset))
    }
}

/// Locks a device, recovering from a poisoned lock: a device that panicked
/// once keeps its last state rather than taking the VM down with it.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that remembers its last write and answers reads with the offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn accesses_resolve_to_the_device_and_offset() {
        let mut bus = Bus::new();
        let com1 = probe();
        bus.insert(com1.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        bus.read(0x3fd, &mut b).unwrap();
        assert_eq!(b, [5]);
        bus.write(0x3f8, b"A").unwrap();
        assert_eq!(com1.lock().unwrap().last_write, Some((0, vec![b'A'])));
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0x100, 0x10).unwrap();
        for (base, len) in [(0xf8, 0x10), (0x10f, 1), (0x100, 0x10), (0x0, 0x1000)] {
            assert!(
                matches!(
                    bus.insert(probe(), base, len),
                    Err(BusError::Overlap { .. })
                ),
                "{base:#x}+{len:#x}"
            );
        }
        // Adjacent ranges are fine on both sides.
        bus.insert(probe(), 0xf0, 0x10).unwrap();
        bus.insert(probe(), 0x110, 0x10).unwrap();
    }

    #[test]
    fn empty_and_wrapping_ranges_are_invalid() {
        let mut bus = Bus::new();
        assert!(matches!(
            bus.insert(probe(), 0, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(probe(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(probe(), u64::MAX, 1).unwrap();
    }

    #[test]
    fn gaps_and_straddling_accesses_find_no_device() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0x100, 4).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(bus.read(0xff, &mut b[..1]), Err(BusError::NoDevice(0xff)));
        assert_eq!(bus.read(0x104, &mut b[..1]), Err(BusError::NoDevice(0x104)));
        assert_eq!(bus.read(0x102, &mut b), Err(BusError::NoDevice(0x102)));
        assert_eq!(bus.write(u64::MAX, &b), Err(BusError::NoDevice(u64::MAX)));
    }
}
