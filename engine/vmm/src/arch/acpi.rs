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
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::arch::test_util::{guest_memory, read, sum, u16_at, u32_at, u64_at};
    use crate::layout::{PCI_MMIO_END, PCI_MMIO_START};

    fn config(vcpus: u8) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            pci_mmio_start: PCI_MMIO_START,
            pci_mmio_end: PCI_MMIO_END,
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Reads the SDT at `addr` and checks its signature, length and checksum.
    fn sdt(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, 36);
        assert_eq!(&header[0..4], signature, "signature at {addr:#x}");
        let len = u32_at(&header, 4) as usize;
        assert!(len >= 36, "{signature:?} length {len}");
        let table = read(mem, addr, len);
        assert_eq!(sum(&table), 0, "{signature:?} checksum");
        assert!(addr + len as u64 <= ACPI_START + ACPI_SIZE);
        table
    }

    /// The tables found by walking from the RSDP, as guests do.
    struct Tables {
        rsdp: u64,
        xsdt: Vec<u64>,
        fadt: Vec<u8>,
        madt: Vec<u8>,
        dsdt: Vec<u8>,
        facs_addr: u64,
        dsdt_addr: u64,
    }

    fn walk(mem: &GuestMemoryMmap, rsdp: u64) -> Tables {
        let r = read(mem, rsdp, 36);
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[0..20]), 0, "RSDP checksum");
        assert_eq!(r[15], 2, "RSDP revision");
        assert_eq!(u32_at(&r, 20), 36, "RSDP length");
        assert_eq!(sum(&r), 0, "RSDP extended checksum");
        let xsdt_addr = u64_at(&r, 24);

        let x = sdt(mem, xsdt_addr, b"XSDT");
        let entries: Vec<u64> = (36..x.len()).step_by(8).map(|o| u64_at(&x, o)).collect();
        let find = |sig: &[u8; 4]| {
            *entries
                .iter()
                .find(|&&a| &read(mem, a, 4)[..] == sig)
                .unwrap_or_else(|| panic!("XSDT lacks {sig:?}"))
        };
        let fadt_addr = find(b"FACP");
        let madt_addr = find(b"APIC");
        let fadt = sdt(mem, fadt_addr, b"FACP");
        let madt = sdt(mem, madt_addr, b"APIC");
        let dsdt_addr = u64_at(&fadt, 140);
        let dsdt = sdt(mem, dsdt_addr, b"DSDT");
        let facs_addr = u64::from(u32_at(&fadt, 36));
        Tables {
            rsdp,
            xsdt: entries,
            fadt,
            madt,
            dsdt,
            facs_addr,
            dsdt_addr,
        }
    }

    fn build(vcpus: u8) -> (GuestMemoryMmap, Tables) {
        let mem = guest_memory();
        let rsdp = create_acpi_tables(&mem, &config(vcpus)).unwrap();
        let tables = walk(&mem, rsdp);
        (mem, tables)
    }

    /// EISA ID encoding, written independently of acpi_tables: three
    /// letters compressed to 5 bits each, then four hex digits, big-endian.
    fn eisa_id_bytes(id: &str) -> [u8; 4] {
        let b = id.as_bytes();
        let letters =
            (u16::from(b[0] - 0x40) << 10) | (u16::from(b[1] - 0x40) << 5) | u16::from(b[2] - 0x40);
        let product = u16::from_str_radix(&id[3..], 16).unwrap();
        let [l0, l1] = letters.to_be_bytes();
        let [p0, p1] = product.to_be_bytes();
        [l0, l1, p0, p1]
    }

    /// `Name(_HID, EisaId(id))` as AML bytes.
    fn hid_bytes(id: &str) -> Vec<u8> {
        let mut v = vec![0x08]; // NameOp
        v.extend_from_slice(b"_HID");
        v.push(0x0c); // DWordPrefix
        v.extend_from_slice(&eisa_id_bytes(id));
        v
    }

    #[test]
    fn rsdp_sits_at_the_start_of_the_area_and_lists_fadt_and_madt() {
        let (_mem, t) = build(2);

        assert_eq!(t.rsdp, ACPI_START);
        assert_eq!(t.rsdp % 16, 0);
        assert_eq!(t.xsdt.len(), 2);
    }

    #[test]
    fn fadt_describes_the_legacy_pm1a_blocks_sci_and_reset_register() {
        let (_mem, t) = build(1);
        let f = &t.fadt;

        assert_eq!(u32_at(f, 4), 276, "FADT length");
        assert_eq!(u16_at(f, 46), 9, "SCI_INT");
        assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
        assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(f, 76), 0, "no PM timer");
        assert_eq!(f[88], 4, "PM1_EVT_LEN");
        assert_eq!(f[89], 2, "PM1_CNT_LEN");
        // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK: system I/O, 32 and 16 bits.
        assert_eq!(&f[148..152], &[1, 32, 0, 2]);
        assert_eq!(u64_at(f, 152), 0x600);
        assert_eq!(&f[172..176], &[1, 16, 0, 2]);
        assert_eq!(u64_at(f, 176), 0x604);
        // RESET_REG: system I/O byte at 0xcf9, value 6.
        assert_eq!(&f[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(f, 120), 0xcf9);
        assert_eq!(f[128], 6);
    }

    #[test]
    fn fadt_flags_select_the_fixed_power_button_and_the_8042() {
        let (_mem, t) = build(1);
        let flags = u32_at(&t.fadt, 112);
        let boot_arch = u16_at(&t.fadt, 109);

        assert_eq!(flags & (1 << 4), 0, "PWR_BUTTON must be clear");
        assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(flags & (1 << 20), 0, "not HW_REDUCED_ACPI");
        assert_eq!(boot_arch & 0b11, 0b11, "LEGACY_DEVICES and 8042");
    }

    #[test]
    fn fadt_points_at_the_dsdt_and_an_aligned_facs() {
        let (mem, t) = build(1);

        assert_eq!(
            u64::from(u32_at(&t.fadt, 40)),
            t.dsdt_addr,
            "DSDT == X_DSDT"
        );
        assert_eq!(t.facs_addr % 64, 0, "FACS alignment");
        assert_eq!(u64_at(&t.fadt, 132), 0, "X_FIRMWARE_CTRL unused");
        let facs = read(&mem, t.facs_addr, 64);
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
    }

    /// (type, bytes) of every MADT entry.
    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let (ty, len) = (madt[off], usize::from(madt[off + 1]));
            assert!(len >= 2 && off + len <= madt.len(), "MADT entry at {off}");
            entries.push((ty, madt[off..off + len].to_vec()));
            off += len;
        }
        entries
    }

    #[test]
    fn madt_has_a_lapic_per_vcpu_the_ioapic_and_two_overrides() {
        let vcpus = 4;
        let (_mem, t) = build(vcpus);
        let entries = madt_entries(&t.madt);

        assert_eq!(u32_at(&t.madt, 36), 0xfee0_0000, "LAPIC address");
        assert_eq!(u32_at(&t.madt, 40) & 1, 1, "PCAT_COMPAT");
        assert_eq!(entries.len(), usize::from(vcpus) + 1 + 2);
        let lapics: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 0).collect();
        assert_eq!(lapics.len(), usize::from(vcpus));
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!(usize::from(e[2]), i, "processor UID");
            assert_eq!(usize::from(e[3]), i, "APIC ID");
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }
        let (_, ioapic) = entries.iter().find(|(ty, _)| *ty == 1).unwrap();
        assert_eq!(ioapic[2], vcpus, "IOAPIC ID");
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
        assert_eq!(u32_at(ioapic, 8), 0, "GSI base");
    }

    #[test]
    fn madt_overrides_route_the_pit_to_gsi_2_and_make_the_sci_level() {
        let (_mem, t) = build(1);
        let isos: Vec<Vec<u8>> = madt_entries(&t.madt)
            .into_iter()
            .filter(|(ty, _)| *ty == 2)
            .map(|(_, e)| e)
            .collect();

        assert_eq!(isos.len(), 2);
        let pit = isos.iter().find(|e| e[3] == 0).unwrap();
        assert_eq!(
            (pit[1], pit[2], u32_at(pit, 4), u16_at(pit, 8)),
            (10, 0, 2, 0)
        );
        let sci = isos.iter().find(|e| e[3] == 9).unwrap();
        assert_eq!((u32_at(sci, 4), u16_at(sci, 8)), (9, 0b1101));
    }

    #[test]
    fn dsdt_has_s5_with_slp_typ_5() {
        let (_mem, t) = build(1);
        let d = &t.dsdt;

        assert_eq!(d[8], 2, "DSDT revision");
        let at = d.windows(4).position(|w| w == b"_S5_").unwrap();
        // PackageOp, PkgLength, NumElements 4, BytePrefix 5, BytePrefix 5.
        assert_eq!(d[at + 4], 0x12);
        assert_eq!(&d[at + 6..at + 11], &[4, 0x0a, 5, 0x0a, 5]);
    }

    #[test]
    fn dsdt_names_the_host_bridge_and_legacy_devices_by_eisa_id() {
        let (_mem, t) = build(1);

        assert_eq!(eisa_id_bytes("PNP0303"), [0x41, 0xd0, 0x03, 0x03]);
        for id in ["PNP0A03", "PNP0501", "PNP0303", "PNP0F13", "PNP0B00"] {
            assert!(contains(&t.dsdt, &hid_bytes(id)), "_HID {id}");
        }
        for seg in [b"PCI0", b"COM1", b"KBD_", b"MOU_", b"RTC_", b"_SB_"] {
            assert!(contains(&t.dsdt, seg), "{}", String::from_utf8_lossy(seg));
        }
        assert!(!contains(&t.dsdt, &eisa_id_bytes("PNP0C0C")), "no PNP0C0C");
    }

    #[test]
    fn dsdt_resources_use_isa_irq_descriptors_and_fixed_ports() {
        let (_mem, t) = build(1);
        let irq = |n: u16| {
            let [a, b] = (1u16 << n).to_le_bytes();
            [0x22, a, b]
        };
        let io = |port: u16, len: u8| {
            let [a, b] = port.to_le_bytes();
            [0x47, 0x01, a, b, a, b, 1, len]
        };

        for n in [1, 4, 8, 12] {
            assert!(contains(&t.dsdt, &irq(n)), "IRQNoFlags({n})");
        }
        assert!(contains(&t.dsdt, &io(0x3f8, 8)), "COM1");
        assert!(contains(&t.dsdt, &io(0x60, 1)), "i8042 data");
        assert!(contains(&t.dsdt, &io(0x64, 1)), "i8042 command");
        assert!(contains(&t.dsdt, &io(0x70, 2)), "CMOS");
        assert!(contains(&t.dsdt, &io(0xcf8, 8)), "PCI config");
    }

    /// A DWord address space descriptor's type, min and max.
    fn dword_ranges(dsdt: &[u8]) -> Vec<(u8, u32, u32)> {
        (0..dsdt.len().saturating_sub(26))
            .filter(|&i| dsdt[i] == 0x87 && u16_at(dsdt, i + 1) == 23)
            .map(|i| (dsdt[i + 3], u32_at(dsdt, i + 10), u32_at(dsdt, i + 14)))
            .collect()
    }

    /// A Word address space descriptor's type, min and max.
    fn word_ranges(dsdt: &[u8]) -> Vec<(u8, u16, u16)> {
        (0..dsdt.len().saturating_sub(16))
            .filter(|&i| dsdt[i] == 0x88 && u16_at(dsdt, i + 1) == 13)
            .map(|i| (dsdt[i + 3], u16_at(dsdt, i + 8), u16_at(dsdt, i + 10)))
            .collect()
    }

    #[test]
    fn host_bridge_crs_has_buses_io_vga_and_the_mmio_window() {
        let mem = guest_memory();
        let cfg = AcpiConfig {
            vcpus: 1,
            pci_mmio_start: 0xd000_0000,
            pci_mmio_end: 0xe000_0000,
        };
        let t = walk(&mem, create_acpi_tables(&mem, &cfg).unwrap());

        let words = word_ranges(&t.dsdt);
        assert!(words.contains(&(2, 0, 0xff)), "bus numbers: {words:x?}");
        assert!(words.contains(&(1, 0, 0xcf7)), "I/O below 0xcf8");
        assert!(words.contains(&(1, 0xd00, 0xffff)), "I/O above 0xcff");
        let dwords = dword_ranges(&t.dsdt);
        assert!(
            dwords.contains(&(0, 0xa_0000, 0xb_ffff)),
            "VGA: {dwords:x?}"
        );
        assert!(dwords.contains(&(0, 0xd000_0000, 0xdfff_ffff)), "MMIO");
    }

    #[test]
    fn tables_fit_for_the_largest_vcpu_count() {
        let (_mem, t) = build(MAX_VCPUS);

        assert_eq!(madt_entries(&t.madt).len(), usize::from(MAX_VCPUS) + 3);
        assert_eq!(t.madt[44 + 8 * usize::from(MAX_VCPUS) + 2], MAX_VCPUS);
    }

    #[test]
    fn bad_vcpu_counts_are_refused() {
        let mem = guest_memory();

        for vcpus in [0, 255] {
            let err = create_acpi_tables(&mem, &config(vcpus)).unwrap_err();
            assert!(matches!(err, AcpiError::VcpuCount(n) if n == vcpus));
        }
        assert_eq!(read(&mem, ACPI_START, 8), vec![0; 8], "nothing written");
    }

    #[test]
    fn bad_pci_windows_are_refused() {
        let mem = guest_memory();
        for (start, end) in [
            (0xe000_0000, 0xd000_0000),
            (0xd000_0000, 0xd000_0000),
            (0xd000_0000, 0x1_0000_0001),
            (0, 0x1_0000_0000),
        ] {
            let cfg = AcpiConfig {
                vcpus: 1,
                pci_mmio_start: start,
                pci_mmio_end: end,
            };

            let err = create_acpi_tables(&mem, &cfg).unwrap_err();

            assert!(
                matches!(err, AcpiError::PciWindow { .. }),
                "{start:#x}..{end:#x}"
            );
        }
    }

    #[test]
    fn window_may_end_exactly_at_4_gib() {
        let mem = guest_memory();
        let cfg = AcpiConfig {
            vcpus: 1,
            pci_mmio_start: 0xc000_0000,
            pci_mmio_end: 0x1_0000_0000,
        };

        let t = walk(&mem, create_acpi_tables(&mem, &cfg).unwrap());

        assert!(dword_ranges(&t.dsdt).contains(&(0, 0xc000_0000, 0xffff_ffff)));
    }

    #[test]
    fn placer_refuses_tables_past_the_reserved_area() {
        let mut placer = Placer::new(0x1000, 0x1100);

        assert_eq!(placer.place(36, 16).unwrap(), 0x1000);
        assert_eq!(placer.place(64, 64).unwrap(), 0x1040);
        let err = placer.place(0x81, 8).unwrap_err();

        assert!(matches!(
            err,
            AcpiError::TooLarge {
                needed: 0x100..,
                available: 0x100
            }
        ));
    }

    #[test]
    fn memory_without_the_acpi_area_is_an_error_not_a_panic() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();

        let err = create_acpi_tables(&mem, &config(1)).unwrap_err();

        assert!(matches!(err, AcpiError::Write { .. }));
    }

    #[test]
    fn acpi_range_covers_the_tables() {
        let (_mem, t) = build(8);
        let (start, size) = acpi_memory_range();

        assert_eq!(start, ACPI_START);
        let dsdt_end = t.dsdt_addr + t.dsdt.len() as u64;
        assert!(dsdt_end <= start + size);
    }

    /// Runs ACPICA's `iasl` (Debian: `acpica-tools`) in `dir`; a missing
    /// iasl fails the test. Returns whether it succeeded, and its output.
    fn iasl(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
        let out = std::process::Command::new("iasl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("iasl (Debian package acpica-tools) must be installed for this test");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), log)
    }

    /// A scratch directory removed when dropped.
    struct ScratchDir(std::path::PathBuf);

    impl ScratchDir {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("vireo-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes the DSDT, FADT and MADT of a 2-vCPU machine to `dir` and
    /// disassembles each with `iasl -d`; returns the listings by name.
    fn disassemble(dir: &std::path::Path) -> std::collections::HashMap<&'static str, String> {
        let (mem, t) = build(2);
        let mut listings = std::collections::HashMap::new();
        for (name, addr) in [
            ("dsdt", t.dsdt_addr),
            ("facp", t.xsdt[0]),
            ("apic", t.xsdt[1]),
        ] {
            let len = u32_at(&read(&mem, addr, 8), 4) as usize;
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, read(&mem, addr, len)).unwrap();

            let (ok, log) = iasl(dir, &["-d".as_ref(), path.as_os_str()]);

            assert!(ok && !log.contains("rror"), "iasl -d {name}: {log}");
            let dsl = std::fs::read_to_string(path.with_extension("dsl")).unwrap();
            listings.insert(name, dsl);
        }
        listings
    }

    #[test]
    fn iasl_disassembles_every_table() {
        let dir = ScratchDir::new("acpi-disassemble");

        let listings = disassemble(&dir.0);

        let dsdt = &listings["dsdt"];
        for needle in [
            "Name (\\_S5, Package (0x04)",
            "EisaId (\"PNP0A03\")",
            "EisaId (\"PNP0303\")",
            "EisaId (\"PNP0F13\")",
            "EisaId (\"PNP0501\")",
            "EisaId (\"PNP0B00\")",
            "IRQNoFlags ()",
            "WordBusNumber (",
            "DWordMemory (",
        ] {
            assert!(dsdt.contains(needle), "DSDT lacks {needle}:\n{dsdt}");
        }
        let facp = &listings["facp"];
        assert!(
            facp.contains("PM1A Event Block Address : 00000600"),
            "{facp}"
        );
        assert!(
            facp.contains("Control Method Power Button (V1) : 0"),
            "{facp}"
        );
        assert!(
            facp.contains("8042 Present on ports 60/64 (V2) : 1"),
            "{facp}"
        );
        let apic = &listings["apic"];
        assert!(apic.contains("PC-AT Compatibility : 1"), "{apic}");
        assert!(apic.contains("Interrupt Source Override"), "{apic}");
    }

    /// The disassembled DSDT compiles again without errors. The one warning
    /// iasl gives, like on QEMU's DSDT, is PCI0 having both `_HID` and `_ADR`.
    #[test]
    fn iasl_recompiles_the_dsdt_without_errors() {
        let dir = ScratchDir::new("acpi-recompile");
        disassemble(&dir.0);

        let (ok, log) = iasl(
            &dir.0,
            &["-p".as_ref(), "recompiled".as_ref(), "dsdt.dsl".as_ref()],
        );

        assert!(ok && log.contains(" 0 Errors"), "{log}");
        let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("Warning")).collect();
        assert!(
            warnings.iter().all(|w| w.contains("either a _HID or _ADR")),
            "{log}"
        );
    }
}
