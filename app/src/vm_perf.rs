//! The VM window's Performance page: CPU and memory graphs drawn from the
//! engine's periodic statistics events. The engine reports no disk or
//! network figures yet, so those graphs say so instead of inventing data.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use gettextrs::gettext;
use gtk::prelude::*;
use vireo_api::proto::DomainStats;

/// Samples each graph keeps (the engine samples every few seconds).
pub const HISTORY: usize = 120;

/// One graph: a title, the current value and the history, 0.0 to 1.0.
#[derive(Debug, Clone)]
struct Graph {
    value: gtk::Label,
    area: gtk::DrawingArea,
    history: Rc<RefCell<VecDeque<f64>>>,
}

impl Graph {
    fn new(rgb: (f64, f64, f64)) -> Self {
        let history: Rc<RefCell<VecDeque<f64>>> = Rc::default();
        let area = gtk::DrawingArea::new();
        area.set_content_height(90);
        area.set_hexpand(true);
        let h = history.clone();
        area.set_draw_func(move |_, cr, w, ht| draw(&h.borrow(), rgb, cr, w, ht));
        let value = gtk::Label::new(Some(&gettext("Waiting for statistics…")));
        value.set_xalign(0.0);
        value.add_css_class("dim-label");
        value.add_css_class("numeric");
        Self {
            value,
            area,
            history,
        }
    }

    fn push(&self, v: f64, text: &str) {
        let mut h = self.history.borrow_mut();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(v.clamp(0.0, 1.0));
        drop(h);
        self.value.set_text(text);
        self.area.queue_draw();
    }

    fn clear(&self, text: &str) {
        self.history.borrow_mut().clear();
        self.value.set_text(text);
        self.area.queue_draw();
    }
}

/// Draws a history as a filled line over a light grid, newest at the right.
fn draw(
    history: &VecDeque<f64>,
    (r, g, b): (f64, f64, f64),
    cr: &gtk::cairo::Context,
    width: i32,
    height: i32,
) {
    let (w, h) = (f64::from(width), f64::from(height));
    cr.set_source_rgba(0.5, 0.5, 0.5, 0.25);
    cr.set_line_width(1.0);
    for i in 0..=4 {
        let y = (h - 1.0) * f64::from(i) / 4.0 + 0.5;
        cr.move_to(0.0, y);
        cr.line_to(w, y);
    }
    let _ = cr.stroke();
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
    cr.set_source_rgba(r, g, b, 0.3);
    let _ = cr.fill_preserve();
    cr.set_source_rgba(r, g, b, 1.0);
    cr.set_line_width(1.5);
    let _ = cr.stroke();
}

/// The Performance page.
#[derive(Debug, Clone)]
pub struct PerfPage {
    root: gtk::ScrolledWindow,
    cpu: Graph,
    memory: Graph,
    /// The last (vCPU time ns, timestamp ms), to turn totals into usage.
    last: Rc<RefCell<Option<(u64, u64)>>>,
}

impl PerfPage {
    /// An empty page.
    pub fn new() -> Self {
        let cpu = Graph::new((0.21, 0.52, 0.89));
        let memory = Graph::new((0.15, 0.64, 0.41));
        let list = gtk::Box::new(gtk::Orientation::Vertical, 18);
        list.set_margin_top(18);
        list.set_margin_bottom(18);
        list.set_margin_start(18);
        list.set_margin_end(18);
        list.append(&card(&gettext("CPU usage"), Some(&cpu)));
        list.append(&card(&gettext("Memory"), Some(&memory)));
        list.append(&card(&gettext("Disk I/O"), None));
        list.append(&card(&gettext("Network I/O"), None));
        let clamp = adw::Clamp::new();
        clamp.set_maximum_size(800);
        clamp.set_child(Some(&list));
        let root = gtk::ScrolledWindow::new();
        root.set_hscrollbar_policy(gtk::PolicyType::Never);
        root.set_child(Some(&clamp));
        Self {
            root,
            cpu,
            memory,
            last: Rc::default(),
        }
    }

