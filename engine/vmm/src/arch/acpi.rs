//! ACPI tables for direct boots: RSDP, XSDT, FADT, FACS, MADT and DSDT,
//! written one after the other from [`ACPI_START`].
//!
//! The platform is a legacy (not hardware-reduced) PC:
//!
//! - **FADT**: PM1a event block at [`ports::PM1A_EVT`] (4 bytes: PM1_STS,
//!   PM1_EN) and control block at [`ports::PM1A_CNT`] (2 bytes), both also
//!   as `X_` generic addresses; SCI on IRQ 9; `SMI_CMD` = 0, so the machine
//!   is always in ACPI mode and the guest finds SCI_EN set; the reset
//!   register is the PIIX reset control port 0xcf9 (value 6); no PM timer and
//!   no GPE block (both optional since ACPI 5.0A).
//! - **Power button**: the *fixed-feature* button. The FADT's `PWR_BUTTON`
//!   flag is clear and the DSDT has no `PNP0C0C` device: the VMM presses the
//!   button by setting PWRBTN_STS (bit 8) in PM1_STS and raising the SCI,
//!   as QEMU's PIIX4 does, and Linux creates its `LNXPWRBN` input device by
//!   itself. `SLP_BUTTON` is set: there is no sleep button.
//! - **Soft-off**: `\_S5_` gives SLP_TYP 5, so the guest powers off by
//!   writing `SLP_EN | 5 << 10` to PM1a_CNT.
//! - **MADT**: one local APIC per vCPU (UID = APIC ID = index), the IOAPIC
//!   (ID = vCPU count, GSI base 0), overrides IRQ 0 → GSI 2 and IRQ 9
//!   (SCI) → GSI 9 level/active-high, and `PCAT_COMPAT` (8259s present).
//!   See [`crate::arch`] for the routing the VMM must install to match.
//! - **DSDT**: `\_SB_.PCI0` (host bridge: bus 0–255, I/O around the
//!   0xcf8 config ports, the VGA window and the 32-bit MMIO window), COM1,
//!   the i8042 keyboard (`PNP0303`) and mouse (`PNP0F13`) and the CMOS RTC,
//!   each with ISA `IRQNoFlags` descriptors.

use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes};

use super::{MAX_VCPUS, PIT_IOAPIC_PIN, PIT_IRQ, ioapic_id};
use crate::layout::{ACPI_SIZE, ACPI_START, IOAPIC_START, LAPIC_START, irqs, ports};

/// OEM ID in every table header.
const OEM_ID: [u8; 6] = *b"VIREO ";
/// OEM table ID in every table header.
const OEM_TABLE_ID: [u8; 8] = *b"VIREOVMM";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;

/// The SLP_TYP value of S5 (soft-off) that `\_S5_` announces; the PM device
/// powers off when the guest writes it with SLP_EN.
pub const S5_SLP_TYP: u8 = 5;
/// Value written to the reset register (0xcf9) to reset: full reset (bit 2)
/// with system reset (bit 1).
pub const RESET_VALUE: u8 = 0x06;

/// FADT `IAPC_BOOT_ARCH`: legacy devices (bit 0) and an 8042 (bit 1).
const IAPC_BOOT_ARCH: u16 = (1 << 0) | (1 << 1);
/// MADT flags: PCAT_COMPAT, the 8259 PICs are present.
const MADT_PCAT_COMPAT: u32 = 1;
/// Offset of the flags in the MADT.
const MADT_FLAGS_OFFSET: usize = 40;
/// Offset of the checksum in every SDT header.
const SDT_CHECKSUM_OFFSET: usize = 9;
/// MPS INTI flags: active high (bits 1:0 = 01), level triggered (3:2 = 11).
const INTI_LEVEL_ACTIVE_HIGH: u16 = 0b1101;
/// MPS INTI flags: conforms to the bus (ISA: edge, active high).
const INTI_CONFORMS: u16 = 0;
/// P_LVL2_LAT/P_LVL3_LAT above 100/1000 µs: C2 and C3 are not supported.
const NO_C_STATE_LATENCY: u16 = 0x0fff;

/// The VGA memory window the host bridge forwards.
const VGA_WINDOW: (u32, u32) = (0xa_0000, 0xb_ffff);
/// COM1's I/O ports.
const COM1_PORTS: u8 = 8;
/// The CMOS index/data pair.
const CMOS_PORTS: u8 = 2;

