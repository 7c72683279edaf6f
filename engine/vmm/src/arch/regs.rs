//! vCPU state for direct boots, and the boot structures it points at.
//!
//! Two entry modes:
//!
//! - [`BootMode::Long64`], the Linux 64-bit boot protocol: paging on with an
//!   identity map of the low 4 GiB ([`write_identity_page_tables`]),
//!   `__BOOT_CS` = 0x10 (64-bit code), `__BOOT_DS` = 0x18, `%rsi` = the zero
//!   page ([`linux64_regs`]).
//! - [`BootMode::Protected32`], the PVH entry: 32-bit flat protected mode
//!   without paging, `%ebx` = `hvm_start_info` ([`pvh_regs`]).
//!
//! # The boot GDT
//!
//! The layout leaves 32 bytes at [`BOOT_GDT`], before [`BOOT_IDT`]: four
//! descriptors. Linux fixes the code and data selectors at 0x10 and 0x18, so
//! the TSS takes the otherwise unused slot 0x08:
//!
//! | selector | descriptor |
//! |---|---|
//! | 0x00 | null |
//! | 0x08 | TSS (busy, base 0, limit 0x67): TR |
//! | 0x10 | code: 64-bit (`L`) in long mode, 32-bit (`D`) for PVH |
//! | 0x18 | data: flat 4 GiB read/write |
//!
//! The segment registers' hidden parts are derived from these very
//! descriptors ([`segment_from_descriptor`]), so a guest reloading a
//! selector gets what it already had. A long-mode TSS descriptor is 16
//! bytes and would overlap the code descriptor, but nothing executes `ltr`
//! on this GDT: kernels load their own GDT and TSS first.
//!
//! # The boot page tables
//!
//! PML4 at [`BOOT_PML4`] (0x9000), PDPT at 0xa000, four page directories at
//! 0xb000..0xf000, mapping 0–4 GiB with 2 MiB pages. They sit between the
//! boot stack (below 0x8ff0) and the command line at [`CMDLINE`] (0x20000);
//! the assertions below keep it so.
//!
//! # Call order per vCPU (the VMM's part)
//!
//! `KVM_SET_CPUID2` (see [`super::cpuid`]), then `KVM_SET_MSRS` with
//! [`boot_msrs`], `KVM_SET_REGS`, `KVM_SET_SREGS` from `KVM_GET_SREGS`
//! through [`long_mode_sregs`] or [`protected_mode_sregs`], `KVM_SET_FPU`
//! with [`boot_fpu`], and [`setup_lapic_lint`] (needs the in-kernel
//! irqchip). The memory writers run once per VM.

