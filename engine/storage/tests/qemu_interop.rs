//! Interoperability with QEMU's own tools: images QEMU makes read right
//! through our code, and images we make or modify pass `qemu-img check` and
//! equal what `qemu-io` produces for the same writes.

mod common;

use std::path::Path;

use common::*;
use vireo_storage::{
    CacheMode, Image, ImageFormat, OpenOptions, Qcow2Options, StorageError, TargetFormat, commit,
    convert, create_overlay, create_qcow2, create_raw, stream, stream_above,
};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_all(image: &Image) -> Vec<u8> {
    let mut buf = vec![0u8; image.size() as usize];
    image.read_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn qemu_made_chain_of_three_with_raw_base_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "raw", s(&base), "4M"]);
    qemu_io(&base, "raw", &["write -P 0x11 0 3M".into()]);
    qemu_overlay(&mid, "base.raw", "raw", None);
    qemu_io(
        &mid,
        "qcow2",
        &["write -P 0x22 1M 1M".into(), "write -z 2M 64k".into()],
    );
    qemu_overlay(&top, "mid.qcow2", "qcow2", Some("6M"));
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0x33 1536k 4k".into(),
            "write -P 0x44 5M 100k".into(),
        ],
    );

    let image = Image::open(&top, &OpenOptions::new().read_only(true)).unwrap();

    assert_eq!(image.size(), 6 * MIB);
    let formats: Vec<_> = image.chain().iter().map(|l| l.format).collect();
    assert_eq!(
        formats,
        [ImageFormat::Qcow2, ImageFormat::Qcow2, ImageFormat::Raw]
    );
    assert_eq!(read_all(&image), contents_via_qemu(&top, dir.path()));
}

#[test]
fn compressed_qcow2_from_qemu_img_convert_reads_like_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut data = pattern(3 * MIB as usize, 7);
    // Compressible half: repeated text.
    for (i, b) in data[..MIB as usize].iter_mut().enumerate() {
        *b = b"vireo compresses "[i % 17];
    }
    std::fs::write(&raw, &data).unwrap();
    let qcow2 = dir.path().join("c.qcow2");
    qemu_img(&["convert", "-c", "-O", "qcow2", s(&raw), s(&qcow2)]);

    let image = Image::open(&qcow2, &OpenOptions::new().read_only(true)).unwrap();

    assert_eq!(read_all(&image), data);
}

/// One write-like operation done both through our code and through qemu-io.
enum Op {
    Write(u64, usize, u8),
    Zero(u64, u64),
    Discard(u64, u64),
}

fn apply_ours(image: &mut Image, op: &Op) {
    match *op {
        Op::Write(off, len, p) => image.write_at(&vec![p; len], off).unwrap(),
        Op::Zero(off, len) => image.write_zeroes(off, len).unwrap(),
        Op::Discard(off, len) => image.discard(off, len).unwrap(),
    }
}

fn qemu_io_command(op: &Op) -> String {
    match *op {
        Op::Write(off, len, p) => format!("write -P {p} {off} {len}"),
        Op::Zero(off, len) => format!("write -z {off} {len}"),
        Op::Discard(off, len) => format!("discard {off} {len}"),
    }
}

const OPS: &[Op] = &[
    Op::Write(0, 4096, 0xa1),
    Op::Write(65536 - 512, 1024, 0xa2),
    Op::Write(3 * MIB + 7, 333, 0xa3),
    Op::Write(MIB, 256 * 1024, 0xa4),
    Op::Zero(MIB + 64 * 1024, 64 * 1024),
    Op::Zero(MIB + 200 * 1024, 1000),
    Op::Write(7 * MIB, MIB as usize, 0xa5),
    Op::Discard(7 * MIB, 128 * 1024),
    Op::Write(8 * MIB - 512, 512, 0xa6),
];

fn writes_equal_qemu_io(format: &str, cache: CacheMode) {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join(format!("ours.{format}"));
    let theirs = dir.path().join(format!("theirs.{format}"));
    qemu_img(&["create", "-q", "-f", format, s(&ours), "8M"]);
    qemu_img(&["create", "-q", "-f", format, s(&theirs), "8M"]);

    let mut image = Image::open(&ours, &OpenOptions::new().cache(cache)).unwrap();
    for op in OPS {
        apply_ours(&mut image, op);
    }
    image.flush().unwrap();
    drop(image);
    let commands: Vec<String> = OPS.iter().map(qemu_io_command).collect();
    qemu_io(&theirs, format, &commands);

    assert_same_contents(&ours, &theirs);
    if format == "qcow2" {
        assert_check_clean(&ours);
    }
}