/// What the tables describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs, 1 to [`MAX_VCPUS`]; their APIC IDs are `0..vcpus`.
    pub vcpus: u8,
    /// Start of the 32-bit PCI MMIO window.
    pub pci_mmio_start: u64,
    /// End of the 32-bit PCI MMIO window (exclusive, at most 4 GiB).
    pub pci_mmio_end: u64,
}

/// Why the ACPI tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The vCPU count cannot be described with xAPIC IDs.
    #[error("{0} vCPUs cannot be described in the MADT (1 to 254 are supported)")]
    VcpuCount(u8),
    /// The PCI MMIO window is empty, reversed or not below 4 GiB.
    #[error("PCI MMIO window {start:#x}..{end:#x} is not a non-empty range below 4 GiB")]
    PciWindow {
        /// Start of the window.
        start: u64,
        /// End of the window (exclusive).
        end: u64,
    },
    /// The tables do not fit in the reserved area.
    #[error("ACPI tables need {needed} bytes but only {available} are reserved")]
    TooLarge {
        /// Bytes from [`ACPI_START`] to the end of the last table.
        needed: u64,
        /// Bytes reserved ([`ACPI_SIZE`]).
        available: u64,
    },
    /// Guest memory did not take a table.
    #[error("cannot write the {table} table to guest memory at {addr:#x}")]
    Write {
        /// Signature of the table.
        table: &'static str,
        /// Guest-physical address.
        addr: u64,
        /// What vm-memory reported.
        #[source]
        source: GuestMemoryError,
    },
}

/// The guest-physical range the tables occupy, as `(start, size)`: mark it
/// reserved in the e820 map (or the PVH memory map).
pub fn acpi_memory_range() -> (u64, u64) {
    (ACPI_START, ACPI_SIZE)
}

/// Builds the tables and writes them into `mem` at [`ACPI_START`]; returns
/// the address of the RSDP, for `boot_params.acpi_rsdp_addr` or
/// `hvm_start_info.rsdp_paddr` (guests that scan the BIOS area find it
/// there too). Nothing is written if the configuration is refused or the
/// tables would not fit.
pub fn create_acpi_tables(mem: &GuestMemoryMmap, config: &AcpiConfig) -> Result<u64, AcpiError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount(config.vcpus));
    }
    let window = pci_window(config)?;

    let dsdt = build_dsdt(window);
    let madt = build_madt(config.vcpus);

    let mut placer = Placer::new(ACPI_START, ACPI_START + ACPI_SIZE);
    let rsdp_addr = placer.place(Rsdp::len(), 16)?;
    let xsdt_addr = placer.place(XSDT_LEN, 8)?;
    let fadt_addr = placer.place(acpi_tables::fadt::FADT::len(), 8)?;
    let facs_addr = placer.place(acpi_tables::facs::FACS::len(), 64)?;
    let madt_addr = placer.place(madt.len(), 8)?;
    let dsdt_addr = placer.place(dsdt.len(), 8)?;

    let fadt = build_fadt(dsdt_addr, facs_addr);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);

    let tables: [(&'static str, u64, Vec<u8>); 6] = [
        ("DSDT", dsdt_addr, dsdt),
        ("APIC", madt_addr, madt),
        ("FACS", facs_addr, to_bytes(&acpi_tables::facs::FACS::new())),
        ("FACP", fadt_addr, to_bytes(&fadt)),
        ("XSDT", xsdt_addr, to_bytes(&xsdt)),
        ("RSDP", rsdp_addr, to_bytes(&rsdp)),
    ];
    for (table, addr, bytes) in &tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|source| AcpiError::Write {
                table,
                addr: *addr,
                source,
            })?;
    }
    Ok(rsdp_addr)
}

/// Length of an XSDT with two entries (FADT, MADT).
const XSDT_LEN: usize = 36 + 2 * 8;

/// Hands out aligned, non-overlapping ranges of the reserved area.
#[derive(Debug)]
struct Placer {
    start: u64,
    next: u64,
    end: u64,
}

