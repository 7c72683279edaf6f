//! End to end: vmdk images in a pool are listed as vmdk volumes and
//! imported with `vireoctl vol-create-from` through the real `vireod`,
//! converted to qcow2 and raw; `qemu-img` checks the results. No VM runs,
//! so this needs no /dev/kvm.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vireo_api::proto::{Request, Response};
use vireo_api::storage::{StorageRequest, VolumeFormat};
use vireo_tests::bytes::pattern;
use vireo_tests::engine::{Session, bin, serial, signal, wait_gone};
use vireo_tests::qemu::qemu_img;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn vmdk_volumes_are_listed_and_imported_with_vol_create_from() {
    let _serial = serial();
    let session = Session::new();
    session.ok(&["pool-list"]);
    let images = session.data.join("vireo/images");

    // A pool holding what VMware and VirtualBox exports look like.
    let imports = session.dir.path().join("imports");
    std::fs::create_dir(&imports).unwrap();
    let raw = session.dir.path().join("src.raw");
    let mut data = vec![0u8; 16 << 20];
    data[..300_000].copy_from_slice(&pattern(300_000, 1));
    data[(5 << 20) + 7..(5 << 20) + 7 + 100_000].copy_from_slice(&pattern(100_000, 2));
    let end = data.len();
    data[end - 4096..].copy_from_slice(&pattern(4096, 3));
    std::fs::write(&raw, &data).unwrap();
    for (name, sub) in [
        ("stream.vmdk", "streamOptimized"),
        ("sparse.vmdk", "monolithicSparse"),
        ("split.vmdk", "twoGbMaxExtentSparse"),
    ] {
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&raw),
            s(&imports.join(name)),
        ]);
    }
    session.ok(&["pool-define-as", "imports", "dir", "--target", s(&imports)]);
    session.ok(&["pool-start", "imports"]);
    assert_eq!(
        session.ok(&["pool-refresh", "imports"]),
        "Pool imports refreshed\n\n"
    );

    // Listed as vmdk volumes with the disk's capacity.
    let list = session.ok(&["vol-list", "imports", "--details"]);
    for name in [
        "stream.vmdk",
        "sparse.vmdk",
        "split.vmdk",
        "split-s001.vmdk",
    ] {
        let row = list
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} is not listed: {list}"));
        assert!(row.contains("16.00 MiB"), "{row}");
    }
    for name in ["stream.vmdk", "split.vmdk"] {
        let xml = session.ok(&["vol-dumpxml", name, "--pool", "imports"]);
        assert!(xml.contains("<format type='vmdk'/>"), "{xml}");
        assert!(
            xml.contains("<capacity unit='bytes'>16777216</capacity>"),
            "{xml}"
        );
    }
    let info = session.ok(&["vol-info", "sparse.vmdk", "--pool", "imports"]);
    assert!(info.contains("Capacity:       16.00 MiB"), "{info}");

    // Import the streamOptimized one as qcow2 into the default pool.
    let xml = session.dir.path().join("new.xml");
    std::fs::write(
        &xml,
        "<volume><name>imported.qcow2</name><target><format type='qcow2'/></target></volume>",
    )
    .unwrap();
    assert_eq!(
        session.ok(&[
            "vol-create-from",
            "default",
            s(&xml),
            "stream.vmdk",
            "--inputpool",
            "imports"
        ]),
        "Vol imported.qcow2 created from input vol stream.vmdk\n\n"
    );
    let imported = images.join("imported.qcow2");
    qemu_img(&["check", s(&imported)]);
    qemu_img(&["compare", s(&imported), s(&raw)]);
    let list = session.ok(&["vol-list", "default"]);
    assert!(list.contains("imported.qcow2"), "{list}");

    // The split one, named by path, as a larger raw volume.
    std::fs::write(
        &xml,
        "<volume><name>big.raw</name><capacity unit='MiB'>32</capacity>\
         <target><format type='raw'/></target></volume>",
    )
    .unwrap();
    session.ok(&[
        "vol-create-from",
        "default",
        s(&xml),
        s(&imports.join("split.vmdk")),
    ]);
    let big = images.join("big.raw");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 32 << 20);
    // qemu-img compare checks the extra 16 MiB read as zeroes.
    qemu_img(&["compare", s(&big), s(&raw)]);

    // Progress reaches API clients, as for vol-clone.
    let mut client = session.client(false);
    let mut seen = Vec::new();
    let reply = client
        .call_with_progress(
            Request::Storage(StorageRequest::CreateVolumeFrom {
                pool: "default".into(),
                name: "api.raw".into(),
                capacity: None,
                format: VolumeFormat::Raw,
                input_pool: Some("imports".into()),
                input: "sparse.vmdk".into(),
            }),
            &mut |d, t| seen.push((d, t)),
        )
        .unwrap();
    let Response::Volume { volume } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (volume.format, volume.capacity),
        (VolumeFormat::Raw, 16 << 20)
    );
    assert_eq!(seen.last(), Some(&(16 << 20, 16 << 20)), "{seen:?}");
    qemu_img(&["compare", s(&images.join("api.raw")), s(&raw)]);

    // Errors as virsh words them; nothing is left behind.
    let before: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = session.fails(&[
        "vol-create-from",
        "default",
        s(&xml),
        "nope.vmdk",
        "--inputpool",
        "imports",
    ]);
    assert!(err.contains("failed to get vol 'nope.vmdk'"), "{err}");
    let err = session.fails(&["vol-create-from", "nopool", s(&xml), "stream.vmdk"]);
    assert!(err.contains("failed to get pool 'nopool'"), "{err}");
    let err = session.fails(&[
        "vol-create-from",
        "default",
        s(&xml),
        "stream.vmdk",
        "--inputpool",
        "imports",
    ]);
    assert!(
        err.starts_with(&format!(
            "error: Failed to create vol from {}\nerror: ",
            s(&xml)
        )) && err.contains("'big.raw' exists already"),
        "{err}"
    );
    std::fs::write(
        &xml,
        "<volume><name>small.raw</name><capacity unit='MiB'>1</capacity></volume>",
    )
    .unwrap();
    let err = session.fails(&[
        "vol-create-from",
        "default",
        s(&xml),
        "stream.vmdk",
        "--inputpool",
        "imports",
    ]);
    assert!(err.contains("smaller than the input volume"), "{err}");
    // A corrupt vmdk (its grain directory pointed past the end).
    let mut bad = std::fs::read(imports.join("sparse.vmdk")).unwrap();
    bad[56..64].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(imports.join("bad.vmdk"), &bad).unwrap();
    session.ok(&["pool-refresh", "imports"]);
    std::fs::write(
        &xml,
        "<volume><name>bad.qcow2</name><target><format type='qcow2'/></target></volume>",
    )
    .unwrap();
    let err = session.fails(&[
        "vol-create-from",
        "default",
        s(&xml),
        "bad.vmdk",
        "--inputpool",
        "imports",
    ]);
    assert!(
        err.contains("bad.vmdk") && err.contains("grain directory"),
        "{err}"
    );
    let after: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "no half volume or temporary file");
}

