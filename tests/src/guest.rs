//! Builds test guests from `tests/guests/NAME.c` with gcc.
//!
//! A guest is `lib/start.S` (the entry code), `lib/runtime.c` (what gcc may
//! call: `memset`, `memcpy`, ...), `NAME.c` and, when it exists, `NAME.S`
//! (code that must be written in assembly, such as the SMP guest's 16-bit
//! trampoline).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// How a guest is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// An ELF64 entered in 64-bit mode with `%rsi` = boot_params.
    Elf64,
    /// An ELF with a PVH note, entered in 32-bit mode with `%ebx` = start_info.
    Pvh,
    /// A bzImage (Linux boot protocol 2.15 header, 64-bit entry at
    /// `code32_start + 0x200` as a real kernel's `startup_64`), entered with
    /// `%rsi` = boot_params like [`Flavor::Elf64`].
    BzImage,
}

/// The compiler flags every guest is built with (DESIGN.md).
pub const GUEST_CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-mgeneral-regs-only",
    "-mno-sse",
    "-mno-mmx",
    "-mno-80387",
    "-mno-red-zone",
    "-fno-pic",
    "-no-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-mcmodel=kernel",
    "-O2",
    "-Wall",
    "-Werror",
];

/// The folder holding the guest sources.
pub fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

