//! Runs a test guest under QEMU, the project's reference machine.
//!
//! The guest boots as a PVH ELF through `-kernel` on `-machine pc` (QEMU
//! runs SeaBIOS first, which assigns PCI BARs, then enters the guest
//! through its PVH option ROM). COM1 goes to a file, the debug port 0x402
//! to another (SeaBIOS logs there too), `isa-debug-exit` sits at 0xf4 and
//! the human monitor (HMP) listens on a unix socket, for `sendkey`,
//! `system_powerdown`, `screendump`, `stop`/`cont`.
//!
//! Every run has a deadline (120 s unless told otherwise); waiting past it
//! fails the test, and dropping a [`Qemu`] kills the process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::report::Report;

/// The QEMU binary on `PATH`, if any.
pub fn qemu_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

/// Whether `/dev/kvm` can be opened: then QEMU uses KVM, else TCG.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// What to run: build it with [`QemuBuilder::new`], start it with
/// [`QemuBuilder::spawn`].
#[derive(Debug, Clone)]
pub struct QemuBuilder {
    kernel: PathBuf,
    append: String,
    extra: Vec<String>,
    reboot: bool,
    cpus: u32,
    timeout: Duration,
}

impl QemuBuilder {
    /// A 256 MiB, one-CPU `-machine pc` booting `kernel` (a PVH ELF), with
    /// a 120 s deadline.
    pub fn new(kernel: &Path) -> Self {
        Self {
            kernel: kernel.to_owned(),
            append: String::new(),
            extra: Vec::new(),
            reboot: false,
            cpus: 1,
            timeout: Duration::from_secs(120),
        }
    }

    /// The kernel command line.
    pub fn append(mut self, cmdline: &str) -> Self {
        cmdline.clone_into(&mut self.append);
        self
    }

    /// Extra QEMU arguments, such as `["-device", "bochs-display"]`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Whether a guest reset reboots the machine (the default, `false`,
    /// passes `-no-reboot`: a reset or triple fault ends QEMU).
    pub fn reboot(mut self, reboot: bool) -> Self {
        self.reboot = reboot;
        self
    }

