//! A VM as the manager window's list shows it: its state, CPU samples
//! and memory (kept in the list's [`crate::vm_list::Entry`], drawn by a
//! recycled row), and the actions the window takes on it.

use std::collections::VecDeque;

use gettextrs::gettext;
use gtk::cairo;
use vireo_api::proto::{DomainState, DomainStats};

/// How many CPU samples the sparkline shows.
const HISTORY: usize = 60;

/// What a VM's row shows.
#[derive(Debug)]
pub struct Vm {
    /// Its connection (index in the window).
    pub conn: usize,
    /// The domain's name (unique on its engine).
    pub name: String,
    /// Its state.
    pub state: DomainState,
    /// CPU usage samples, 0.0 to 1.0 of all its vCPUs, oldest first
    /// (allocated with the first sample).
    cpu: VecDeque<f64>,
    /// The last (vCPU time ns, timestamp ms), to turn totals into usage.
    last_sample: Option<(u64, u64)>,
    /// Guest memory in bytes, while running.
    memory: Option<u64>,
}

impl Vm {
    /// A VM without statistics yet.
    pub fn new(conn: usize, name: String, state: DomainState) -> Self {
        Self {
            conn,
            name,
            state,
            cpu: VecDeque::new(),
            last_sample: None,
            memory: None,
        }
    }

    /// The CPU samples, oldest first.
    pub fn cpu(&self) -> &VecDeque<f64> {
        &self.cpu
    }

    /// Takes one statistics sample; returns the CPU usage it implies.
    pub fn add_stats(&mut self, stats: &DomainStats) -> Option<f64> {
        self.memory = Some(stats.guest_memory_bytes);
        let now = (stats.cpu_time_ns(), stats.timestamp_ms);
        let usage = self.last_sample.and_then(|(cpu, ts)| {
            let wall_ns = now.1.checked_sub(ts)?.checked_mul(1_000_000)?;
            let vcpus = stats.vcpus.len().max(1) as f64;
            (wall_ns > 0).then(|| {
                (now.0.saturating_sub(cpu) as f64 / (wall_ns as f64 * vcpus)).clamp(0.0, 1.0)
            })
        });
        self.last_sample = Some(now);
        if let Some(u) = usage {
            if self.cpu.len() == HISTORY {
                self.cpu.pop_front();
            }
            self.cpu.push_back(u);
        }
        usage
    }

    /// Forgets the statistics (the VM stopped).
    pub fn clear_stats(&mut self) {
        self.last_sample = None;
        self.memory = None;
        self.cpu = VecDeque::new();
    }

    /// The line under its name: state, and CPU and memory while active.
    pub fn subtitle(&self) -> String {
        let state = state_label(self.state);
        match (self.memory, self.cpu.back()) {
            (Some(mem), Some(cpu)) if self.state.is_active() => {
                // Translators: e.g. "Running · CPU 12% · 256 MiB".
                gettext("{state} · CPU {cpu}% · {memory} MiB")
                    .replace("{state}", &state)
                    .replace("{cpu}", &format!("{:.0}", cpu * 100.0))
                    .replace("{memory}", &(mem >> 20).to_string())
            }
            _ => state,
        }
    }
}

/// The sparkline's tooltip.
pub fn cpu_usage_label() -> String {
    gettext("CPU usage")
}

/// Draws the CPU history as a filled line, newest at the right.
pub fn draw_sparkline(history: &VecDeque<f64>, cr: &cairo::Context, width: i32, height: i32) {
    let (w, h) = (f64::from(width), f64::from(height));
    if history.len() < 2 {
        return;
    }
    let step = w / (HISTORY - 1) as f64;
    let x0 = w - step * (history.len() - 1) as f64;
    cr.move_to(x0, h);
    for (i, v) in history.iter().enumerate() {
        cr.line_to(x0 + step * i as f64, h - v * (h - 2.0) - 1.0);
    }
    cr.line_to(w, h);
    cr.close_path();
    cr.set_source_rgba(0.21, 0.52, 0.89, 0.35);
    let _ = cr.fill_preserve();
    cr.set_source_rgba(0.21, 0.52, 0.89, 1.0);
    cr.set_line_width(1.0);
    let _ = cr.stroke();
}

/// Actions a row asks the window to perform on its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmAction {
    /// Open its window (the console).
    Open,
    /// Start it.
    Run,
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Press the power button.
    ShutDown,
    /// Pull the plug.
    ForceOff,
    /// Restart the guest.
    Reboot,
    /// Press the reset button.
    Reset,
    /// Remove the definition (and, if asked, the disk images).
    Delete,
}

impl VmAction {
    /// Every action, in menu order.
    pub const ALL: [VmAction; 9] = [
        VmAction::Open,
        VmAction::Run,
        VmAction::Pause,
        VmAction::Resume,
        VmAction::ShutDown,
        VmAction::Reboot,
        VmAction::Reset,
        VmAction::ForceOff,
        VmAction::Delete,
    ];

    /// The window action (`win.NAME`) that performs it on the selected VM.
    pub fn action_name(self) -> &'static str {
        match self {
            VmAction::Open => "open",
            VmAction::Run => "run",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
            VmAction::ShutDown => "shutdown",
            VmAction::ForceOff => "force-off",
            VmAction::Reboot => "reboot",
            VmAction::Reset => "reset",
            VmAction::Delete => "delete",
        }
    }

    /// Whether it makes sense for a VM in `state`.
    pub fn allowed(self, state: DomainState) -> bool {
        match self {
            VmAction::Open => true,
            VmAction::Run => !state.is_active(),
            VmAction::Pause | VmAction::Reboot => state == DomainState::Running,
            VmAction::Resume => state == DomainState::Paused,
            VmAction::ShutDown | VmAction::ForceOff | VmAction::Reset => state.is_active(),
            VmAction::Delete => !state.is_active(),
        }
    }
}

/// The translated word for a state.
pub fn state_label(state: DomainState) -> String {
    match state {
        DomainState::Running => gettext("Running"),
        DomainState::Paused => gettext("Paused"),
        DomainState::Shutoff => gettext("Shut Off"),
        DomainState::Crashed => gettext("Crashed"),
    }
}

/// The symbolic icon for a state.
pub fn state_icon(state: DomainState) -> &'static str {
    match state {
        DomainState::Running => "media-playback-start-symbolic",
        DomainState::Paused => "media-playback-pause-symbolic",
        DomainState::Shutoff => "system-shutdown-symbolic",
        DomainState::Crashed => "dialog-error-symbolic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_state() {
        use DomainState::*;
        let allowed = |state| {
            VmAction::ALL
                .into_iter()
                .filter(|a| a.allowed(state))
                .collect::<Vec<_>>()
        };
        use VmAction::*;
        assert_eq!(allowed(Shutoff), vec![Open, Run, Delete]);
        assert_eq!(allowed(Crashed), vec![Open, Run, Delete]);
        assert_eq!(
            allowed(Running),
            vec![Open, Pause, ShutDown, Reboot, Reset, ForceOff]
        );
        assert_eq!(
            allowed(Paused),
            vec![Open, Resume, ShutDown, Reset, ForceOff]
        );
    }
}
