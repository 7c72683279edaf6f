//! The VM window's Performance page: CPU, memory and disk I/O graphs drawn
//! from the engine's periodic statistics events. The engine reports no
//! network figures (there is no network device yet), so that card says so
//! instead of inventing data.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use gettextrs::gettext;
use gtk::prelude::*;
use vireo_api::proto::DomainStats;

/// The colours of the disk graph's read and write series.
const READ_RGB: (f64, f64, f64) = (0.21, 0.52, 0.89);
const WRITE_RGB: (f64, f64, f64) = (0.88, 0.38, 0.0);

/// `text` (markup) in the colour `rgb`, bold: the disk figures take their
/// series' colour, so the label is the graph's legend.
fn colored(rgb: (f64, f64, f64), text: &str) -> String {
    let c = |v: f64| (v * 255.0).round() as u8;
    format!(
        "<span foreground='#{:02x}{:02x}{:02x}' weight='bold'>{text}</span>",
        c(rgb.0),
        c(rgb.1),
        c(rgb.2)
    )
}

/// Samples each graph keeps (the engine samples every few seconds).
pub const HISTORY: usize = 120;

/// The histories of a graph's series (each 0.0 to 1.0, or any
/// non-negative value when the graph scales to its peak).
type Series = Rc<RefCell<Vec<VecDeque<f64>>>>;

/// One graph: a title, the current value and the history of one or more
/// series.
#[derive(Debug, Clone)]
struct Graph {
    value: gtk::Label,
    area: gtk::DrawingArea,
    series: Series,
    /// Whether values are unbounded rates drawn against the highest one
    /// shown (else fractions, clamped to 0.0..=1.0).
    autoscale: bool,
}

impl Graph {
    fn new(rgb: (f64, f64, f64)) -> Self {
        Self::with_series(&[rgb], false)
    }

    /// A graph of one series per colour.
    fn with_series(colors: &[(f64, f64, f64)], autoscale: bool) -> Self {
        let series: Series = Rc::new(RefCell::new(vec![VecDeque::new(); colors.len()]));
        let area = gtk::DrawingArea::new();
        area.set_content_height(90);
        area.set_hexpand(true);
        let h = series.clone();
        let colors = colors.to_vec();
        area.set_draw_func(move |_, cr, w, ht| {
            let series = h.borrow();
            let peak = if autoscale {
                series
                    .iter()
                    .flatten()
                    .copied()
                    .fold(0.0, f64::max)
                    .max(1.0)
            } else {
                1.0
            };
            grid(cr, w, ht);
            for (history, &rgb) in series.iter().zip(&colors) {
                draw(history, peak, rgb, cr, w, ht);
            }
        });
        let value = gtk::Label::new(Some(&gettext("Waiting for statistics…")));
        value.set_xalign(0.0);
        value.add_css_class("dim-label");
        value.add_css_class("numeric");
        Self {
            value,
            area,
            series,
            autoscale,
        }
    }

    fn push(&self, v: f64, text: &str) {
        self.push_all(&[v], text);
    }

    /// Adds one sample to each series.
    fn push_all(&self, values: &[f64], text: &str) {
        for (h, &v) in self.series.borrow_mut().iter_mut().zip(values) {
            if h.len() == HISTORY {
                h.pop_front();
            }
            let v = if self.autoscale {
                v.max(0.0)
            } else {
                v.clamp(0.0, 1.0)
            };
            h.push_back(v);
        }
        self.value.set_text(text);
        self.area.queue_draw();
    }

    fn clear(&self, text: &str) {
        self.series
            .borrow_mut()
            .iter_mut()
            .for_each(VecDeque::clear);
        self.value.set_text(text);
        self.area.queue_draw();
    }
}

/// A light grid of five lines.
fn grid(cr: &gtk::cairo::Context, width: i32, height: i32) {
    let (w, h) = (f64::from(width), f64::from(height));
    cr.set_source_rgba(0.5, 0.5, 0.5, 0.25);
    cr.set_line_width(1.0);
    for i in 0..=4 {
        let y = (h - 1.0) * f64::from(i) / 4.0 + 0.5;
        cr.move_to(0.0, y);
        cr.line_to(w, y);
    }
    let _ = cr.stroke();
}

