//! PCI: configuration space, BARs, the host bridge on ports 0xcf8..0xcff
//! (configuration mechanism #1, with PIIX's reset control at 0xcf9) and the
//! dispatch of MMIO accesses in the PCI hole to device BARs.

use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::devices::{Requests, VmRequest};

/// PCI command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// PCI command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;

/// What kind of BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32 {
        /// Prefetchable.
        prefetchable: bool,
    },
}

/// A base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Size in bytes (a power of two, at least 16).
    pub size: u64,
    /// Kind.
    pub kind: BarKind,
}

/// A device's 256-byte configuration space with BAR sizing semantics.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    regs: [u8; 256],
    /// Bits the guest may change.
    wmask: [u8; 256],
    bars: [Option<Bar>; 6],
}

impl ConfigSpace {
    /// A type-0 header.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = Self {
            regs: [0; 256],
            wmask: [0; 256],
            bars: [None; 6],
        };
        c.put16(0x00, vendor);
        c.put16(0x02, device);
        c.regs[0x08] = revision;
        c.regs[0x09] = class as u8;
        c.regs[0x0a] = (class >> 8) as u8;
        c.regs[0x0b] = (class >> 16) as u8;
        // Command: I/O, memory, bus master, SERR, INTx disable are writable.
        c.wmask[0x04] = 0x07;
        c.wmask[0x05] = 0x05;
        // Cache line size, latency timer, interrupt line.
        c.wmask[0x0c] = 0xff;
        c.wmask[0x0d] = 0xff;
        c.wmask[0x3c] = 0xff;
        c
    }

    /// Sets the subsystem IDs.
    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.put16(0x2c, vendor);
        self.put16(0x2e, id);
    }

    /// Sets the header type byte (0x80 = multi-function).
    pub fn set_header_type(&mut self, t: u8) {
        self.regs[0x0e] = t;
    }

    /// Declares BAR `index` at `addr`.
    pub fn add_bar(&mut self, index: usize, bar: Bar, addr: u64) {
        if index >= 6 || !bar.size.is_power_of_two() || bar.size < 16 {
            return;
        }
        let BarKind::Memory32 { prefetchable } = bar.kind;
        let flags = if prefetchable { 0x8 } else { 0 };
        let off = 0x10 + index * 4;
        let mask = !(bar.size as u32 - 1);
        self.put32(off, (addr as u32 & mask) | flags);
        self.wmask[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        // The low flag bits are read-only.
        self.wmask[off] &= 0xf0;
        self.bars[index] = Some(bar);
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.regs[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.regs[off], self.regs[off + 1]])
    }

    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.regs[off..off + 4].try_into().unwrap_or([0; 4]))
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.get16(0x04)
    }

    /// Where BAR `index` decodes now: `None` if it does not exist, memory
    /// decoding is off, or the guest is sizing it.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bars.get(index).copied().flatten()?;
        if self.command() & COMMAND_MEMORY == 0 {
            return None;
        }
        let v = self.get32(0x10 + index * 4) & !0xf;
        // All ones (sizing) or zero (unassigned) decode nothing.
        let size = self.bars[index]?.size as u32;
        (v != 0 && v != !(size - 1)).then_some(u64::from(v))
    }

    /// The BAR and offset that `addr` hits.
    pub fn bar_hit(&self, addr: u64) -> Option<(usize, u64)> {
        (0..6).find_map(|i| {
            let base = self.bar_address(i)?;
            let size = self.bars[i]?.size;
            (addr >= base && addr - base < size).then(|| (i, addr - base))
        })
    }

    /// Reads the dword at `off & !3`.
    pub fn read_dword(&self, off: usize) -> u32 {
        if off >= 256 {
            return 0xffff_ffff;
        }
        self.get32(off & !3)
    }

    /// Writes `data` at byte offset `off`, honouring the write mask.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = off + i;
            if at >= 256 {
                return;
            }
            let m = self.wmask[at];
            self.regs[at] = (self.regs[at] & !m) | (b & m);
        }
    }
}

/// A device on the PCI bus.
pub trait PciDevice: Send {
    /// Reads a configuration dword (offset aligned down to 4).
    fn config_read(&mut self, offset: usize) -> u32;
    /// Writes configuration bytes at `offset`.
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// The BAR and offset an MMIO address hits, if it is this device's.
    fn bar_hit(&self, addr: u64) -> Option<(usize, u64)>;
    /// Reads from a BAR.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// Writes to a BAR.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// A shared PCI device.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// The i440FX-compatible host bridge at 00:00.0 (SeaBIOS recognises it by
/// subsystem 1af4:1100).
#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        let mut config = ConfigSpace::new(0x8086, 0x1237, 0x06_00_00, 0x02);
        config.set_subsystem(0x1af4, 0x1100);
        Self { config }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn bar_hit(&self, _addr: u64) -> Option<(usize, u64)> {
        None
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

/// Bus 0 with up to 32 single-function devices.
#[derive(Clone, Default)]
pub struct PciBus {
    slots: Arc<Mutex<Vec<Option<SharedPciDevice>>>>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PciBus")
    }
}

impl PciBus {
    /// A bus with the host bridge at slot 0.
    pub fn new() -> Self {
        let bus = Self {
            slots: Arc::new(Mutex::new(vec![None; 32])),
        };
        bus.lock()[0] = Some(Arc::new(Mutex::new(HostBridge::default())));
        bus
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<SharedPciDevice>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plugs `dev` into the first free slot and returns the slot number.
    pub fn add(&self, dev: SharedPciDevice) -> Option<u8> {
        let mut slots = self.lock();
        let free = slots.iter().position(Option::is_none)?;
        slots[free] = Some(dev);
        Some(free as u8)
    }

    fn device(&self, slot: usize) -> Option<SharedPciDevice> {
        self.lock().get(slot).cloned().flatten()
    }

    /// The device whose BAR contains `addr`.
    fn mmio_target(&self, addr: u64) -> Option<(SharedPciDevice, usize, u64)> {
        let slots = self.lock();
        slots.iter().flatten().find_map(|d| {
            let hit = d.lock().unwrap_or_else(|e| e.into_inner()).bar_hit(addr)?;
            Some((d.clone(), hit.0, hit.1))
        })
    }
}

/// Ports 0xcf8..0xcff: the configuration address and data registers, plus
/// PIIX's reset control register at 0xcf9.
pub struct PciConfigPorts {
    bus: PciBus,
    address: u32,
    requests: Requests,
}

impl PciConfigPorts {
    /// The configuration mechanism for `bus`.
    pub fn new(bus: PciBus, requests: Requests) -> Self {
        Self {
            bus,
            address: 0,
            requests,
        }
    }

