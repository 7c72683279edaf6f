//! Runs the real `vireoctl` binary.

use std::process::Command;

fn vireoctl(args: &[&str], env_uri: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vireoctl"));
    cmd.args(args).env_remove("VIREO_DEFAULT_URI");
    if let Some(uri) = env_uri {
        cmd.env("VIREO_DEFAULT_URI", uri);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn uri_follows_connect_then_env_then_default() {
    assert_eq!(vireoctl(&["uri"], None).1, "vireo:///session\n");
    assert_eq!(
        vireoctl(&["uri"], Some("vireo:///system")).1,
        "vireo:///system\n"
    );
    let (ok, out, _) = vireoctl(
        &["-c", "vireo+ssh://root@[::1]:2222/system", "uri"],
        Some("vireo:///session"),
    );
    assert!(ok);
    assert_eq!(out, "vireo+ssh://root@[::1]:2222/system\n");
}

#[test]
fn bad_uri_fails_with_the_reason() {
    let (ok, _, err) = vireoctl(&["--connect", "qemu:///system", "uri"], None);
    assert!(!ok);
    assert!(err.contains("unsupported URI scheme 'qemu'"), "{err}");
}

#[test]
fn help_lists_the_virsh_verbs() {
    let (ok, out, _) = vireoctl(&["--help"], None);
    assert!(ok);
    for verb in [
        "define",
        "undefine",
        "dumpxml",
        "edit",
        "list",
        "dominfo",
        "domstate",
        "start",
        "shutdown",
        "reboot",
        "reset",
        "destroy",
        "suspend",
        "resume",
        "autostart",
        "domstats",
        "cpu-stats",
        "dommemstat",
        "vncdisplay",
        "send-key",
        "console",
        "screenshot",
        "uri",
        "version",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "{verb} missing from:\n{out}"
        );
    }
}

#[test]
fn an_unreachable_ssh_host_is_named_in_the_error() {
    // Port 1 on loopback: nothing listens there. HOME without ~/.ssh, so
    // no user ssh_config can redirect the host.
    let out = Command::new(env!("CARGO_BIN_EXE_vireoctl"))
        .args(["-c", "vireo+ssh://nobody@127.0.0.1:1/system", "list"])
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach 127.0.0.1 at 127.0.0.1:1") && err.contains("refused"),
        "{err}"
    );
}
