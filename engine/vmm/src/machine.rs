//! The VMM's main loop: owns the current [`Vm`], reboots it on reset, and
//! answers control-socket commands.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::control::{Command, Reply};
use crate::devices::serial::SerialDevice;
use crate::devices::{RequestSink, VmRequest};
use crate::vcpu::{OnStop, VcpuStop};
use crate::vm::{Persistent, Vm, VmConfig, VmError};

/// Everything the main loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A device of boot `generation` asked for a machine-level action.
    Request(u64, VmRequest),
    /// A vCPU thread of boot `generation` ended on its own.
    VcpuStopped(u64, u32, VcpuStop),
    /// A control-socket command.
    Control(Command),
}

/// Sends device requests to the main loop, tagged with the boot they come
/// from so that requests queued by a VM that has since been replaced (a
/// reset requested twice, a crash right after a reset) are ignored.
#[derive(Debug)]
pub struct EventRequests {
    events: Mutex<Sender<Event>>,
    generation: u64,
}

impl RequestSink for EventRequests {
    fn request(&self, req: VmRequest) {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Event::Request(self.generation, req));
    }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off (ACPI S5) or `quit` was asked for.
    PoweredOff,
    /// The guest crashed (triple fault or emulation failure).
    Crashed(String),
    /// isa-debug-exit was written with this value.
    DebugExit(u8),
}

impl Outcome {
    /// The process exit status: 0 powered off, 3 crashed, `(v << 1) | 1`
    /// for isa-debug-exit (as QEMU).
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::PoweredOff => 0,
            Outcome::Crashed(_) => 3,
            Outcome::DebugExit(v) => (v << 1) | 1,
        }
    }
}

/// Where console input goes: the current boot's COM1.
pub type CurrentSerial = Arc<Mutex<Option<Arc<Mutex<SerialDevice>>>>>;

/// The machine across reboots.
pub struct Machine {
    config: VmConfig,
    persistent: Persistent,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    current_serial: CurrentSerial,
    vm: Option<Vm>,
    paused: bool,
    boots: u64,
    display: Option<Arc<crate::vnc::Display>>,
}

impl Machine {
    /// A machine that has not started yet.
    pub fn new(
        config: VmConfig,
        persistent: Persistent,
        events_tx: Sender<Event>,
        events: Receiver<Event>,
        current_serial: CurrentSerial,
    ) -> Self {
        Self {
            config,
            persistent,
            events_tx,
            events,
            current_serial,
            vm: None,
            paused: false,
            boots: 0,
            display: None,
        }
    }

    /// Hands each boot's framebuffer and input devices to `display` (the
    /// VNC frame tracker), which then also answers `dirty-pages`.
    pub fn with_display(mut self, display: Arc<crate::vnc::Display>) -> Self {
        self.display = Some(display);
        self
    }

