//! vmdk import by conversion, with QEMU's tools as the reference: images
//! made by `qemu-img convert -O vmdk` in every subformat, a
//! `streamOptimized` file laid out as VMware writes it (grain directory at
//! the end, found through the footer), zeroed grains, converted by us to
//! qcow2 and raw and checked with `qemu-img compare` and `qemu-img check`;
//! and descriptors that try to reach outside their folder.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use vireo_storage::vmdk::VmdkReader;
use vireo_storage::{ImageFormat, OpenOptions, TargetFormat, convert, probe};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A sparse raw file of `size` bytes with, at each offset, a pattern:
/// data across grain boundaries, a run of real zero bytes written as data,
/// holes (unallocated in the vmdk) and data in the last partial grain.
fn source_raw(path: &Path, size: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    let put = |offset: u64, data: &[u8]| file.write_all_at(data, offset).unwrap();
    put(0, &pattern(200_000, 1));
    put(MIB + 1000, &pattern(300_000, 2));
    // A run of zero bytes that qemu-img stores (it is within a grain with data).
    put(3 * MIB, &pattern(4096, 3));
    put(3 * MIB + 4096, &vec![0u8; 60_000]);
    put(size - 70_000, &pattern(70_000, 4));
    if size > 2048 * MIB {
        // Around the 2 GiB split of the twoGbMaxExtent subformats.
        put(2048 * MIB - 5000, &pattern(10_000, 5));
    }
}

