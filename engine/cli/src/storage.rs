//! Storage verbs, as virsh names them: `pool-*` and `vol-*`, with virsh's
//! flags, messages and table columns.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;
use vireo_api::client::ClientError;
use vireo_api::proto::{ErrorCode, Request, Response};
use vireo_api::storage::{
    PoolDef, PoolSummary, StorageRequest, VolumeDef, VolumeFormat, VolumeSummary,
};

use crate::connect::Connection;
use crate::output::table;

/// The storage verbs.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Define an inactive persistent storage pool from its name, type and
    /// target folder (only `dir` pools).
    #[command(name = "pool-define-as")]
    PoolDefineAs {
        /// The pool's name.
        name: String,
        /// The pool type: dir.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// The pool's folder.
        #[arg(long)]
        target: Option<String>,
        /// Print the XML instead of defining the pool.
        #[arg(long)]
        print_xml: bool,
    },
    /// Define an inactive persistent storage pool from an XML file ('-'
    /// reads stdin).
    #[command(name = "pool-define")]
    PoolDefine {
        /// The XML file.
        file: String,
    },
    /// Print the storage pool's XML.
    #[command(name = "pool-dumpxml")]
    PoolDumpxml {
        /// Pool name or UUID.
        pool: String,
        /// Accepted for virsh compatibility (there is one definition).
        #[arg(long)]
        inactive: bool,
    },
    /// List storage pools.
    #[command(name = "pool-list")]
    PoolList {
        /// Include inactive pools.
        #[arg(long)]
        all: bool,
        /// Only inactive pools.
        #[arg(long)]
        inactive: bool,
        /// Also persistence and sizes.
        #[arg(long)]
        details: bool,
        /// Print only names.
        #[arg(long)]
        name: bool,
    },
    /// Storage pool information.
    #[command(name = "pool-info")]
    PoolInfo {
        /// Pool name or UUID.
        pool: String,
        /// Sizes in bytes.
        #[arg(long)]
        bytes: bool,
    },
    /// Create the storage pool's folder.
    #[command(name = "pool-build")]
    PoolBuild {
        /// Pool name or UUID.
        pool: String,
    },
    /// Delete an inactive storage pool's folder (it must be empty).
    #[command(name = "pool-delete")]
    PoolDelete {
        /// Pool name or UUID.
        pool: String,
    },
    /// Start a (previously defined) inactive storage pool.
    #[command(name = "pool-start")]
    PoolStart {
        /// Pool name or UUID.
        pool: String,
    },
    /// Stop a storage pool (its files stay).
    #[command(name = "pool-destroy")]
    PoolDestroy {
        /// Pool name or UUID.
        pool: String,
    },
    /// Remove an inactive storage pool's definition (its files stay).
    #[command(name = "pool-undefine")]
    PoolUndefine {
        /// Pool name or UUID.
        pool: String,
    },
    /// Scan the storage pool's folder for volumes again.
    #[command(name = "pool-refresh")]
    PoolRefresh {
        /// Pool name or UUID.
        pool: String,
    },
    /// Start the storage pool when the engine starts.
    #[command(name = "pool-autostart")]
    PoolAutostart {
        /// Pool name or UUID.
        pool: String,
        /// Turn autostart off.
        #[arg(long)]
        disable: bool,
    },
    /// Create a volume from a set of arguments.
    #[command(name = "vol-create-as")]
    VolCreateAs {
        /// Pool name or UUID.
        pool: String,
        /// The volume's file name.
        name: String,
        /// Its size, as a scaled integer (10G, 512M, 1GiB; bytes by default).
        capacity: String,
        /// Bytes to allocate now (raw volumes), as a scaled integer.
        #[arg(long)]
        allocation: Option<String>,
        /// raw or qcow2 (default raw).
        #[arg(long)]
        format: Option<String>,
        /// A backing volume (qcow2): its name in the pool, or its path.
        #[arg(long)]
        backing_vol: Option<String>,
        /// The backing volume's format (probed by default).
        #[arg(long)]
        backing_vol_format: Option<String>,
    },
    /// Create a volume from libvirt volume XML ('-' reads stdin).
    #[command(name = "vol-create")]
    VolCreate {
        /// Pool name or UUID.
        pool: String,
        /// The XML file.
        file: String,
    },
    /// List the volumes of a storage pool.
    #[command(name = "vol-list")]
    VolList {
        /// Pool name or UUID.
        pool: Option<String>,
        /// Pool name or UUID, as virsh also spells it.
        #[arg(long = "pool", conflicts_with = "pool")]
        pool_flag: Option<String>,
        /// Also type and sizes.
        #[arg(long)]
        details: bool,
    },
    /// Volume information.
    #[command(name = "vol-info")]
    VolInfo {
        /// Volume name (with --pool) or path.
        vol: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
        /// Sizes in bytes.
        #[arg(long)]
        bytes: bool,
    },
    /// Print the volume's path.
    #[command(name = "vol-path")]
    VolPath {
        /// Volume name (with --pool) or path.
        vol: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Print the volume's XML.
    #[command(name = "vol-dumpxml")]
    VolDumpxml {
        /// Volume name (with --pool) or path.
        vol: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete a volume.
    #[command(name = "vol-delete")]
    VolDelete {
        /// Volume name (with --pool) or path.
        vol: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Resize a volume.
    ///
    /// CAPACITY is the new size, or with --delta (or a leading '+') the
    /// growth; a leading '-' shrinks by that much and needs --shrink.
    #[command(name = "vol-resize", allow_negative_numbers = true)]
    VolResize {
        /// Volume name (with --pool) or path.
        vol: String,
        /// The new size, as a scaled integer.
        #[arg(allow_hyphen_values = true)]
        capacity: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
        /// CAPACITY is added to the current size.
        #[arg(long)]
        delta: bool,
        /// Allow making the volume smaller (data at its end is lost).
        #[arg(long)]
        shrink: bool,
    },
    /// Clone a volume into a new one in the same pool.
    #[command(name = "vol-clone")]
    VolClone {
        /// Volume name (with --pool) or path.
        vol: String,
        /// The new volume's name.
        newname: String,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Create a volume from an XML file, with the data of another volume
    /// converted (e.g. a vmdk imported as qcow2 or raw).
    #[command(name = "vol-create-from")]
    VolCreateFrom {
        /// Pool name or UUID of the new volume.
        pool: String,
        /// The new volume's XML (name, optional capacity, target format),
        /// or '-' for standard input.
        file: String,
        /// The input volume: its name (in --inputpool, or else POOL) or path.
        vol: String,
        /// Pool name or UUID of the input volume.
        #[arg(long)]
        inputpool: Option<String>,
    },
    /// Replace a volume's contents with a file's bytes.
    #[command(name = "vol-upload")]
    VolUpload {
        /// Volume name (with --pool) or path.
        vol: String,
        /// The file to upload.
        file: PathBuf,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Save a volume's bytes to a file.
    #[command(name = "vol-download")]
    VolDownload {
        /// Volume name (with --pool) or path.
        vol: String,
        /// The file to write.
        file: PathBuf,
        /// Pool name or UUID.
        #[arg(long)]
        pool: Option<String>,
    },
}

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

/// Calls the engine, saying which pool or volume could not be found the
/// way virsh does.
fn call(conn: &mut Connection, request: StorageRequest) -> Result<Response, String> {
    let lookup = match &request {
        StorageRequest::PoolXml { pool }
        | StorageRequest::PoolInfo { pool }
        | StorageRequest::BuildPool { pool }
        | StorageRequest::DeletePool { pool }
        | StorageRequest::StartPool { pool }
        | StorageRequest::DestroyPool { pool }
        | StorageRequest::UndefinePool { pool }
        | StorageRequest::RefreshPool { pool }
        | StorageRequest::SetPoolAutostart { pool, .. }
        | StorageRequest::ListVolumes { pool }
        | StorageRequest::CreateVolume { pool, .. } => Some(("pool", pool.clone())),
        StorageRequest::VolumeInfo { volume, .. }
        | StorageRequest::VolumeXml { volume, .. }
        | StorageRequest::DeleteVolume { volume, .. }
        | StorageRequest::ResizeVolume { volume, .. }
        | StorageRequest::CloneVolume { volume, .. }
        | StorageRequest::CreateVolumeFrom { input: volume, .. }
        | StorageRequest::UploadVolume { volume, .. }
        | StorageRequest::DownloadVolume { volume, .. } => Some(("vol", volume.clone())),
        StorageRequest::ListPools { .. } | StorageRequest::DefinePool { .. } => None,
    };
    let progress_label = match &request {
        StorageRequest::CloneVolume { .. } => Some("Cloning"),
        StorageRequest::CreateVolumeFrom { .. } => Some("Converting"),
        _ => None,
    };
    let mut meter = Meter::new(progress_label);
    let result = conn
        .client()
        .call_with_progress(Request::Storage(request), &mut |d, t| meter.show(d, t));
    meter.finish();
    explain(result, lookup)
}

fn explain(
    result: Result<Response, ClientError>,
    lookup: Option<(&str, String)>,
) -> Result<Response, String> {
    result.map_err(|e| match (&e, lookup) {
        (ClientError::Api(api), Some((kind, name)))
            if matches!(
                api.code,
                ErrorCode::NoStoragePool | ErrorCode::NoStorageVolume
            ) =>
        {
            let kind = if api.code == ErrorCode::NoStoragePool {
                "pool"
            } else {
                kind
            };
            format!("failed to get {kind} '{name}'\nerror: {e}")
        }
        _ => e.to_string(),
    })
}

/// A percentage line on stderr while a long operation runs, when stderr is
/// a terminal.
/// A download's file, whose writeback to disk the kernel is asked to start
/// every few MiB as they arrive, so the sync before the rename finds little
/// left to do.
struct WriteBehind {
    file: std::fs::File,
    written: u64,
    started: u64,
}

impl std::io::Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= 8 << 20 {
            // SAFETY: sync_file_range(2) takes a descriptor `self.file`
            // keeps open and plain integers; it touches no memory of ours.
            // A hint only: the sync_all that follows reports errors.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct Meter {
    label: Option<&'static str>,
    last: Option<u64>,
}

impl Meter {
    fn new(label: Option<&'static str>) -> Self {
        let label = label.filter(|_| std::io::stderr().is_terminal());
        Self { label, last: None }
    }

    fn show(&mut self, done: u64, total: u64) {
        let Some(label) = self.label else { return };
        let pct = if total == 0 {
            100
        } else {
            (u128::from(done) * 100 / u128::from(total)) as u64
        };
        if self.last != Some(pct) {
            self.last = Some(pct);
            eprint!(
                "\r{label}: {pct:3}% ({} of {})",
                pretty(done),
                pretty(total)
            );
        }
    }

    fn finish(&mut self) {
        if self.label.is_some() && self.last.is_some() {
            eprintln!();
        }
    }
}

fn unexpected() -> String {
    "unexpected answer from the engine".into()
}

fn read_input(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))
    }
}

fn format_arg(s: Option<&str>) -> Result<Option<VolumeFormat>, String> {
    s.map(VolumeFormat::parse).transpose()
}

fn volume(conn: &mut Connection, pool: Option<String>, vol: &str) -> Result<VolumeSummary, String> {
    match call(
        conn,
        StorageRequest::VolumeInfo {
            pool,
            volume: vol.to_owned(),
        },
    )? {
        Response::Volume { volume } => Ok(volume),
        _ => Err(unexpected()),
    }
}

fn pool_name(conn: &mut Connection, pool: &str) -> Result<String, String> {
    match call(
        conn,
        StorageRequest::PoolInfo {
            pool: pool.to_owned(),
        },
    )? {
        Response::Pool { pool } => Ok(pool.name),
        _ => Err(unexpected()),
    }
}

/// Runs one storage verb.
pub fn run(conn: &mut Connection, command: StorageCommand) -> Result<(), String> {
    use StorageCommand as C;
    use StorageRequest as R;
    let pool_verb = |conn: &mut Connection,
                     pool: String,
                     request: StorageRequest,
                     done: &str|
     -> Result<(), String> {
        let name = pool_name(conn, &pool)?;
        call(conn, request)?;
        println!("Pool {name} {done}\n");
        Ok(())
    };
    match command {
        C::PoolDefineAs {
            name,
            kind,
            target,
            print_xml,
        } => {
            if kind != "dir" {
                return Err(format!(
                    "unsupported storage pool type '{kind}': only 'dir' pools are supported"
                ));
            }
            let Some(target) = target else {
                return Err("a dir pool needs --target DIR".into());
            };
            let path = std::path::absolute(&target)
                .map_err(|e| format!("invalid --target '{target}': {e}"))?;
            let def = PoolDef {
                name: name.clone(),
                uuid: None,
                path: path.to_string_lossy().into_owned(),
            };
            let xml = def.to_xml(None);
            if print_xml {
                print!("{xml}");
                return Ok(());
            }
            call(conn, R::DefinePool { xml })?;
            println!("Pool {name} defined\n");
        }
        C::PoolDefine { file } => {
            let xml = read_input(&file)?;
            let Response::Pool { pool } = call(conn, R::DefinePool { xml })? else {
                return Err(unexpected());
            };
            let from = if file == "-" { "standard input" } else { &file };
            println!("Pool {} defined from {from}\n", pool.name);
        }
        C::PoolDumpxml { pool, .. } => {
            let Response::Xml { xml } = call(conn, R::PoolXml { pool })? else {
                return Err(unexpected());
            };
            print!("{xml}");
        }
        C::PoolList {
            all,
            inactive,
            details,
            name,
        } => {
            let Response::Pools { pools } = call(
                conn,
                R::ListPools {
                    all: all || inactive,
                },
            )?
            else {
                return Err(unexpected());
            };
            let pools: Vec<PoolSummary> = pools
                .into_iter()
                .filter(|p| !inactive || !p.active)
                .collect();
            if name {
                for p in &pools {
                    println!("{}", p.name);
                }
                println!();
            } else {
                print!("{}", pool_list(&pools, details));
            }
        }
        C::PoolInfo { pool, bytes } => {
            let Response::Pool { pool } = call(conn, R::PoolInfo { pool })? else {
                return Err(unexpected());
            };
            print!("{}", pool_info(&pool, bytes));
        }
        C::PoolBuild { pool } => pool_verb(conn, pool.clone(), R::BuildPool { pool }, "built")?,
        C::PoolDelete { pool } => pool_verb(conn, pool.clone(), R::DeletePool { pool }, "deleted")?,
        C::PoolStart { pool } => pool_verb(conn, pool.clone(), R::StartPool { pool }, "started")?,
        C::PoolDestroy { pool } => {
            pool_verb(conn, pool.clone(), R::DestroyPool { pool }, "destroyed")?
        }
        C::PoolUndefine { pool } => pool_verb(
            conn,
            pool.clone(),
            R::UndefinePool { pool },
            "has been undefined",
        )?,
        C::PoolRefresh { pool } => {
            pool_verb(conn, pool.clone(), R::RefreshPool { pool }, "refreshed")?
        }
        C::PoolAutostart { pool, disable } => pool_verb(
            conn,
            pool.clone(),
            R::SetPoolAutostart {
                pool,
                enabled: !disable,
            },
            if disable {
                "unmarked as autostarted"
            } else {
                "marked as autostarted"
            },
        )?,
        C::VolCreateAs {
            pool,
            name,
            capacity,
            allocation,
            format,
            backing_vol,
            backing_vol_format,
        } => {
            let request = R::CreateVolume {
                pool,
                name: name.clone(),
                capacity: parse_size(&capacity)?,
                allocation: allocation.as_deref().map(parse_size).transpose()?,
                format: format_arg(format.as_deref())?.unwrap_or(VolumeFormat::Raw),
                backing: backing_vol,
                backing_format: format_arg(backing_vol_format.as_deref())?,
            };
            call(conn, request)?;
            println!("Vol {name} created\n");
        }
        C::VolCreate { pool, file } => {
            let def = VolumeDef::parse(&read_input(&file)?)?;
            let name = def.name.clone();
            let request = R::CreateVolume {
                pool,
                name: def.name,
                capacity: def.capacity,
                allocation: def.allocation,
                format: def.format,
                backing: def.backing,
                backing_format: def.backing_format,
            };
            call(conn, request)?;
            let from = if file == "-" { "standard input" } else { &file };
            println!("Vol {name} created from {from}\n");
        }
        C::VolList {
            pool,
            pool_flag,
            details,
        } => {
            let Some(pool) = pool.or(pool_flag) else {
                return Err("vol-list needs a pool".into());
            };
            let Response::Volumes { volumes } = call(conn, R::ListVolumes { pool })? else {
                return Err(unexpected());
            };
            print!("{}", vol_list(&volumes, details));
        }
        C::VolInfo { vol, pool, bytes } => {
            let v = volume(conn, pool, &vol)?;
            print!("{}", vol_info(&v, bytes));
        }
        C::VolPath { vol, pool } => {
            let v = volume(conn, pool, &vol)?;
            println!("{}\n", v.path);
        }
        C::VolDumpxml { vol, pool } => {
            let Response::Xml { xml } = call(conn, R::VolumeXml { pool, volume: vol })? else {
                return Err(unexpected());
            };
            print!("{xml}");
        }
        C::VolDelete { vol, pool } => {
            let name = volume(conn, pool.clone(), &vol)?.name;
            call(conn, R::DeleteVolume { pool, volume: vol })?;
            println!("Vol {name} deleted\n");
        }
        C::VolResize {
            vol,
            capacity,
            pool,
            delta,
            shrink,
        } => {
            let (sign, amount) = match capacity.strip_prefix('+') {
                Some(rest) => (1, rest),
                None => match capacity.strip_prefix('-') {
                    Some(rest) if shrink => (-1, rest),
                    Some(_) => {
                        return Err(format!("negative size '{capacity}' requires --shrink"));
                    }
                    None => (0, capacity.as_str()),
                },
            };
            let amount = parse_size(amount)?;
            let current = volume(conn, pool.clone(), &vol)?;
            let new = match (sign, delta) {
                (1, _) | (0, true) => current
                    .capacity
                    .checked_add(amount)
                    .ok_or_else(|| format!("invalid size '{capacity}': too large"))?,
                (-1, _) => current.capacity.checked_sub(amount).ok_or_else(|| {
                    format!(
                        "cannot shrink volume '{}' by more than its {} bytes",
                        current.name, current.capacity
                    )
                })?,
                _ => amount,
            };
            call(
                conn,
                R::ResizeVolume {
                    pool,
                    volume: vol,
                    capacity: new,
                    shrink,
                },
            )?;
            if sign != 0 || delta {
                println!(
                    "Size of volume '{}' successfully changed by {}\n",
                    current.name,
                    capacity.trim_start_matches(['+', '-'])
                );
            } else {
                println!(
                    "Size of volume '{}' successfully changed to {capacity}\n",
                    current.name
                );
            }
        }
        C::VolClone { vol, newname, pool } => {
            let name = volume(conn, pool.clone(), &vol)?.name;
            call(
                conn,
                R::CloneVolume {
                    pool,
                    volume: vol,
                    new_name: newname.clone(),
                },
            )?;
            println!("Vol {newname} cloned from {name}\n");
        }
        C::VolCreateFrom {
            pool,
            file,
            vol,
            inputpool,
        } => {
            // virsh's order: the pool, the XML, then the input volume.
            pool_name(conn, &pool)?;
            let (def, has_capacity) = VolumeDef::parse_for_copy(&read_input(&file)?)?;
            if def.backing.is_some() {
                return Err(
                    "vol-create-from does not take a <backingStore>: the new volume holds \
                     the input volume's data"
                        .into(),
                );
            }
            let input_pool = match inputpool {
                Some(p) => Some(p),
                None if std::path::Path::new(&vol).is_absolute() => None,
                None => Some(pool.clone()),
            };
            let input = volume(conn, input_pool.clone(), &vol)?;
            let name = def.name.clone();
            call(
                conn,
                R::CreateVolumeFrom {
                    pool,
                    name: def.name,
                    capacity: has_capacity.then_some(def.capacity),
                    format: def.format,
                    input_pool,
                    input: vol,
                },
            )
            .map_err(|e| format!("Failed to create vol from {file}\nerror: {e}"))?;
            println!("Vol {name} created from input vol {}\n", input.name);
        }
        C::VolUpload { vol, file, pool } => {
            let mut source = std::fs::File::open(&file)
                .map_err(|e| format!("cannot open '{}': {e}", file.display()))?;
            let meta = source
                .metadata()
                .map_err(|e| format!("cannot read '{}': {e}", file.display()))?;
            if !meta.is_file() {
                return Err(format!(
                    "'{}' is not a regular file; vol-upload sends a file of known size",
                    file.display()
                ));
            }
            let length = meta.len();
            let mut meter = Meter::new(Some("Uploading"));
            let request = Request::Storage(R::UploadVolume {
                pool,
                volume: vol.clone(),
                length,
            });
            let result = conn
                .client()
                .upload(request, &mut source, length, &mut |d, t| meter.show(d, t));
            meter.finish();
            explain(result, Some(("vol", vol)))?;
            println!();
        }
        C::VolDownload { vol, file, pool } => {
            // Into a temporary file beside the target, renamed when complete.
            let mut tmp_name = file.file_name().unwrap_or_default().to_os_string();
            tmp_name.push(".vireoctl-part");
            let tmp = file.with_file_name({
                let mut n = std::ffi::OsString::from(".");
                n.push(tmp_name);
                n
            });
            // Chunks arrive whole (up to 1 MiB): no buffer in between.
            let mut sink = WriteBehind {
                file: std::fs::File::create(&tmp)
                    .map_err(|e| format!("cannot create '{}': {e}", tmp.display()))?,
                written: 0,
                started: 0,
            };
            let mut meter = Meter::new(Some("Downloading"));
            let request = Request::Storage(R::DownloadVolume {
                pool,
                volume: vol.clone(),
            });
            let result = conn
                .client()
                .download(request, &mut sink, &mut |d, t| meter.show(d, t));
            meter.finish();
            let result = explain(result, Some(("vol", vol))).and_then(|_| {
                sink.file
                    .sync_all()
                    .map_err(|e| format!("cannot write '{}': {e}", tmp.display()))?;
                std::fs::rename(&tmp, &file)
                    .map_err(|e| format!("cannot write '{}': {e}", file.display()))
            });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
            println!();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
