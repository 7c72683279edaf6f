//! Calls to the engine for the storage verbs, with virsh's "failed to get
//! pool/vol" errors and a percentage line for long operations, and the
//! small argument and lookup helpers the verbs share.

use vireo_api::client::ClientError;
use vireo_api::proto::{ErrorCode, Request, Response};
use vireo_api::storage::{StorageRequest, VolumeFormat, VolumeSummary};

use crate::connect::Connection;

use super::progress::Meter;

/// Calls the engine, saying which pool or volume could not be found the
/// way virsh does.
pub(super) fn call(conn: &mut Connection, request: StorageRequest) -> Result<Response, String> {
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

pub(super) fn explain(
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

pub(super) fn unexpected() -> String {
    "unexpected answer from the engine".into()
}

pub(super) fn read_input(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))
    }
}

pub(super) fn format_arg(s: Option<&str>) -> Result<Option<VolumeFormat>, String> {
    s.map(VolumeFormat::parse).transpose()
}

pub(super) fn volume(
    conn: &mut Connection,
    pool: Option<String>,
    vol: &str,
) -> Result<VolumeSummary, String> {
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

pub(super) fn pool_name(conn: &mut Connection, pool: &str) -> Result<String, String> {
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
