//! virsh's output formats.

use std::fmt::Write;

use vireo_api::domain::Disk;
use vireo_api::proto::{DiskStats, DomainInfo, DomainStats, DomainSummary};

/// A table as virsh's vshTable prints it: each cell preceded by a space,
/// columns padded to their widest cell plus two spaces, a dashed rule under
/// the header, a blank line after.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        for (i, cell) in cells.iter().enumerate() {
            out.push(' ');
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out.push('\n');
    };
    line(header, &mut out);
    let rule = widths.iter().sum::<usize>() + 3 * widths.len();
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    out.push('\n');
    out
}

/// `list`.
pub fn list_table(domains: &[DomainSummary]) -> String {
    let rows: Vec<Vec<String>> = domains
        .iter()
        .map(|d| {
            vec![
                d.id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
                d.name.clone(),
                d.state.as_virsh().to_owned(),
            ]
        })
        .collect();
    table(&["Id", "Name", "State"], &rows)
}

/// `domblklist [--details]`: the path, or the volume name of a volume disk
/// (as virsh shows it); a disk without a source shows `-`.
pub fn domblklist(disks: &[Disk], details: bool) -> String {
    let source = |d: &Disk| d.source_name().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = disks
        .iter()
        .map(|d| {
            let mut row = Vec::new();
            if details {
                row.extend([d.kind.clone(), d.device.clone()]);
            }
            row.extend([d.target.dev.clone(), source(d)]);
            row
        })
        .collect();
    if details {
        table(&["Type", "Device", "Target", "Source"], &rows)
    } else {
        table(&["Target", "Source"], &rows)
    }
}

fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// `dominfo`.
pub fn dominfo(info: &DomainInfo) -> String {
    let s = &info.summary;
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{:<16}{value}", format!("{label}:"));
    };
    field("Id", s.id.map_or_else(|| "-".to_owned(), |i| i.to_string()));
    field("Name", s.name.clone());
    field("UUID", s.uuid.to_string());
    field("OS Type", info.os_type.clone());
    field("State", s.state.as_virsh().to_owned());
    field("CPU(s)", info.vcpus.to_string());
    if let Some(ns) = info.cpu_time_ns {
        field("CPU time", format!("{:.1}s", ns as f64 / 1e9));
    }
    field("Max memory", format!("{} KiB", info.max_memory_kib));
    field("Used memory", format!("{} KiB", info.memory_kib));
    field(
        "Persistent",
        if info.persistent { "yes" } else { "no" }.into(),
    );
    field(
        "Autostart",
        if info.autostart { "enable" } else { "disable" }.into(),
    );
    field("Managed save", "no".into());
    field("Security model", "none".into());
    field("Security DOI", "0".into());
    out.push('\n');
    out
}

/// `domstats`: libvirt's key=value records.
pub fn domstats(info: &DomainInfo, stats: Option<&DomainStats>) -> String {
    let s = &info.summary;
    let mut out = format!("Domain: '{}'\n", s.name);
    let _ = writeln!(out, "  state.state={}", s.state.number());
    let _ = writeln!(out, "  state.reason=0");
    if let Some(st) = stats {
        let _ = writeln!(out, "  cpu.time={}", st.cpu_time_ns());
        let _ = writeln!(out, "  balloon.current={}", info.memory_kib);
        let _ = writeln!(out, "  balloon.maximum={}", info.max_memory_kib);
        if let Some(rss) = st.rss_bytes {
            let _ = writeln!(out, "  balloon.rss={}", rss / 1024);
        }
        let _ = writeln!(out, "  vcpu.current={}", st.vcpus.len());
        let _ = writeln!(out, "  vcpu.maximum={}", info.vcpus);
        for v in &st.vcpus {
            let _ = writeln!(out, "  vcpu.{}.state=1", v.id);
            let _ = writeln!(out, "  vcpu.{}.time={}", v.id, v.cpu_time_ns);
            let _ = writeln!(out, "  vcpu.{}.exits={}", v.id, v.exits);
        }
        let _ = writeln!(out, "  block.count={}", st.disks.len());
        for (i, d) in st.disks.iter().enumerate() {
            let _ = writeln!(out, "  block.{i}.name={}", d.target);
            let _ = writeln!(out, "  block.{i}.rd.reqs={}", d.rd_req);
            let _ = writeln!(out, "  block.{i}.rd.bytes={}", d.rd_bytes);
            let _ = writeln!(out, "  block.{i}.wr.reqs={}", d.wr_req);
            let _ = writeln!(out, "  block.{i}.wr.bytes={}", d.wr_bytes);
            let _ = writeln!(out, "  block.{i}.fl.reqs={}", d.flush_req);
        }
    }
    out.push('\n');
    out
}

/// `cpu-stats`: per vCPU, then the total.
pub fn cpu_stats(stats: &DomainStats) -> String {
    let mut out = String::new();
    for v in &stats.vcpus {
        let _ = writeln!(out, "CPU{}:", v.id);
        let _ = writeln!(
            out,
            "\t{:<12}{:>20} seconds",
            "vcpu_time",
            seconds(v.cpu_time_ns)
        );
    }
    let _ = writeln!(out, "Total:");
    let _ = writeln!(
        out,
        "\t{:<12}{:>20} seconds",
        "cpu_time",
        seconds(stats.cpu_time_ns())
    );
    out
}

