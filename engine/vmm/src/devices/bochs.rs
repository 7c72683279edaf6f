//! bochs-display (PCI 1234:1111), the framebuffer device, as QEMU's
//! `hw/display/bochs-display.c` defines it: VRAM in BAR0 (a KVM memory slot
//! with dirty logging, so guest drawing never exits), and BAR2 with the
//! DISPI registers at 0x500 and the QEXT registers at 0x600.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vm_memory::VolatileMemory;

use crate::devices::pci::{Bar, BarKind, ConfigSpace, PciDevice};
use crate::memory::{DeviceMemory, MemoryError};

/// DISPI register indices.
pub mod dispi {
    /// ID (reads 0xB0C5).
    pub const ID: usize = 0;
    /// Horizontal resolution.
    pub const XRES: usize = 1;
    /// Vertical resolution.
    pub const YRES: usize = 2;
    /// Bits per pixel.
    pub const BPP: usize = 3;
    /// Enable flags.
    pub const ENABLE: usize = 4;
    /// Bank (unused with a linear framebuffer).
    pub const BANK: usize = 5;
    /// Virtual width (the stride in pixels).
    pub const VIRT_WIDTH: usize = 6;
    /// Virtual height.
    pub const VIRT_HEIGHT: usize = 7;
    /// Horizontal panning offset.
    pub const X_OFFSET: usize = 8;
    /// Vertical panning offset.
    pub const Y_OFFSET: usize = 9;
    /// VRAM size in 64 KiB units (read-only).
    pub const VIDEO_MEMORY_64K: usize = 10;
    /// Number of registers.
    pub const COUNT: usize = 11;
    /// ID value: VBE_DISPI_ID5.
    pub const ID5: u16 = 0xb0c5;
    /// ENABLE: display on.
    pub const ENABLED: u16 = 0x01;
    /// ENABLE: linear framebuffer.
    pub const LFB_ENABLED: u16 = 0x40;
}

/// Offset of the DISPI registers in BAR2.
pub const DISPI_OFFSET: u64 = 0x500;
/// Offset of the QEXT registers in BAR2.
pub const QEXT_OFFSET: u64 = 0x600;
/// Size of BAR2.
pub const MMIO_BAR_SIZE: u64 = 0x1000;
/// Default VRAM: 16 MiB, as QEMU's bochs-display.
pub const DEFAULT_VRAM: u64 = 16 << 20;

/// The scan-out mode the guest programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mode {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per pixel (16 or 32).
    pub bpp: u32,
    /// Bytes per line.
    pub stride: u32,
    /// Byte offset of the first visible pixel in VRAM.
    pub offset: u64,
}

impl Mode {
    /// Bytes the visible screen spans in VRAM.
    pub fn size(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height)
    }
}

/// The bochs-display device.
pub struct BochsDisplay {
    config: ConfigSpace,
    vram: DeviceMemory,
    vm: Arc<VmFd>,
    regs: [u16; dispi::COUNT],
    big_endian: bool,
    /// The BAR0 target that last failed to map, to warn only once.
    failed_map: Option<Option<u64>>,
}

impl BochsDisplay {
    /// A device with `vram_size` bytes of VRAM (a power of two, 4..=256 MiB)
    /// in KVM slot `slot`, BAR0 at `vram_addr` and BAR2 at `mmio_addr`.
    pub fn new(
        vm: Arc<VmFd>,
        slot: u32,
        vram_size: u64,
        vram_addr: u64,
        mmio_addr: u64,
    ) -> Result<Self, MemoryError> {
        let vram = DeviceMemory::new(vram_size as usize, slot, true)?;
        let mut config = ConfigSpace::new(0x1234, 0x1111, 0x03_80_00, 0x02);
        config.set_subsystem(0x1af4, 0x1100);
        config.add_bar(
            0,
            Bar {
                size: vram_size,
                kind: BarKind::Memory32 { prefetchable: true },
            },
            vram_addr,
        );
        config.add_bar(
            2,
            Bar {
                size: MMIO_BAR_SIZE,
                kind: BarKind::Memory32 {
                    prefetchable: false,
                },
            },
            mmio_addr,
        );
        let mut dev = Self {
            config,
            vram,
            vm,
            regs: [0; dispi::COUNT],
            big_endian: false,
            failed_map: None,
        };
        dev.regs[dispi::ID] = dispi::ID5;
        Ok(dev)
    }

    /// Turns memory decoding on, as firmware would, so the BARs are live
    /// for a firmware-less boot.
    pub fn enable_decoding(&mut self) -> Result<(), MemoryError> {
        let cmd = self.config.command() | crate::devices::pci::COMMAND_MEMORY;
        self.config.write(0x04, &cmd.to_le_bytes());
        self.remap()
    }

