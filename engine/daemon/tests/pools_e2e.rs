//! End to end: storage pools and volumes through the real `vireoctl` and
//! `vireod`, with QEMU's `qemu-img` and `qemu-io` checking the images.
//! No VM runs, so these need no /dev/kvm.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vireo_api::AsyncClient;
use vireo_api::client::ClientError;
use vireo_api::proto::{self, ClientMessage, ErrorCode, Hello, Request, Response, ServerMessage};
use vireo_api::storage::{STREAM_CHUNK, StorageRequest, VolumeFormat};
use vireo_tests::bytes::pattern;
use vireo_tests::engine::{Session, bin, serial, signal, wait_gone};

/// Runs a QEMU tool and returns its output; fails the test when it fails.
fn qemu(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); build-aux/install-deps installs it")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `qemu-img info --output=json` as JSON.
fn img_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu(
        "qemu-img",
        &["info", "--output=json", path.to_str().unwrap()],
    ))
    .unwrap()
}

fn img_check(path: &Path) {
    qemu("qemu-img", &["check", path.to_str().unwrap()]);
}

fn images(s: &Session) -> PathBuf {
    s.data.join("vireo/images")
}

/// Every file under `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn dir_pools_define_start_autostart_refresh_and_survive_restarts() {
    let _serial = serial();
    let mut s = Session::new();
    let folder = s.dir.path().join("pool one");
    std::fs::create_dir(&folder).unwrap();
    let folder_str = folder.to_str().unwrap();

    // The default pool appears on first use, started and autostarted.
    let list = s.ok(&["pool-list", "--all"]);
    assert_eq!(
        list,
        " Name      State    Autostart\n-------------------------------\n default   active   yes\n\n"
    );
    assert!(images(&s).is_dir());
    assert!(
        s.ok(&["pool-dumpxml", "default"])
            .contains(&format!("<path>{}</path>", images(&s).display()))
    );

    // define → inactive; start; autostart.
    assert_eq!(
        s.ok(&["pool-define-as", "p1", "dir", "--target", folder_str]),
        "Pool p1 defined\n\n"
    );
    assert_eq!(
        s.ok(&["pool-list", "--all"]),
        " Name      State      Autostart\n---------------------------------\n \
         default   active     yes\n p1        inactive   no\n\n"
    );
    assert_eq!(s.ok(&["pool-list"]).lines().count(), 4, "only active pools");
    let info = s.ok(&["pool-info", "p1"]);
    assert!(
        info.starts_with("Name:           p1\nUUID:           "),
        "{info}"
    );
    assert!(
        info.ends_with("State:          inactive\nPersistent:     yes\nAutostart:      no\n\n")
    );
    assert_eq!(s.ok(&["pool-start", "p1"]), "Pool p1 started\n\n");
    assert_eq!(
        s.ok(&["pool-autostart", "p1"]),
        "Pool p1 marked as autostarted\n\n"
    );
    let details = s.ok(&["pool-list", "--all", "--details"]);
    assert!(
        details.starts_with(" Name      State     Autostart   Persistent   Capacity"),
        "{details}"
    );
    assert!(
        details.lines().any(
            |l| l.starts_with(" p1        running   yes         yes          ")
                && l.contains(" GiB")
        ),
        "{details}"
    );
    let info = s.ok(&["pool-info", "p1", "--bytes"]);
    assert!(info.contains("State:          running\n"), "{info}");
    assert!(info.contains("\nCapacity:       "), "{info}");

    // Files put there behind the engine's back appear after a refresh;
    // temporary and hidden files never do.
    let ext = folder.join("ext.qcow2");
    qemu(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", ext.to_str().unwrap(), "3M"],
    );
    std::fs::write(folder.join(".ext.qcow2.vireo-tmp"), b"half").unwrap();
    std::fs::write(folder.join(".hidden"), b"x").unwrap();
    std::fs::create_dir(folder.join("subdir")).unwrap();
    assert_eq!(
        s.ok(&["vol-list", "p1"]),
        " Name   Path\n--------------\n\n",
        "not before a refresh"
    );
    assert_eq!(s.ok(&["pool-refresh", "p1"]), "Pool p1 refreshed\n\n");
    let path = ext.display().to_string();
    assert_eq!(
        s.ok(&["vol-list", "--pool", "p1"]),
        output_table(&["Name", "Path"], &[vec!["ext.qcow2".into(), path.clone()]])
    );
    assert_eq!(
        s.ok(&["vol-info", &path]),
        "Name:           ext.qcow2\nType:           file\nCapacity:       3.00 MiB\n\
         Allocation:     196.00 KiB\n\n"
    );

    // A second pool cannot take the same folder; a started pool cannot be
    // undefined; a pool whose folder is missing does not start.
    let err = s.fails(&["pool-define-as", "p2", "dir", "--target", folder_str]);
    assert!(err.contains("conflict with pool: 'p1'"), "{err}");
    let err = s.fails(&["pool-undefine", "p1"]);
    assert!(err.contains("is still active"), "{err}");
    let missing = s.dir.path().join("missing");
    s.ok(&[
        "pool-define-as",
        "gone",
        "dir",
        "--target",
        missing.to_str().unwrap(),
    ]);
    let err = s.fails(&["pool-start", "gone"]);
    assert!(
        err.contains(&format!("'{}' does not exist", missing.display())),
        "{err}"
    );
    assert_eq!(s.ok(&["pool-build", "gone"]), "Pool gone built\n\n");
    assert_eq!(s.ok(&["pool-start", "gone"]), "Pool gone started\n\n");
    let err = s.fails(&["pool-start", "nope"]);
    assert_eq!(
        err,
        "error: failed to get pool 'nope'\nerror: Storage pool not found: no storage pool with \
         matching name 'nope'\n"
    );

    // The definition is libvirt XML on disk; pool-define reads it back.
    let xml = s.ok(&["pool-dumpxml", "p1"]);
    assert!(
        xml.starts_with("<pool type='dir'>\n  <name>p1</name>\n  <uuid>"),
        "{xml}"
    );
    let stored = std::fs::read_dir(s.data.join("vireo/storage/pools"))
        .unwrap()
        .count();
    assert_eq!(stored, 3, "default, p1, gone");

    // Restart the engine: started pools stay started, volumes are there.
    s.kill_daemon();
    let list = s.ok(&["pool-list", "--all"]);
    assert_eq!(row(&list, "p1"), ["p1", "active", "yes"], "{list}");
    assert_eq!(row(&list, "gone"), ["gone", "active", "no"], "{list}");
    assert!(s.ok(&["vol-list", "p1"]).contains("ext.qcow2"));

    // A host reboot: autostart pools start again, the others do not.
    s.reboot();
    let list = s.ok(&["pool-list", "--all"]);
    assert_eq!(row(&list, "p1"), ["p1", "active", "yes"], "{list}");
    assert_eq!(
        row(&list, "default"),
        ["default", "active", "yes"],
        "{list}"
    );
    assert_eq!(row(&list, "gone"), ["gone", "inactive", "no"], "{list}");

    // Autostart off, destroy, undefine: the files stay.
    assert_eq!(
        s.ok(&["pool-autostart", "p1", "--disable"]),
        "Pool p1 unmarked as autostarted\n\n"
    );
    assert_eq!(s.ok(&["pool-destroy", "p1"]), "Pool p1 destroyed\n\n");
    let err = s.fails(&["vol-list", "p1"]);
    assert!(err.contains("storage pool 'p1' is not active"), "{err}");
    assert_eq!(
        s.ok(&["pool-undefine", "p1"]),
        "Pool p1 has been undefined\n\n"
    );
    // pool-delete removes an inactive pool's empty folder, nothing else.
    let err = s.fails(&["pool-delete", "default"]);
    assert!(err.contains("is still active"), "{err}");
    std::fs::write(missing.join("file"), b"x").unwrap();
    let err = s.fails(&["pool-delete", "gone"]);
    assert!(err.contains("cannot delete the pool folder"), "{err}");
    std::fs::remove_file(missing.join("file")).unwrap();
    assert_eq!(s.ok(&["pool-delete", "gone"]), "Pool gone deleted\n\n");
    assert!(!missing.exists());
    assert!(ext.exists());
    assert!(!s.ok(&["pool-list", "--all"]).contains("p1"));

    // pool-define from a file, with the UUID it names.
    let file = s.dir.path().join("pool.xml");
    std::fs::write(
        &file,
        format!(
            "<pool type='dir'><name>p3</name><uuid>0b5e6a4c-0d7c-4b87-9c1e-8f0a7a4e1f11</uuid>\
             <target><path>{folder_str}</path></target></pool>"
        ),
    )
    .unwrap();
    assert_eq!(
        s.ok(&["pool-define", file.to_str().unwrap()]),
        format!("Pool p3 defined from {}\n\n", file.display())
    );
    assert!(
        s.ok(&["pool-info", "0b5e6a4c-0d7c-4b87-9c1e-8f0a7a4e1f11"])
            .starts_with("Name:           p3\n")
    );
    let bad = s.dir.path().join("bad.xml");
    std::fs::write(&bad, "<pool type='logical'><name>x</name></pool>").unwrap();
    let err = s.fails(&["pool-define", bad.to_str().unwrap()]);
    assert!(err.contains("only 'dir' pools are supported"), "{err}");
}