fn convert_and_check(src: &Path, reference: &Path, dir: &Path, tag: &str) {
    for (target, ext) in [(TargetFormat::qcow2(), "qcow2"), (TargetFormat::Raw, "raw")] {
        let out = dir.join(format!("{tag}.out.{ext}"));
        let mut last = (0, 0);
        convert(src, &OpenOptions::new(), &out, target, &mut |d, t| {
            assert!(d <= t);
            last = (d, t);
        })
        .unwrap_or_else(|e| panic!("{tag} -> {ext}: {e}"));
        assert_eq!(last.0, last.1, "{tag}: progress ends at the total");
        if ext == "qcow2" {
            assert_check_clean(&out);
        }
        assert_same_contents(&out, reference);
        assert_eq!(
            probe(&out).unwrap().virtual_size,
            probe(reference).unwrap().virtual_size
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn every_qemu_img_vmdk_subformat_converts_to_qcow2_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    // Not a multiple of the 64 KiB grain: the last grain is partial.
    let raw = dir.path().join("src.raw");
    source_raw(&raw, 9 * MIB + 3 * 512);
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
        let vmdk = dir.path().join(format!("{sub}.vmdk"));
        qemu_to_vmdk(&raw, &vmdk, sub);
        assert_eq!(probe(&vmdk).unwrap().format, ImageFormat::Vmdk, "{sub}");
        convert_and_check(&vmdk, &raw, dir.path(), sub);
    }
}

#[test]
fn two_gb_extent_subformats_with_several_extents_convert() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    // Two extents: 2047 MiB and the rest.
    source_raw(&raw, 2048 * MIB + 5 * MIB);
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let vmdk = dir.path().join(format!("{sub}.vmdk"));
        qemu_to_vmdk(&raw, &vmdk, sub);
        let descriptor = std::fs::read_to_string(&vmdk).unwrap();
        assert_eq!(
            descriptor.lines().filter(|l| l.starts_with("RW ")).count(),
            2,
            "two extents: {descriptor}"
        );
        let info = probe(&vmdk).unwrap();
        assert_eq!(
            (info.format, info.virtual_size),
            (ImageFormat::Vmdk, 2053 * MIB)
        );
        let out = dir.path().join(format!("{sub}.qcow2"));
        convert(
            &vmdk,
            &OpenOptions::new(),
            &out,
            TargetFormat::qcow2(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_check_clean(&out);
        assert_same_contents(&out, &raw);
        std::fs::remove_file(&out).unwrap();
    }
    // The sparse extents read through our reader, across the extent boundary.
    let mut reader = VmdkReader::open(&dir.path().join("twoGbMaxExtentSparse.vmdk")).unwrap();
    let mut buf = vec![0u8; 10_000];
    reader.read_at(&mut buf, 2048 * MIB - 5000).unwrap();
    assert!(
        buf == pattern(10_000, 5),
        "the data across the extent boundary"
    );
}

/// A `streamOptimized` file as VMware writes it: header with the grain
/// directory "at the end", compressed grains with grain markers, grain
/// tables and the directory behind metadata markers, then the footer and
/// an end-of-stream marker. Written from the format's description.
fn vmware_stream_optimized(data: &[u8], grain_sectors: u64) -> Vec<u8> {
    let sector = 512usize;
    let capacity = (data.len() as u64).div_ceil(512);
    let grain = (grain_sectors * 512) as usize;
    let grains = (data.len()).div_ceil(grain);
    let tables = grains.div_ceil(512);
    let header = |gd: u64| {
        let mut h = vec![0u8; sector];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&grain_sectors.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&2u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let marker = |val: u64, kind: u32| {
        let mut m = vec![0u8; sector];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        m
    };
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(sector) * sector, 0);
    let mut out = header(u64::MAX);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\nRW {capacity} SPARSE \"disk.vmdk\"\n\n\
         ddb.adapterType = \"lsilogic\"\n"
    );
    out.extend_from_slice(desc.as_bytes());
    out.resize(128 * sector, 0);
    let mut gtes = vec![0u32; tables * 512];
    for (i, gte) in gtes.iter_mut().enumerate().take(grains) {
        let start = i * grain;
        let mut chunk = data[start..data.len().min(start + grain)].to_vec();
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        chunk.resize(grain, 0);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&chunk).unwrap();
        let packed = z.finish().unwrap();
        *gte = (out.len() / sector) as u32;
        out.extend_from_slice(&(i as u64 * grain_sectors).to_le_bytes());
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        pad(&mut out);
    }
    let mut gd = Vec::new();
    for table in gtes.chunks(512) {
        out.extend_from_slice(&marker(4, 1));
        gd.push((out.len() / sector) as u32);
        for e in table {
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    let gd_sectors = (gd.len() * 4).div_ceil(sector) as u64;
    out.extend_from_slice(&marker(gd_sectors, 2));
    let gd_at = (out.len() / sector) as u64;
    for e in &gd {
        out.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut out);
    out.extend_from_slice(&marker(1, 3));
    out.extend_from_slice(&header(gd_at));
    out.extend_from_slice(&marker(0, 0));
    out
}

#[test]
fn vmware_stream_optimized_with_the_directory_at_the_end_converts() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    // 40 MiB + 1 sector: more than one grain table (32 MiB each).
    source_raw(&raw, 40 * MIB + 512);
    let data = std::fs::read(&raw).unwrap();
    let vmdk = dir.path().join("disk.vmdk");
    std::fs::write(&vmdk, vmware_stream_optimized(&data, 128)).unwrap();
    // QEMU reads it as the source: the file is what VMware writes.
    assert_same_contents(&vmdk, &raw);
    convert_and_check(&vmdk, &raw, dir.path(), "vmware-stream");
    // Grains of 8 sectors (4 KiB), allowed by the format.
    std::fs::write(
        &vmdk,
        vmware_stream_optimized(&data[..(4 * MIB) as usize], 8),
    )
    .unwrap();
    let mut reader = VmdkReader::open(&vmdk).unwrap();
    let mut all = vec![0u8; reader.size() as usize];
    reader.read_at(&mut all, 0).unwrap();
    assert!(all == data[..(4 * MIB) as usize], "4 KiB grains read back");
}

