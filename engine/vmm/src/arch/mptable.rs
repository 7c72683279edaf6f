//! The Intel MultiProcessor Specification 1.4 table, for guests that do not
//! read ACPI (Linux with `acpi=off`, small test kernels).
//!
//! The floating pointer structure sits at [`EBDA_START`] (the last KiB of
//! conventional memory, where Linux and other kernels scan for `_MP_`), the
//! configuration table right after it, and everything ends before
//! [`LOW_RAM_END`]. Its contents match the MADT (see [`crate::arch`]): APIC
//! IDs `0..vcpus`, the IOAPIC with the next ID, ISA IRQ 0 on IOAPIC pin 2,
//! the SCI (IRQ 9) level-triggered active high, ExtINT on the BSP's LINT0
//! and NMI on every LINT1. Bus 0 is the PCI root bus and bus 1 the ISA bus,
//! as crosvm numbers them.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes};

use super::{IOAPIC_VERSION, ISA_IRQS, LAPIC_VERSION, ioapic_id, isa_irq_to_ioapic_pin};
use crate::layout::{EBDA_START, IOAPIC_START, LAPIC_START, LOW_RAM_END, irqs};

/// The MP spec revision: 1.4.
const SPEC_REV: u8 = 4;
const OEM_ID: [u8; 8] = *b"VIREO   ";
const PRODUCT_ID: [u8; 12] = *b"VIREO VMM   ";

/// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

/// Processor flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
/// CPUID signature of the processor entries: family 6, model 0, stepping 0.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX features of the processor entries: FPU (bit 0), APIC (bit 9).
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
/// IOAPIC flags: usable.
const IOAPIC_ENABLED: u8 = 1;

/// Interrupt types.
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Interrupt flags: conforms to the bus.
const IRQ_CONFORMS: u16 = 0;
/// Interrupt flags: active high (bits 1:0 = 01), level triggered (3:2 = 11).
const IRQ_LEVEL_ACTIVE_HIGH: u16 = 0b1101;

/// Bus IDs.
const PCI_BUS_ID: u8 = 0;
const ISA_BUS_ID: u8 = 1;
/// Destination APIC ID meaning every local APIC.
const ALL_LAPICS: u8 = 0xff;