impl Placer {
    fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            next: start,
            end,
        }
    }

    /// Reserves `len` bytes aligned to `align` (a power of two).
    fn place(&mut self, len: usize, align: u64) -> Result<u64, AcpiError> {
        let too_large = |needed: u64| AcpiError::TooLarge {
            needed,
            available: self.end - self.start,
        };
        let addr = self
            .next
            .checked_next_multiple_of(align)
            .ok_or(too_large(u64::MAX))?;
        let table_end = addr.checked_add(len as u64).ok_or(too_large(u64::MAX))?;
        if table_end > self.end {
            return Err(too_large(table_end - self.start));
        }
        self.next = table_end;
        Ok(addr)
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The window as inclusive 32-bit bounds, as `DWordMemory` wants it.
fn pci_window(config: &AcpiConfig) -> Result<(u32, u32), AcpiError> {
    let (start, end) = (config.pci_mmio_start, config.pci_mmio_end);
    let bad = || AcpiError::PciWindow { start, end };
    if start >= end || start == 0 {
        return Err(bad());
    }
    let first = u32::try_from(start).map_err(|_| bad())?;
    let last = u32::try_from(end - 1).map_err(|_| bad())?;
    Ok((first, last))
}

fn build_fadt(dsdt_addr: u64, facs_addr: u64) -> acpi_tables::fadt::FADT {
    // The whole ACPI area is below 1 MiB, so the 32-bit fields hold the
    // addresses; X_DSDT repeats DSDT as QEMU does (X_FIRMWARE_CTRL stays 0).
    let dsdt32 = u32::try_from(dsdt_addr).unwrap_or(0);
    let facs32 = u32::try_from(facs_addr).unwrap_or(0);
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs32)
        .dsdt_64(dsdt_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        // The PM device has no RTC_STS/RTC_EN: the RTC wakes nothing.
        .flag(Flags::FixRtc)
        .flag(Flags::ResetRegSup);
    fadt.dsdt = dsdt32.into();
    fadt.sci_int = (irqs::SCI as u16).into();
    fadt.smi_cmd = 0.into();
    fadt.pm1a_evt_blk = u32::from(ports::PM1A_EVT).into();
    fadt.pm1_evt_len = 4;
    fadt.x_pm1a_evt_blk = GAS::new(
        GasSpace::SystemIo,
        32,
        0,
        AccessSize::WordAccess,
        u64::from(ports::PM1A_EVT),
    );
    fadt.pm1a_cnt_blk = u32::from(ports::PM1A_CNT).into();
    fadt.pm1_cnt_len = 2;
    fadt.x_pm1a_cnt_blk = GAS::new(
        GasSpace::SystemIo,
        16,
        0,
        AccessSize::WordAccess,
        u64::from(ports::PM1A_CNT),
    );
    fadt.p_lvl2_lat = NO_C_STATE_LATENCY.into();
    fadt.p_lvl3_lat = NO_C_STATE_LATENCY.into();
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = GAS::new(
        GasSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(ports::RESET_CONTROL),
    );
    fadt.reset_value = RESET_VALUE;
    fadt.finalize()
}

/// MADT Interrupt Source Override (type 2), which acpi_tables 0.2.1 lacks.
#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32,
    flags: U16,
}

const _: () = assert!(size_of::<InterruptSourceOverride>() == 10);

impl InterruptSourceOverride {
    /// ISA `source` IRQ arrives on `gsi` with MPS INTI `flags`.
    fn isa(source: u8, gsi: u32, flags: u16) -> Self {
        Self {
            r#type: 2,
            length: 10,
            bus: 0,
            source,
            gsi: gsi.into(),
            flags: flags.into(),
        }
    }
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn build_madt(vcpus: u8) -> Vec<u8> {
    // The layout constants are 32-bit addresses.
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_START as u32),
    );
    for id in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(ioapic_id(vcpus), IOAPIC_START as u32, 0));
    madt.add_structure(InterruptSourceOverride::isa(
        PIT_IRQ,
        u32::from(PIT_IOAPIC_PIN),
        INTI_CONFORMS,
    ));
    let sci = irqs::SCI as u8;
    madt.add_structure(InterruptSourceOverride::isa(
        sci,
        irqs::SCI,
        INTI_LEVEL_ACTIVE_HIGH,
    ));

    // acpi_tables cannot set the MADT flags: patch them and the checksum.
    let mut bytes = to_bytes(&madt);
    bytes[MADT_FLAGS_OFFSET..MADT_FLAGS_OFFSET + 4]
        .copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    fix_checksum(&mut bytes);
    bytes
}

/// Sets an SDT's checksum byte so that all its bytes sum to zero.
fn fix_checksum(table: &mut [u8]) {
    table[SDT_CHECKSUM_OFFSET] = 0;
    let sum = table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
    table[SDT_CHECKSUM_OFFSET] = sum.wrapping_neg();
}

/// ACPI small resource `IRQNoFlags`: an ISA IRQ, edge-triggered, active high,
/// exclusive (acpi_tables 0.2.1 only has the extended `Interrupt`).
struct IrqNoFlags {
    irq: u8,
}

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // Small item 0x04 (IRQ), length 2: the 16-bit IRQ mask.
        sink.byte(0x22);
        sink.word(1u16 << (self.irq & 0xf));
    }
}