#[test]
fn zeroed_grains_read_as_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    let vmdk = dir.path().join("z.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        s(&vmdk),
        "4M",
    ]);
    qemu_io(
        &vmdk,
        "vmdk",
        &[
            "write -P 0x5a 0 2M".into(),
            "write -z 64k 128k".into(),
            "write -P 0x11 3M 4k".into(),
        ],
    );
    // qemu-img map shows the zeroed grains (entry 1) between data.
    let map =
        String::from_utf8(qemu_img_output(&["map", "--output=json", s(&vmdk)]).stdout).unwrap();
    assert!(
        map.contains("\"zero\": true, \"data\": false, \"offset\"")
            || map.contains("\"start\": 65536"),
        "{map}"
    );
    let reference = dir.path().join("ref.raw");
    qemu_img(&["convert", "-O", "raw", s(&vmdk), s(&reference)]);
    let bytes = std::fs::read(&reference).unwrap();
    assert!(bytes[65536..196608].iter().all(|&b| b == 0));
    assert!(bytes[..65536].iter().all(|&b| b == 0x5a));
    convert_and_check(&vmdk, &reference, dir.path(), "zeroed");
}

fn descriptor(extents: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\n{extents}\n\n# The Disk Data Base\n#DDB\n"
    )
}

fn refused(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = dir.join("out.qcow2");
    let err = convert(
        &path,
        &OpenOptions::new(),
        &out,
        TargetFormat::qcow2(),
        &mut |_, _| {},
    )
    .expect_err(name)
    .to_string();
    assert!(!out.exists(), "{name}: no half volume");
    assert!(
        err.contains(name),
        "{name}: the error names the file: {err}"
    );
    err
}