/// The cells of the table row that starts with `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == name))
        .unwrap_or_default()
}

/// virsh's table layout (as `output::table` prints it), for expected text.
fn output_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push(' ');
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 3 * widths.len()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out + "\n"
}

#[test]
fn volumes_create_resize_clone_delete_and_qemu_img_agrees() {
    let _serial = serial();
    let s = Session::new();
    let dir = images(&s);
    s.ok(&["pool-list"]);
    let a = dir.join("a.qcow2");
    let b = dir.join("b.raw");
    let c = dir.join("c.qcow2");

    // Create: qcow2, raw (preallocated in part), and a qcow2 overlay.
    assert_eq!(
        s.ok(&[
            "vol-create-as",
            "default",
            "a.qcow2",
            "16M",
            "--format",
            "qcow2"
        ]),
        "Vol a.qcow2 created\n\n"
    );
    s.ok(&[
        "vol-create-as",
        "default",
        "b.raw",
        "8MiB",
        "--format",
        "raw",
        "--allocation",
        "1M",
    ]);
    s.ok(&[
        "vol-create-as",
        "default",
        "c.qcow2",
        "16M",
        "--format",
        "qcow2",
        "--backing-vol",
        "a.qcow2",
        "--backing-vol-format",
        "qcow2",
    ]);
    let ia = img_info(&a);
    assert_eq!(ia["format"], "qcow2");
    assert_eq!(ia["virtual-size"], 16 << 20);
    let ib = img_info(&b);
    assert_eq!(ib["format"], "raw");
    assert_eq!(ib["virtual-size"], 8 << 20);
    assert!(ib["actual-size"].as_u64().unwrap() >= 1 << 20, "{ib}");
    let ic = img_info(&c);
    assert_eq!(ic["backing-filename"], a.to_str().unwrap());
    assert_eq!(ic["backing-filename-format"], "qcow2");
    img_check(&a);
    img_check(&c);

    // Listing and details, in virsh's columns.
    let rows = |names: &[&str]| -> Vec<Vec<String>> {
        names
            .iter()
            .map(|n| vec![n.to_string(), dir.join(n).display().to_string()])
            .collect()
    };
    assert_eq!(
        s.ok(&["vol-list", "default"]),
        output_table(&["Name", "Path"], &rows(&["a.qcow2", "b.raw", "c.qcow2"]))
    );
    let details = s.ok(&["vol-list", "default", "--details"]);
    let head = details.lines().next().unwrap();
    assert!(
        head.starts_with(" Name      Path   ") && head.ends_with("Type   Capacity    Allocation"),
        "{details}"
    );
    let row_b = details.lines().find(|l| l.starts_with(" b.raw ")).unwrap();
    assert!(
        row_b.contains("   file   8.00 MiB    1.00 MiB"),
        "{details}"
    );
    assert_eq!(
        s.ok(&["vol-info", "b.raw", "--pool", "default", "--bytes"]),
        "Name:           b.raw\nType:           file\nCapacity:       8388608 bytes\n\
         Allocation:     1048576 bytes\n\n"
    );
    assert_eq!(
        s.ok(&["vol-path", "a.qcow2", "--pool", "default"]),
        format!("{}\n\n", a.display())
    );
    let xml = s.ok(&["vol-dumpxml", "c.qcow2", "--pool", "default"]);
    assert!(xml.contains("<format type='qcow2'/>"), "{xml}");
    assert!(
        xml.contains(&format!("<backingStore>\n    <path>{}</path>", a.display())),
        "{xml}"
    );
    // vol-create reads libvirt's volume XML.
    let xml = s.dir.path().join("vol.xml");
    std::fs::write(
        &xml,
        format!(
            "<volume type='file'><name>d.qcow2</name><capacity unit='MiB'>4</capacity>\
             <target><format type='qcow2'/></target><backingStore><path>{}</path>\
             <format type='raw'/></backingStore></volume>",
            b.display()
        ),
    )
    .unwrap();
    assert_eq!(
        s.ok(&["vol-create", "default", xml.to_str().unwrap()]),
        format!("Vol d.qcow2 created from {}\n\n", xml.display())
    );
    let d = dir.join("d.qcow2");
    let id = img_info(&d);
    assert_eq!(id["virtual-size"], 4 << 20);
    assert_eq!(id["backing-filename"], b.to_str().unwrap());
    assert_eq!(id["backing-filename-format"], "raw");
    img_check(&d);
    s.ok(&["vol-delete", "d.qcow2", "--pool", "default"]);
    let err = s.fails(&["vol-create-as", "default", "a.qcow2", "1M"]);
    assert!(
        err.contains("storage volume 'a.qcow2' exists already"),
        "{err}"
    );
    let err = s.fails(&["vol-info", "nope", "--pool", "default"]);
    assert!(
        err.starts_with("error: failed to get vol 'nope'\nerror: Storage volume not found"),
        "{err}"
    );
    let err = s.fails(&["vol-create-as", "default", "x", "12Q"]);
    assert!(err.contains("invalid size '12Q'"), "{err}");

    // Resize: grow; shrinking needs --shrink; '+' grows by.
    assert_eq!(
        s.ok(&["vol-resize", "a.qcow2", "32M", "--pool", "default"]),
        "Size of volume 'a.qcow2' successfully changed to 32M\n\n"
    );
    assert_eq!(img_info(&a)["virtual-size"], 32 << 20);
    img_check(&a);
    let err = s.fails(&["vol-resize", "b.raw", "4M", "--pool", "default"]);
    assert!(err.contains("without --shrink"), "{err}");
    assert_eq!(img_info(&b)["virtual-size"], 8 << 20);
    s.ok(&["vol-resize", "b.raw", "4M", "--pool", "default", "--shrink"]);
    assert_eq!(img_info(&b)["virtual-size"], 4 << 20);
    assert_eq!(
        s.ok(&["vol-resize", "b.raw", "+2M", "--pool", "default"]),
        "Size of volume 'b.raw' successfully changed by 2M\n\n"
    );
    assert_eq!(img_info(&b)["virtual-size"], 6 << 20);
    s.ok(&[
        "vol-resize",
        "b.raw",
        "-1M",
        "--pool",
        "default",
        "--shrink",
    ]);
    assert_eq!(img_info(&b)["virtual-size"], 5 << 20);

    // Clone copies the data qemu-io wrote, flattening the overlay.
    qemu(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 2M",
            a.to_str().unwrap(),
        ],
    );
    qemu(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5c 3M 64k",
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(
        s.ok(&["vol-clone", "a.qcow2", "a2.qcow2", "--pool", "default"]),
        "Vol a2.qcow2 cloned from a.qcow2\n\n"
    );
    let a2 = dir.join("a2.qcow2");
    qemu(
        "qemu-img",
        &["compare", a.to_str().unwrap(), a2.to_str().unwrap()],
    );
    img_check(&a2);
    s.ok(&["vol-clone", &c.display().to_string(), "c2.qcow2"]);
    let c2 = dir.join("c2.qcow2");
    qemu(
        "qemu-img",
        &["compare", c.to_str().unwrap(), c2.to_str().unwrap()],
    );
    assert!(img_info(&c2).get("backing-filename").is_none(), "flattened");
    img_check(&c2);

    // Clone progress reaches API clients, blocking and async.
    let mut client = s.client(false);
    let mut seen = Vec::new();
    let clone = |new_name: &str| {
        Request::Storage(StorageRequest::CloneVolume {
            pool: Some("default".into()),
            volume: "a.qcow2".into(),
            new_name: new_name.into(),
        })
    };
    client
        .call_with_progress(clone("a3.qcow2"), &mut |d, t| seen.push((d, t)))
        .unwrap();
    assert!(!seen.is_empty());
    assert_eq!(seen.last().map(|(d, t)| d == t), Some(true), "{seen:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let async_seen = rt.block_on(async {
        let (client, _incoming) = AsyncClient::connect_unix(&s.socket(), "e2e-async", false)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        client
            .call_with_progress(clone("a4.qcow2"), tx)
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(p) = rx.try_recv() {
            seen.push(p);
        }
        seen
    });
    assert_eq!(async_seen.last(), seen.last());
    for name in ["a3.qcow2", "a4.qcow2"] {
        qemu(
            "qemu-img",
            &[
                "compare",
                a.to_str().unwrap(),
                dir.join(name).to_str().unwrap(),
            ],
        );
        s.ok(&["vol-delete", name, "--pool", "default"]);
    }

    // Delete: by name and by path.
    assert_eq!(
        s.ok(&["vol-delete", "a2.qcow2", "--pool", "default"]),
        "Vol a2.qcow2 deleted\n\n"
    );
    assert_eq!(
        s.ok(&["vol-delete", &c2.display().to_string()]),
        "Vol c2.qcow2 deleted\n\n"
    );
    assert!(!a2.exists() && !c2.exists());

    // A domain undefined with --remove-all-storage takes its volume out of
    // the pool's list at once.
    let kernel = s.dir.path().join("kernel");
    std::fs::write(&kernel, b"not booted").unwrap();
    s.ok(&[
        "vol-create-as",
        "default",
        "vm.qcow2",
        "1M",
        "--format",
        "qcow2",
    ]);
    let vm_disk = dir.join("vm.qcow2");
    s.define(&format!(
        "<domain type='kvm'><name>vm</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        kernel.display(),
        vm_disk.display()
    ));
    assert!(s.ok(&["vol-list", "default"]).contains("vm.qcow2"));
    s.ok(&["undefine", "vm", "--remove-all-storage"]);
    assert!(!vm_disk.exists());
    assert!(!s.ok(&["vol-list", "default"]).contains("vm.qcow2"));
    assert_eq!(
        s.ok(&["vol-list", "default"]),
        output_table(&["Name", "Path"], &rows(&["a.qcow2", "b.raw", "c.qcow2"]))
    );
}