#[test]
fn qcow2_writes_zeroes_and_discards_equal_qemu_io() {
    writes_equal_qemu_io("qcow2", CacheMode::Writeback);
}

#[test]
fn raw_writes_zeroes_and_discards_equal_qemu_io() {
    writes_equal_qemu_io("raw", CacheMode::Writeback);
}

#[test]
fn qcow2_with_cache_none_uses_o_direct_and_equals_qemu_io() {
    writes_equal_qemu_io("qcow2", CacheMode::None);
}

#[test]
fn qcow2_with_cache_writethrough_equals_qemu_io() {
    writes_equal_qemu_io("qcow2", CacheMode::Writethrough);
}

#[test]
fn created_images_pass_qemu_img_check_and_have_the_right_size() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("new.qcow2");
    let r = dir.path().join("new.raw");
    let mut options = Qcow2Options::new(100 * MIB);
    options.cluster_size = 4096;

    create_qcow2(&q, &options).unwrap();
    create_raw(&r, 100 * MIB).unwrap();

    assert_check_clean(&q);
    let info = info_json(&q);
    assert!(info.contains("\"virtual-size\": 104857600"), "{info}");
    assert!(info.contains("\"cluster-size\": 4096"), "{info}");
    let meta = std::fs::metadata(&r).unwrap();
    assert_eq!(meta.len(), 100 * MIB);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
        "raw image is not sparse"
    );
    // An existing file is never overwritten.
    let err = create_qcow2(&q, &options).unwrap_err();
    assert!(err.to_string().contains("new.qcow2"), "{err}");
    assert_check_clean(&q);
}

#[test]
fn overlay_on_raw_and_on_qcow2_reads_through_and_writes_only_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, pattern(2 * MIB as usize, 3)).unwrap();
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");

    create_overlay(&mid, "base.raw", Some(ImageFormat::Raw)).unwrap();
    create_overlay(&top, "mid.qcow2", None).unwrap();
    let image = Image::open(&top, &OpenOptions::new()).unwrap();
    image.write_at(&[0x5a; 5000], 4000).unwrap();
    image.flush().unwrap();
    drop(image);

    assert_check_clean(&mid);
    assert_check_clean(&top);
    let info = info_json(&top);
    assert!(
        info.contains("\"backing-filename\": \"mid.qcow2\""),
        "{info}"
    );
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
    let mut expected = pattern(2 * MIB as usize, 3);
    expected[4000..9000].fill(0x5a);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
    assert_eq!(std::fs::read(&base).unwrap(), pattern(2 * MIB as usize, 3));
}

#[test]
fn resize_grows_and_shrinks_qcow2_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["qcow2", "raw"] {
        let path = dir.path().join(format!("r.{format}"));
        qemu_img(&["create", "-q", "-f", format, s(&path), "1M"]);
        let mut image = Image::open(&path, &OpenOptions::new()).unwrap();

        image.resize(5 * MIB).unwrap();
        image.write_at(&[7; 512], 5 * MIB - 512).unwrap();
        image.resize(3 * MIB).unwrap();
        drop(image);

        let info = info_json(&path);
        assert!(
            info.contains("\"virtual-size\": 3145728"),
            "{format}: {info}"
        );
        if format == "qcow2" {
            assert_check_clean(&path);
        }
    }
}

#[test]
fn read_only_open_refuses_writes_and_requests_past_the_end_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&path), "1M"]);
    let mut image = Image::open(&path, &OpenOptions::new().read_only(true)).unwrap();

    let write = image.write_at(&[1; 512], 0).unwrap_err();
    let zero = image.write_zeroes(0, 512).unwrap_err();
    let mut buf = [0u8; 1024];
    let past = image.read_at(&mut buf, MIB - 512).unwrap_err();
    let overflow = image.read_at(&mut buf, u64::MAX - 10).unwrap_err();

    assert!(matches!(write, StorageError::ReadOnly { .. }), "{write}");
    assert!(matches!(zero, StorageError::ReadOnly { .. }), "{zero}");
    assert!(past.to_string().contains("beyond the end"), "{past}");
    assert!(overflow.to_string().contains("ro.qcow2"), "{overflow}");
}

