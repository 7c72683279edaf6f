//! Helpers shared by the storage tests: QEMU's tools as the reference.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `qemu-img` and returns its output; panics (test failure) if it
/// cannot be started.
pub fn qemu_img_output(args: &[&str]) -> Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is required (make test installs qemu-utils)")
}

/// Runs `qemu-img` and asserts success.
pub fn qemu_img(args: &[&str]) {
    let out = qemu_img_output(args);
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img create -f qcow2 -b BACKING -F BACKING_FORMAT IMAGE [SIZE]`:
/// a qcow2 overlay on `backing` (named as the overlay records it).
pub fn qemu_overlay(image: &Path, backing: &str, backing_format: &str, size: Option<&str>) {
    overlay(image, backing, backing_format, size, &[]);
}

/// [`qemu_overlay`] with `-u`: qemu-img does not open the backing file,
/// so it may be missing, a loop or not an image at all.
pub fn qemu_overlay_unchecked(
    image: &Path,
    backing: &str,
    backing_format: &str,
    size: Option<&str>,
) {
    overlay(image, backing, backing_format, size, &["-u"]);
}

fn overlay(image: &Path, backing: &str, backing_format: &str, size: Option<&str>, flags: &[&str]) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(flags);
    args.extend(["-b", backing, "-F", backing_format, image.to_str().unwrap()]);
    args.extend(size);
    qemu_img(&args);
}

/// `qemu-img convert -O vmdk -o subformat=SUBFORMAT RAW VMDK`: `raw` as a
/// VMDK of that subformat (for a split one, `vmdk` is the descriptor).
pub fn qemu_to_vmdk(raw: &Path, vmdk: &Path, subformat: &str) {
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        &format!("subformat={subformat}"),
        raw.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
}

/// Runs `qemu-io` with one `-c` per command on `image` of `format`.
pub fn qemu_io(image: &Path, format: &str, commands: &[String]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", format]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(image);
    let out = cmd
        .output()
        .expect("qemu-io is required (make test installs qemu-utils)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && !stdout.contains("failed")
            && !stdout.contains("Pattern verification"),
        "qemu-io {commands:?} on {} failed: {stdout}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `qemu-img check` finds no corruption and no leaks.
pub fn assert_check_clean(image: &Path) {
    let out = qemu_img_output(&["check", image.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "qemu-img check {} failed: {text}",
        image.display()
    );
    assert!(
        text.contains("No errors were found"),
        "qemu-img check: {text}"
    );
}

/// Asserts that `qemu-img compare` says the two images read the same.
pub fn assert_same_contents(a: &Path, b: &Path) {
    let out = qemu_img_output(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Converts `image` to a raw file with qemu-img and returns its bytes.
pub fn contents_via_qemu(image: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join(format!(
        "{}.contents.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&raw);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    bytes
}

/// A deterministic byte pattern (xorshift) for test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The `qemu-img info` JSON of an image.
pub fn info_json(image: &Path) -> String {
    let out = qemu_img_output(&["info", "--output=json", image.to_str().unwrap()]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
