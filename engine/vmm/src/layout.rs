//! The guest-physical and port address map of a Vireo machine (x86-64).
//!
//! ```text
//! 0x0000_0500  boot GDT (direct boot)             port 0x0060/0x0064  i8042
//! 0x0000_0520  boot IDT                           port 0x0070/0x0071  CMOS RTC
//! 0x0000_6000  PVH hvm_start_info + memmap        port 0x00f4         isa-debug-exit
//! 0x0000_7000  Linux zero page (boot_params)      port 0x03f8..0x03ff COM1
//! 0x0000_8ff0  boot stack top                     port 0x0402         debug port
//! 0x0000_9000  boot page tables (PML4, PDPT, 4 PD) port 0x0600..0x0607 ACPI PM1a event/control
//! 0x0002_0000  kernel command line (64 KiB)       port 0x0cf8..0x0cff PCI config (0xcf9: reset control)
//! 0x0009_fc00  MP table (EBDA)
//! 0x000e_0000  ACPI: RSDP, then XSDT, FADT, FACS, MADT, DSDT
//! 0x0010_0000  kernel, then initrd near the top of low RAM
//! 0xc000_0000  PCI MMIO window (BARs), up to the IOAPIC
//! 0xfec0_0000  IOAPIC        0xfee0_0000  LAPIC
//! 0xfffb_c000  KVM identity map page, 0xfffb_d000 KVM TSS (3 pages)
//! 0x1_0000_0000 RAM above the PCI hole
//! ```

/// Real-mode interrupt vectors and BIOS data end here; the boot GDT follows.
pub const BOOT_GDT: u64 = 0x500;
/// The boot IDT (empty: interrupts stay off until the guest sets its own).
pub const BOOT_IDT: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_START_INFO: u64 = 0x6000;
/// PVH memory map, right after the start info.
pub const PVH_MEMMAP: u64 = 0x6040;
/// Most PVH memory map entries that fit before the zero page.
pub const PVH_MEMMAP_MAX: usize = (ZERO_PAGE - PVH_MEMMAP) as usize / 24;
/// Linux's zero page.
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer for direct boots.
pub const BOOT_STACK: u64 = 0x8ff0;
/// PML4 of the boot identity map; PDPT and four PDs follow, mapping 4 GiB.
pub const BOOT_PML4: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Longest command line, including the NUL.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// Start of the EBDA, where the MP table goes.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// ACPI tables live in the BIOS area so the RSDP can also be found by scanning.
pub const ACPI_START: u64 = 0xe_0000;
/// Size reserved for ACPI tables.
pub const ACPI_SIZE: u64 = 0x1_0000;
/// Kernels load at 1 MiB.
pub const HIGH_RAM_START: u64 = 0x10_0000;

/// Start of the 32-bit PCI MMIO hole: RAM above this moves above 4 GiB.
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// End of the hole (exclusive).
pub const PCI_HOLE_END: u64 = 0x1_0000_0000;
/// PCI BARs are allocated in `[PCI_MMIO_START, PCI_MMIO_END)`.
pub const PCI_MMIO_START: u64 = PCI_HOLE_START;
/// End of the BAR window: the IOAPIC.
pub const PCI_MMIO_END: u64 = IOAPIC_START;
/// The IOAPIC's registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page (needed on Intel for real mode).
pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;
/// KVM's TSS (three pages).
pub const KVM_TSS: u64 = 0xfffb_d000;
/// The firmware ROM is mapped to end at 4 GiB.
pub const FIRMWARE_END: u64 = 0x1_0000_0000;

/// Legacy I/O ports.
pub mod ports {
    /// i8042 data port.
    pub const I8042_DATA: u16 = 0x60;
    /// i8042 status/command port.
    pub const I8042_COMMAND: u16 = 0x64;
    /// CMOS index port (bit 7: NMI disable).
    pub const CMOS_INDEX: u16 = 0x70;
    /// isa-debug-exit: writing `v` ends the VM with exit status `(v << 1) | 1`.
    pub const DEBUG_EXIT: u16 = 0xf4;
    /// COM1 base.
    pub const COM1: u16 = 0x3f8;
    /// The debug port (SeaBIOS and QEMU's `isa-debugcon` use it).
    pub const DEBUG_CON: u16 = 0x402;
    /// ACPI PM1a event block: PM1_STS (2 bytes) then PM1_EN (2 bytes).
    pub const PM1A_EVT: u16 = 0x600;
    /// ACPI PM1a control block (2 bytes).
    pub const PM1A_CNT: u16 = 0x604;
    /// PCI configuration address register (config mechanism #1).
    pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
    /// PCI configuration data window.
    pub const PCI_CONFIG_DATA: u16 = 0xcfc;
    /// PIIX reset control register, inside the 0xcf8 dword.
    pub const RESET_CONTROL: u16 = 0xcf9;
}

/// ISA interrupt lines.
pub mod irqs {
    /// Keyboard.
    pub const KEYBOARD: u32 = 1;
    /// COM1.
    pub const COM1: u32 = 4;
    /// RTC.
    pub const RTC: u32 = 8;
    /// ACPI SCI.
    pub const SCI: u32 = 9;
    /// PS/2 mouse.
    pub const MOUSE: u32 = 12;
}
