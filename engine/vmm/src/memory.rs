//! Guest RAM: where it sits, and how KVM learns about it.
//!
//! RAM fills the guest-physical space from 0 up to the PCI hole at
//! [`PCI_HOLE_START`]; what does not fit continues above 4 GiB.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MmapRegion,
};

use crate::layout::{
    ACPI_SIZE, ACPI_START, EBDA_START, HIGH_RAM_START, LOW_RAM_END, PCI_HOLE_END, PCI_HOLE_START,
};

/// The smallest guest: enough for the boot structures and a tiny kernel.
pub const MIN_MEMORY: u64 = 8 << 20;
/// The largest guest accepted: 1 TiB.
pub const MAX_MEMORY: u64 = 1 << 40;

/// e820 entry types (Linux `asm/e820/types.h`).
pub mod e820 {
    /// Usable RAM.
    pub const RAM: u32 = 1;
    /// Reserved.
    pub const RESERVED: u32 = 2;
    /// ACPI tables, reclaimable once read.
    pub const ACPI: u32 = 3;
}

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is out of range or not page aligned.
    #[error("guest memory of {0} bytes is outside 8 MiB … 1 TiB or not a multiple of 4 KiB")]
    Size(u64),
    /// mmap failed.
    #[error("cannot allocate {size} bytes of guest memory: {reason}")]
    Allocate {
        /// Bytes asked for.
        size: u64,
        /// What failed.
        reason: String,
    },
    /// KVM refused a memory slot.
    #[error("KVM refused memory slot {slot}: {source}")]
    Slot {
        /// The slot.
        slot: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The guest-physical ranges of `size` bytes of RAM.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    let low = size.min(PCI_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if size > low {
        ranges.push((GuestAddress(PCI_HOLE_END), size - low));
    }
    ranges
}

/// Allocates `size` bytes of guest RAM.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || !size.is_multiple_of(4096) {
        return Err(MemoryError::Size(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .into_iter()
        .map(|(a, l)| (a, l as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Allocate {
        size,
        reason: e.to_string(),
    })
}

/// Registers every RAM region with KVM as slots `0..n`; returns `n`.
pub fn register_ram(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<u32, MemoryError> {
    let mut slot = 0;
    for region in mem.iter() {
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, and the slot
        // does not overlap another (ranges come from `ram_ranges`). The VmFd
        // may outlive `mem` through Arcs held by devices, but no vCPU runs
        // then: `Vm::stop` joins every vCPU thread before the memory is
        // unmapped, and KVM only touches a slot's memory from KVM_RUN.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|source| MemoryError::Slot { slot, source })?;
        slot += 1;
    }
    Ok(slot)
}

/// An extra memory slot backed by its own anonymous mapping (device memory
/// such as VRAM), which can move when the guest reprograms a BAR.
#[derive(Debug)]
pub struct DeviceMemory {
    region: Arc<MmapRegion>,
    slot: u32,
    gpa: Option<u64>,
    log_dirty: bool,
}

impl DeviceMemory {
    /// Allocates `size` bytes for KVM slot `slot`.
    pub fn new(size: usize, slot: u32, log_dirty: bool) -> Result<Self, MemoryError> {
        let region = MmapRegion::new(size).map_err(|e| MemoryError::Allocate {
            size: size as u64,
            reason: e.to_string(),
        })?;
        Ok(Self {
            region: Arc::new(region),
            slot,
            gpa: None,
            log_dirty,
        })
    }

    /// The backing mapping.
    pub fn region(&self) -> &Arc<MmapRegion> {
        &self.region
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.region.size() as u64
    }

    /// Whether the mapping is empty (never: sizes are checked at creation).
    pub fn is_empty(&self) -> bool {
        self.region.size() == 0
    }

    /// The KVM slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Where the guest sees it, if mapped.
    pub fn gpa(&self) -> Option<u64> {
        self.gpa
    }

    /// Maps the memory at `gpa` (or unmaps it with `None`), moving it if it
    /// was mapped elsewhere.
    pub fn map(&mut self, vm: &VmFd, gpa: Option<u64>) -> Result<(), MemoryError> {
        if self.gpa == gpa {
            return Ok(());
        }
        let set = |guest_phys_addr: u64, memory_size: u64| {
            let r = kvm_userspace_memory_region {
                slot: self.slot,
                flags: if self.log_dirty {
                    kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
                guest_phys_addr,
                memory_size,
                userspace_addr: self.region.as_ptr() as u64,
            };
            // SAFETY: the mapping is owned by `self.region` and outlives
            // every KVM_RUN of this VM (vCPUs are joined before a device is
            // dropped); a size of 0 deletes the slot.
            unsafe { vm.set_user_memory_region(r) }.map_err(|source| MemoryError::Slot {
                slot: self.slot,
                source,
            })
        };
        if let Some(old) = self.gpa.take() {
            set(old, 0)?;
        }
        if let Some(new) = gpa {
            set(new, self.len())?;
            self.gpa = Some(new);
        }
        Ok(())
    }
}

/// The e820 map for `size` bytes of RAM: low RAM, the EBDA, the BIOS area
/// with the ACPI tables, RAM from 1 MiB, and RAM above 4 GiB.
pub fn e820_map(size: u64) -> Vec<(u64, u64, u32)> {
    let low_end = size.min(PCI_HOLE_START);
    let mut map = vec![
        (0, EBDA_START, e820::RAM),
        (EBDA_START, LOW_RAM_END - EBDA_START, e820::RESERVED),
        (ACPI_START, ACPI_SIZE, e820::ACPI),
        (
            ACPI_START + ACPI_SIZE,
            HIGH_RAM_START - (ACPI_START + ACPI_SIZE),
            e820::RESERVED,
        ),
        (HIGH_RAM_START, low_end - HIGH_RAM_START, e820::RAM),
    ];
    if size > low_end {
        map.push((PCI_HOLE_END, size - low_end, e820::RAM));
    }
    map.retain(|&(_, len, _)| len > 0);
    map
}

/// Whether `[addr, addr + len)` lies inside guest RAM.
pub fn in_ram(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    len == 0
        || addr.checked_add(len - 1).is_some_and(|last| {
            mem.address_in_range(GuestAddress(addr))
                && mem.address_in_range(GuestAddress(last))
                && mem.find_region(GuestAddress(addr)).map(|r| r.start_addr())
                    == mem.find_region(GuestAddress(last)).map(|r| r.start_addr())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_fit_below_the_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guests_continue_above_4g() {
        let r = ram_ranges(5 << 30);
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), PCI_HOLE_START),
                (GuestAddress(PCI_HOLE_END), (5 << 30) - PCI_HOLE_START)
            ]
        );
    }

    #[test]
    fn e820_counts_all_ram_and_reserves_bios_areas() {
        for size in [64u64 << 20, 5 << 30] {
            let ram: u64 = e820_map(size)
                .iter()
                .filter(|e| e.2 == e820::RAM)
                .map(|e| e.1)
                .sum();
            // Everything but the EBDA and the 640 KiB..1 MiB hole.
            assert_eq!(ram, size - (HIGH_RAM_START - EBDA_START));
        }
        let map = e820_map(64 << 20);
        assert!(map.contains(&(ACPI_START, ACPI_SIZE, e820::ACPI)));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(
            create_guest_memory(1 << 20),
            Err(MemoryError::Size(_))
        ));
        assert!(matches!(
            create_guest_memory((64 << 20) + 1),
            Err(MemoryError::Size(_))
        ));
    }

    #[test]
    fn range_checks_stay_inside_one_region() {
        let mem = create_guest_memory(16 << 20).unwrap();
        assert!(in_ram(&mem, 0, 16 << 20));
        assert!(!in_ram(&mem, (16 << 20) - 4, 8));
        assert!(!in_ram(&mem, u64::MAX, 2));
    }
}