/// Where built guests go: `target/guests`, shared by all tests of a run.
fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests")
        .to_path_buf()
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds `tests/guests/NAME.c` (plus the shared entry code, and `NAME.S`
/// when there is one) as `flavor` and returns the ELF's path. Panics with gcc's output when the build fails,
/// since a test cannot go on without its guest.
pub fn build(name: &str, flavor: Flavor) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = guests_dir();
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    let suffix = match flavor {
        Flavor::Elf64 => "elf64",
        Flavor::Pvh => "pvh",
        Flavor::BzImage => "bz",
    };
    // A bzImage's protected-mode code is loaded at 1 MiB and entered 0x200
    // bytes in: link the guest there.
    let script = if flavor == Flavor::BzImage {
        let text = std::fs::read_to_string(dir.join("lib/guest.ld")).unwrap();
        let moved = out.join("guest-bzimage.ld");
        std::fs::write(&moved, text.replace(". = 0x100000;", ". = 0x100200;")).unwrap();
        moved
    } else {
        dir.join("lib/guest.ld")
    };
    let elf = out.join(format!("{name}.{suffix}.elf"));
    let tmp = out.join(format!(".{name}.{suffix}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("gcc");
    cmd.args(GUEST_CFLAGS)
        .arg(format!("-I{}", dir.display()))
        .arg("-T")
        .arg(&script)
        .arg("-Wl,--build-id=none")
        .arg("-Wl,-z,noexecstack")
        .arg("-o")
        .arg(&tmp)
        .arg(dir.join("lib/start.S"))
        .arg(dir.join("lib/runtime.c"))
        .arg(dir.join(format!("{name}.c")));
    let asm = dir.join(format!("{name}.S"));
    if asm.exists() {
        cmd.arg(asm);
    }
    if flavor == Flavor::Pvh {
        cmd.arg("-DPVH");
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc to build guest {name}: {e}"));
    assert!(
        output.status.success(),
        "building guest {name} ({flavor:?}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if flavor == Flavor::BzImage {
        let image = out.join(format!("{name}.bzImage"));
        let flat = out.join(format!(".{name}.flat.{}", std::process::id()));
        let status = Command::new("objcopy")
            .args(["-O", "binary"])
            .arg(&tmp)
            .arg(&flat)
            .status()
            .expect("objcopy (binutils) is required");
        assert!(status.success(), "objcopy failed on guest {name}");
        let payload = std::fs::read(&flat).unwrap();
        let _ = std::fs::remove_file(&flat);
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&image, bzimage(&payload)).unwrap();
        return image;
    }
    std::fs::rename(&tmp, &elf).unwrap();
    elf
}

/// Wraps a flat 64-bit image linked at 0x100200 into a bzImage: one setup
/// sector with the boot protocol 2.15 header, then 0x200 bytes where a real
/// kernel has its 32-bit entry, then the image.
pub fn bzimage(payload: &[u8]) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut kernel = vec![0xf4u8; 0x200]; // hlt: the 32-bit entry is unused
    kernel.extend_from_slice(payload);
    let mut image = vec![0u8; setup_len];
    let put16 =
        |img: &mut Vec<u8>, at: usize, v: u16| img[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    image[0x1f1] = SETUP_SECTS;
    put32(&mut image, 0x1f4, kernel.len().div_ceil(16) as u32); // syssize
    put16(&mut image, 0x1fe, 0xaa55); // boot_flag
    image[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut image, 0x206, 0x020f); // protocol 2.15
    image[0x211] = 0x01; // loadflags: LOADED_HIGH
    put32(&mut image, 0x214, 0x10_0000); // code32_start
    put32(&mut image, 0x230, 0x20_0000); // kernel_alignment
    put16(&mut image, 0x236, 0x0001); // xloadflags: XLF_KERNEL_64
    put32(&mut image, 0x238, 4096); // cmdline_size
    image[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes()); // pref_address
    put32(
        &mut image,
        0x260,
        (kernel.len() as u32).next_multiple_of(4096) + (1 << 20),
    ); // init_size
    image.extend_from_slice(&kernel);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The PHYS32_ENTRY address from the PVH note, if any.
    fn pvh_entry(elf: &[u8]) -> Option<u32> {
        let phoff = u64_at(elf, 0x20) as usize;
        let phentsize = usize::from(u16_at(elf, 0x36));
        let phnum = usize::from(u16_at(elf, 0x38));
        (0..phnum).find_map(|i| {
            let ph = &elf[phoff + i * phentsize..];
            if u32_at(ph, 0) != 4 {
                return None; // not PT_NOTE
            }
            let (off, size) = (u64_at(ph, 8) as usize, u64_at(ph, 32) as usize);
            if size < 20 {
                return None; // empty note segment (no PVH note in this build)
            }
            let note = &elf[off..off + size];
            let (namesz, descsz, kind) = (u32_at(note, 0), u32_at(note, 4), u32_at(note, 8));
            (kind == 18 && namesz == 4 && descsz == 4 && &note[12..16] == b"Xen\0")
                .then(|| u32_at(note, 16))
        })
    }

    #[test]
    fn guests_build_as_static_elf64_with_and_without_pvh_note() {
        let elf64 = std::fs::read(build("hello", Flavor::Elf64)).unwrap();
        let pvh = std::fs::read(build("hello", Flavor::Pvh)).unwrap();
        for elf in [&elf64, &pvh] {
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(elf[4], 2, "ELFCLASS64");
            assert_eq!(u16_at(elf, 0x10), 2, "ET_EXEC (static)");
            assert_eq!(u16_at(elf, 0x12), 62, "EM_X86_64");
            // Loaded at 1 MiB, entry at the start of .text.
            assert_eq!(u64_at(elf, 0x18), 0x10_0000);
        }
        assert_eq!(pvh_entry(&elf64), None);
        let entry = pvh_entry(&pvh).expect("PVH build carries XEN_ELFNOTE_PHYS32_ENTRY");
        assert!((0x10_0000..0x20_0000).contains(&entry), "{entry:#x}");
    }

    #[test]
    fn every_guest_builds_in_both_flavors() {
        let mut names: Vec<String> = std::fs::read_dir(guests_dir())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".c").map(str::to_owned)
            })
            .collect();
        names.sort();
        assert!(names.len() >= 11, "{names:?}");
        for name in names {
            for flavor in [Flavor::Elf64, Flavor::Pvh] {
                let elf = std::fs::read(build(&name, flavor)).unwrap();
                assert_eq!(pvh_entry(&elf).is_some(), flavor == Flavor::Pvh, "{name}");
            }
        }
    }

    #[test]
    fn a_broken_guest_reports_gcc_errors() {
        let dir = tempfile::tempdir().unwrap();
        let result = std::panic::catch_unwind(|| build("does-not-exist", Flavor::Elf64));
        assert!(result.is_err());
        drop(dir);
    }
}
