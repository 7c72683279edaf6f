//! One row of the manager window's VM list.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;
use vireo_api::proto::{DomainState, DomainStats};

/// How many CPU samples the sparkline shows.
const HISTORY: usize = 60;

/// What a row shows.
#[derive(Debug)]
pub struct VmRow {
    /// The domain's name (unique on its engine).
    pub name: String,
    /// Its state.
    pub state: DomainState,
    /// CPU usage samples, 0.0 to 1.0 of all its vCPUs, oldest first.
    cpu: Rc<RefCell<VecDeque<f64>>>,
    /// The last (vCPU time ns, timestamp ms), to turn totals into usage.
    last_sample: Option<(u64, u64)>,
    /// Guest memory in bytes, while running.
    memory: Option<u64>,
    spark: gtk::DrawingArea,
}

impl VmRow {
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
            let mut h = self.cpu.borrow_mut();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(u);
            drop(h);
            self.spark.queue_draw();
        }
        usage
    }

    /// Forgets the statistics (the VM stopped).
    pub fn clear_stats(&mut self) {
        self.last_sample = None;
        self.memory = None;
        self.cpu.borrow_mut().clear();
        self.spark.queue_draw();
    }

    fn subtitle(&self) -> String {
        let state = state_label(self.state);
        match (self.memory, self.cpu.borrow().back()) {
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

/// Draws the CPU history as a filled line, newest at the right.
fn draw_sparkline(history: &VecDeque<f64>, cr: &gtk::cairo::Context, width: i32, height: i32) {
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

/// A row's request to its window.
#[derive(Debug)]
pub struct RowRequest {
    /// The domain.
    pub name: String,
    /// What to do.
    pub action: VmAction,
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

#[relm4::factory(pub)]
impl FactoryComponent for VmRow {
    type Init = (String, DomainState);
    type Input = VmAction;
    type Output = RowRequest;
    type CommandOutput = ();
    type ParentWidget = gtk::ListBox;

    view! {
        // The actions live in the window's toolbar and context menu (they
        // act on the selected row); a row only shows the VM, and opens it
        // when activated (double click, Enter).
        adw::ActionRow {
            set_title: &self.name,
            set_activatable: true,
            connect_activated => VmAction::Open,
            #[watch]
            set_subtitle: &self.subtitle(),
            add_suffix: &self.spark,
            add_prefix = &gtk::Image {
                #[watch]
                set_icon_name: Some(state_icon(self.state)),
            },
        }
    }

    fn init_model(init: Self::Init, _index: &DynamicIndex, _sender: FactorySender<Self>) -> Self {
        let cpu = Rc::new(RefCell::new(VecDeque::with_capacity(HISTORY)));
        let spark = gtk::DrawingArea::new();
        spark.set_content_width(90);
        spark.set_content_height(28);
        spark.set_valign(gtk::Align::Center);
        spark.set_tooltip_text(Some(&gettext("CPU usage")));
        let history = cpu.clone();
        spark.set_draw_func(move |_, cr, w, h| draw_sparkline(&history.borrow(), cr, w, h));
        Self {
            name: init.0,
            state: init.1,
            cpu,
            last_sample: None,
            memory: None,
            spark,
        }
    }

    fn update(&mut self, action: Self::Input, sender: FactorySender<Self>) {
        let _ = sender.output(RowRequest {
            name: self.name.clone(),
            action,
        });
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