#[test]
fn extents_outside_the_descriptors_folder_and_delta_disks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    let secret = dir.path().join("secret.raw");
    std::fs::write(&secret, vec![7u8; 4096]).unwrap();
    let secret_s = s(&secret);

    let abs = refused(
        &pool,
        "abs.vmdk",
        &descriptor(&format!("RW 8 FLAT \"{secret_s}\" 0")),
    );
    assert!(abs.contains("outside the descriptor's folder"), "{abs}");
    let up = refused(
        &pool,
        "up.vmdk",
        &descriptor("RW 8 FLAT \"../secret.raw\" 0"),
    );
    assert!(up.contains("outside the descriptor's folder"), "{up}");
    std::os::unix::fs::symlink(&secret, pool.join("link.raw")).unwrap();
    let link = refused(&pool, "link.vmdk", &descriptor("RW 8 FLAT \"link.raw\" 0"));
    assert!(link.contains("leads outside"), "{link}");
    // Through imago too (a disk opened directly).
    let err =
        vireo_storage::Image::open(&pool.join("link.vmdk"), &OpenOptions::new().read_only(true))
            .unwrap_err()
            .to_string();
    assert!(err.contains("leads outside"), "{err}");
    let missing = refused(
        &pool,
        "missing.vmdk",
        &descriptor("RW 8 SPARSE \"gone.vmdk\""),
    );
    assert!(missing.contains("gone.vmdk"), "{missing}");
    let device = refused(&pool, "fifo.vmdk", &descriptor("RW 8 FLAT \"fifo\" 0"));
    assert!(device.contains("fifo"), "{device}");
    let esx = refused(
        &pool,
        "esx.vmdk",
        &descriptor("RW 8 VMFSSPARSE \"x-delta.vmdk\""),
    );
    assert!(esx.contains("VMFSSPARSE"), "{esx}");
    let short = dir.path().join("pool/short.raw");
    std::fs::write(&short, vec![1u8; 1024]).unwrap();
    // A flat file shorter than its extent reads as zeroes past its end,
    // through imago as in QEMU.
    let small = pool.join("small.vmdk");
    std::fs::write(&small, descriptor("RW 8 FLAT \"short.raw\" 0")).unwrap();
    let small_ref = dir.path().join("small-ref.raw");
    qemu_img(&["convert", "-O", "raw", s(&small), s(&small_ref)]);
    let small_out = dir.path().join("small.qcow2");
    convert(
        &small,
        &OpenOptions::new(),
        &small_out,
        TargetFormat::qcow2(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_same_contents(&small_out, &small_ref);
    // And so through our reader, in a descriptor with a sparse extent.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        s(&pool.join("empty-s.vmdk")),
        "4k",
    ]);
    let mixed_short = pool.join("mixed-short.vmdk");
    std::fs::write(
        &mixed_short,
        descriptor("RW 8 FLAT \"short.raw\" 0\nRW 8 SPARSE \"empty-s.vmdk\""),
    )
    .unwrap();
    // A flat extent's offset that would overflow positions in its file is
    // refused, through our reader and through imago.
    for (name, extents) in [
        (
            "huge.vmdk",
            "RW 8 FLAT \"short.raw\" 36028797018963967\nRW 8 SPARSE \"empty-s.vmdk\"",
        ),
        (
            "huge-flat.vmdk",
            "RW 8 FLAT \"short.raw\" 36028797018963967",
        ),
    ] {
        let err = refused(&pool, name, &descriptor(extents));
        assert!(err.contains(name), "{err}");
        // Ours says why; imago says "Read wrap-around" on the first read.
        assert!(name != "huge.vmdk" || err.contains("too large"), "{err}");
    }
    let mixed_ref = dir.path().join("mixed-short-ref.raw");
    qemu_img(&["convert", "-O", "raw", s(&mixed_short), s(&mixed_ref)]);
    let mixed_out = dir.path().join("mixed-short.raw");
    convert(
        &mixed_short,
        &OpenOptions::new(),
        &mixed_out,
        TargetFormat::Raw,
        &mut |_, _| {},
    )
    .unwrap();
    assert_same_contents(&mixed_out, &mixed_ref);
    let delta = refused(
        &pool,
        "delta.vmdk",
        &descriptor("RW 8 ZERO").replace(
            "parentCID=ffffffff",
            "parentCID=12345678\nparentFileNameHint=\"base.vmdk\"",
        ),
    );
    assert!(
        delta.contains("delta disk") && delta.contains("base.vmdk"),
        "{delta}"
    );

    // A mixed descriptor (zero + sparse + flat extents inside the folder) works.
    let raw = dir.path().join("part.raw");
    std::fs::write(&raw, pattern(MIB as usize, 11)).unwrap();
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        s(&raw),
        s(&pool.join("part-s.vmdk")),
    ]);
    // The flat file: a 1 MiB hole, then 1 MiB of data.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(pool.join("part-f.raw")).unwrap();
        f.write_all_at(&pattern(MIB as usize, 12), MIB).unwrap();
    }
    let mixed = pool.join("mixed.vmdk");
    std::fs::write(
        &mixed,
        descriptor(
            "RW 2048 ZERO\nRW 2048 SPARSE \"part-s.vmdk\"\nRW 2048 FLAT \"part-f.raw\" 1024",
        ),
    )
    .unwrap();
    let out = dir.path().join("mixed.raw");
    convert(
        &mixed,
        &OpenOptions::new(),
        &out,
        TargetFormat::Raw,
        &mut |_, _| {},
    )
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() as u64, 3 * MIB);
    assert!(bytes[..MIB as usize].iter().all(|&b| b == 0));
    assert_eq!(
        bytes[MIB as usize..2 * MIB as usize],
        pattern(MIB as usize, 11)[..]
    );
    // Half a MiB of the flat file's hole, then half its data.
    assert!(
        bytes[2 * MIB as usize..5 * MIB as usize / 2]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        bytes[5 * MIB as usize / 2..],
        pattern(MIB as usize, 12)[..MIB as usize / 2]
    );
}

#[test]
fn fifo_extent_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = refused(dir.path(), "f.vmdk", &descriptor("RW 8 FLAT \"fifo\" 0"));
    assert!(err.contains("not a regular file"), "{err}");
}

