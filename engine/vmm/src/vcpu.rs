//! vCPU threads: the KVM_RUN loop, exit dispatch to the buses, pausing and
//! kicking.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::bus::Bus;

/// Why a vCPU thread stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The VMM asked it to.
    Requested,
    /// The guest triple-faulted; registers are in the text.
    TripleFault(String),
    /// KVM could not run or emulate the guest.
    Failure(String),
    /// The guest asked for a reset through KVM.
    Reset,
    /// The guest asked for a power-off through KVM.
    PowerOff,
}

/// Counters a vCPU thread keeps for statistics.
#[derive(Debug, Default)]
pub struct VcpuStats {
    /// All exits to userspace.
    pub exits: AtomicU64,
    /// Port I/O exits.
    pub io_exits: AtomicU64,
    /// MMIO exits.
    pub mmio_exits: AtomicU64,
    /// The thread's kernel task ID (for its CPU time).
    pub tid: AtomicI32,
}

impl VcpuStats {
    /// Nanoseconds this vCPU's thread has run on a host CPU.
    pub fn cpu_time_ns(&self) -> Option<u64> {
        let tid = self.tid.load(Ordering::Relaxed);
        if tid == 0 {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }
}

#[derive(Debug, Default)]
struct RunState {
    pause: bool,
    stop: bool,
    parked: usize,
}

/// What the VMM and all vCPU threads of one VM share to pause and stop.
#[derive(Debug, Default)]
pub struct VcpuControl {
    state: Mutex<RunState>,
    cond: Condvar,
    /// Set while a pause or stop is pending, so the exit path checks one
    /// atomic instead of taking the lock on every exit.
    attention: AtomicBool,
}

impl VcpuControl {
    /// Control for a new VM; with `paused`, vCPUs park before their first
    /// instruction until [`resume_all`].
    pub fn new(paused: bool) -> Self {
        let control = Self::default();
        if paused {
            control.lock().pause = true;
            control.attention.store(true, Ordering::Release);
        }
        control
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks the calling vCPU while paused; returns false when it must stop.
    fn checkpoint(&self) -> bool {
        if !self.attention.load(Ordering::Acquire) {
            return true;
        }
        let mut st = self.lock();
        while st.pause && !st.stop {
            st.parked += 1;
            self.cond.notify_all();
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            st.parked -= 1;
        }
        !st.stop
    }

    fn should_stop_or_pause(&self) -> bool {
        let st = self.lock();
        st.pause || st.stop
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: `run` points at this thread's kvm_run mapping, set by
            // the vCPU loop before its first KVM_RUN and cleared before the
            // VcpuFd (and so the mapping) is dropped; the signal is delivered
            // to this thread only (pthread_kill), so it is live here.
            let field = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
            // SAFETY: `field` points into the live kvm_run mapping (above);
            // a volatile write of one byte is what KVM reads.
            unsafe { field.write_volatile(1) };
        }
    });
}

/// The signal that kicks a vCPU out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(kick_signal(), kick_handler)
                .map_err(|e| format!("cannot install the vCPU kick signal handler: {e}"))
        })
        .clone()
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    /// The vCPU index.
    pub id: u32,
    /// Its counters.
    pub stats: Arc<VcpuStats>,
    thread: Option<JoinHandle<VcpuStop>>,
}