/// `domblkstat`: virsh's `DEVICE FIELD VALUE` lines (in virsh's order,
/// errs before flush_operations) for the disk whose
/// target is `device`, or for all disks summed (virsh prints the empty
/// device name then).
/// `device` is a target or, as virsh takes too, a disk's source path
/// (looked up in `disks`, the running definition's); lines start with it
/// as given.
pub fn domblkstat(
    stats: &DomainStats,
    device: Option<&str>,
    disks: &[Disk],
) -> Result<String, String> {
    let (name, d) = match device {
        Some(dev) => {
            let target = disks
                .iter()
                .find(|d| d.source_path() == Some(dev))
                .map_or(dev, |d| d.target.dev.as_str());
            let d = stats
                .disks
                .iter()
                .find(|d| d.target == target)
                .ok_or_else(|| format!("invalid argument: invalid path: {dev}"))?;
            (dev, d.clone())
        }
        None => {
            let mut sum = DiskStats::default();
            for d in &stats.disks {
                sum.rd_req += d.rd_req;
                sum.rd_bytes += d.rd_bytes;
                sum.wr_req += d.wr_req;
                sum.wr_bytes += d.wr_bytes;
                sum.flush_req += d.flush_req;
                sum.errs += d.errs;
            }
            ("", sum)
        }
    };
    let mut out = String::new();
    for (field, value) in [
        ("rd_req", d.rd_req),
        ("rd_bytes", d.rd_bytes),
        ("wr_req", d.wr_req),
        ("wr_bytes", d.wr_bytes),
        ("errs", d.errs),
        ("flush_operations", d.flush_req),
    ] {
        let _ = writeln!(out, "{name} {field} {value}");
    }
    out.push('\n');
    Ok(out)
}

/// `dommemstat`, in KiB like virsh.
pub fn dommemstat(info: &DomainInfo, stats: &DomainStats) -> String {
    let mut out = format!("actual {}\n", info.memory_kib);
    if let Some(rss) = stats.rss_bytes {
        let _ = writeln!(out, "rss {}", rss / 1024);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use vireo_api::proto::DomainState;

    use super::*;

    #[test]
    fn list_matches_virsh_layout() {
        let d = DomainSummary {
            id: Some(1),
            name: "test".into(),
            uuid: uuid::Uuid::nil(),
            state: DomainState::Running,
            reason: String::new(),
        };
        // Exactly what `virsh -c test:///default list` prints.
        assert_eq!(
            list_table(&[d]),
            " Id   Name   State\n----------------------\n 1    test   running\n\n"
        );
    }

    #[test]
    fn domblkstat_prints_one_disk_or_the_sum_and_names_an_unknown_one() {
        let disk = |target: &str, n: u64| DiskStats {
            target: target.into(),
            rd_req: n,
            rd_bytes: n * 512,
            wr_req: 2 * n,
            wr_bytes: n * 4096,
            flush_req: 1,
            errs: 0,
        };
        let stats = DomainStats {
            name: "t".into(),
            uuid: uuid::Uuid::nil(),
            state: DomainState::Running,
            vcpus: Vec::new(),
            guest_memory_bytes: 0,
            vram_bytes: 0,
            rss_bytes: None,
            timestamp_ms: 0,
            disks: vec![disk("vda", 3), disk("vdb", 5)],
        };
        assert_eq!(
            domblkstat(&stats, Some("vdb"), &[]).unwrap(),
            "vdb rd_req 5\nvdb rd_bytes 2560\nvdb wr_req 10\nvdb wr_bytes 20480\n\
             vdb errs 0\nvdb flush_operations 1\n\n"
        );
        let sum = domblkstat(&stats, None, &[]).unwrap();
        assert!(sum.starts_with(" rd_req 8\n rd_bytes 4096\n"), "{sum}");
        assert_eq!(
            domblkstat(&stats, Some("hda"), &[]).unwrap_err(),
            "invalid argument: invalid path: hda"
        );
    }

    #[test]
    fn domblklist_matches_virsh_layout() {
        let d = vireo_api::Domain::from_xml(
            "<domain type='kvm'><name>t</name><memory>1024</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os><devices>\
             <disk type='file' device='disk'><source file='/guest/diskimage1'/>\
             <target dev='vda' bus='virtio'/></disk></devices></domain>",
        )
        .unwrap();
        // Exactly what `virsh -c test:///default domblklist test [--details]` prints.
        assert_eq!(
            domblklist(&d.devices.disks, false),
            " Target   Source\n-----------------------------\n vda      /guest/diskimage1\n\n"
        );
        assert_eq!(
            domblklist(&d.devices.disks, true),
            " Type   Device   Target   Source\n---------------------------------------------\n \
             file   disk     vda      /guest/diskimage1\n\n"
        );
    }
}