    /// The widget to put in the window.
    pub fn widget(&self) -> &gtk::Widget {
        self.root.upcast_ref()
    }

    /// Takes one statistics sample of this domain.
    pub fn add(&self, stats: &DomainStats) {
        let now = (stats.cpu_time_ns(), stats.timestamp_ms);
        let prev = self.last.replace(Some(now));
        if let Some(usage) = prev.and_then(|p| cpu_usage(p, now, stats.vcpus.len())) {
            // Translators: CPU usage, e.g. "12% of 2 vCPUs".
            let text = gettext("{percent}% of {n} vCPUs")
                .replace("{percent}", &format!("{:.0}", usage * 100.0))
                .replace("{n}", &stats.vcpus.len().to_string());
            self.cpu.push(usage, &text);
        }
        match stats.rss_bytes {
            Some(rss) if stats.guest_memory_bytes > 0 => {
                let total = stats.guest_memory_bytes + stats.vram_bytes;
                // Translators: the VMM's resident memory against the
                // guest's RAM plus video RAM, e.g. "18 MiB in use of 40 MiB".
                let text = gettext("{used} MiB in use of {total} MiB")
                    .replace("{used}", &(rss >> 20).to_string())
                    .replace("{total}", &(total >> 20).to_string());
                self.memory.push(rss as f64 / total as f64, &text);
            }
            _ => self.memory.clear(&gettext("Not available")),
        }
    }

    /// Forgets the history (the VM stopped).
    pub fn clear(&self) {
        self.last.replace(None);
        let text = gettext("The virtual machine is off");
        self.cpu.clear(&text);
        self.memory.clear(&text);
    }
}

impl Default for PerfPage {
    fn default() -> Self {
        Self::new()
    }
}

/// CPU usage between two (vCPU time ns, timestamp ms) samples, 0.0 to 1.0
/// of all `vcpus`.
pub fn cpu_usage(prev: (u64, u64), now: (u64, u64), vcpus: usize) -> Option<f64> {
    let wall_ns = now.1.checked_sub(prev.1)?.checked_mul(1_000_000)?;
    (wall_ns > 0).then(|| {
        (now.0.saturating_sub(prev.0) as f64 / (wall_ns as f64 * vcpus.max(1) as f64))
            .clamp(0.0, 1.0)
    })
}

/// A titled card with a graph, or saying that the series is not available.
fn card(title: &str, graph: Option<&Graph>) -> gtk::Box {
    let b = gtk::Box::new(gtk::Orientation::Vertical, 6);
    b.add_css_class("card");
    let inner = gtk::Box::new(gtk::Orientation::Vertical, 6);
    inner.set_margin_top(12);
    inner.set_margin_bottom(12);
    inner.set_margin_start(12);
    inner.set_margin_end(12);
    let t = gtk::Label::new(Some(title));
    t.set_xalign(0.0);
    t.add_css_class("heading");
    inner.append(&t);
    match graph {
        Some(g) => {
            inner.append(&g.value);
            inner.append(&g.area);
        }
        None => {
            let l = gtk::Label::new(Some(&gettext(
                "Not available: the engine does not report these statistics yet.",
            )));
            l.set_xalign(0.0);
            l.set_wrap(true);
            l.add_css_class("dim-label");
            inner.append(&l);
        }
    }
    b.append(&inner);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_is_vcpu_time_over_wall_time_and_vcpus() {
        // 1 s of wall time, 0.5 s of vCPU time on 2 vCPUs: 25%.
        assert_eq!(cpu_usage((0, 1000), (500_000_000, 2000), 2), Some(0.25));
        // Clock going backwards or no time passing: no sample.
        assert_eq!(cpu_usage((0, 2000), (1, 1000), 1), None);
        assert_eq!(cpu_usage((0, 2000), (1, 2000), 1), None);
        // Never above 100%.
        assert_eq!(cpu_usage((0, 0), (u64::MAX, 1), 1), Some(1.0));
    }
}