use kvm_bindings::{
    kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::layout::{
    BOOT_GDT, BOOT_IDT, BOOT_PML4, BOOT_STACK, CMDLINE, PVH_START_INFO, ZERO_PAGE,
};

/// Selector of the boot TSS (TR).
pub const BOOT_TSS_SELECTOR: u16 = 0x08;
/// Selector of the boot code segment (Linux's `__BOOT_CS`).
pub const BOOT_CODE_SELECTOR: u16 = 0x10;
/// Selector of the boot data segment (Linux's `__BOOT_DS`).
pub const BOOT_DATA_SELECTOR: u16 = 0x18;

/// Descriptors in the boot GDT.
const GDT_ENTRIES: usize = 4;
/// Limit of the boot GDT (bytes − 1).
const GDT_LIMIT: u16 = (GDT_ENTRIES * 8 - 1) as u16;
/// The boot IDT has one (not present) gate: any exception shuts the VM down.
const IDT_LIMIT: u16 = 8 - 1;
/// Limit of a TSS without an I/O bitmap.
const TSS_LIMIT: u32 = 0x67;

/// Descriptor flags (access byte in bits 7:0; G, D/B, L, AVL in 15:12).
const FLAGS_CODE64: u16 = 0xa09b; // G, L, present, code execute/read accessed
const FLAGS_CODE32: u16 = 0xc09b; // G, D, present, code execute/read accessed
const FLAGS_DATA: u16 = 0xc093; // G, B, present, data read/write accessed
const FLAGS_TSS: u16 = 0x008b; // present, system, busy 32/64-bit TSS

/// Page directory pointer table of the identity map.
const BOOT_PDPT: u64 = BOOT_PML4 + 0x1000;
/// First of the four page directories.
const BOOT_PD: u64 = BOOT_PML4 + 0x2000;
/// Page directories: one per GiB.
const BOOT_PDS: u64 = 4;
/// End of the boot page tables.
const BOOT_PAGE_TABLES_END: u64 = BOOT_PD + BOOT_PDS * 0x1000;

const _: () = {
    assert!(BOOT_GDT + (GDT_ENTRIES as u64) * 8 <= BOOT_IDT);
    assert!(BOOT_IDT + (IDT_LIMIT as u64) < PVH_START_INFO);
    assert!(ZERO_PAGE + 0x1000 <= BOOT_STACK);
    assert!(BOOT_STACK <= BOOT_PML4);
    assert!(BOOT_PML4.is_multiple_of(0x1000));
    assert!(BOOT_PAGE_TABLES_END <= CMDLINE);
};

/// Page-table entry bits.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;

/// Control register and EFER bits.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is always set; IF and everything else clear.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// MSR indices (kvm-bindings has none).
pub mod msr {
    /// Time-stamp counter.
    pub const IA32_TSC: u32 = 0x10;
    /// SYSENTER code segment.
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    /// SYSENTER stack pointer.
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    /// SYSENTER entry point.
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    /// Miscellaneous features; bit 0 enables fast string operations.
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    /// Default memory type and MTRR enable.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// SYSCALL segments.
    pub const STAR: u32 = 0xc000_0081;
    /// 64-bit SYSCALL entry point.
    pub const LSTAR: u32 = 0xc000_0082;
    /// Compatibility-mode SYSCALL entry point.
    pub const CSTAR: u32 = 0xc000_0083;
    /// RFLAGS mask on SYSCALL.
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    /// GS base swapped in by SWAPGS.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// IA32_MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6).
const MTRR_ENABLED_WRITE_BACK: u64 = (1 << 11) | 6;

/// Local APIC registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_DELIVERY_MODE_MASK: u32 = 0x700;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// The CPU mode a direct boot enters the guest in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// 64-bit long mode with the identity map (Linux 64-bit boot protocol).
    Long64,
    /// 32-bit flat protected mode without paging (PVH).
    Protected32,
}

/// Why boot state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Guest memory did not take a boot structure.
    #[error("cannot write the boot {what} to guest memory at {addr:#x}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Guest-physical address.
        addr: u64,
        /// What vm-memory reported.
        #[source]
        source: GuestMemoryError,
    },
}

/// Encodes a segment descriptor: `flags` holds the access byte in bits 7:0
/// and G, D/B, L, AVL in bits 15:12; `limit` is the raw 20-bit limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit & 0xf_ffff);
    let flags = u64::from(flags & 0xf0ff);
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((flags & 0xff) << 40)
        | ((limit >> 16) << 48)
        | ((flags >> 12) << 52)
        | ((base >> 24) << 56)
}

/// The hidden segment register state KVM wants for `descriptor` loaded
/// through `selector`; the limit is in bytes (scaled by G), as VMX and SVM
/// hold it.
pub fn segment_from_descriptor(descriptor: u64, selector: u16) -> kvm_segment {
    let bit = |n: u32| ((descriptor >> n) & 1) as u8;
    let base = ((descriptor >> 16) & 0xff_ffff) | ((descriptor >> 32) & 0xff00_0000);
    let raw_limit = ((descriptor & 0xffff) | ((descriptor >> 32) & 0xf_0000)) as u32;
    let g = bit(55);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = bit(47);
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((descriptor >> 40) & 0xf) as u8,
        present,
        dpl: ((descriptor >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: 1 - present,
        padding: 0,
    }
}

/// The boot GDT for `mode` (see the [module docs](self)).
pub fn boot_gdt(mode: BootMode) -> [u64; GDT_ENTRIES] {
    let code = match mode {
        BootMode::Long64 => FLAGS_CODE64,
        BootMode::Protected32 => FLAGS_CODE32,
    };
    [
        0,
        gdt_entry(FLAGS_TSS, 0, TSS_LIMIT),
        gdt_entry(code, 0, 0xf_ffff),
        gdt_entry(FLAGS_DATA, 0, 0xf_ffff),
    ]
}

fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), RegsError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| RegsError::Write { what, addr, source })
}

/// Writes the boot GDT for `mode` at [`BOOT_GDT`] and an empty IDT at
/// [`BOOT_IDT`].
pub fn write_boot_gdt_and_idt(mem: &GuestMemoryMmap, mode: BootMode) -> Result<(), RegsError> {
    let gdt: Vec<u8> = boot_gdt(mode)
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    write(mem, "GDT", BOOT_GDT, &gdt)?;
    write(mem, "IDT", BOOT_IDT, &[0; IDT_LIMIT as usize + 1])
}