    /// The number of vCPUs (`-smp`).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// How long the whole run may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts QEMU. Panics when it cannot be started.
    pub fn spawn(self) -> Qemu {
        let dir = tempfile::Builder::new()
            .prefix("vireo-qemu")
            .tempdir()
            .unwrap();
        let serial = dir.path().join("serial.txt");
        let debugcon = dir.path().join("debugcon.txt");
        let monitor = dir.path().join("monitor.sock");
        let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
        let binary = qemu_binary().expect("qemu-system-x86_64 is not on PATH");
        let mut cmd = Command::new(binary);
        cmd.args([
            "-machine",
            "pc",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
        ]);
        if kvm_usable() {
            // QEMU 7.2's `-cpu host` trips over MSR 0x10a on these machines.
            cmd.args(["-accel", "kvm", "-cpu", "host,arch-capabilities=off"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.arg("-smp").arg(self.cpus.to_string());
        if !self.reboot {
            cmd.arg("-no-reboot");
        }
        cmd.arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-chardev")
            .arg(format!("file,id=debugcon,path={}", debugcon.display()))
            .args(["-device", "isa-debugcon,iobase=0x402,chardev=debugcon"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-append")
            .arg(&self.append)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
        Qemu {
            child,
            started: Instant::now(),
            deadline: Instant::now() + self.timeout,
            serial,
            debugcon,
            monitor,
            hmp: None,
            status: None,
            dir,
        }
    }
}

/// A running QEMU. Dropping it kills the process.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    started: Instant,
    deadline: Instant,
    serial: PathBuf,
    debugcon: PathBuf,
    monitor: PathBuf,
    hmp: Option<UnixStream>,
    status: Option<ExitStatus>,
    dir: tempfile::TempDir,
}

impl Qemu {
    /// Everything COM1 has printed so far.
    pub fn serial_text(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// COM1's complete lines so far.
    pub fn report(&self) -> Report {
        Report::parse(&self.serial_text())
    }

    /// Everything written to the debug port 0x402 (SeaBIOS's log, then
    /// the guest's bytes).
    pub fn debugcon(&self) -> Vec<u8> {
        std::fs::read(&self.debugcon).unwrap_or_default()
    }

    /// How long QEMU has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The folder holding this run's files (serial, debug port, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn diagnostics(&self) -> String {
        let stderr =
            std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default();
        format!(
            "after {:.1} s\n--- COM1 ---\n{}\n--- QEMU stderr ---\n{stderr}",
            self.elapsed().as_secs_f64(),
            self.serial_text()
        )
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits until COM1's report satisfies `done`, and returns it. Panics
    /// (with what COM1 said) at the deadline, or when QEMU exits first.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&Report) -> bool) -> Report {
        Report::parse(&self.wait_for_text(what, |text| done(&Report::parse(text))))
    }

    /// Waits until everything COM1 printed (partial lines included)
    /// satisfies `done`, and returns it. Panics as [`Qemu::wait_for`] does.
    pub fn wait_for_text(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        loop {
            let text = self.serial_text();
            if done(&text) {
                return text;
            }
            if let Some(status) = self.exited() {
                // The file may have grown between the read and the exit.
                let text = self.serial_text();
                if done(&text) {
                    return text;
                }
                panic!(
                    "QEMU exited ({status}) before {what}; {}",
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < self.deadline,
                "timed out waiting for {what}; {}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a COM1 line that is exactly `line`.
    pub fn wait_for_line(&mut self, line: &str) -> Report {
        self.wait_for(&format!("the line {line:?}"), |r| r.has(line))
    }

    /// Waits for QEMU to exit and returns its status. Panics at the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < self.deadline,
                "timed out waiting for QEMU to exit; {}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one HMP command and returns what the monitor answered (with
    /// its echo and terminal escapes).
    pub fn hmp(&mut self, command: &str) -> String {
        if self.hmp.is_none() {
            let stream = loop {
                match UnixStream::connect(&self.monitor) {
                    Ok(s) => break s,
                    Err(e) => {
                        assert!(
                            Instant::now() < self.deadline && self.exited().is_none(),
                            "cannot reach the QEMU monitor: {e}; {}",
                            self.diagnostics()
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            };
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            self.hmp = Some(stream);
            self.read_prompt(); // the banner
        }
        let stream = self.hmp.as_mut().unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        self.read_prompt()
    }

    fn read_prompt(&mut self) -> String {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let stream = self.hmp.as_mut().unwrap();
            match stream.read(&mut buf) {
                Ok(0) => break, // QEMU went away (e.g. `quit`)
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.ends_with(b"(qemu) ") {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.exited().is_some() {
                        break;
                    }
                    assert!(
                        Instant::now() < self.deadline,
                        "the QEMU monitor did not answer; {}",
                        self.diagnostics()
                    );
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Takes a screenshot of the display with HMP `screendump`, and keeps
    /// a copy as `target/test-artifacts/NAME.ppm` for people to look at.
    pub fn screendump(&mut self, name: &str) -> Ppm {
        let path = self.dir.path().join("screen.ppm");
        let _ = std::fs::remove_file(&path);
        let answer = self.hmp(&format!("screendump {}", path.display()));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("screendump wrote nothing ({e}); monitor said: {answer}"));
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        if std::fs::create_dir_all(&artifacts).is_ok() {
            let _ = std::fs::write(artifacts.join(format!("{name}.ppm")), &bytes);
        }
        Ppm::parse(&bytes).unwrap_or_else(|| panic!("screendump is not a P6 PPM: {answer}"))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A binary PPM (P6, maxval 255) as `screendump` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ppm {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB triples, row by row.
    pub rgb: Vec<u8>,
}

impl Ppm {
    /// Parses a P6 PPM with maxval 255 (comments allowed in the header).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'#') {
                if bytes[i] == b'#' {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return None;
            }
            fields.push(std::str::from_utf8(&bytes[start..i]).ok()?);
        }
        let (width, height): (u32, u32) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
        if fields[0] != "P6" || fields[3] != "255" {
            return None;
        }
        let data = bytes.get(i + 1..)?;
        let len = usize::try_from(u64::from(width) * u64::from(height) * 3).ok()?;
        Some(Self {
            width,
            height,
            rgb: data.get(..len)?.to_vec(),
        })
    }

    /// The pixel at (x, y) as 0x00RRGGBB.
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        assert!(
            x < self.width && y < self.height,
            "({x}, {y}) is off screen"
        );
        let at = (y as usize * self.width as usize + x as usize) * 3;
        u32::from_be_bytes([0, self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]])
    }
}

/// Runs `qemu-img ARGS`; returns its stdout and stderr, panicking when it
/// fails.
pub fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is required (build-aux/install-deps installs qemu-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qemu-img {args:?}: {text}");
    text
}

/// Asserts that `qemu-img check` finds no errors in `image`.
pub fn qemu_img_check(image: &Path) {
    let check = qemu_img(&["check", image.to_str().unwrap()]);
    assert!(check.contains("No errors were found"), "{check}");
}

/// What the `vblk` guest's run leaves on an 8 MiB disk, as
/// [`qemu_io_reads`] checks it: sectors 2..6 hold 0xa0..0xa3, sector 130
/// 0x5a, the rest is zero.
pub const VBLK_WRITES_8M: &[(u8, u64, u64)] = &[
    (0x00, 0, 1024),
    (0xa0, 1024, 512),
    (0xa1, 1536, 512),
    (0xa2, 2048, 512),
    (0xa3, 2560, 512),
    (0x00, 3072, 66560 - 3072),
    (0x5a, 66560, 512),
    (0x00, 67072, 8 * 1024 * 1024 - 67072),
];

/// `qemu-io -r -c 'read -P pattern offset len'` for each check on `image`;
/// panics on a mismatch.
pub fn qemu_io_reads(image: &Path, format: &str, checks: &[(u8, u64, u64)]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-r", "-f", format]);
    for (pattern, offset, len) in checks {
        cmd.args(["-c", &format!("read -P {pattern:#x} {offset} {len}")]);
    }
    let out = cmd.arg(image).output().expect("qemu-io is required");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.contains("Pattern verification failed"),
        "qemu-io on {}: {text}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_parses_screendump_headers() {
        let mut file = b"P6\n# comment\n2 1\n255\n".to_vec();
        file.extend_from_slice(&[0xff, 0, 0, 0, 0xff, 0]);
        let ppm = Ppm::parse(&file).unwrap();
        assert_eq!((ppm.width, ppm.height), (2, 1));
        assert_eq!(ppm.pixel(0, 0), 0xff_0000);
        assert_eq!(ppm.pixel(1, 0), 0x00_ff00);
        assert_eq!(Ppm::parse(b"P6\n2 1\n255\n\x00"), None, "short data");
        assert_eq!(Ppm::parse(b"P5\n1 1\n255\n\x00"), None, "greyscale");
    }
}