#[test]
fn backing_loops_and_missing_backing_files_are_errors_naming_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    let lonely = dir.path().join("lonely.qcow2");
    let selfish = dir.path().join("self.qcow2");
    qemu_overlay_unchecked(&a, "b.qcow2", "qcow2", Some("1M"));
    qemu_overlay_unchecked(&b, "a.qcow2", "qcow2", Some("1M"));
    qemu_overlay_unchecked(&lonely, "gone.qcow2", "qcow2", Some("1M"));
    qemu_overlay_unchecked(&selfish, "self.qcow2", "qcow2", Some("1M"));

    let looped = Image::open(&a, &OpenOptions::new()).unwrap_err();
    let self_loop = Image::open(&selfish, &OpenOptions::new()).unwrap_err();
    let missing = Image::open(&lonely, &OpenOptions::new()).unwrap_err();
    let overlay_on_missing = create_overlay(&dir.path().join("o.qcow2"), "gone.qcow2", None);

    assert!(
        matches!(looped, StorageError::BackingLoop { .. }),
        "{looped}"
    );
    assert!(looped.to_string().contains("b.qcow2"), "{looped}");
    assert!(looped.to_string().contains("backing file loop"), "{looped}");
    assert!(
        matches!(self_loop, StorageError::BackingLoop { .. }),
        "{self_loop}"
    );
    assert!(
        matches!(missing, StorageError::MissingBacking { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("lonely.qcow2"), "{missing}");
    assert!(missing.to_string().contains("gone.qcow2"), "{missing}");
    assert!(overlay_on_missing.is_err());
    assert!(!dir.path().join("o.qcow2").exists());
}

#[test]
fn flat_and_sparse_vmdk_import_to_qcow2() {
    // Sparse vmdk was refused before vireo_storage::vmdk; now both convert
    // (more subformats in tests/vmdk_import.rs).
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut data = vec![0u8; 4 * MIB as usize];
    data[MIB as usize..2 * MIB as usize].copy_from_slice(&pattern(MIB as usize, 9));
    std::fs::write(&raw, &data).unwrap();
    let flat = dir.path().join("flat.vmdk");
    let sparse = dir.path().join("sparse.vmdk");
    qemu_to_vmdk(&raw, &flat, "monolithicFlat");
    qemu_img(&["convert", "-O", "vmdk", s(&raw), s(&sparse)]);

    for (src, name) in [(&flat, "flat.qcow2"), (&sparse, "sparse.qcow2")] {
        let out = dir.path().join(name);
        let mut calls = 0;
        convert(
            src,
            &OpenOptions::new(),
            &out,
            TargetFormat::qcow2(),
            &mut |done, total| {
                calls += 1;
                assert!(done <= total);
            },
        )
        .unwrap();
        assert!(calls >= 4);
        assert_check_clean(&out);
        assert_same_contents(&out, &raw);
    }
    // Used as a disk, sparse vmdk is refused, naming the way to import it.
    let err = Image::open(&sparse, &OpenOptions::new().read_only(true)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sparse.vmdk") && text.contains("conversion"),
        "{text}"
    );
}

/// A two-image chain with data in both layers; returns (base, overlay,
/// expected contents).
fn chain_with_data(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    qemu_io(&base, "qcow2", &["write -P 0x10 0 4M".into()]);
    qemu_overlay(&top, "base.qcow2", "qcow2", None);
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0x20 64k 64k".into(),
            "write -P 0x30 1M 1M".into(),
            "write -z 3M 128k".into(),
        ],
    );
    let expected = contents_via_qemu(&top, dir);
    (base, top, expected)
}

#[test]
fn commit_merges_the_overlay_into_its_backing_image() {
    let dir = tempfile::tempdir().unwrap();
    let (base, top, expected) = chain_with_data(dir.path());

    let into = commit(&top, &mut |_, _| {}).unwrap();

    assert_eq!(into, std::fs::canonicalize(&base).unwrap());
    assert_check_clean(&base);
    assert_check_clean(&top);
    assert_eq!(contents_via_qemu(&base, dir.path()), expected);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
}