impl VcpuHandle {
    /// Interrupts KVM_RUN so the thread re-checks pause and stop.
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            let _ = t.kill(kick_signal());
        }
    }

    /// Waits for the thread to end.
    pub fn join(&mut self) -> Option<VcpuStop> {
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// Pauses all vCPUs of a VM and waits until each is parked.
pub fn pause_all(control: &VcpuControl, vcpus: &[VcpuHandle]) {
    control.lock().pause = true;
    control.attention.store(true, Ordering::Release);
    loop {
        // A thread that ended on its own (crash, reset) never parks: count
        // only the live ones, afresh on every pass.
        let live = vcpus
            .iter()
            .filter(|v| v.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .count();
        for v in vcpus {
            v.kick();
        }
        let st = control.lock();
        if st.parked >= live || st.stop {
            return;
        }
        let (st, _) = control
            .cond
            .wait_timeout(st, std::time::Duration::from_millis(5))
            .unwrap_or_else(|e| e.into_inner());
        if st.parked >= live || st.stop {
            return;
        }
    }
}

/// Resumes paused vCPUs.
pub fn resume_all(control: &VcpuControl) {
    let mut st = control.lock();
    st.pause = false;
    control.attention.store(st.stop, Ordering::Release);
    drop(st);
    control.cond.notify_all();
}

/// Stops all vCPUs and joins their threads.
pub fn stop_all(control: &VcpuControl, vcpus: &mut [VcpuHandle]) {
    {
        let mut st = control.lock();
        st.stop = true;
        st.pause = false;
        control.attention.store(true, Ordering::Release);
    }
    control.cond.notify_all();
    for v in vcpus.iter() {
        v.kick();
    }
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    for v in vcpus.iter_mut() {
        // A vCPU blocked in the kernel (e.g. an AP waiting for SIPI) leaves
        // KVM_RUN on the kick; keep kicking until it has gone.
        while v.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if std::time::Instant::now() > deadline {
                // Stuck outside KVM_RUN (e.g. a write to a stalled pipe):
                // leave it; it exits at its next checkpoint.
                tracing::error!("vCPU {} did not stop within {STOP_TIMEOUT:?}", v.id);
                v.thread = None;
                break;
            }
            v.kick();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        v.join();
    }
}

/// How long stopping a VM waits for each vCPU thread.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Called when a vCPU thread ends on its own (not on request).
pub type OnStop = Arc<dyn Fn(u32, VcpuStop) + Send + Sync>;

/// Starts the thread that runs `fd`.
pub fn spawn_vcpu(
    id: u32,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    control: Arc<VcpuControl>,
    on_stop: OnStop,
) -> std::io::Result<VcpuHandle> {
    let stats = Arc::new(VcpuStats::default());
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            let reason = run_loop(id, fd, &pio, &mmio, &control, &thread_stats);
            if reason != VcpuStop::Requested {
                on_stop(id, reason.clone());
            }
            reason
        })?;
    Ok(VcpuHandle {
        id,
        stats,
        thread: Some(thread),
    })
}

