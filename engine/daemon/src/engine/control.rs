//! Requests a running domain's VMM answers on its control socket:
//! monitor commands, statistics, keys, screenshots.

use serde_json::{Value, json};
use uuid::Uuid;
use vireo_api::Domain;
use vireo_api::proto::{ApiError, DiskStats, DomainStats, ErrorCode, Response, VcpuStats};

use super::{ApiResult, Engine, internal, now_ms};
use crate::vmm;

impl Engine {
    pub(super) async fn command(&self, key: &str, execute: &str) -> Result<Value, ApiError> {
        let (_, run) = self.running(key)?;
        vmm::control(&run.files.control(), execute, Value::Null)
            .await
            .map_err(internal)
    }

    pub(super) async fn stats(&self, key: &str) -> Result<DomainStats, ApiError> {
        let (name, run) = self.running(key)?;
        let (uuid, state) = {
            let inner = self.lock();
            let d = inner.find(key)?;
            (d.uuid, d.state)
        };
        let v = vmm::control(&run.files.control(), "stats", Value::Null)
            .await
            .map_err(internal)?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let vcpus = v["vcpus"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| VcpuStats {
                        id: n(&c["id"]) as u32,
                        cpu_time_ns: n(&c["cpu_time_ns"]),
                        exits: n(&c["exits"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // vireo-vmm names disks by their index among the `--disk`
        // arguments, which vireod passes in definition order (attached
        // disks only).
        let live = Domain::from_xml(&run.record.live_xml).ok();
        let targets: Vec<String> = live
            .iter()
            .flat_map(|d| d.devices.disks.iter())
            .filter(|d| d.unsupported().is_none())
            .map(|d| d.target.dev.clone())
            .collect();
        let disks = v["disks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let index = n(&s["index"]) as usize;
                        DiskStats {
                            target: targets
                                .get(index)
                                .cloned()
                                .unwrap_or_else(|| format!("disk{index}")),
                            rd_req: n(&s["rd_req"]),
                            rd_bytes: n(&s["rd_bytes"]),
                            wr_req: n(&s["wr_req"]),
                            wr_bytes: n(&s["wr_bytes"]),
                            flush_req: n(&s["flush_req"]),
                            errs: n(&s["errs"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(DomainStats {
            name,
            uuid,
            state,
            vcpus,
            disks,
            guest_memory_bytes: n(&v["memory"]["guest_bytes"]),
            vram_bytes: n(&v["memory"]["vram_bytes"]),
            rss_bytes: v["memory"]["rss_bytes"].as_u64(),
            timestamp_ms: now_ms(),
        })
    }

    pub(super) async fn send_key(&self, key: &str, keys: &[u16]) -> ApiResult {
        if keys.is_empty() || keys.len() > 16 {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("send-key takes 1 to 16 keys, not {}", keys.len()),
            ));
        }
        let (_, run) = self.running(key)?;
        let socket = run.files.control();
        let presses = keys.iter().map(|k| (k, true));
        let releases = keys.iter().rev().map(|k| (k, false));
        for (code, down) in presses.chain(releases) {
            vmm::control(
                &socket,
                "key-event",
                json!({ "scancode": code, "down": down }),
            )
            .await
            .map_err(internal)?;
        }
        Ok(Response::Done)
    }

    pub(super) async fn screenshot(&self, key: &str) -> ApiResult {
        let (_, run) = self.running(key)?;
        let path = run
            .files
            .dir
            .join(format!("screendump-{}.png", Uuid::new_v4()));
        let answer = vmm::control(
            &run.files.control(),
            "screendump",
            json!({ "path": path.to_string_lossy() }),
        )
        .await
        .map_err(internal);
        let png = answer.and_then(|_| {
            std::fs::read(&path).map_err(|e| internal(format!("cannot read the screendump: {e}")))
        });
        let _ = std::fs::remove_file(&path);
        let png = png?;
        let (width, height) = png_size(&png).unwrap_or((0, 0));
        Ok(Response::Screenshot { width, height, png })
    }
}

/// Width and height from a PNG's IHDR.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}