#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct FloatingPointer {
    signature: [u8; 4],
    config_table: U32,
    /// In 16-byte paragraphs.
    length: u8,
    spec_rev: u8,
    checksum: u8,
    /// Feature byte 1 = 0: a configuration table is present. Feature byte 2
    /// bit 7 (IMCRP) = 0: virtual wire mode, no IMCR.
    features: [u8; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct ConfigHeader {
    signature: [u8; 4],
    base_table_length: U16,
    spec_rev: u8,
    checksum: u8,
    oem_id: [u8; 8],
    product_id: [u8; 12],
    oem_table_pointer: U32,
    oem_table_size: U16,
    entry_count: U16,
    lapic_address: U32,
    extended_table_length: U16,
    extended_table_checksum: u8,
    reserved: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct ProcessorEntry {
    entry_type: u8,
    lapic_id: u8,
    lapic_version: u8,
    flags: u8,
    signature: U32,
    features: U32,
    reserved: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct BusEntry {
    entry_type: u8,
    bus_id: u8,
    bus_type: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct IoApicEntry {
    entry_type: u8,
    id: u8,
    version: u8,
    flags: u8,
    address: U32,
}

/// I/O interrupt (type 3) and local interrupt (type 4) entries share this
/// layout; `dest_id`/`dest_pin` are the IOAPIC and its INTIN pin, or the
/// local APIC and its LINTIN pin.
#[repr(C)]
#[derive(Clone, Copy, Default, IntoBytes, Immutable)]
struct InterruptEntry {
    entry_type: u8,
    interrupt_type: u8,
    flags: U16,
    source_bus: u8,
    source_irq: u8,
    dest_id: u8,
    dest_pin: u8,
}

const _: () = {
    assert!(size_of::<FloatingPointer>() == 16);
    assert!(size_of::<ConfigHeader>() == 44);
    assert!(size_of::<ProcessorEntry>() == 20);
    assert!(size_of::<BusEntry>() == 8);
    assert!(size_of::<IoApicEntry>() == 8);
    assert!(size_of::<InterruptEntry>() == 8);
};

/// ISA IRQs with an IOAPIC pin (all but IRQ 2).
const ISA_INTERRUPT_ENTRIES: usize = ISA_IRQS as usize - 1;
/// Bytes used whatever the vCPU count: pointer, header, two buses, the
/// IOAPIC, the ISA interrupts and two local interrupts.
const FIXED_SIZE: usize = size_of::<FloatingPointer>()
    + size_of::<ConfigHeader>()
    + 2 * size_of::<BusEntry>()
    + size_of::<IoApicEntry>()
    + (ISA_INTERRUPT_ENTRIES + 2) * size_of::<InterruptEntry>();
/// Bytes available between [`EBDA_START`] and [`LOW_RAM_END`].
const AREA_SIZE: usize = (LOW_RAM_END - EBDA_START) as usize;

/// Most vCPUs whose processor entries fit before [`LOW_RAM_END`] (40).
/// Larger guests still boot through ACPI's MADT, which has no such limit;
/// skip the MP table for them.
pub const MAX_MPTABLE_VCPUS: u8 = {
    let n = (AREA_SIZE - FIXED_SIZE) / size_of::<ProcessorEntry>();
    assert!(n <= u8::MAX as usize);
    n as u8
};

/// Why the MP table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// No vCPUs, or more than fit in the EBDA.
    #[error("an MP table cannot describe {vcpus} vCPUs (1 to {max} fit)")]
    VcpuCount {
        /// vCPUs asked for.
        vcpus: u8,
        /// [`MAX_MPTABLE_VCPUS`].
        max: u8,
    },
    /// Guest memory did not take the table.
    #[error("cannot write the MP table to guest memory at {addr:#x}")]
    Write {
        /// Guest-physical address.
        addr: u64,
        /// What vm-memory reported.
        #[source]
        source: GuestMemoryError,
    },
}

/// The guest-physical range the table may occupy, as `(start, size)`: keep
/// it out of the RAM entries of the e820 map (mark it reserved).
pub fn mptable_memory_range() -> (u64, u64) {
    (EBDA_START, LOW_RAM_END - EBDA_START)
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Appends entries and counts them.
struct Entries {
    bytes: Vec<u8>,
    count: u16,
}

impl Entries {
    fn push(&mut self, entry: &(impl IntoBytes + Immutable)) {
        self.bytes.extend_from_slice(entry.as_bytes());
        self.count += 1;
    }
}

fn build(vcpus: u8) -> Vec<u8> {
    let ioapic = ioapic_id(vcpus);
    let mut entries = Entries {
        bytes: Vec::with_capacity(AREA_SIZE),
        count: 0,
    };

    for id in 0..vcpus {
        let boot = if id == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        entries.push(&ProcessorEntry {
            entry_type: ENTRY_PROCESSOR,
            lapic_id: id,
            lapic_version: LAPIC_VERSION,
            flags: CPU_ENABLED | boot,
            signature: CPU_SIGNATURE.into(),
            features: CPU_FEATURES.into(),
            reserved: [0; 8],
        });
    }
    for (bus_id, bus_type) in [(PCI_BUS_ID, b"PCI   "), (ISA_BUS_ID, b"ISA   ")] {
        entries.push(&BusEntry {
            entry_type: ENTRY_BUS,
            bus_id,
            bus_type: *bus_type,
        });
    }
    entries.push(&IoApicEntry {
        entry_type: ENTRY_IOAPIC,
        id: ioapic,
        version: IOAPIC_VERSION,
        flags: IOAPIC_ENABLED,
        // The layout constant is a 32-bit address.
        address: (IOAPIC_START as u32).into(),
    });
    for irq in 0..ISA_IRQS {
        let Some(pin) = isa_irq_to_ioapic_pin(irq) else {
            continue;
        };
        let flags = if u32::from(irq) == irqs::SCI {
            IRQ_LEVEL_ACTIVE_HIGH
        } else {
            IRQ_CONFORMS
        };
        entries.push(&InterruptEntry {
            entry_type: ENTRY_IO_INTERRUPT,
            interrupt_type: INT_VECTORED,
            flags: flags.into(),
            source_bus: ISA_BUS_ID,
            source_irq: irq,
            dest_id: ioapic,
            dest_pin: pin,
        });
    }
    // The 8259s' output on the BSP's LINT0, NMI on every CPU's LINT1.
    for (interrupt_type, dest_id, dest_pin) in [(INT_EXTINT, 0, 0), (INT_NMI, ALL_LAPICS, 1)] {
        entries.push(&InterruptEntry {
            entry_type: ENTRY_LOCAL_INTERRUPT,
            interrupt_type,
            flags: IRQ_CONFORMS.into(),
            source_bus: ISA_BUS_ID,
            source_irq: 0,
            dest_id,
            dest_pin,
        });
    }

    let config_addr = EBDA_START + size_of::<FloatingPointer>() as u64;
    let table_len = size_of::<ConfigHeader>() + entries.bytes.len();
    let mut header = ConfigHeader {
        signature: *b"PCMP",
        // At most AREA_SIZE (1 KiB) by the vCPU check.
        base_table_length: (table_len as u16).into(),
        spec_rev: SPEC_REV,
        checksum: 0,
        oem_id: OEM_ID,
        product_id: PRODUCT_ID,
        entry_count: entries.count.into(),
        lapic_address: (LAPIC_START as u32).into(),
        ..Default::default()
    };
    let mut table = header.as_bytes().to_vec();
    table.extend_from_slice(&entries.bytes);
    header.checksum = checksum(&table);
    table[..size_of::<ConfigHeader>()].copy_from_slice(header.as_bytes());

    let mut pointer = FloatingPointer {
        signature: *b"_MP_",
        config_table: (config_addr as u32).into(),
        length: 1,
        spec_rev: SPEC_REV,
        ..Default::default()
    };
    pointer.checksum = checksum(pointer.as_bytes());

    let mut image = pointer.as_bytes().to_vec();
    image.extend_from_slice(&table);
    image
}

/// Writes the MP floating pointer and configuration table for `vcpus`
/// vCPUs (1 to [`MAX_MPTABLE_VCPUS`]) at [`EBDA_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MptableError> {
    if vcpus == 0 || vcpus > MAX_MPTABLE_VCPUS {
        return Err(MptableError::VcpuCount {
            vcpus,
            max: MAX_MPTABLE_VCPUS,
        });
    }
    let image = build(vcpus);
    debug_assert!(image.len() <= AREA_SIZE);
    mem.write_slice(&image, GuestAddress(EBDA_START))
        .map_err(|source| MptableError::Write {
            addr: EBDA_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_util::{guest_memory, read, sum, u16_at, u32_at};

    /// The configuration table found from the floating pointer, checked.
    fn table(mem: &GuestMemoryMmap) -> Vec<u8> {
        let fp = read(mem, EBDA_START, 16);
        assert_eq!(&fp[0..4], b"_MP_");
        assert_eq!(fp[8], 1, "length in paragraphs");
        assert_eq!(fp[9], 4, "spec revision 1.4");
        assert_eq!(sum(&fp), 0, "floating pointer checksum");
        assert_eq!(&fp[11..16], &[0; 5], "config table present, virtual wire");
        assert_eq!(EBDA_START % 16, 0);
        let addr = u64::from(u32_at(&fp, 4));

        let header = read(mem, addr, 44);
        assert_eq!(&header[0..4], b"PCMP");
        assert_eq!(header[6], 4, "spec revision");
        let len = usize::from(u16_at(&header, 4));
        assert!(
            addr + len as u64 <= LOW_RAM_END,
            "table ends before 640 KiB"
        );
        let t = read(mem, addr, len);
        assert_eq!(sum(&t), 0, "configuration table checksum");
        assert_eq!(u32_at(&t, 36), 0xfee0_0000, "LAPIC address");
        assert_eq!(u16_at(&t, 40), 0, "no extended table");
        t
    }

    /// Entries as (type, bytes), walked by the size each type has.
    fn entries(t: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 44;
        while off < t.len() {
            let len = if t[off] == 0 { 20 } else { 8 };
            out.push((t[off], t[off..off + len].to_vec()));
            off += len;
        }
        assert_eq!(off, t.len(), "entries end with the table");
        assert_eq!(usize::from(u16_at(t, 34)), out.len(), "entry count");
        out
    }

    fn of_type(entries: &[(u8, Vec<u8>)], ty: u8) -> Vec<Vec<u8>> {
        entries
            .iter()
            .filter(|(t, _)| *t == ty)
            .map(|(_, e)| e.clone())
            .collect()
    }

    #[test]
    fn processor_entries_have_ids_in_order_and_one_bsp() {
        let mem = guest_memory();

        setup_mptable(&mem, 4).unwrap();

        let all = entries(&table(&mem));
        let cpus = of_type(&all, 0);
        assert_eq!(cpus.len(), 4);
        for (i, e) in cpus.iter().enumerate() {
            assert_eq!(usize::from(e[1]), i, "APIC ID");
            assert_eq!(e[2], 0x14, "APIC version");
            assert_eq!(e[3] & 1, 1, "enabled");
            assert_eq!(e[3] & 2 != 0, i == 0, "BSP flag");
            assert_eq!(u32_at(e, 4), 0x600);
            assert_eq!(u32_at(e, 8) & 0x201, 0x201, "FPU and APIC");
        }
    }

    #[test]
    fn table_has_pci_and_isa_buses_and_the_ioapic() {
        let mem = guest_memory();

        setup_mptable(&mem, 2).unwrap();

        let all = entries(&table(&mem));
        let buses = of_type(&all, 1);
        assert_eq!(buses.len(), 2);
        assert!(buses.iter().any(|b| b[1] == 0 && &b[2..8] == b"PCI   "));
        assert!(buses.iter().any(|b| b[1] == 1 && &b[2..8] == b"ISA   "));
        let ioapics = of_type(&all, 2);
        assert_eq!(ioapics.len(), 1);
        assert_eq!(
            &ioapics[0][1..4],
            &[2, 0x11, 1],
            "ID = vcpus, version, enabled"
        );
        assert_eq!(u32_at(&ioapics[0], 4), 0xfec0_0000);
    }

    #[test]
    fn isa_irqs_reach_the_ioapic_with_irq0_on_pin_2() {
        let mem = guest_memory();

        setup_mptable(&mem, 1).unwrap();

        let ints = of_type(&entries(&table(&mem)), 3);
        assert_eq!(ints.len(), 15);
        let pin_of = |irq: u8| {
            let e = ints.iter().find(|e| e[5] == irq)?;
            assert_eq!((e[1], e[4], e[6]), (0, 1, 1), "INT from ISA to IOAPIC 1");
            Some((e[7], u16_at(e, 2)))
        };
        assert_eq!(pin_of(0), Some((2, 0)));
        assert_eq!(pin_of(2), None);
        assert_eq!(pin_of(4), Some((4, 0)));
        assert_eq!(pin_of(9), Some((9, 0b1101)), "SCI level, active high");
        assert_eq!(pin_of(15), Some((15, 0)));
    }

    #[test]
    fn local_interrupts_are_extint_on_lint0_and_nmi_on_lint1() {
        let mem = guest_memory();

        setup_mptable(&mem, 1).unwrap();

        let lints = of_type(&entries(&table(&mem)), 4);
        assert_eq!(lints.len(), 2);
        assert!(lints.iter().any(|e| e[1] == 3 && e[6] == 0 && e[7] == 0));
        assert!(lints.iter().any(|e| e[1] == 1 && e[6] == 0xff && e[7] == 1));
    }

    #[test]
    fn largest_table_fits_before_640_kib() {
        let mem = guest_memory();

        setup_mptable(&mem, MAX_MPTABLE_VCPUS).unwrap();

        let t = table(&mem);
        assert_eq!(MAX_MPTABLE_VCPUS, 40);
        assert_eq!(of_type(&entries(&t), 0).len(), 40);
        assert_eq!(16 + t.len(), 16 + 44 + 40 * 20 + 2 * 8 + 8 + 15 * 8 + 2 * 8);
    }

    #[test]
    fn zero_or_too_many_vcpus_are_refused() {
        let mem = guest_memory();

        for vcpus in [0, MAX_MPTABLE_VCPUS + 1, 255] {
            let err = setup_mptable(&mem, vcpus).unwrap_err();
            assert!(matches!(err, MptableError::VcpuCount { vcpus: v, max: 40 } if v == vcpus));
        }
        assert_eq!(read(&mem, EBDA_START, 4), vec![0; 4], "nothing written");
    }

    #[test]
    fn memory_without_the_ebda_is_an_error_not_a_panic() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9_0000)]).unwrap();

        let err = setup_mptable(&mem, 1).unwrap_err();

        assert!(matches!(err, MptableError::Write { .. }));
    }

    #[test]
    fn mptable_range_is_the_last_kib_below_640_kib() {
        assert_eq!(mptable_memory_range(), (0x9_fc00, 0x400));
    }
}