fn run_loop(
    id: u32,
    mut fd: VcpuFd,
    pio: &Bus,
    mmio: &Bus,
    control: &VcpuControl,
    stats: &VcpuStats,
) -> VcpuStop {
    // SAFETY: gettid has no preconditions.
    stats
        .tid
        .store(unsafe { libc::gettid() }, Ordering::Relaxed);
    let run_ptr: *mut kvm_bindings::kvm_run = fd.get_kvm_run();
    KVM_RUN.with(|p| p.set(run_ptr));
    let reason = loop {
        if !control.checkpoint() {
            break VcpuStop::Requested;
        }
        let exit = fd.run();
        stats.exits.fetch_add(1, Ordering::Relaxed);
        match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                stats.io_exits.fetch_add(1, Ordering::Relaxed);
                // `rep outs` arrives as `count` accesses of `size` bytes.
                for access in data.chunks(io_size(run_ptr, data.len())) {
                    if pio.write(u64::from(port), access).is_err() {
                        tracing::debug!(vcpu = id, "unhandled port write {port:#x} {access:02x?}");
                    }
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                stats.io_exits.fetch_add(1, Ordering::Relaxed);
                let size = io_size(run_ptr, data.len());
                for access in data.chunks_mut(size) {
                    if pio.read(u64::from(port), access).is_err() {
                        access.fill(0xff);
                        tracing::debug!(vcpu = id, "unhandled port read {port:#x}");
                    }
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
                if mmio.write(addr, data).is_err() {
                    tracing::debug!(vcpu = id, "unhandled MMIO write {addr:#x} {data:02x?}");
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
                if mmio.read(addr, data).is_err() {
                    data.fill(0xff);
                    tracing::debug!(vcpu = id, "unhandled MMIO read {addr:#x}");
                }
            }
            Ok(VcpuExit::Hlt) => {
                // With the in-kernel irqchip hlt stays in KVM; seeing it here
                // means interrupts are off for good: idle until told to stop.
                if control.should_stop_or_pause() {
                    continue;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(VcpuExit::Shutdown) => {
                break VcpuStop::TripleFault(describe_registers(&fd));
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => break VcpuStop::Reset,
                KVM_SYSTEM_EVENT_SHUTDOWN => break VcpuStop::PowerOff,
                KVM_SYSTEM_EVENT_CRASH => {
                    break VcpuStop::Failure(format!(
                        "guest reported a crash\n{}",
                        describe_registers(&fd)
                    ));
                }
                other => tracing::debug!(vcpu = id, "ignored system event {other}"),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                break VcpuStop::Failure(format!(
                    "KVM could not enter the guest on host CPU {cpu} (hardware reason {reason:#x})\n{}",
                    describe_registers(&fd)
                ));
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: for KVM_EXIT_INTERNAL_ERROR the `internal` member
                // of the exit union is the one KVM filled in.
                let suberror = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let what = match suberror {
                    1 => "an instruction KVM cannot emulate",
                    2 => "an exception while delivering another",
                    3 => "a failure delivering an event",
                    _ => "an internal error",
                };
                break VcpuStop::Failure(format!(
                    "KVM stopped the guest on {what} (suberror {suberror})\n{}",
                    describe_registers(&fd)
                ));
            }
            Ok(other) => {
                tracing::debug!(vcpu = id, "ignored exit {other:?}");
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
            }
            Err(e) => break VcpuStop::Failure(format!("KVM_RUN failed: {e}")),
        }
    };
    KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    reason
}

/// The size of one access of the port I/O exit in `run`, clamped to
/// 1..=`len` (string I/O hands over `count` accesses in one buffer).
fn io_size(run: *const kvm_bindings::kvm_run, len: usize) -> usize {
    // SAFETY: `run` is this vCPU's kvm_run mapping, live for the whole run
    // loop; for KVM_EXIT_IO the `io` member of the exit union is the one KVM
    // filled in. Only the header is read; the data buffer it describes (at
    // data_offset, past the header) is borrowed separately by the caller.
    let field = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size) };
    // SAFETY: `field` points at a u8 inside the live mapping (above).
    let size = unsafe { field.read_volatile() };
    usize::from(size).clamp(1, len.max(1))
}

/// The registers of a stopped vCPU, for the log.
pub fn describe_registers(fd: &VcpuFd) -> String {
    let mut out = String::new();
    if let Ok(r) = fd.get_regs() {
        out += &format!(
            "rip={:#018x} rsp={:#018x} rflags={:#010x}\n\
             rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n\
             rsi={:#018x} rdi={:#018x} rbp={:#018x}\n\
             r8={:#018x} r9={:#018x} r10={:#018x} r11={:#018x}\n\
             r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n",
            r.rip,
            r.rsp,
            r.rflags,
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            r.rbp,
            r.r8,
            r.r9,
            r.r10,
            r.r11,
            r.r12,
            r.r13,
            r.r14,
            r.r15
        );
    }
    if let Ok(s) = fd.get_sregs() {
        out += &format!(
            "cs={:#06x} ds={:#06x} ss={:#06x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\n\
             gdt={:#x}/{:#x} idt={:#x}/{:#x}",
            s.cs.selector,
            s.ds.selector,
            s.ss.selector,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.gdt.base,
            s.gdt.limit,
            s.idt.base,
            s.idt.limit
        );
    }
    out
}
