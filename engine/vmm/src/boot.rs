//! Direct kernel boot: loads a kernel (ELF vmlinux, PVH ELF or bzImage),
//! its initrd and command line, and writes what the kernel reads at entry
//! (Linux's zero page with the e820 map and screen_info, or PVH's
//! hvm_start_info with its memory map).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, Cmdline, KernelLoader, load_cmdline};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    CMDLINE, CMDLINE_MAX, HIGH_RAM_START, PCI_HOLE_START, PVH_MEMMAP, PVH_MEMMAP_MAX,
    PVH_START_INFO, ZERO_PAGE,
};
use crate::memory::e820_map;

/// What to boot.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    /// The kernel image.
    pub kernel: PathBuf,
    /// An initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
}

/// The framebuffer a direct boot describes in screen_info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFramebuffer {
    /// Guest-physical base (below 4 GiB).
    pub base: u32,
    /// VRAM size in bytes.
    pub vram_size: u32,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Bytes per line.
    pub stride: u16,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with `%rsi` = the zero page (Linux boot protocol).
    Linux64 {
        /// Entry point.
        entry: u64,
    },
    /// 32-bit protected mode with `%ebx` = hvm_start_info (PVH).
    Pvh {
        /// Entry point.
        entry: u64,
    },
}

/// Why a kernel could not be booted. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel could not be opened or read.
    #[error("cannot read kernel '{}': {source}", path.display())]
    KernelIo {
        /// The kernel file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel is neither an ELF nor a bzImage, or loading it failed.
    #[error("kernel '{}' cannot be loaded: {reason}", path.display())]
    KernelFormat {
        /// The kernel file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The initrd could not be read.
    #[error("cannot read initrd '{}': {source}", path.display())]
    InitrdIo {
        /// The initrd.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The initrd does not fit in guest memory above the kernel.
    #[error("initrd '{}' ({size} bytes) does not fit in guest memory", path.display())]
    InitrdTooLarge {
        /// The initrd.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The command line is too long or has a NUL.
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
    /// Writing boot structures failed.
    #[error("cannot write boot structures: {0}")]
    Memory(String),
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Loads the kernel, initrd and command line into `mem` and writes the boot
/// structures. Returns how to enter it.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    config: &KernelConfig,
    rsdp: u64,
    fb: Option<BootFramebuffer>,
) -> Result<EntryMode, BootError> {
    let path = &config.kernel;
    let io_err = |source| BootError::KernelIo {
        path: path.clone(),
        source,
    };
    let fmt_err = |reason: String| BootError::KernelFormat {
        path: path.clone(),
        reason,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;

    let (entry, kernel_end, setup_header) = if n == 4 && &magic == ELF_MAGIC {
        let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIGH_RAM_START)))
            .map_err(|e| fmt_err(format!("invalid ELF: {e}")))?;
        let entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => EntryMode::Pvh {
                entry: addr.raw_value(),
            },
            _ => EntryMode::Linux64 {
                entry: r.kernel_load.raw_value(),
            },
        };
        (entry, r.kernel_end, None)
    } else {
        let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIGH_RAM_START)))
            .map_err(|e| fmt_err(format!("neither an ELF nor a bzImage ({e})")))?;
        // The 64-bit entry point (startup_64) is 0x200 past the
        // protected-mode code.
        let entry = EntryMode::Linux64 {
            entry: r.kernel_load.raw_value() + 0x200,
        };
        (entry, r.kernel_end, r.setup_header)
    };

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !config.cmdline.is_empty() {
        cmdline
            .insert_str(&config.cmdline)
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE), &cmdline)
        .map_err(|e| BootError::Memory(format!("command line: {e}")))?;
    let cmdline_len = config.cmdline.len() as u32 + 1;

    let initrd = match &config.initrd {
        Some(p) => Some(load_initrd(mem, mem_size, kernel_end, p)?),
        None => None,
    };

    match entry {
        EntryMode::Linux64 { .. } => {
            let mut params = boot_params::default();
            if let Some(hdr) = setup_header {
                params.hdr = hdr;
            }
            params.hdr.type_of_loader = 0xff;
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = 0x5372_6448; // "HdrS"
            params.hdr.cmd_line_ptr = CMDLINE as u32;
            params.hdr.cmdline_size = cmdline_len;
            params.hdr.kernel_alignment = 0x0100_0000;
            if let Some((addr, size)) = initrd {
                params.hdr.ramdisk_image = addr as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            params.acpi_rsdp_addr = rsdp;
            let map = e820_map(mem_size);
            for (i, &(addr, size, kind)) in map.iter().enumerate() {
                params.e820_table[i] = boot_e820_entry {
                    addr,
                    size,
                    r#type: kind,
                };
            }
            params.e820_entries = map.len() as u8;
            if let Some(fb) = fb {
                fill_screen_info(&mut params, fb);
            }
            LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
                &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
                mem,
            )
            .map_err(|e| BootError::Memory(format!("zero page: {e}")))?;
        }
        EntryMode::Pvh { .. } => {
            let memmap: Vec<hvm_memmap_table_entry> = e820_map(mem_size)
                .into_iter()
                .take(PVH_MEMMAP_MAX)
                .map(|(addr, size, kind)| hvm_memmap_table_entry {
                    addr,
                    size,
                    type_: kind,
                    reserved: 0,
                })
                .collect();
            let mut start = hvm_start_info {
                magic: XEN_HVM_START_MAGIC_VALUE,
                version: 1,
                cmdline_paddr: CMDLINE,
                rsdp_paddr: rsdp,
                memmap_paddr: PVH_MEMMAP,
                memmap_entries: memmap.len() as u32,
                ..Default::default()
            };
            let module;
            if let Some((addr, size)) = initrd {
                module = hvm_modlist_entry {
                    paddr: addr,
                    size,
                    ..Default::default()
                };
                // The module list sits after the memory map.
                let modlist = PVH_MEMMAP + (memmap.len() * 24) as u64;
                start.nr_modules = 1;
                start.modlist_paddr = modlist;
                mem.write_obj(module, GuestAddress(modlist))
                    .map_err(|e| BootError::Memory(format!("PVH module list: {e}")))?;
            }
            let mut params = BootParams::new(&start, GuestAddress(PVH_START_INFO));
            params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
            PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
                .map_err(|e| BootError::Memory(format!("PVH start info: {e}")))?;
        }
    }
    Ok(entry)
}

