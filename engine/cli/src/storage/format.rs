//! Sizes as virsh reads and prints them (scaled integers,
//! vshPrettyCapacity) and the layouts of `pool-list`, `pool-info`,
//! `vol-list` and `vol-info`.

use vireo_api::storage::{PoolSummary, VolumeSummary};

use crate::output::table;

/// Parses a virsh scaled integer: a number of bytes with an optional
/// suffix: `b`/`byte`/`bytes`; `K`, `M`, `G`, `T`, `P`, `E` (alone or with
/// `iB`: powers of 1024), or with `B` (`KB`, `MB`, …: powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size '{s}': {why}");
    let digits = s.trim().len()
        - s.trim()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    let t = s.trim();
    if digits == 0 {
        return Err(bad("expected a number of bytes, e.g. 10G, 512M or 1048576"));
    }
    let (num, suffix) = t.split_at(digits);
    let value: u64 = num.parse().map_err(|_| bad("the number is too large"))?;
    let scale: u64 = if suffix.is_empty()
        || ["b", "byte", "bytes"]
            .iter()
            .any(|u| suffix.eq_ignore_ascii_case(u))
    {
        1
    } else {
        let mut chars = suffix.chars();
        let unit = chars.next().map(|c| c.to_ascii_lowercase());
        let rest = chars.as_str();
        let base: u64 = if rest.is_empty() || rest.eq_ignore_ascii_case("iB") {
            1024
        } else if rest.eq_ignore_ascii_case("B") {
            1000
        } else {
            return Err(bad("unknown unit (use K, M, G, T, P, E, KiB…, KB…)"));
        };
        let power = match unit {
            Some('k') => 1,
            Some('m') => 2,
            Some('g') => 3,
            Some('t') => 4,
            Some('p') => 5,
            Some('e') => 6,
            _ => return Err(bad("unknown unit (use K, M, G, T, P, E, KiB…, KB…)")),
        };
        base.pow(power)
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| bad("the size is too large"))
}

/// virsh's vshPrettyCapacity: two decimals in the largest binary unit
/// below the value.
pub fn pretty(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut limit: u128 = 1024;
    while unit + 1 < UNITS.len() && u128::from(bytes) >= limit {
        unit += 1;
        limit *= 1024;
    }
    let value = bytes as f64 / (1u128 << (10 * unit)) as f64;
    format!("{value:.2} {}", UNITS[unit])
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `pool-list [--details]`.
pub fn pool_list(pools: &[PoolSummary], details: bool) -> String {
    if !details {
        let rows: Vec<Vec<String>> = pools
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    if p.active { "active" } else { "inactive" }.to_owned(),
                    yes_no(p.autostart),
                ]
            })
            .collect();
        return table(&["Name", "State", "Autostart"], &rows);
    }
    let size = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), pretty);
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.active { "running" } else { "inactive" }.to_owned(),
                yes_no(p.autostart),
                yes_no(p.persistent),
                size(p.capacity),
                size(p.allocation),
                size(p.available),
            ]
        })
        .collect();
    table(
        &[
            "Name",
            "State",
            "Autostart",
            "Persistent",
            "Capacity",
            "Allocation",
            "Available",
        ],
        &rows,
    )
}

fn field(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("{:<16}{value}\n", format!("{label}:")));
}

/// `pool-info [--bytes]`.
pub fn pool_info(p: &PoolSummary, bytes: bool) -> String {
    let mut out = String::new();
    field(&mut out, "Name", &p.name);
    field(&mut out, "UUID", &p.uuid.to_string());
    field(
        &mut out,
        "State",
        if p.active { "running" } else { "inactive" },
    );
    field(&mut out, "Persistent", &yes_no(p.persistent));
    field(&mut out, "Autostart", &yes_no(p.autostart));
    if p.active {
        for (label, v) in [
            ("Capacity", p.capacity),
            ("Allocation", p.allocation),
            ("Available", p.available),
        ] {
            let v = v.unwrap_or(0);
            field(
                &mut out,
                label,
                &if bytes { v.to_string() } else { pretty(v) },
            );
        }
    }
    out.push('\n');
    out
}