/// Draws a history (values up to `peak`) as a filled line, newest at the
/// right.
fn draw(
    history: &VecDeque<f64>,
    peak: f64,
    (r, g, b): (f64, f64, f64),
    cr: &gtk::cairo::Context,
    width: i32,
    height: i32,
) {
    let (w, h) = (f64::from(width), f64::from(height));
    if history.len() < 2 {
        return;
    }
    let step = w / (HISTORY - 1) as f64;
    let x0 = w - step * (history.len() - 1) as f64;
    cr.move_to(x0, h);
    for (i, v) in history.iter().enumerate() {
        cr.line_to(x0 + step * i as f64, h - v / peak * (h - 2.0) - 1.0);
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
    /// Read then write bytes per second, summed over the disks.
    disk: Graph,
    /// The last (vCPU time ns, timestamp ms), to turn totals into usage.
    last: Rc<RefCell<Option<(u64, u64)>>>,
    /// The last disk totals, to turn them into rates.
    last_disk: Rc<RefCell<Option<DiskTotals>>>,
}

impl PerfPage {
    /// An empty page.
    pub fn new() -> Self {
        let cpu = Graph::new((0.21, 0.52, 0.89));
        let memory = Graph::new((0.15, 0.64, 0.41));
        let disk = Graph::with_series(&[READ_RGB, WRITE_RGB], true);
        let list = gtk::Box::new(gtk::Orientation::Vertical, 18);
        list.set_margin_top(18);
        list.set_margin_bottom(18);
        list.set_margin_start(18);
        list.set_margin_end(18);
        list.append(&card(&gettext("CPU usage"), Some(&cpu)));
        list.append(&card(&gettext("Memory"), Some(&memory)));
        list.append(&card(&gettext("Disk I/O"), Some(&disk)));
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
            disk,
            last: Rc::default(),
            last_disk: Rc::default(),
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
        if stats.disks.is_empty() {
            self.last_disk.replace(None);
            self.disk.clear(&gettext("Not available"));
        } else {
            let now = DiskTotals::of(stats);
            let prev = self.last_disk.replace(Some(now));
            if let Some((read, write)) = prev.and_then(|p| disk_rates(p, now)) {
                // Translators: disk throughput summed over the VM's disks,
                // e.g. "Read 1.5 MiB/s, write 20 KiB/s".
                let template = gettext("Read {read}/s, write {write}/s");
                self.disk.push_all(&[read, write], "");
                let markup = gtk::glib::markup_escape_text(&template)
                    .replace("{read}", &colored(READ_RGB, &human_bytes(read)))
                    .replace("{write}", &colored(WRITE_RGB, &human_bytes(write)));
                self.disk.value.set_markup(&markup);
                tracing::debug!(
                    "perf {}: disk read {read:.0} B/s write {write:.0} B/s",
                    stats.name
                );
            }
        }
    }

    /// Forgets the history (the VM stopped).
    pub fn clear(&self) {
        self.last.replace(None);
        self.last_disk.replace(None);
        let text = gettext("The virtual machine is off");
        self.cpu.clear(&text);
        self.memory.clear(&text);
        self.disk.clear(&text);
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

/// Bytes read and written over all disks, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTotals {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub written: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl DiskTotals {
    /// The totals of one statistics sample.
    pub fn of(stats: &DomainStats) -> Self {
        Self {
            read: stats.disks.iter().map(|d| d.rd_bytes).sum(),
            written: stats.disks.iter().map(|d| d.wr_bytes).sum(),
            timestamp_ms: stats.timestamp_ms,
        }
    }
}

/// Read and write bytes per second between two samples; `None` when no
/// time passed or a counter went back (the VM rebooted, which restarts
/// them).
pub fn disk_rates(prev: DiskTotals, now: DiskTotals) -> Option<(f64, f64)> {
    let ms = now.timestamp_ms.checked_sub(prev.timestamp_ms)?;
    let read = now.read.checked_sub(prev.read)?;
    let written = now.written.checked_sub(prev.written)?;
    (ms > 0).then(|| {
        let secs = ms as f64 / 1000.0;
        (read as f64 / secs, written as f64 / secs)
    })
}

/// A byte count in IEC units, e.g. "512 B", "1.5 MiB".
pub fn human_bytes(bytes: f64) -> String {
    let mut v = bytes.max(0.0);
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return if unit == "B" || v >= 10.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
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

    #[test]
    fn disk_rates_are_bytes_per_second_between_samples() {
        let at = |read, written, timestamp_ms| DiskTotals {
            read,
            written,
            timestamp_ms,
        };
        // 2 s apart: 4 KiB read, 1 MiB written.
        assert_eq!(
            disk_rates(at(0, 0, 1000), at(4096, 1 << 20, 3000)),
            Some((2048.0, 524_288.0))
        );
        // No time passed, or the counters restarted with a reboot.
        assert_eq!(disk_rates(at(0, 0, 1000), at(1, 1, 1000)), None);
        assert_eq!(disk_rates(at(10, 10, 1000), at(5, 20, 2000)), None);
    }

    #[test]
    fn disk_totals_sum_the_disks() {
        use vireo_api::proto::{DiskStats, DomainState};
        let disk = |rd_bytes, wr_bytes| DiskStats {
            target: "vda".into(),
            rd_bytes,
            wr_bytes,
            ..DiskStats::default()
        };
        let stats = DomainStats {
            name: "t".into(),
            uuid: "00000000-0000-0000-0000-000000000000".parse().unwrap(),
            state: DomainState::Running,
            vcpus: Vec::new(),
            guest_memory_bytes: 0,
            vram_bytes: 0,
            rss_bytes: None,
            timestamp_ms: 7,
            disks: vec![disk(1, 2), disk(30, 40)],
        };
        assert_eq!(
            DiskTotals::of(&stats),
            DiskTotals {
                read: 31,
                written: 42,
                timestamp_ms: 7
            }
        );
    }

    #[test]
    fn colored_figures_are_pango_markup_in_the_series_colour() {
        assert_eq!(
            colored((1.0, 0.5, 0.0), "2 KiB"),
            "<span foreground='#ff8000' weight='bold'>2 KiB</span>"
        );
        assert!(gtk::pango::parse_markup(&colored(READ_RGB, "1 B"), '\0').is_ok());
    }

    #[test]
    fn human_bytes_uses_iec_units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(20.0 * 1024.0 * 1024.0), "20 MiB");
    }
}