    /// The (slot, register) the address register selects, if enabled, on
    /// bus 0, function 0.
    fn target(&self) -> Option<(usize, usize)> {
        let a = self.address;
        let enabled = a & 0x8000_0000 != 0;
        let bus = (a >> 16) & 0xff;
        let slot = (a >> 11) & 0x1f;
        let func = (a >> 8) & 0x7;
        (enabled && bus == 0 && func == 0).then_some((slot as usize, (a & 0xfc) as usize))
    }
}

impl BusDevice for PciConfigPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0..=3 if data.len() == 4 && offset == 0 => {
                data.copy_from_slice(&self.address.to_le_bytes());
            }
            4..=7 => {
                let value = self
                    .target()
                    .and_then(|(slot, reg)| {
                        let dev = self.bus.device(slot)?;
                        let v = dev
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .config_read(reg);
                        Some(v)
                    })
                    .unwrap_or(0xffff_ffff);
                let bytes = value.to_le_bytes();
                let start = (offset - 4) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = bytes.get(start + i).copied().unwrap_or(0xff);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            // PIIX reset control: bit 2 (with bit 1 for a hard reset) resets.
            (1, 1) if data[0] & 0x04 != 0 => {
                self.requests.request(VmRequest::Reset);
            }
            (4..=7, _) => {
                if let Some((slot, reg)) = self.target()
                    && let Some(dev) = self.bus.device(slot)
                {
                    let at = reg + (offset - 4) as usize;
                    dev.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(at, data);
                }
            }
            _ => {}
        }
    }
}

/// The PCI MMIO window: forwards accesses to whichever BAR decodes them.
pub struct PciMmioWindow {
    bus: PciBus,
    base: u64,
}

impl PciMmioWindow {
    /// A window whose bus offsets start at guest address `base`.
    pub fn new(bus: PciBus, base: u64) -> Self {
        Self { bus, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.bus.mmio_target(self.base + offset) {
            Some((dev, bar, off)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, bar, off)) = self.bus.mmio_target(self.base + offset) {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .bar_write(bar, off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::testing::RecordingRequests;

    fn ports() -> (PciConfigPorts, PciBus, Arc<RecordingRequests>) {
        let bus = PciBus::new();
        let req = Arc::new(RecordingRequests::default());
        (PciConfigPorts::new(bus.clone(), req.clone()), bus, req)
    }

    fn cfg_read(p: &mut PciConfigPorts, slot: u32, reg: u32) -> u32 {
        p.write(0, &(0x8000_0000 | (slot << 11) | reg).to_le_bytes());
        let mut b = [0u8; 4];
        p.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_answers_at_slot_zero() {
        let (mut p, _, _) = ports();
        assert_eq!(cfg_read(&mut p, 0, 0), 0x1237_8086);
        assert_eq!(cfg_read(&mut p, 0, 0x2c), 0x1100_1af4);
        assert_eq!(cfg_read(&mut p, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(cfg_read(&mut p, 1, 0), 0xffff_ffff, "empty slot");
    }

    #[test]
    fn bar_sizing_reports_the_size_and_keeps_flags() {
        let mut c = ConfigSpace::new(0x1234, 0x1111, 0x03_80_00, 2);
        let bar = Bar {
            size: 16 << 20,
            kind: BarKind::Memory32 { prefetchable: true },
        };
        c.add_bar(0, bar, 0xc000_0000);
        c.write(0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_dword(0x10), 0xff00_0008);
        c.write(0x10, &0xd000_0000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), None, "memory decoding is off");
        c.write(0x04, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xd000_0000));
        assert_eq!(c.bar_hit(0xd000_0010), Some((0, 0x10)));
        assert_eq!(c.bar_hit(0xd100_0000), None);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = ConfigSpace::new(0x1234, 0x1111, 0x03_80_00, 2);
        c.write(0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.read_dword(0), 0x1111_1234);
        c.write(250, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.read_dword(300), 0xffff_ffff);
    }

    #[test]
    fn reset_control_requests_a_reset() {
        let (mut p, _, req) = ports();
        p.write(1, &[0x02]);
        assert!(req.seen.lock().unwrap().is_empty());
        p.write(1, &[0x06]);
        assert_eq!(*req.seen.lock().unwrap(), vec![VmRequest::Reset]);
    }

    #[test]
    fn disabled_or_other_bus_addresses_read_all_ones() {
        let (mut p, _, _) = ports();
        p.write(0, &0x0000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        p.read(4, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0xffff_ffff);
        assert_eq!(cfg_read(&mut p, 0, 0x0001_0000), 0xffff_ffff, "bus 1");
    }
}