    /// Programs a mode, as the VGA BIOS would before a direct kernel boot.
    pub fn set_mode(&mut self, width: u16, height: u16, bpp: u16) {
        self.regs[dispi::ENABLE] = 0;
        self.regs[dispi::XRES] = width;
        self.regs[dispi::YRES] = height;
        self.regs[dispi::BPP] = bpp;
        self.regs[dispi::VIRT_WIDTH] = width;
        self.regs[dispi::VIRT_HEIGHT] = height;
        self.regs[dispi::X_OFFSET] = 0;
        self.regs[dispi::Y_OFFSET] = 0;
        self.regs[dispi::ENABLE] = dispi::ENABLED | dispi::LFB_ENABLED;
    }

    /// VRAM size in bytes.
    pub fn vram_size(&self) -> u64 {
        self.vram.len()
    }

    /// Where BAR0 (VRAM) is mapped in the guest.
    pub fn vram_address(&self) -> Option<u64> {
        self.vram.gpa()
    }

    /// The current mode, or `None` when the display is off or the registers
    /// describe something QEMU would also refuse to show.
    pub fn mode(&self) -> Option<Mode> {
        let r = &self.regs;
        if r[dispi::ENABLE] & dispi::ENABLED == 0 {
            return None;
        }
        let bytepp: u32 = match r[dispi::BPP] {
            16 => 2,
            32 => 4,
            _ => return None,
        };
        let width = u32::from(r[dispi::XRES]);
        let height = u32::from(r[dispi::YRES]);
        let virt_width = u32::from(r[dispi::VIRT_WIDTH]).max(width);
        let stride = virt_width * bytepp;
        let offset = u64::from(r[dispi::X_OFFSET]) * u64::from(bytepp)
            + u64::from(r[dispi::Y_OFFSET]) * u64::from(stride);
        let mode = Mode {
            width,
            height,
            bpp: bytepp * 8,
            stride,
            offset,
        };
        if width < 64 || height < 64 || offset + mode.size() > self.vram.len() {
            return None;
        }
        Some(mode)
    }

    /// Copies `len` bytes of VRAM from `offset`; `None` if out of range.
    pub fn read_vram(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let end = offset.checked_add(len as u64)?;
        if end > self.vram.len() {
            return None;
        }
        let slice = self.vram.region().get_slice(offset as usize, len).ok()?;
        let mut buf = vec![0u8; len];
        slice.copy_to(&mut buf[..]);
        Some(buf)
    }

    /// The pages of VRAM the guest wrote since the last call (KVM's dirty
    /// log, which this call clears), as page indices.
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, kvm_ioctls::Error> {
        if self.vram.gpa().is_none() {
            return Ok(Vec::new());
        }
        let bitmap = self
            .vm
            .get_dirty_log(self.vram.slot(), self.vram.len() as usize)?;
        let mut pages = Vec::new();
        for (w, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                pages.push(w as u64 * 64 + u64::from(b));
                bits &= bits - 1;
            }
        }
        Ok(pages)
    }

    /// Whether the guest asked for big-endian pixels through QEXT.
    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    fn remap(&mut self) -> Result<(), MemoryError> {
        let addr = self.config.bar_address(0);
        self.vram.map(&self.vm, addr)
    }

    fn mmio_read(&self, offset: u64) -> u16 {
        match offset {
            DISPI_OFFSET..QEXT_OFFSET => {
                let index = ((offset - DISPI_OFFSET) / 2) as usize;
                match index {
                    dispi::ID => dispi::ID5,
                    dispi::VIDEO_MEMORY_64K => (self.vram.len() / (64 << 10)) as u16,
                    i if i < dispi::COUNT => self.regs[i],
                    _ => 0xffff,
                }
            }
            _ => 0,
        }
    }
}

