//! The virtio 1.x PCI transport ("modern" virtio-pci, virtio 1.2 §4.1).
//!
//! PCI identity: vendor 0x1af4, device 0x1040 + device type (0x1042 for
//! block), revision 1, subsystem 0x1af4:0x1100, as QEMU's modern-only
//! devices. Everything lives in BAR4, a 16 KiB 32-bit memory BAR:
//!
//! ```text
//! 0x0000  common configuration (56 bytes)
//! 0x1000  ISR status (1 byte; reading clears it and lowers INTx)
//! 0x2000  device-specific configuration
//! 0x3000  notifications: queue n at 0x3000 + 4 n (notify_off_multiplier 4)
//! 0x3800  MSI-X table (16 bytes per vector; queues + 1 vectors)
//! 0x3c00  MSI-X pending bit array
//! ```
//!
//! The capability list in configuration space starts at 0x40: common
//! (0x40), notify (0x50), ISR (0x64), device (0x74), the PCI
//! configuration access capability (0x84), through which the BAR can also
//! be reached from configuration space, and MSI-X (0x98) when the device
//! has an [`MsiSink`].

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use std::sync::Arc;

use super::{MsiSink, VIRTIO_F_VERSION_1, VirtioDevice, status};
use crate::devices::IrqLine;
use crate::devices::pci::{Bar, BarKind, ConfigSpace, PciDevice};

/// The virtio PCI vendor.
pub const VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are this plus the device type.
pub const DEVICE_ID_BASE: u16 = 0x1040;
/// Subsystem device ID, as QEMU's (PCI_SUBDEVICE_ID_QEMU).
pub const QEMU_SUBSYSTEM_ID: u16 = 0x1100;
/// The BAR holding every virtio structure.
pub const BAR_INDEX: usize = 4;
/// Its size.
pub const BAR_SIZE: u64 = 0x4000;
/// Offsets of the structures in the BAR.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Size of the common configuration structure.
pub const COMMON_SIZE: u64 = 0x38;
/// ISR status.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device-specific configuration.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Size reserved for device configuration.
pub const DEVICE_SIZE: u64 = 0x1000;
/// Notifications.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notify addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// End of the notification window.
pub const NOTIFY_END: u64 = 0x3800;
/// The MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x3800;
/// The MSI-X pending bit array.
pub const MSIX_PBA_OFFSET: u64 = 0x3c00;
/// Most MSI-X vectors (the table's room in the BAR).
pub const MSIX_MAX_VECTORS: usize = 64;

/// Where the capability list starts.
const CAP_START: usize = 0x40;
/// Offset of the PCI configuration access capability.
const PCI_CFG_CAP: usize = 0x84;
/// Offset of the MSI-X capability (present only with an MSI sink).
const MSIX_CAP: usize = 0x98;
/// End of the capability list.
const CAP_END: usize = 0xa4;
/// MSI-X message control: enable.
const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X message control: function mask.
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// virtio_pci_cap cfg_type values.
mod cap_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
}

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// "No MSI-X vector".
const NO_VECTOR: u16 = 0xffff;

/// One virtio device on PCI.
pub struct VirtioPci<D: VirtioDevice> {
    config: ConfigSpace,
    caps: [u8; 256],
    device: D,
    queues: Vec<Queue>,
    mem: GuestMemoryMmap,
    irq: IrqLine,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    isr: u8,
    config_generation: u8,
    msix: Option<Msix>,
    bar_moved: Option<BarMoved>,
}

/// Called with BAR4's new decoded address (`None`: not decoded) whenever
/// the guest moves it or turns memory decoding on or off, so that KVM
/// ioeventfds on the notify addresses can follow.
pub type BarMoved = Box<dyn FnMut(Option<u64>) + Send>;

/// MSI-X state: the table, pending bits, vector assignments.
struct Msix {
    sink: Arc<dyn MsiSink>,
    control: u16,
    /// (address low, address high, data, vector control) per vector.
    table: Vec<[u32; 4]>,
    pending: u64,
    config_vector: u16,
    queue_vectors: Vec<u16>,
}

impl Msix {
    fn enabled(&self) -> bool {
        self.control & MSIX_ENABLE != 0
    }