/// Describes the framebuffer as a VESA linear framebuffer (vesafb, type
/// 0x23) at 32 bpp, xRGB.
fn fill_screen_info(params: &mut boot_params, fb: BootFramebuffer) {
    let si = &mut params.screen_info;
    si.orig_video_isVGA = 0x23;
    si.lfb_width = fb.width;
    si.lfb_height = fb.height;
    si.lfb_depth = 32;
    si.lfb_base = fb.base;
    // vesafb counts lfb_size in 64 KiB units.
    si.lfb_size = fb.vram_size / (64 << 10);
    si.lfb_linelength = fb.stride;
    si.red_size = 8;
    si.red_pos = 16;
    si.green_size = 8;
    si.green_pos = 8;
    si.blue_size = 8;
    si.blue_pos = 0;
    si.rsvd_size = 8;
    si.rsvd_pos = 24;
    si.pages = 1;
}

/// Puts the initrd at the top of low RAM, page aligned, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<(u64, u64), BootError> {
    let io_err = |source| BootError::InitrdIo {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let top = mem_size.min(PCI_HOLE_START);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end.max(HIGH_RAM_START))
        .ok_or_else(|| BootError::InitrdTooLarge {
            path: path.to_owned(),
            size,
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| BootError::InitrdIo {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    /// Loads `kernel` into fresh memory and returns the error text.
    fn load_error(kernel: &Path) -> String {
        let mem = create_guest_memory(16 << 20).unwrap();
        let cfg = KernelConfig {
            kernel: kernel.to_owned(),
            ..Default::default()
        };
        load_kernel(&mem, 16 << 20, &cfg, 0, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn missing_kernel_names_the_file() {
        let err = load_error(Path::new("/nonexistent/vmlinuz"));
        assert!(
            err.starts_with("cannot read kernel '/nonexistent/vmlinuz'"),
            "{err}"
        );
    }

    #[test]
    fn garbage_kernel_is_rejected_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = load_error(&path);
        assert!(
            err.contains("junk' cannot be loaded: neither an ELF nor a bzImage"),
            "{err}"
        );
    }

    #[test]
    fn truncated_elf_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.elf");
        std::fs::write(&path, b"\x7fELF\x02\x01\x01").unwrap();
        let err = load_error(&path);
        assert!(err.contains("invalid ELF"), "{err}");
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let (addr, size) = load_initrd(&mem, 16 << 20, 2 << 20, &path).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 16 << 20 && addr >= 2 << 20);
        let b: u8 = mem.read_obj(GuestAddress(addr + 9_999)).unwrap();
        assert_eq!(b, 7);
        let err = load_initrd(&mem, 16 << 20, 15 << 20, &path);
        assert!(err.is_ok());
        let err = load_initrd(&mem, 16 << 20, 16 << 20, &path).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }));
    }
}