/// `vol-list [--details]`.
pub fn vol_list(volumes: &[VolumeSummary], details: bool) -> String {
    if !details {
        let rows: Vec<Vec<String>> = volumes
            .iter()
            .map(|v| vec![v.name.clone(), v.path.clone()])
            .collect();
        return table(&["Name", "Path"], &rows);
    }
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.path.clone(),
                "file".to_owned(),
                pretty(v.capacity),
                pretty(v.allocation),
            ]
        })
        .collect();
    table(&["Name", "Path", "Type", "Capacity", "Allocation"], &rows)
}

/// `vol-info [--bytes]`.
pub fn vol_info(v: &VolumeSummary, bytes: bool) -> String {
    let mut out = String::new();
    field(&mut out, "Name", &v.name);
    field(&mut out, "Type", "file");
    for (label, n) in [("Capacity", v.capacity), ("Allocation", v.allocation)] {
        field(
            &mut out,
            label,
            &if bytes {
                format!("{n} bytes")
            } else {
                pretty(n)
            },
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vireo_api::storage::VolumeFormat;

    #[test]
    fn sizes_scale_like_virsh() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("7bytes").unwrap(), 7);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        for bad in ["", "G", "1.5G", "10X", "10Gb2", "99999999999E"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.starts_with("invalid size"), "{bad}: {err}");
        }
    }

    #[test]
    fn capacities_print_like_vsh_pretty_capacity() {
        assert_eq!(pretty(0), "0.00 B");
        assert_eq!(pretty(1023), "1023.00 B");
        assert_eq!(pretty(10 << 20), "10.00 MiB");
        assert_eq!(pretty(100 << 30), "100.00 GiB");
        assert_eq!(pretty(200_704), "196.00 KiB");
    }

    #[test]
    fn tables_match_virsh_test_driver_output() {
        let pool = PoolSummary {
            name: "default-pool".into(),
            uuid: "dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566".parse().unwrap(),
            active: true,
            autostart: false,
            persistent: true,
            path: "/default-pool".into(),
            capacity: Some(100 << 30),
            allocation: Some(0),
            available: Some(100 << 30),
        };
        // What `virsh -c test:///default` prints for its default pool.
        assert_eq!(
            pool_list(std::slice::from_ref(&pool), false),
            " Name           State    Autostart\n------------------------------------\n \
             default-pool   active   no\n\n"
        );
        assert_eq!(
            pool_list(std::slice::from_ref(&pool), true),
            " Name           State     Autostart   Persistent   Capacity     Allocation   \
             Available\n------------------------------------------------------------------\
             -----------------------\n default-pool   running   no          yes          \
             100.00 GiB   0.00 B       100.00 GiB\n\n"
        );
        assert_eq!(
            pool_info(&pool, false),
            "Name:           default-pool\nUUID:           \
             dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566\nState:          running\nPersistent:     \
             yes\nAutostart:      no\nCapacity:       100.00 GiB\nAllocation:     0.00 B\n\
             Available:      100.00 GiB\n\n"
        );
        let vol = VolumeSummary {
            name: "v1".into(),
            path: "/tmp/p1/v1".into(),
            format: VolumeFormat::Qcow2,
            capacity: 10 << 20,
            allocation: 10 << 20,
            backing: None,
        };
        assert_eq!(
            vol_list(std::slice::from_ref(&vol), true),
            " Name   Path         Type   Capacity    Allocation\n------------------------------\
             ----------------------\n v1     /tmp/p1/v1   file   10.00 MiB   10.00 MiB\n\n"
        );
        assert_eq!(
            vol_info(&vol, true),
            "Name:           v1\nType:           file\nCapacity:       10485760 bytes\n\
             Allocation:     10485760 bytes\n\n"
        );
    }
}