/// Writes page tables at [`BOOT_PML4`] that identity-map the first 4 GiB
/// with 2 MiB pages, writable, for [`BootMode::Long64`].
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let mut tables = vec![0u64; ((BOOT_PAGE_TABLES_END - BOOT_PML4) / 8) as usize];
    let table = |addr: u64| ((addr - BOOT_PML4) / 8) as usize;
    tables[table(BOOT_PML4)] = BOOT_PDPT | PTE_PRESENT | PTE_WRITABLE;
    for gib in 0..BOOT_PDS {
        let pd = BOOT_PD + gib * 0x1000;
        tables[table(BOOT_PDPT) + gib as usize] = pd | PTE_PRESENT | PTE_WRITABLE;
        for i in 0..512u64 {
            let addr = ((gib << 9) + i) << 21;
            tables[table(pd) + i as usize] = addr | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE;
        }
    }
    let bytes: Vec<u8> = tables.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, "page tables", BOOT_PML4, &bytes)
}

fn with_boot_segments(base: kvm_sregs, mode: BootMode) -> kvm_sregs {
    let gdt = boot_gdt(mode);
    let tss = segment_from_descriptor(gdt[usize::from(BOOT_TSS_SELECTOR >> 3)], BOOT_TSS_SELECTOR);
    let code = segment_from_descriptor(
        gdt[usize::from(BOOT_CODE_SELECTOR >> 3)],
        BOOT_CODE_SELECTOR,
    );
    let data = segment_from_descriptor(
        gdt[usize::from(BOOT_DATA_SELECTOR >> 3)],
        BOOT_DATA_SELECTOR,
    );
    kvm_sregs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss,
        gdt: kvm_dtable {
            base: BOOT_GDT,
            limit: GDT_LIMIT,
            padding: [0; 3],
        },
        idt: kvm_dtable {
            base: BOOT_IDT,
            limit: IDT_LIMIT,
            padding: [0; 3],
        },
        ..base
    }
}

/// `base` (from `KVM_GET_SREGS`, which keeps the APIC base and LDT) set up
/// for [`BootMode::Long64`]: CS 0x10 64-bit, DS/ES/FS/GS/SS 0x18, TR 0x08,
/// CR0 = PE|ET|NE|PG, CR3 = [`BOOT_PML4`], CR4 = PAE, EFER = LME|LMA.
pub fn long_mode_sregs(base: kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
        cr3: BOOT_PML4,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..with_boot_segments(base, BootMode::Long64)
    }
}

/// `base` set up for [`BootMode::Protected32`] (PVH): CS 0x10 32-bit,
/// data 0x18, TR 0x08, all flat 4 GiB; CR0 = PE|ET, no paging, CR3, CR4 and
/// EFER zero.
pub fn protected_mode_sregs(base: kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cr0: CR0_PE | CR0_ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
        ..with_boot_segments(base, BootMode::Protected32)
    }
}