#[test]
fn interrupted_commit_leaves_a_chain_that_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (base, top, expected) = chain_with_data(dir.path());

    // Interrupt half-way: the progress callback panics once 1.5 MiB are done.
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        commit(&top, &mut |done, _| {
            assert!(done < 3 * MIB / 2, "interrupted on purpose");
        })
    }));

    assert!(interrupted.is_err());
    assert_check_clean(&base);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
    let image = Image::open(&top, &OpenOptions::new().read_only(true)).unwrap();
    assert_eq!(read_all(&image), expected);
}

#[test]
fn stream_makes_the_overlay_standalone_with_the_same_contents() {
    let dir = tempfile::tempdir().unwrap();
    let (base, top, expected) = chain_with_data(dir.path());

    stream(&top, &mut |_, _| {}).unwrap();
    std::fs::remove_file(&base).unwrap();

    let info = info_json(&top);
    assert!(!info.contains("backing-filename"), "{info}");
    assert_check_clean(&top);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
}

#[test]
fn interrupted_stream_leaves_the_original_chain_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (_base, top, expected) = chain_with_data(dir.path());
    let before = std::fs::read(&top).unwrap();

    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stream(&top, &mut |done, _| {
            assert!(done < 2 * MIB, "interrupted on purpose");
        })
    }));

    assert!(interrupted.is_err());
    assert_eq!(std::fs::read(&top).unwrap(), before);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
    // A later stream cleans up and succeeds.
    stream(&top, &mut |_, _| {}).unwrap();
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
    assert_check_clean(&top);
}

#[test]
fn backing_files_that_are_fifos_or_character_devices_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let on_fifo = dir.path().join("on-fifo.qcow2");
    let on_zero = dir.path().join("on-zero.qcow2");
    qemu_overlay_unchecked(&on_fifo, "fifo", "raw", Some("1M"));
    qemu_overlay_unchecked(&on_zero, "/dev/zero", "raw", Some("1M"));

    let fifo_err = Image::open(&on_fifo, &OpenOptions::new()).unwrap_err();
    let zero_err = Image::open(&on_zero, &OpenOptions::new()).unwrap_err();

    assert!(fifo_err.to_string().contains("on-fifo.qcow2"), "{fifo_err}");
    assert!(
        fifo_err.to_string().contains("not a regular file"),
        "{fifo_err}"
    );
    assert!(zero_err.to_string().contains("/dev/zero"), "{zero_err}");
}

#[test]
fn relative_backing_names_resolve_against_the_path_as_opened_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let link_dir = dir.path().join("links");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&link_dir).unwrap();
    // base.raw next to the symlink, not next to the real overlay.
    std::fs::write(link_dir.join("base.raw"), vec![0x42u8; 65536]).unwrap();
    let overlay = real.join("top.qcow2");
    qemu_overlay_unchecked(&overlay, "base.raw", "raw", Some("64K"));
    let link = link_dir.join("top.qcow2");
    std::os::unix::fs::symlink(&overlay, &link).unwrap();

    let image = Image::open(&link, &OpenOptions::new().read_only(true)).unwrap();

    assert_eq!(read_all(&image), contents_via_qemu(&link, dir.path()));
    assert_eq!(read_all(&image), vec![0x42u8; 65536]);
}

#[test]
fn stream_above_a_base_drops_the_middle_layer_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    qemu_io(&base, "qcow2", &["write -P 0x10 0 4M".into()]);
    qemu_overlay(&mid, "base.qcow2", "qcow2", None);
    qemu_io(
        &mid,
        "qcow2",
        &["write -P 0x20 64k 64k".into(), "write -z 3M 128k".into()],
    );
    qemu_overlay(&top, "mid.qcow2", "qcow2", None);
    qemu_io(&top, "qcow2", &["write -P 0x30 1M 1M".into()]);
    let expected = contents_via_qemu(&top, dir.path());

    stream_above(&top, &base, &mut |_, _| {}).unwrap();
    std::fs::remove_file(&mid).unwrap();

    let info = info_json(&top);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert_check_clean(&top);
    assert_eq!(contents_via_qemu(&top, dir.path()), expected);
    let not_in_chain = stream_above(&top, &top, &mut |_, _| {}).unwrap_err();
    assert!(
        not_in_chain.to_string().contains("not below it"),
        "{not_in_chain}"
    );
}