#[test]
fn an_engine_killed_mid_conversion_leaves_no_volume() {
    let _serial = serial();
    let session = Session::new();
    session.ok(&["pool-list"]);
    let images = session.data.join("vireo/images");
    // A disk that takes a while to convert but little room: 256 MiB of
    // compressible data, streamOptimized.
    let raw = session.dir.path().join("ones.raw");
    std::fs::write(&raw, vec![1u8; 256 << 20]).unwrap();
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&images.join("slow.vmdk")),
    ]);
    std::fs::remove_file(&raw).unwrap();
    session.ok(&["pool-refresh", "default"]);
    let xml = session.dir.path().join("new.xml");
    std::fs::write(
        &xml,
        "<volume><name>slow.qcow2</name><target><format type='qcow2'/></target></volume>",
    )
    .unwrap();
    let tmp = images.join(".slow.qcow2.vireo-tmp");
    let done = images.join("slow.qcow2");
    for attempt in 0.. {
        assert!(
            attempt < 5,
            "every conversion finished before the engine was killed"
        );
        let mut child = Command::new(bin("vireoctl"))
            .args(["vol-create-from", "default", s(&xml), "slow.vmdk"])
            .env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", &session.runtime)
            .env("XDG_DATA_HOME", &session.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tmp.exists() && !done.exists() {
            assert!(Instant::now() < deadline, "the conversion never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        let pid = session.daemon_pid().unwrap();
        signal(pid, libc::SIGKILL);
        wait_gone(pid);
        let status = child.wait().unwrap();
        if status.success() || done.exists() {
            session.ok(&["vol-delete", "slow.qcow2", "--pool", "default"]);
            continue;
        }
        assert!(tmp.exists(), "the dead engine's temporary file");
        break;
    }
    // The restarted engine lists no half volume and removed the leftover.
    let list = session.ok(&["vol-list", "default"]);
    assert!(!list.contains("slow.qcow2"), "{list}");
    assert!(!done.exists());
    assert!(!tmp.exists());
}