    fn boot(&mut self) -> Result<(), VmError> {
        if let Some(mut old) = self.vm.take() {
            old.stop();
        }
        let generation = self.boots + 1;
        let requests = Arc::new(EventRequests {
            events: Mutex::new(self.events_tx.clone()),
            generation,
        });
        let tx = Mutex::new(self.events_tx.clone());
        let on_stop: OnStop = Arc::new(move |id, why| {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Event::VcpuStopped(generation, id, why));
        });
        // A reset keeps a paused machine paused, as QEMU does.
        let vm = Vm::start(
            &self.config,
            &self.persistent,
            requests,
            on_stop,
            self.paused,
        )?;
        *self
            .current_serial
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(vm.serial.clone());
        if let Some(display) = &self.display {
            display.set_devices(crate::vnc::Devices {
                bochs: vm.bochs.clone(),
                i8042: vm.i8042.clone(),
            });
        }
        self.vm = Some(vm);
        self.boots = generation;
        crate::ratelimit::guest_info!(boot = self.boots, "machine started");
        Ok(())
    }

    /// Boots and runs until the guest powers off, crashes or is told to quit.
    pub fn run(mut self) -> Result<Outcome, VmError> {
        self.boot()?;
        loop {
            let Ok(event) = self.events.recv() else {
                return Ok(Outcome::PoweredOff);
            };
            let current = self.boots;
            let stale = match &event {
                Event::Request(g, _) | Event::VcpuStopped(g, _, _) => *g != current,
                Event::Control(_) => false,
            };
            if stale {
                tracing::debug!("ignored an event from an earlier boot: {event:?}");
                continue;
            }
            let outcome = match event {
                Event::Request(_, VmRequest::Reset) | Event::VcpuStopped(_, _, VcpuStop::Reset) => {
                    crate::ratelimit::guest_info!("guest reset: rebooting");
                    self.boot()?;
                    None
                }
                Event::Request(_, VmRequest::PowerOff)
                | Event::VcpuStopped(_, _, VcpuStop::PowerOff) => {
                    tracing::info!("guest powered off");
                    Some(Outcome::PoweredOff)
                }
                Event::Request(_, VmRequest::DebugExit(v)) => {
                    tracing::info!("guest wrote {v:#x} to isa-debug-exit");
                    Some(Outcome::DebugExit(v))
                }
                Event::VcpuStopped(_, id, VcpuStop::TripleFault(regs)) => {
                    let why = format!("triple fault on vCPU {id}");
                    tracing::error!("guest crashed: {why}\n{regs}");
                    Some(Outcome::Crashed(why))
                }
                Event::VcpuStopped(_, id, VcpuStop::Failure(msg)) => {
                    let why = format!("vCPU {id}: {msg}");
                    tracing::error!("guest crashed: {why}");
                    Some(Outcome::Crashed(
                        msg.lines().next().unwrap_or("").to_owned(),
                    ))
                }
                Event::VcpuStopped(_, _, VcpuStop::Requested) => None,
                Event::Control(cmd) => {
                    let quit = cmd.request.execute == "quit";
                    let answer = self.handle(&cmd.request.execute, &cmd.request.arguments);
                    let _ = cmd.reply.send(answer);
                    quit.then_some(Outcome::PoweredOff)
                }
            };
            if let Some(outcome) = outcome {
                if let Some(mut vm) = self.vm.take() {
                    vm.stop();
                }
                return Ok(outcome);
            }
        }
    }

    fn handle(&mut self, cmd: &str, args: &Value) -> Reply {
        let generic = |desc: String| Err(("GenericError".to_owned(), desc));
        let Some(vm) = self.vm.as_ref() else {
            return generic("the VM is not running".into());
        };
        match cmd {
            "status" => Ok(json!({
                "state": if self.paused { "paused" } else { "running" },
                "vcpus": self.config.vcpus,
                "memory_bytes": self.config.memory,
                "boots": self.boots,
            })),
            "pause" => {
                vm.pause();
                self.paused = true;
                Ok(json!({}))
            }
            "resume" => {
                vm.resume();
                self.paused = false;
                Ok(json!({}))
            }
            "system_powerdown" => {
                let mut pm = lock(&vm.pm);
                let armed = pm.power_button_armed();
                pm.press_power_button();
                Ok(json!({ "armed": armed }))
            }
            "system_reset" => {
                let _ = self
                    .events_tx
                    .send(Event::Request(self.boots, VmRequest::Reset));
                Ok(json!({}))
            }
            "quit" => Ok(json!({})),
            "stats" => {
                let vcpus: Vec<Value> = vm
                    .vcpus()
                    .iter()
                    .map(|v| {
                        json!({
                            "id": v.id,
                            "cpu_time_ns": v.stats.cpu_time_ns(),
                            "exits": v.stats.exits.load(Ordering::Relaxed),
                            "io_exits": v.stats.io_exits.load(Ordering::Relaxed),
                            "mmio_exits": v.stats.mmio_exits.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                // Disks by index in `--disk` order (they have no other name
                // here; vireod maps the index to the target device).
                let disks: Vec<Value> = self
                    .persistent
                    .disk_stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut v = s.to_json();
                        v["index"] = json!(i);
                        v
                    })
                    .collect();
                Ok(json!({
                    "vcpus": vcpus,
                    "disks": disks,
                    "memory": {
                        "guest_bytes": self.config.memory,
                        "vram_bytes": self.config.vram_size,
                        "rss_bytes": rss_bytes(),
                    },
                    "debug_port_bytes": self.persistent.debug_written.load(Ordering::Relaxed),
                }))
            }
            "framebuffer" => {
                let b = lock(&vm.bochs);
                match b.mode() {
                    Some(m) => Ok(json!({
                        "enabled": true,
                        "width": m.width,
                        "height": m.height,
                        "bpp": m.bpp,
                        "stride": m.stride,
                        "offset": m.offset,
                        "vram_base": b.vram_address(),
                        "vram_size": b.vram_size(),
                    })),
                    None => Ok(json!({ "enabled": false, "vram_size": b.vram_size() })),
                }
            }
            "screendump" => {
                let Some(path) = args.get("path").and_then(Value::as_str) else {
                    return generic("screendump needs a 'path' argument".into());
                };
                screendump(&lock(&vm.bochs), PathBuf::from(path).as_path())
                    .map_err(|e| ("GenericError".to_owned(), e))
            }
            // The tracker is the dirty log's one reader when there is one.
            "dirty-pages" => match &self.display {
                Some(display) => match display.take_control_pages() {
                    Ok(pages) => Ok(json!({ "page_size": 4096, "pages": pages })),
                    Err(e) => generic(format!("cannot read the dirty log: {e}")),
                },
                None => match lock(&vm.bochs).take_dirty_pages() {
                    Ok(pages) => Ok(json!({ "page_size": 4096, "pages": pages })),
                    Err(e) => generic(format!("cannot read the dirty log: {e}")),
                },
            },
            "key-event" => {
                let (Some(code), Some(down)) = (
                    args.get("scancode").and_then(Value::as_u64),
                    args.get("down").and_then(Value::as_bool),
                ) else {
                    return generic("key-event needs 'scancode' and 'down'".into());
                };
                let Ok(code) = u16::try_from(code) else {
                    return generic(format!("scancode {code:#x} is out of range"));
                };
                lock(&vm.i8042).key_event(code, down);
                Ok(json!({}))
            }
            "send-key" => {
                let Some(keys) = args.get("keys").and_then(Value::as_array) else {
                    return generic("send-key needs 'keys'".into());
                };
                let mut codes = Vec::new();
                for k in keys {
                    match k.as_u64().and_then(|c| u16::try_from(c).ok()) {
                        Some(c) => codes.push(c),
                        None => return generic(format!("invalid scancode {k}")),
                    }
                }
                // The guest's keyboard buffer is small (16 bytes, as Linux
                // expects): pace the keys to what the guest has read.
                if self.paused {
                    return generic("the VM is paused: resume it before sending keys".into());
                }
                // Bounded: the main loop must not stall for long on a guest
                // that does not read its keyboard.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                for c in codes {
                    loop {
                        let mut kbd = lock(&vm.i8042);
                        if kbd.keyboard_backlog() <= 8 {
                            kbd.key_event(c, true);
                            kbd.key_event(c, false);
                            break;
                        }
                        drop(kbd);
                        if std::time::Instant::now() > deadline {
                            return generic("the guest is not reading its keyboard".into());
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Ok(json!({}))
            }
            "mouse-event" => {
                let get = |k: &str| args.get(k).and_then(Value::as_i64).unwrap_or(0);
                let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                lock(&vm.i8042).mouse_event(
                    clamp(get("dx")),
                    clamp(get("dy")),
                    clamp(get("dz")),
                    get("buttons").clamp(0, 7) as u8,
                );
                Ok(json!({}))
            }
            other => Err((
                "CommandNotFound".to_owned(),
                format!("the command '{other}' does not exist"),
            )),
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VMM's resident memory, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Writes the visible screen as a PNG.
fn screendump(
    b: &crate::devices::bochs::BochsDisplay,
    path: &std::path::Path,
) -> Result<Value, String> {
    let mode = b.mode().ok_or("the display is off")?;
    if mode.bpp != 32 {
        return Err(format!(
            "screendump supports 32 bpp, the guest uses {}",
            mode.bpp
        ));
    }
    let data = b
        .read_vram(mode.offset, mode.size() as usize)
        .ok_or("the mode lies outside VRAM")?;
    let mut rgb = Vec::with_capacity((mode.width * mode.height * 3) as usize);
    for row in data.chunks_exact(mode.stride as usize) {
        for px in row[..(mode.width * 4) as usize].chunks_exact(4) {
            // Little-endian xRGB: bytes are B, G, R, x.
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    image::save_buffer(
        path,
        &rgb,
        mode.width,
        mode.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    Ok(json!({ "width": mode.width, "height": mode.height }))
}