/// The corrupted sparse and streamOptimized cases of the corpus, by hand:
/// each names the file and the problem.
#[test]
fn corrupt_sparse_headers_and_tables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    source_raw(&raw, 4 * MIB);
    let good_sparse: PathBuf = dir.path().join("good-sparse.vmdk");
    qemu_img(&["convert", "-O", "vmdk", s(&raw), s(&good_sparse)]);
    let sparse = std::fs::read(&good_sparse).unwrap();
    let stream = vmware_stream_optimized(&std::fs::read(&raw).unwrap(), 128);
    let gd = u64::from_le_bytes(sparse[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(sparse[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let len = stream.len();
    let footer_gd =
        u64::from_le_bytes(stream[len - 1024 + 56..len - 1024 + 64].try_into().unwrap());
    let first_grain = u32::from_le_bytes({
        let gt0 = u32::from_le_bytes(
            stream[footer_gd as usize * 512..footer_gd as usize * 512 + 4]
                .try_into()
                .unwrap(),
        ) as usize
            * 512;
        stream[gt0..gt0 + 4].try_into().unwrap()
    }) as usize
        * 512;
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, bool, Patch, &str)> = vec![
        (
            "grain-size-0",
            false,
            Box::new(|b| b[20..28].fill(0)),
            "grain size",
        ),
        (
            "gtes-huge",
            false,
            Box::new(|b| b[44..48].copy_from_slice(&4096u32.to_le_bytes())),
            "entries per grain table",
        ),
        (
            "capacity-huge",
            false,
            Box::new(|b| b[12..20].copy_from_slice(&(1u64 << 62).to_le_bytes())),
            "capacity",
        ),
        (
            "gd-huge",
            false,
            Box::new(|b| {
                b[12..20].copy_from_slice(&(1u64 << 46).to_le_bytes());
                b[20..28].copy_from_slice(&1u64.to_le_bytes());
            }),
            "grain directory of",
        ),
        (
            "gd-outside",
            false,
            Box::new(|b| b[56..64].copy_from_slice(&(1u64 << 40).to_le_bytes())),
            "outside the file",
        ),
        (
            "gt-outside",
            false,
            Box::new(move |b| b[gd..gd + 4].copy_from_slice(&u32::MAX.to_le_bytes())),
            "grain table 0",
        ),
        (
            "grain-outside",
            false,
            Box::new(move |b| b[gt..gt + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes())),
            "grain 0",
        ),
        (
            "version-9",
            false,
            Box::new(|b| b[4..8].copy_from_slice(&9u32.to_le_bytes())),
            "version 9",
        ),
        ("text-mode", false, Box::new(|b| b[75] = b'\n'), "text mode"),
        (
            "compression-7",
            false,
            Box::new(|b| b[77] = 7),
            "compression algorithm 7",
        ),
        (
            "truncated",
            false,
            Box::new(|b| b.truncate(300)),
            "truncated",
        ),
        (
            "stream-no-footer",
            true,
            Box::new(|b| {
                let l = b.len();
                b[l - 512 + 12] = 9;
            }),
            "end-of-stream",
        ),
        (
            "stream-footer-gd-at-end",
            true,
            Box::new(|b| {
                let l = b.len();
                b[l - 1024 + 56..l - 1024 + 64].fill(0xff);
            }),
            "footer does not say",
        ),
        (
            "stream-grain-size",
            true,
            Box::new(move |b| {
                b[first_grain + 8..first_grain + 12].copy_from_slice(&u32::MAX.to_le_bytes())
            }),
            "compressed size",
        ),
        (
            "stream-bad-deflate",
            true,
            Box::new(move |b| b[first_grain + 12..first_grain + 40].fill(0xee)),
            "compressed data of grain 0",
        ),
        (
            "stream-short-deflate",
            true,
            Box::new(move |b| {
                // A valid zlib stream of 100 bytes where a grain should be.
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(&[1u8; 100]).unwrap();
                let packed = z.finish().unwrap();
                b[first_grain + 8..first_grain + 12]
                    .copy_from_slice(&(packed.len() as u32).to_le_bytes());
                b[first_grain + 12..first_grain + 12 + packed.len()].copy_from_slice(&packed);
            }),
            "inflates to 100 bytes",
        ),
    ];
    for (name, on_stream, patch, want) in cases {
        let mut bytes = if on_stream {
            stream.clone()
        } else {
            sparse.clone()
        };
        patch(&mut bytes);
        let path = dir.path().join(format!("{name}.vmdk"));
        std::fs::write(&path, &bytes).unwrap();
        let out = dir.path().join("out.qcow2");
        let err = convert(
            &path,
            &OpenOptions::new(),
            &out,
            TargetFormat::qcow2(),
            &mut |_, _| {},
        )
        .expect_err(name)
        .to_string();
        assert!(
            err.contains(&format!("{name}.vmdk")) && err.contains(want),
            "{name}: {err}"
        );
        assert!(!out.exists(), "{name}");
    }
}