impl PciDevice for BochsDisplay {
    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        // BAR0 or the command register may have moved or hidden VRAM.
        let target = self.config.bar_address(0);
        if let Err(e) = self.remap() {
            // Warn once per target: a guest looping on a bad BAR must not
            // flood the log.
            if self.failed_map != Some(target) {
                tracing::warn!("bochs-display: cannot map VRAM at {target:x?}: {e}");
                self.failed_map = Some(target);
            }
        } else {
            self.failed_map = None;
        }
    }

    fn bar_hit(&self, addr: u64) -> Option<(usize, u64)> {
        // VRAM is a memory slot: only BAR2 reaches the device as MMIO.
        self.config.bar_hit(addr).filter(|&(bar, _)| bar == 2)
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 2 {
            return;
        }
        match offset {
            DISPI_OFFSET..QEXT_OFFSET => {
                let v = self.mmio_read(offset & !1).to_le_bytes();
                for (i, b) in data.iter_mut().enumerate().take(2) {
                    *b = v[((offset & 1) as usize + i) % 2];
                }
            }
            QEXT_OFFSET.. => {
                let v: u32 = match offset - QEXT_OFFSET {
                    0 => 8, // size of the QEXT region
                    4 => {
                        if self.big_endian {
                            0xbebe_bebe
                        } else {
                            0x1e1e_1e1e
                        }
                    }
                    _ => 0,
                };
                let bytes = v.to_le_bytes();
                for (b, v) in data.iter_mut().zip(bytes) {
                    *b = v;
                }
            }
            // EDID (0x000..0x400) is not provided: reads are zeros, which the
            // Linux bochs driver treats as "no EDID".
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 2 {
            return;
        }
        match offset {
            DISPI_OFFSET..QEXT_OFFSET if offset.is_multiple_of(2) && data.len() >= 2 => {
                let index = ((offset - DISPI_OFFSET) / 2) as usize;
                let value = u16::from_le_bytes([data[0], data[1]]);
                if index < dispi::COUNT && index != dispi::ID && index != dispi::VIDEO_MEMORY_64K {
                    self.regs[index] = value;
                }
            }
            o if o == QEXT_OFFSET + 4 && data.len() == 4 => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                match v {
                    0xbebe_bebe => self.big_endian = true,
                    0x1e1e_1e1e => self.big_endian = false,
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use kvm_ioctls::Kvm;

    use super::*;

    fn device() -> Option<BochsDisplay> {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: /dev/kvm is absent on this machine");
            return None;
        }
        let vm = Arc::new(Kvm::new().unwrap().create_vm().unwrap());
        Some(BochsDisplay::new(vm, 5, DEFAULT_VRAM, 0xc000_0000, 0xc100_0000).unwrap())
    }

    fn dispi_write(d: &mut BochsDisplay, index: usize, v: u16) {
        d.bar_write(2, DISPI_OFFSET + index as u64 * 2, &v.to_le_bytes());
    }

    fn dispi_read(d: &mut BochsDisplay, index: usize) -> u16 {
        let mut b = [0u8; 2];
        d.bar_read(2, DISPI_OFFSET + index as u64 * 2, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn identity_and_vram_size_as_qemu_reports_them() {
        let Some(mut d) = device() else { return };
        assert_eq!(d.config_read(0), 0x1111_1234);
        assert_eq!(d.config_read(8) >> 8, 0x03_80_00);
        assert_eq!(dispi_read(&mut d, dispi::ID), 0xb0c5);
        assert_eq!(dispi_read(&mut d, dispi::VIDEO_MEMORY_64K), 256);
        let mut q = [0u8; 4];
        d.bar_read(2, QEXT_OFFSET + 4, &mut q);
        assert_eq!(u32::from_le_bytes(q), 0x1e1e_1e1e);
    }

    #[test]
    fn mode_follows_the_dispi_registers() {
        let Some(mut d) = device() else { return };
        assert_eq!(d.mode(), None);
        dispi_write(&mut d, dispi::XRES, 640);
        dispi_write(&mut d, dispi::YRES, 480);
        dispi_write(&mut d, dispi::BPP, 32);
        dispi_write(&mut d, dispi::ENABLE, dispi::ENABLED | dispi::LFB_ENABLED);
        assert_eq!(
            d.mode(),
            Some(Mode {
                width: 640,
                height: 480,
                bpp: 32,
                stride: 2560,
                offset: 0
            })
        );
        // A mode larger than VRAM is refused.
        dispi_write(&mut d, dispi::XRES, 8000);
        dispi_write(&mut d, dispi::YRES, 8000);
        assert_eq!(d.mode(), None);
    }

    #[test]
    fn bar_sizing_reports_vram_size() {
        let Some(mut d) = device() else { return };
        d.config_write(0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(d.config_read(0x10), 0xff00_0008);
        d.config_write(0x18, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(d.config_read(0x18), 0xffff_f000);
    }

    #[test]
    fn hostile_accesses_are_harmless() {
        let Some(mut d) = device() else { return };
        d.bar_write(2, 0x501, &[1]);
        d.bar_write(2, DISPI_OFFSET, &[1]);
        d.bar_write(0, 0, &[1, 2]);
        d.bar_read(2, u64::MAX, &mut [0u8; 8]);
        assert_eq!(d.read_vram(u64::MAX, 2), None);
        assert_eq!(d.read_vram(DEFAULT_VRAM - 1, 2), None);
        assert_eq!(d.read_vram(0, 4), Some(vec![0; 4]));
    }
}