    /// Sends `vector`'s message, or marks it pending while masked.
    fn fire(&mut self, vector: u16) {
        let Some(entry) = self.table.get(usize::from(vector)) else {
            return;
        };
        if self.control & MSIX_FUNCTION_MASK != 0 || entry[3] & 1 != 0 {
            self.pending |= 1 << vector;
            return;
        }
        let address = u64::from(entry[0]) | (u64::from(entry[1]) << 32);
        self.sink.send(address, entry[2]);
    }

    /// Sends every pending message whose vector is no longer masked.
    fn flush_pending(&mut self) {
        if !self.enabled() || self.control & MSIX_FUNCTION_MASK != 0 {
            return;
        }
        for v in 0..self.table.len() {
            if self.pending & (1 << v) != 0 && self.table[v][3] & 1 == 0 {
                self.pending &= !(1 << v);
                self.fire(v as u16);
            }
        }
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if usize::from(v) < self.table.len() {
            v
        } else {
            NO_VECTOR
        }
    }
}

impl<D: VirtioDevice> VirtioPci<D> {
    /// Wraps `device` with its BAR at `bar_addr`, its INTA# pin driving
    /// `irq`, whose GSI is written to the Interrupt Line register.
    /// With `msi`, the device also offers MSI-X (queues + 1 vectors).
    pub fn new(
        device: D,
        mem: GuestMemoryMmap,
        bar_addr: u64,
        irq: IrqLine,
        gsi: u8,
        msi: Option<Arc<dyn MsiSink>>,
    ) -> Self {
        let ty = device.device_type();
        // Class: mass storage (other) for block, "other" otherwise.
        let class = if ty == 2 { 0x01_80_00 } else { 0xff_00_00 };
        let mut config = ConfigSpace::new(VENDOR_ID, DEVICE_ID_BASE + ty, class, 1);
        config.set_subsystem(VENDOR_ID, QEMU_SUBSYSTEM_ID);
        config.add_bar(
            BAR_INDEX,
            Bar {
                size: BAR_SIZE,
                kind: BarKind::Memory32 {
                    prefetchable: false,
                },
            },
            bar_addr,
        );
        config.write(0x3c, &[gsi]);
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| Queue::new(max).ok())
            .collect::<Vec<_>>();
        let vectors = (queues.len() + 1).min(MSIX_MAX_VECTORS);
        let msix = msi.map(|sink| Msix {
            sink,
            control: 0,
            table: vec![[0, 0, 0, 1]; vectors],
            pending: 0,
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; queues.len()],
        });
        let mut dev = Self {
            config,
            caps: [0; 256],
            device,
            queues,
            mem,
            irq,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            isr: 0,
            config_generation: 0,
            msix,
            bar_moved: None,
        };
        dev.build_caps();
        dev
    }

    fn build_caps(&mut self) {
        let notify_len = NOTIFY_MULTIPLIER * self.queues.len().max(1) as u32;
        let caps: [(usize, u8, u8, u64, u32); 5] = [
            (
                0x40,
                16,
                cap_type::COMMON,
                COMMON_OFFSET,
                COMMON_SIZE as u32,
            ),
            (0x50, 20, cap_type::NOTIFY, NOTIFY_OFFSET, notify_len),
            (0x64, 16, cap_type::ISR, ISR_OFFSET, 1),
            (
                0x74,
                16,
                cap_type::DEVICE,
                DEVICE_OFFSET,
                DEVICE_SIZE as u32,
            ),
            (PCI_CFG_CAP, 20, cap_type::PCI_CFG, 0, 0),
        ];
        for (i, &(at, len, ty, offset, length)) in caps.iter().enumerate() {
            let next = caps.get(i + 1).map_or(0, |c| c.0 as u8);
            self.caps[at] = 0x09; // vendor-specific
            self.caps[at + 1] = next;
            self.caps[at + 2] = len;
            self.caps[at + 3] = ty;
            self.caps[at + 4] = if ty == cap_type::PCI_CFG {
                0
            } else {
                BAR_INDEX as u8
            };
            self.caps[at + 8..at + 12].copy_from_slice(&(offset as u32).to_le_bytes());
            self.caps[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
        }
        self.caps[0x50 + 16..0x50 + 20].copy_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
        if let Some(msix) = &self.msix {
            self.caps[PCI_CFG_CAP + 1] = MSIX_CAP as u8;
            self.caps[MSIX_CAP] = 0x11;
            self.caps[MSIX_CAP + 1] = 0;
            let size = (msix.table.len() - 1) as u16;
            self.caps[MSIX_CAP + 2..MSIX_CAP + 4].copy_from_slice(&size.to_le_bytes());
            let table = MSIX_TABLE_OFFSET as u32 | BAR_INDEX as u32;
            let pba = MSIX_PBA_OFFSET as u32 | BAR_INDEX as u32;
            self.caps[MSIX_CAP + 4..MSIX_CAP + 8].copy_from_slice(&table.to_le_bytes());
            self.caps[MSIX_CAP + 8..MSIX_CAP + 12].copy_from_slice(&pba.to_le_bytes());
        }
    }

    /// Sets the hook called when BAR4 moves.
    pub fn set_bar_moved(&mut self, hook: BarMoved) {
        self.bar_moved = Some(hook);
    }

    /// Where BAR4 decodes now.
    pub fn bar_address(&self) -> Option<u64> {
        self.config.bar_address(BAR_INDEX)
    }

    /// The number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The driver notified queue `index` (through an ioeventfd rather than
    /// an MMIO exit).
    pub fn notify_queue(&mut self, index: usize) {
        self.notify(index);
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device status the driver set.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Turns memory decoding on, as firmware would, so the BAR is live for
    /// a firmware-less boot.
    pub fn enable_decoding(&mut self) {
        let cmd = self.config.command() | crate::devices::pci::COMMAND_MEMORY;
        self.config.write(0x04, &cmd.to_le_bytes());
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.isr = 0;
        self.irq.set_level(false);
        if let Some(msix) = &mut self.msix {
            msix.config_vector = NO_VECTOR;
            msix.queue_vectors.fill(NO_VECTOR);
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let offered = self.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                // Leave FEATURES_OK clear: the driver reads it back and fails.
                value &= !status::FEATURES_OK;
            }
        }
        if value & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0 {
            if value & status::FEATURES_OK == 0 {
                value &= !status::DRIVER_OK;
            } else {
                self.device.activate(self.driver_features);
            }
        }
        self.status = value;
    }

    /// The common configuration structure as bytes.
    fn common_bytes(&self) -> [u8; COMMON_SIZE as usize] {
        let mut b = [0u8; COMMON_SIZE as usize];
        let features = self.device_features();
        let feature_word = match self.device_feature_select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let driver_word = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        b[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&feature_word.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&driver_word.to_le_bytes());
        let config_vector = self.msix.as_ref().map_or(NO_VECTOR, |m| m.config_vector);
        b[0x10..0x12].copy_from_slice(&config_vector.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.status;
        b[0x15] = self.config_generation;
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        if let Some(q) = self.queues.get(usize::from(self.queue_select)) {
            b[0x18..0x1a].copy_from_slice(&q.size().to_le_bytes());
            let vector = self
                .msix
                .as_ref()
                .and_then(|m| m.queue_vectors.get(usize::from(self.queue_select)).copied())
                .unwrap_or(NO_VECTOR);
            b[0x1a..0x1c].copy_from_slice(&vector.to_le_bytes());
            b[0x1c..0x1e].copy_from_slice(&u16::from(q.ready()).to_le_bytes());
            b[0x1e..0x20].copy_from_slice(&self.queue_select.to_le_bytes());
            b[0x20..0x28].copy_from_slice(&q.desc_table().to_le_bytes());
            b[0x28..0x30].copy_from_slice(&q.avail_ring().to_le_bytes());
            b[0x30..0x38].copy_from_slice(&q.used_ring().to_le_bytes());
        } else {
            b[0x1a..0x1c].copy_from_slice(&NO_VECTOR.to_le_bytes());
        }
        b
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let value = match data.len() {
            1 => u64::from(data[0]),
            2 => u64::from(u16::from_le_bytes([data[0], data[1]])),
            4 => u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
            8 => u64::from_le_bytes(data.try_into().unwrap_or([0; 8])),
            _ => return,
        };
        let queue_live = self.status & status::DRIVER_OK != 0;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = value as u32,
            (0x08, 4) => self.driver_feature_select = value as u32,
            (0x0c, 4) if self.status & status::FEATURES_OK == 0 => {
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.driver_features &= !(0xffff_ffffu64 << shift);
                self.driver_features |= value << shift;
            }
            (0x10, 2) => {
                if let Some(m) = &mut self.msix {
                    m.config_vector = m.valid_vector(value as u16);
                }
            }
            (0x1a, 2) => {
                let select = usize::from(self.queue_select);
                if let Some(m) = &mut self.msix {
                    let v = m.valid_vector(value as u16);
                    if let Some(slot) = m.queue_vectors.get_mut(select) {
                        *slot = v;
                    }
                }
            }
            (0x14, 1) => self.set_status(value as u8),
            (0x16, 2) => self.queue_select = value as u16,
            (0x18, 2) => {
                if let Some(q) = self.selected_queue()
                    && !q.ready()
                {
                    q.set_size(value as u16);
                }
            }
            (0x1c, 2) => {
                let mem = self.mem.clone();
                if let Some(q) = self.selected_queue()
                    && value == 1
                    && !q.ready()
                {
                    q.set_ready(true);
                    if !q.is_valid(&mem) {
                        crate::ratelimit::guest_warn!(
                            "virtio: driver enabled a queue outside guest memory"
                        );
                        q.set_ready(false);
                    }
                }
            }
            (0x20..=0x37, 4) | (0x20 | 0x28 | 0x30, 8) => {
                let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
                    return;
                };
                if q.ready() || queue_live {
                    return;
                }
                let (low, high) = if data.len() == 8 {
                    (Some(value as u32), Some((value >> 32) as u32))
                } else if offset.is_multiple_of(8) {
                    (Some(value as u32), None)
                } else {
                    (None, Some(value as u32))
                };
                match offset & !7 {
                    0x20 => q.set_desc_table_address(low, high),
                    0x28 => q.set_avail_ring_address(low, high),
                    _ => q.set_used_ring_address(low, high),
                }
            }
            _ => {}
        }
    }

    /// The driver notified queue `index`.
    fn notify(&mut self, index: usize) {
        if self.status & status::DRIVER_OK == 0 {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        if !queue.ready() {
            return;
        }
        if self.device.process_queue(index, queue, &self.mem) {
            match &mut self.msix {
                Some(m) if m.enabled() => {
                    if let Some(&v) = m.queue_vectors.get(index)
                        && v != NO_VECTOR
                    {
                        m.fire(v);
                    }
                }
                _ => {
                    self.isr |= ISR_QUEUE;
                    self.irq.set_level(true);
                }
            }
        }
    }

    /// Reads the BAR.
    fn read_bar(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        match offset {
            o if o + len <= COMMON_OFFSET + COMMON_SIZE => {
                let bytes = self.common_bytes();
                let start = (o - COMMON_OFFSET) as usize;
                data.copy_from_slice(&bytes[start..start + data.len()]);
            }
            ISR_OFFSET if !data.is_empty() => {
                data[0] = self.isr;
                self.isr = 0;
                self.irq.set_level(false);
            }
            o if o >= DEVICE_OFFSET && o + len <= DEVICE_OFFSET + DEVICE_SIZE => {
                self.device.read_config(o - DEVICE_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) && matches!(len, 4 | 8) => {
                if let Some(m) = &self.msix {
                    let rel = o - MSIX_TABLE_OFFSET;
                    for (i, chunk) in data.chunks_mut(4).enumerate() {
                        let word = rel / 4 + i as u64;
                        let value = m
                            .table
                            .get((word / 4) as usize)
                            .map_or(0, |e| e[(word % 4) as usize]);
                        chunk.copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
            o if o >= MSIX_PBA_OFFSET && o + len <= MSIX_PBA_OFFSET + 8 => {
                if let Some(m) = &self.msix {
                    let bytes = m.pending.to_le_bytes();
                    let start = (o - MSIX_PBA_OFFSET) as usize;
                    data.copy_from_slice(&bytes[start..start + data.len()]);
                }
            }
            _ => {}
        }
    }

    /// Writes the BAR.
    fn write_bar(&mut self, offset: u64, data: &[u8]) {
        let len = data.len() as u64;
        match offset {
            o if o + len <= COMMON_OFFSET + COMMON_SIZE => {
                self.common_write(o - COMMON_OFFSET, data);
            }
            o if o >= DEVICE_OFFSET && o + len <= DEVICE_OFFSET + DEVICE_SIZE => {
                self.device.write_config(o - DEVICE_OFFSET, data);
                self.config_generation = self.config_generation.wrapping_add(1);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) && matches!(len, 4 | 8) => {
                if let Some(m) = &mut self.msix {
                    let rel = o - MSIX_TABLE_OFFSET;
                    for (i, chunk) in data.chunks(4).enumerate() {
                        let word = rel / 4 + i as u64;
                        let value = u32::from_le_bytes(chunk.try_into().unwrap_or([0; 4]));
                        if let Some(e) = m.table.get_mut((word / 4) as usize) {
                            e[(word % 4) as usize] = value;
                        }
                    }
                    m.flush_pending();
                }
            }
            o if (NOTIFY_OFFSET..NOTIFY_END).contains(&o) => {
                let index = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                self.notify(index as usize);
            }
            _ => {}
        }
    }

    /// Writes to the MSI-X capability: only the enable and function-mask
    /// bits of message control are writable.
    fn msix_config_write(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if offset + i == MSIX_CAP + 3 {
                self.caps[MSIX_CAP + 3] = (self.caps[MSIX_CAP + 3] & 0x3f) | (b & 0xc0);
            }
        }
        let control = u16::from_le_bytes([self.caps[MSIX_CAP + 2], self.caps[MSIX_CAP + 3]]);
        if let Some(m) = &mut self.msix {
            m.control = control;
            m.flush_pending();
            if m.enabled() {
                // INTx is off while MSI-X is enabled.
                self.irq.set_level(false);
            }
        }
    }

    /// The PCI configuration access capability's window (bar, offset, length).
    fn pci_cfg_window(&self) -> (u8, u64, usize) {
        let c = &self.caps[PCI_CFG_CAP..];
        let offset = u32::from_le_bytes([c[8], c[9], c[10], c[11]]);
        let length = u32::from_le_bytes([c[12], c[13], c[14], c[15]]);
        (c[4], u64::from(offset), length as usize)
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPci<D> {
    fn config_read(&mut self, offset: usize) -> u32 {
        let offset = offset & !3;
        match offset {
            // Status: capabilities list present.
            0x04 => self.config.read_dword(0x04) | (1 << 20),
            0x34 => CAP_START as u32,
            // Interrupt pin: INTA#.
            0x3c => (self.config.read_dword(0x3c) & !0xff00) | 0x0100,
            o if o == PCI_CFG_CAP + 16 => {
                let (bar, off, len) = self.pci_cfg_window();
                let mut data = [0u8; 4];
                if usize::from(bar) == BAR_INDEX && matches!(len, 1 | 2 | 4) {
                    self.read_bar(off, &mut data[..len]);
                }
                u32::from_le_bytes(data)
            }
            o if (CAP_START..CAP_END).contains(&o) => {
                u32::from_le_bytes(self.caps[o..o + 4].try_into().unwrap_or([0; 4]))
            }
            o => self.config.read_dword(o),
        }
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        if offset < CAP_START {
            let before = self.config.bar_address(BAR_INDEX);
            self.config.write(offset, data);
            let after = self.config.bar_address(BAR_INDEX);
            if before != after
                && let Some(hook) = &mut self.bar_moved
            {
                hook(after);
            }
            return;
        }
        // The PCI configuration access capability: bar, offset and length
        // are writable, and pci_cfg_data forwards to the BAR.
        if self.msix.is_some() && (MSIX_CAP..MSIX_CAP + 12).contains(&offset) {
            self.msix_config_write(offset, data);
            return;
        }
        let data_at = PCI_CFG_CAP + 16;
        if offset == data_at {
            let (bar, off, len) = self.pci_cfg_window();
            if usize::from(bar) == BAR_INDEX && len == data.len() {
                self.write_bar(off, data);
            }
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let at = offset + i;
            let writable =
                at == PCI_CFG_CAP + 4 || (PCI_CFG_CAP + 8..PCI_CFG_CAP + 16).contains(&at);
            if writable {
                self.caps[at] = b;
            }
        }
    }

    fn bar_hit(&self, addr: u64) -> Option<(usize, u64)> {
        self.config.bar_hit(addr)
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == BAR_INDEX {
            self.read_bar(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == BAR_INDEX {
            self.write_bar(offset, data);
        }
    }
}