/// General registers for the Linux 64-bit entry: RIP = `entry`, RSI = the
/// zero page, RSP = RBP = [`BOOT_STACK`], interrupts off.
pub fn linux64_regs(entry: u64, boot_params: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: boot_params,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// General registers for the PVH entry: RIP = `entry`, RBX =
/// `hvm_start_info`, interrupts off.
pub fn pvh_regs(entry: u64, start_info: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rbx: start_info,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// MSRs for a direct boot: SYSENTER and SYSCALL state, KERNEL_GS_BASE and
/// the TSC at 0, fast strings on, MTRRs on with write-back as the default
/// type. Pass them to `KVM_SET_MSRS` after `KVM_SET_CPUID2` and check that
/// all were taken (the ioctl returns how many were).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (msr::IA32_SYSENTER_CS, 0),
        (msr::IA32_SYSENTER_ESP, 0),
        (msr::IA32_SYSENTER_EIP, 0),
        (msr::STAR, 0),
        (msr::CSTAR, 0),
        (msr::KERNEL_GS_BASE, 0),
        (msr::SYSCALL_MASK, 0),
        (msr::LSTAR, 0),
        (msr::IA32_TSC, 0),
        (msr::IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (msr::MTRR_DEF_TYPE, MTRR_ENABLED_WRITE_BACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// The FPU state after `FNINIT` with the default SSE control: FCW 0x37f
/// (all exceptions masked, extended precision), MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !APIC_DELIVERY_MODE_MASK) | (mode << 8)
}

/// Sets LINT0 to ExtINT (the 8259s' output, virtual wire mode) and LINT1 to
/// NMI in a local APIC state, keeping the mask bits (KVM leaves the BSP's
/// LINT0 unmasked, as firmware would), like Firecracker and crosvm.
pub fn set_lint_delivery_modes(lapic: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

/// Reads the vCPU's local APIC, applies [`set_lint_delivery_modes`] and
/// writes it back (`KVM_GET_LAPIC`, `KVM_SET_LAPIC`: their error is
/// returned as is). Needs the in-kernel irqchip.
pub fn setup_lapic_lint(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut lapic = vcpu.get_lapic()?;
    set_lint_delivery_modes(&mut lapic);
    vcpu.set_lapic(&lapic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn gdt_entries_encode_the_classic_flat_descriptors() {
        assert_eq!(gdt_entry(FLAGS_CODE64, 0, 0xf_ffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(FLAGS_CODE32, 0, 0xf_ffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(FLAGS_DATA, 0, 0xf_ffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(FLAGS_TSS, 0, 0x67), 0x0000_8b00_0000_0067);
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xa_bcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn descriptor_decoding_inverts_encoding() {
        let s = segment_from_descriptor(gdt_entry(0x4093, 0x1234_5678, 0xa_bcde), 0x28);

        assert_eq!((s.base, s.limit, s.selector), (0x1234_5678, 0xa_bcde, 0x28));
        assert_eq!(
            (s.type_, s.s, s.dpl, s.present, s.db, s.l, s.g),
            (3, 1, 0, 1, 1, 0, 0)
        );
        assert_eq!(s.unusable, 0);
    }

    #[test]
    fn long_mode_segments_are_linux_boot_cs_and_ds() {
        let s = long_mode_sregs(kvm_sregs::default());

        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(
            (s.cs.type_, s.cs.s, s.cs.present, s.cs.l, s.cs.db, s.cs.g),
            (0xb, 1, 1, 1, 0, 1)
        );
        assert_eq!((s.cs.base, s.cs.limit, s.cs.dpl), (0, 0xffff_ffff, 0));
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(seg.selector, 0x18);
            assert_eq!(
                (seg.type_, seg.s, seg.present, seg.db, seg.l, seg.g),
                (3, 1, 1, 1, 0, 1)
            );
            assert_eq!((seg.base, seg.limit), (0, 0xffff_ffff));
        }
        assert_eq!(
            (s.tr.selector, s.tr.type_, s.tr.s, s.tr.present),
            (0x08, 0xb, 0, 1)
        );
        assert_eq!((s.tr.limit, s.tr.g), (0x67, 0));
    }

    #[test]
    fn long_mode_control_registers_enable_paging_with_the_boot_pml4() {
        let s = long_mode_sregs(kvm_sregs::default());

        assert_eq!(s.cr0, 0x8000_0031);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!((s.gdt.base, s.gdt.limit), (0x500, 31));
        assert_eq!((s.idt.base, s.idt.limit), (0x520, 7));
    }

    #[test]
    fn protected_mode_is_flat_32_bit_without_paging() {
        let s = protected_mode_sregs(kvm_sregs::default());

        assert_eq!(s.cs.selector, 0x10);
        assert_eq!((s.cs.type_, s.cs.l, s.cs.db, s.cs.g), (0xb, 0, 1, 1));
        assert_eq!((s.cs.base, s.cs.limit), (0, 0xffff_ffff));
        assert_eq!((s.ss.selector, s.ss.db, s.ss.limit), (0x18, 1, 0xffff_ffff));
        assert_eq!((s.tr.selector, s.tr.limit), (0x08, 0x67));
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
    }

    #[test]
    fn sregs_keep_the_apic_base_and_ldt_of_the_base_state() {
        let mut base = kvm_sregs {
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        base.ldt.type_ = 2;
        base.ldt.present = 1;

        let long = long_mode_sregs(base);
        let prot = protected_mode_sregs(base);

        assert_eq!((long.apic_base, long.ldt), (0xfee0_0900, base.ldt));
        assert_eq!((prot.apic_base, prot.ldt), (0xfee0_0900, base.ldt));
    }

    #[test]
    fn gdt_in_memory_matches_the_segment_registers() {
        let mem = guest_memory();

        for (mode, sregs) in [
            (BootMode::Long64, long_mode_sregs(kvm_sregs::default())),
            (
                BootMode::Protected32,
                protected_mode_sregs(kvm_sregs::default()),
            ),
        ] {
            write_boot_gdt_and_idt(&mem, mode).unwrap();

            assert_eq!(read_u64(&mem, BOOT_GDT), 0, "null descriptor");
            for seg in [sregs.cs, sregs.ds, sregs.tr] {
                let desc = read_u64(&mem, BOOT_GDT + u64::from(seg.selector));
                assert_eq!(segment_from_descriptor(desc, seg.selector), seg, "{mode:?}");
            }
            assert_eq!(read_u64(&mem, BOOT_IDT), 0, "IDT gate not present");
        }
    }

    #[test]
    fn page_tables_identity_map_4_gib_with_2_mib_pages() {
        let mem = guest_memory();

        write_identity_page_tables(&mem).unwrap();

        assert_eq!(read_u64(&mem, 0x9000), 0xa000 | 0x3, "PML4[0]");
        assert_eq!(read_u64(&mem, 0x9008), 0, "PML4[1]");
        for gib in 0..4u64 {
            let pd = 0xb000 + gib * 0x1000;
            assert_eq!(read_u64(&mem, 0xa000 + gib * 8), pd | 0x3, "PDPT[{gib}]");
            for i in [0u64, 1, 255, 511] {
                let pde = read_u64(&mem, pd + i * 8);
                assert_eq!(pde, ((gib << 30) + (i << 21)) | 0x83, "PD{gib}[{i}]");
            }
        }
        assert_eq!(read_u64(&mem, 0xa000 + 4 * 8), 0, "PDPT[4]");
        let last = read_u64(&mem, 0xe000 + 511 * 8);
        assert_eq!(last & !0xfff, 0xffe0_0000, "last 2 MiB below 4 GiB");
    }

    #[test]
    fn page_tables_stay_clear_of_the_stack_and_command_line() {
        let mem = guest_memory();
        mem.write_slice(&[0xaa; 0x2_0000], GuestAddress(0)).unwrap();

        write_identity_page_tables(&mem).unwrap();

        let byte = |addr: u64| mem.read_obj::<u8>(GuestAddress(addr)).unwrap();
        assert_eq!(byte(BOOT_STACK), 0xaa, "stack top");
        assert_eq!(byte(BOOT_PML4 - 1), 0xaa, "below the PML4");
        assert_eq!(byte(0xf000), 0xaa, "after the last page directory");
        assert_eq!(BOOT_PAGE_TABLES_END, 0xf000);
    }

    #[test]
    fn writers_report_missing_memory_instead_of_panicking() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();

        assert!(matches!(
            write_identity_page_tables(&mem),
            Err(RegsError::Write {
                what: "page tables",
                ..
            })
        ));
        assert!(matches!(
            write_boot_gdt_and_idt(&mem, BootMode::Long64),
            Err(RegsError::Write { what: "GDT", .. })
        ));
    }

    #[test]
    fn entry_registers_follow_the_boot_protocols() {
        let linux = linux64_regs(0x100_0000, 0x7000);
        let pvh = pvh_regs(0x100_0200, 0x6000);

        assert_eq!(
            (linux.rip, linux.rsi, linux.rsp, linux.rbp),
            (0x100_0000, 0x7000, 0x8ff0, 0x8ff0)
        );
        assert_eq!(linux.rflags, 2);
        assert_eq!((pvh.rip, pvh.rbx, pvh.rflags), (0x100_0200, 0x6000, 2));
    }

    #[test]
    fn boot_msrs_set_fast_strings_and_write_back_mtrrs() {
        let msrs = boot_msrs();
        let get = |index: u32| msrs.iter().find(|m| m.index == index).map(|m| m.data);

        assert_eq!(get(msr::IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(msr::MTRR_DEF_TYPE), Some(0x806));
        for index in [
            msr::IA32_SYSENTER_CS,
            msr::IA32_SYSENTER_ESP,
            msr::IA32_SYSENTER_EIP,
            msr::STAR,
            msr::LSTAR,
            msr::CSTAR,
            msr::SYSCALL_MASK,
            msr::KERNEL_GS_BASE,
            msr::IA32_TSC,
        ] {
            assert_eq!(get(index), Some(0), "MSR {index:#x}");
        }
        assert_eq!(msrs.len(), 11);
    }

    #[test]
    fn boot_fpu_has_default_control_words() {
        let fpu = boot_fpu();

        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
    }

    #[test]
    fn lint0_becomes_extint_and_lint1_nmi_keeping_masks() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000); // masked, fixed
        set_lapic_reg(&mut lapic, APIC_LVT1, 0x0001_0000);

        set_lint_delivery_modes(&mut lapic);

        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x0001_0400);
    }
}