/// AML serialized already: acpi_tables' containers borrow their children,
/// so each device is serialized in one statement and kept as bytes.
struct Serialized(Vec<u8>);

impl Aml for Serialized {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Name (path, value)`; a `Name` holds its value serialized.
fn name(path: &str, value: &dyn Aml) -> aml::Name {
    aml::Name::new(path.into(), value)
}

/// `Name (_HID, EisaId (id))`.
fn hid(id: &str) -> aml::Name {
    name("_HID", &aml::EISAName::new(id))
}

/// `Name (_CRS, ResourceTemplate () { resources })`.
fn crs(resources: Vec<&dyn Aml>) -> aml::Name {
    name("_CRS", &aml::ResourceTemplate::new(resources))
}

/// `Device (path) { children }`.
fn device(path: &str, children: Vec<&dyn Aml>) -> Serialized {
    let mut bytes = Vec::new();
    aml::Device::new(path.into(), children).to_aml_bytes(&mut bytes);
    Serialized(bytes)
}

/// The host bridge: `_CRS` lists its config ports, then the windows it
/// forwards: bus numbers, the I/O space around the config ports, the VGA
/// window and the MMIO window.
fn pci_host_bridge((mmio_first, mmio_last): (u32, u32)) -> Serialized {
    let config = ports::PCI_CONFIG_ADDRESS;
    device(
        "PCI0",
        vec![
            &hid("PNP0A03"),
            &name("_ADR", &0u8),
            &name("_UID", &0u8),
            &name("_SEG", &0u8),
            &name("_BBN", &0u8),
            &crs(vec![
                &AddressSpace::<u16>::new_bus_number(0, 0xff),
                &aml::IO::new(config, config, 1, 8),
                &AddressSpace::<u16>::new_io(0, config - 1, None),
                &AddressSpace::<u16>::new_io(config + 8, 0xffff, None),
                &AddressSpace::<u32>::new_memory(
                    AddressSpaceCacheable::Cacheable,
                    true,
                    VGA_WINDOW.0,
                    VGA_WINDOW.1,
                    None,
                ),
                &AddressSpace::<u32>::new_memory(
                    AddressSpaceCacheable::NotCacheable,
                    true,
                    mmio_first,
                    mmio_last,
                    None,
                ),
            ]),
        ],
    )
}

/// An ISA device with one `_HID`, fixed I/O ranges `(base, len)` and IRQs.
fn isa_device(path: &str, id: &str, io: &[(u16, u8)], irqs: &[u32]) -> Serialized {
    let io: Vec<aml::IO> = io
        .iter()
        .map(|&(base, len)| aml::IO::new(base, base, 1, len))
        .collect();
    let irqs: Vec<IrqNoFlags> = irqs
        .iter()
        .map(|&irq| IrqNoFlags { irq: irq as u8 })
        .collect();
    let resources: Vec<&dyn Aml> = io
        .iter()
        .map(|r| r as &dyn Aml)
        .chain(irqs.iter().map(|r| r as &dyn Aml))
        .collect();
    device(path, vec![&hid(id), &crs(resources)])
}

fn build_dsdt(window: (u32, u32)) -> Vec<u8> {
    let mut body = Vec::new();

    // \_S5_: SLP_TYPa, SLP_TYPb, reserved, reserved.
    name(
        "\\_S5_",
        &aml::Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);

    let pci0 = pci_host_bridge(window);
    let com1 = {
        let io = aml::IO::new(ports::COM1, ports::COM1, 1, COM1_PORTS);
        let irq = IrqNoFlags {
            irq: irqs::COM1 as u8,
        };
        device(
            "COM1",
            vec![&hid("PNP0501"), &name("_UID", &1u8), &crs(vec![&io, &irq])],
        )
    };
    let kbd = isa_device(
        "KBD_",
        "PNP0303",
        &[(ports::I8042_DATA, 1), (ports::I8042_COMMAND, 1)],
        &[irqs::KEYBOARD],
    );
    let mou = isa_device("MOU_", "PNP0F13", &[], &[irqs::MOUSE]);
    let rtc = isa_device(
        "RTC_",
        "PNP0B00",
        &[(ports::CMOS_INDEX, CMOS_PORTS)],
        &[irqs::RTC],
    );
    aml::Scope::new("\\_SB_".into(), vec![&pci0, &com1, &kbd, &mou, &rtc]).to_aml_bytes(&mut body);

    // Revision 2: integers are 64-bit.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

#[cfg(test)]
mod tests;