#[test]
fn upload_and_download_stream_in_chunks_with_progress_and_flow_control() {
    let _serial = serial();
    let s = Session::new();
    let dir = images(&s);
    s.ok(&["vol-create-as", "default", "up.raw", "1M"]);
    let data = pattern(5 * STREAM_CHUNK + 12345, 7);
    let src = s.dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();

    // vireoctl: upload, download back, byte for byte.
    assert_eq!(
        s.ok(&[
            "vol-upload",
            "up.raw",
            src.to_str().unwrap(),
            "--pool",
            "default"
        ]),
        "\n"
    );
    assert_eq!(std::fs::read(dir.join("up.raw")).unwrap(), data);
    let back = s.dir.path().join("back.bin");
    assert_eq!(
        s.ok(&[
            "vol-download",
            "up.raw",
            back.to_str().unwrap(),
            "--pool",
            "default"
        ]),
        "\n"
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert!(
        s.ok(&["vol-info", "up.raw", "--pool", "default", "--bytes"])
            .contains(&format!("Capacity:       {} bytes\n", data.len()))
    );

    // Through the API: progress arrives per chunk and ends at the total.
    let mut client = s.client(false);
    let other = pattern(3 * STREAM_CHUNK + 1, 9);
    let mut seen = Vec::new();
    let reply = client
        .upload(
            Request::Storage(StorageRequest::UploadVolume {
                pool: Some("default".into()),
                volume: "up.raw".into(),
                length: other.len() as u64,
            }),
            &mut &other[..],
            other.len() as u64,
            &mut |d, t| seen.push((d, t)),
        )
        .unwrap();
    let Response::Volume { volume } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(volume.capacity, other.len() as u64);
    assert_eq!(volume.format, VolumeFormat::Raw);
    let total = other.len() as u64;
    assert_eq!(seen.first(), Some(&(0, total)));
    assert_eq!(seen.last(), Some(&(total, total)));
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let mut got = Vec::new();
    let mut down = Vec::new();
    let reply = client
        .download(
            Request::Storage(StorageRequest::DownloadVolume {
                pool: None,
                volume: dir.join("up.raw").display().to_string(),
            }),
            &mut got,
            &mut |d, t| down.push((d, t)),
        )
        .unwrap();
    assert_eq!(reply, Response::Transferred { bytes: total });
    assert_eq!(got, other);
    assert_eq!(down.last(), Some(&(total, total)));
    assert!(down.len() >= 4, "{down:?}");
    // The connection still serves ordinary calls.
    assert!(matches!(
        client.call(Request::Version).unwrap(),
        Response::Version { .. }
    ));

    // The app's async client streams the same way.
    let third = pattern(2 * STREAM_CHUNK + 77, 11);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (uploaded, downloaded, up_seen) = rt.block_on(async {
        let (client, _incoming) = AsyncClient::connect_unix(&s.socket(), "e2e-async", false)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let request = Request::Storage(StorageRequest::UploadVolume {
            pool: Some("default".into()),
            volume: "up.raw".into(),
            length: third.len() as u64,
        });
        let uploaded = client
            .upload(request, &third[..], third.len() as u64, Some(tx))
            .await
            .unwrap();
        let mut up_seen = Vec::new();
        while let Ok(p) = rx.try_recv() {
            up_seen.push(p);
        }
        let mut sink = Vec::new();
        let request = Request::Storage(StorageRequest::DownloadVolume {
            pool: Some("default".into()),
            volume: "up.raw".into(),
        });
        let downloaded = client.download(request, &mut sink, None).await.unwrap();
        assert_eq!(sink, third);
        (uploaded, downloaded, up_seen)
    });
    let Response::Volume { volume } = uploaded else {
        panic!("{uploaded:?}")
    };
    assert_eq!(volume.capacity, third.len() as u64);
    assert_eq!(
        downloaded,
        Response::Transferred {
            bytes: third.len() as u64
        }
    );
    assert_eq!(
        up_seen.last(),
        Some(&(third.len() as u64, third.len() as u64))
    );
    assert_eq!(std::fs::read(dir.join("up.raw")).unwrap(), third);

    // A client that breaks the stream protocol (a chunk above the limit)
    // is dropped; the volume stays as it was and no temporary file stays.
    let mut raw = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    proto::write_message(
        &mut raw,
        &ClientMessage::Hello(Hello {
            protocol: proto::PROTOCOL_VERSION,
            client: "greedy".into(),
            events: false,
        }),
    )
    .unwrap();
    let _welcome: ServerMessage = proto::read_message(&mut raw).unwrap();
    proto::write_message(
        &mut raw,
        &ClientMessage::Call {
            id: 1,
            request: Request::Storage(StorageRequest::UploadVolume {
                pool: Some("default".into()),
                volume: "up.raw".into(),
                length: 1 << 30,
            }),
        },
    )
    .unwrap();
    let ready: ServerMessage = proto::read_message(&mut raw).unwrap();
    assert_eq!(
        ready,
        ServerMessage::Progress {
            id: 1,
            done: 0,
            total: 1 << 30
        }
    );
    let big = ClientMessage::StreamData {
        id: 1,
        data: vec![0x11; 2 * STREAM_CHUNK],
    };
    let _ = proto::write_message(&mut raw, &big);
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut closed = false;
    for _ in 0..64 {
        match proto::read_message::<_, ServerMessage>(&mut raw) {
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the engine kept a client that broke the stream protocol"
    );
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.join(".up.raw.vireo-tmp").exists() {
        assert!(
            Instant::now() < deadline,
            "the aborted upload left its temp file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(dir.join("up.raw")).unwrap(), third);
}

#[test]
fn hostile_volume_names_are_refused_and_nothing_lands_outside_the_pool() {
    let _serial = serial();
    let s = Session::new();
    let dir = images(&s);
    s.ok(&["vol-create-as", "default", "ok.raw", "1M"]);
    let outside = s.dir.path().join("outside.raw");
    std::fs::write(&outside, b"keep me").unwrap();
    let src = s.dir.path().join("src.bin");
    std::fs::write(&src, b"payload").unwrap();
    let before = tree(s.dir.path());

    for name in ["../x", "a/b", "..", ".", ".hidden", "../../outside.raw", ""] {
        let err = s.fails(&["vol-create-as", "default", name, "1M"]);
        assert!(err.contains("invalid volume name"), "{name}: {err}");
        let err = s.fails(&["vol-clone", "ok.raw", name, "--pool", "default"]);
        assert!(err.contains("invalid volume name"), "{name}: {err}");
        for verb in ["vol-info", "vol-delete"] {
            let err = s.fails(&[verb, name, "--pool", "default"]);
            assert!(
                err.contains("invalid volume name") || err.contains("Storage volume not found"),
                "{verb} {name}: {err}"
            );
        }
        let err = s.fails(&[
            "vol-upload",
            name,
            src.to_str().unwrap(),
            "--pool",
            "default",
        ]);
        assert!(
            err.contains("invalid volume name") || err.contains("Storage volume not found"),
            "{name}: {err}"
        );
    }
    // Only regular files are uploaded (a pipe's size is unknown).
    let err = s.fails(&["vol-upload", "ok.raw", "/dev/null", "--pool", "default"]);
    assert!(err.contains("is not a regular file"), "{err}");
    // A path outside every pool is no volume.
    let err = s.fails(&["vol-delete", outside.to_str().unwrap()]);
    assert!(err.contains("no storage vol with matching path"), "{err}");
    let err = s.fails(&["vol-delete", outside.to_str().unwrap(), "--pool", "default"]);
    assert!(err.contains("Storage volume not found"), "{err}");
    let err = s.fails(&[
        "vol-create-as",
        "default",
        "evil.qcow2",
        "1M",
        "--format",
        "qcow2",
        "--backing-vol",
        outside.to_str().unwrap(),
    ]);
    assert!(err.contains("no storage vol with matching path"), "{err}");

    // Through the API too, with the error code clients react to.
    let mut client = s.client(false);
    let err = client
        .call(Request::Storage(StorageRequest::CreateVolume {
            pool: "default".into(),
            name: "../evil".into(),
            capacity: 1 << 20,
            allocation: None,
            format: VolumeFormat::Raw,
            backing: None,
            backing_format: None,
        }))
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api(e) if e.code == ErrorCode::InvalidArgument),
        "{err}"
    );

    assert_eq!(
        tree(s.dir.path()),
        before,
        "something was created or removed"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert!(dir.join("ok.raw").exists());
}

#[test]
fn interrupted_uploads_leave_the_old_volume_and_no_half_file() {
    let _serial = serial();
    let s = Session::new();
    let dir = images(&s);
    s.ok(&["vol-create-as", "default", "big.raw", "1M"]);
    let original = std::fs::read(dir.join("big.raw")).unwrap();
    let src = s.dir.path().join("big.bin");
    std::fs::write(&src, pattern(96 << 20, 3)).unwrap();
    let tmp = dir.join(".big.raw.vireo-tmp");

    // Starts `vol-upload` and returns it once the engine is writing.
    let start_upload = || {
        let child = Command::new(bin("vireoctl"))
            .args([
                "vol-upload",
                "big.raw",
                src.to_str().unwrap(),
                "--pool",
                "default",
            ])
            .env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", &s.runtime)
            .env("XDG_DATA_HOME", &s.data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::metadata(&tmp).is_ok_and(|m| m.len() > 0) {
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        child
    };
    let check_pool = || {
        s.ok(&["pool-refresh", "default"]);
        let list = s.ok(&["vol-list", "default"]);
        assert_eq!(
            list,
            output_table(
                &["Name", "Path"],
                &[vec![
                    "big.raw".into(),
                    dir.join("big.raw").display().to_string()
                ]]
            )
        );
        assert_eq!(std::fs::read(dir.join("big.raw")).unwrap(), original);
        assert!(
            s.ok(&["vol-info", "big.raw", "--pool", "default"])
                .contains("Capacity:       1.00 MiB\n")
        );
    };

    // An upload that finished before the kill (a very fast machine) is
    // undone and tried again, a bounded number of times.
    let finished_early = |status: std::process::ExitStatus| {
        if status.success() {
            s.ok(&["vol-delete", "big.raw", "--pool", "default"]);
            s.ok(&["vol-create-as", "default", "big.raw", "1M"]);
        }
        status.success()
    };

    // The client dies mid-stream: the engine drops the temporary file.
    for attempt in 0.. {
        assert!(attempt < 5, "every upload finished before it was killed");
        let mut child = start_upload();
        signal(child.id(), libc::SIGKILL);
        let status = child.wait().unwrap();
        if finished_early(status) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while tmp.exists() {
            assert!(Instant::now() < deadline, "the temporary file stayed");
            std::thread::sleep(Duration::from_millis(20));
        }
        break;
    }
    check_pool();

    // The engine dies mid-stream: the leftover temporary file is no volume.
    for attempt in 0.. {
        assert!(
            attempt < 5,
            "every upload finished before the engine was killed"
        );
        let mut child = start_upload();
        let pid = s.daemon_pid().unwrap();
        signal(pid, libc::SIGKILL);
        wait_gone(pid);
        let status = child.wait().unwrap();
        if finished_early(status) {
            continue;
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(tmp.exists(), "the dead engine's temporary file");
        break;
    }
    check_pool();
    // The restarted engine removed it when it loaded the started pool.
    assert!(!tmp.exists());
    assert!(s.ok(&["pool-list"]).contains(" default "));
}

#[test]
fn concurrent_first_uses_set_up_one_default_pool() {
    let _serial = serial();
    let s = Session::new();
    // The engine runs, storage is still unused.
    s.ok(&["list", "--all"]);
    assert!(!s.data.join("vireo/storage/default-pool-created").exists());
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut client = s.client(false);
            std::thread::spawn(move || {
                client
                    .call(Request::Storage(StorageRequest::ListPools { all: true }))
                    .unwrap()
            })
        })
        .collect();
    for c in clients {
        let Response::Pools { pools } = c.join().unwrap() else {
            panic!("not a pool list")
        };
        assert_eq!(pools.len(), 1, "{pools:?}");
        assert_eq!(pools[0].name, "default");
        assert!(pools[0].active && pools[0].autostart, "{pools:?}");
    }
    let stored = std::fs::read_dir(s.data.join("vireo/storage/pools"))
        .unwrap()
        .count();
    assert_eq!(stored, 1);
    // An undefined default pool is not set up again.
    s.ok(&["pool-destroy", "default"]);
    s.ok(&["pool-undefine", "default"]);
    s.kill_daemon();
    assert_eq!(
        s.ok(&["pool-list", "--all"]),
        " Name   State   Autostart\n---------------------------\n\n"
    );
}
