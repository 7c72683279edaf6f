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
