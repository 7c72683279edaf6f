//! Storage verbs, as virsh names them: `pool-*` and `vol-*`, with virsh's
//! flags, messages and table columns.
//!
//! This file has the verbs' arguments ([`StorageCommand`]) and [`run`];
//! `storage/format.rs` has sizes and virsh's output layouts,
//! `storage/calls.rs` the engine calls with virsh's lookup errors and
//! small argument helpers, `storage/progress.rs` the percentage line and
//! the download file's write-behind.

mod calls;
mod format;
mod progress;

pub use format::{parse_size, pool_info, pool_list, vol_info, vol_list};

use std::path::PathBuf;

use clap::Subcommand;
use vireo_api::proto::{Request, Response};
use vireo_api::storage::{PoolDef, PoolSummary, StorageRequest, VolumeDef, VolumeFormat};

use crate::connect::Connection;

use calls::{call, explain, format_arg, pool_name, read_input, unexpected, volume};
use progress::{Meter, WriteBehind};

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
