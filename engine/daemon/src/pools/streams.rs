//! A connection's volume streams: `vol-upload` and `vol-download` bytes
//! with flow control ([`Streams`]), and [`spawn_call`], which runs one
//! storage call of a connection on its own task.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use vireo_api::proto::{Response, ServerMessage};
use vireo_api::storage::{STREAM_CHUNK, STREAM_WINDOW, StorageRequest};
use vireo_storage::volume::{self, UploadOptions};

use super::{ApiResult, Pools, ProgressFn, Throttle, blocking, internal, storage_error, summary};

/// Acknowledged bytes of a download, and whether the connection is gone.
#[derive(Debug, Default)]
struct Credit {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Credit {
    fn set(&self, acked: Option<u64>, closed: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = acked {
            s.0 = s.0.max(a);
        }
        s.1 |= closed;
        self.cv.notify_all();
    }
}

#[derive(Debug)]
enum StreamEnd {
    /// An upload call the engine has not accepted yet: no data may come.
    Pending,
    Upload {
        tx: std::sync::mpsc::Sender<Vec<u8>>,
        /// Bytes received from the client.
        received: u64,
        /// Bytes written to disk, as last told to the client.
        credit: Arc<AtomicU64>,
    },
    Download(Arc<Credit>),
}

/// A connection's streams by call id, and whether the connection ended
/// (then no stream may start: nothing would ever feed or drain it).
#[derive(Debug, Default)]
struct Table {
    ends: HashMap<u64, StreamEnd>,
    closed: bool,
}

impl Table {
    /// Registers stream `id`; false if the connection has ended.
    fn open(&mut self, id: u64, end: StreamEnd) -> bool {
        if self.closed {
            return false;
        }
        self.ends.insert(id, end);
        true
    }
}

type StreamMap = Arc<Mutex<Table>>;

/// Buffers of upload chunks already written to disk, for the next chunks
/// to be read into: a connection allocates no memory per chunk.
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

/// At most this many spare buffers are kept: a window's worth.
const SPARE_MAX: usize = (STREAM_WINDOW / STREAM_CHUNK as u64) as usize + 1;

/// The volume streams of one connection. Dropping it (the connection
/// ended) ends them: an upload then fails and leaves the volume as it was.
#[derive(Debug, Default)]
pub struct Streams {
    map: StreamMap,
    spare: Spare,
}

fn lock_map(map: &StreamMap) -> MutexGuard<'_, Table> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    /// A buffer for the next upload chunk to be read into (see
    /// [`vireo_api::proto::read_message_async_with`]).
    pub fn spare(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// A chunk of upload `id`. An error means the client broke the
    /// protocol (too large a chunk, or beyond the window): drop it.
    pub fn data(&self, id: u64, data: Vec<u8>) -> Result<(), String> {
        if data.len() > STREAM_CHUNK {
            return Err(format!(
                "a stream chunk of {} bytes exceeds the {STREAM_CHUNK}-byte limit",
                data.len()
            ));
        }
        let mut map = lock_map(&self.map);
        // Data for a stream that already ended (say, with an error the
        // client has not read yet) is dropped.
        let (tx, received, credit) = match map.ends.get_mut(&id) {
            Some(StreamEnd::Upload {
                tx,
                received,
                credit,
            }) => (tx, received, credit),
            Some(StreamEnd::Pending) => {
                return Err(format!(
                    "upload {id} sent data before the engine's first progress message"
                ));
            }
            _ => return Ok(()),
        };
        *received += data.len() as u64;
        if *received > credit.load(Ordering::SeqCst) + STREAM_WINDOW {
            return Err(format!(
                "upload {id} sent more than the {STREAM_WINDOW}-byte flow-control window \
                 allows"
            ));
        }
        if tx.send(data).is_err() {
            map.ends.remove(&id);
        }
        Ok(())
    }

    /// The client has consumed `received` bytes of download `id`.
    pub fn ack(&self, id: u64, received: u64) {
        if let Some(StreamEnd::Download(credit)) = lock_map(&self.map).ends.get(&id) {
            credit.set(Some(received), false);
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let mut map = lock_map(&self.map);
        // Calls still starting find the table closed and fail rather than
        // wait for a client that is gone.
        map.closed = true;
        for (_, end) in map.ends.drain() {
            if let StreamEnd::Download(credit) = end {
                credit.set(None, true);
            }
        }
    }
}

/// Reads an upload's chunks as they arrive; ends when the connection does.
struct UploadReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    /// Where consumed chunks go back to.
    spare: Spare,
}

impl Read for UploadReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.buf, chunk);
                    self.pos = 0;
                    let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
                    if used.capacity() > 0 && spare.len() < SPARE_MAX {
                        spare.push(used);
                    }
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends a download's bytes as stream messages, within the window.
struct DownloadWriter {
    id: u64,
    out: mpsc::Sender<ServerMessage>,
    credit: Arc<Credit>,
    sent: u64,
}

impl Write for DownloadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client is gone");
        let n = buf.len().min(STREAM_CHUNK);
        let mut s = self.credit.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && self.sent >= s.0 + STREAM_WINDOW {
            s = self
                .credit
                .cv
                .wait_timeout(s, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if s.1 {
            return Err(gone());
        }
        drop(s);
        let msg = ServerMessage::StreamData {
            id: self.id,
            data: buf[..n].to_vec(),
        };
        self.out.blocking_send(msg).map_err(|_| gone())?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs storage call `id` of a connection on its own task: progress
/// messages and the reply go to `out`; uploads and downloads stream
/// through `streams`.
pub fn spawn_call(
    pools: Arc<Pools>,
    streams: &Streams,
    id: u64,
    request: StorageRequest,
    out: mpsc::Sender<ServerMessage>,
) {
    let map = streams.map.clone();
    let spare = streams.spare.clone();
    if matches!(request, StorageRequest::UploadVolume { .. }) {
        lock_map(&map).open(id, StreamEnd::Pending);
    }
    tokio::spawn(async move {
        let result = match request {
            StorageRequest::UploadVolume {
                pool,
                volume,
                length,
            } => {
                let result = upload(&pools, &map, &spare, id, pool, volume, length, out.clone());
                let result = result.await;
                // The connection keeps no buffers between uploads.
                spare.lock().unwrap_or_else(|e| e.into_inner()).clear();
                result
            }
            StorageRequest::DownloadVolume { pool, volume } => {
                download(&pools, &map, id, pool, volume, out.clone()).await
            }
            request => {
                let progress_out = out.clone();
                let progress: ProgressFn = Arc::new(move |done, total| {
                    let _ = progress_out.try_send(ServerMessage::Progress { id, done, total });
                });
                pools.handle(request, progress).await
            }
        };
        lock_map(&map).ends.remove(&id);
        let _ = out.send(ServerMessage::Reply { id, result }).await;
    });
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    pools: &Arc<Pools>,
    map: &StreamMap,
    spare: &Spare,
    id: u64,
    pool: Option<String>,
    volume: String,
    length: u64,
    out: mpsc::Sender<ServerMessage>,
) -> ApiResult {
    pools.ensure_default();
    let vol = pools.resolve(pool.as_deref(), &volume, true)?;
    let busy = pools.claim(std::slice::from_ref(&vol.path))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let credit = Arc::new(AtomicU64::new(0));
    let upload = StreamEnd::Upload {
        tx,
        received: 0,
        credit: credit.clone(),
    };
    if !lock_map(map).open(id, upload) {
        return Err(internal("the connection ended before the upload started"));
    }
    // The first progress message tells the client to start sending.
    let _ = out
        .send(ServerMessage::Progress {
            id,
            done: 0,
            total: length,
        })
        .await;
    let path = vol.path.clone();
    let spare = spare.clone();
    let result = blocking(move || {
        let mut reader = UploadReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            spare,
        };
        volume::upload(
            &path,
            &mut reader,
            length,
            UploadOptions::default(),
            &mut |done, total| {
                // The client may now send up to `done` + the window.
                credit.store(done, Ordering::SeqCst);
                let _ = out.blocking_send(ServerMessage::Progress { id, done, total });
            },
        )
        .map_err(storage_error)
    })
    .await;
    lock_map(map).ends.remove(&id);
    drop(busy);
    let volume = summary(&vol.name, result?);
    pools.update(&vol, Some(volume.clone()));
    Ok(Response::Volume { volume })
}

async fn download(
    pools: &Arc<Pools>,
    map: &StreamMap,
    id: u64,
    pool: Option<String>,
    volume: String,
    out: mpsc::Sender<ServerMessage>,
) -> ApiResult {
    pools.ensure_default();
    let vol = pools.resolve(pool.as_deref(), &volume, true)?;
    let busy = pools.claim(std::slice::from_ref(&vol.path))?;
    let credit = Arc::new(Credit::default());
    if !lock_map(map).open(id, StreamEnd::Download(credit.clone())) {
        return Err(internal("the connection ended before the download started"));
    }
    let path = vol.path.clone();
    let result = blocking(move || {
        let total = std::fs::metadata(&path)
            .map_err(|e| internal(format!("cannot read '{}': {e}", path.display())))?
            .len();
        let _ = out.blocking_send(ServerMessage::Progress { id, done: 0, total });
        let mut writer = DownloadWriter {
            id,
            out: out.clone(),
            credit,
            sent: 0,
        };
        let mut throttle = Throttle::default();
        volume::download(&path, &mut writer, &mut |done, total| {
            if throttle.due(done, total) {
                let _ = out.try_send(ServerMessage::Progress { id, done, total });
            }
        })
        .map_err(storage_error)
    })
    .await;
    lock_map(map).ends.remove(&id);
    drop(busy);
    Ok(Response::Transferred { bytes: result? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_reader_yields_chunks_then_ends_with_the_connection() {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(vec![1, 2, 3]).unwrap();
        tx.send(vec![4, 5, 6, 7]).unwrap();
        drop(tx);
        let streams = Streams::default();
        let mut r = UploadReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            spare: streams.spare.clone(),
        };
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
        // The consumed first chunk went back for the next one to reuse.
        assert_eq!(streams.spare(), [1, 2, 3]);
        assert!(streams.spare().is_empty());
    }

    #[test]
    fn no_stream_starts_once_the_connection_ended() {
        let streams = Streams::default();
        let map = streams.map.clone();
        assert!(lock_map(&map).open(1, StreamEnd::Pending));
        // The connection ends while an upload call is still starting.
        drop(streams);
        assert!(lock_map(&map).ends.is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        let upload = StreamEnd::Upload {
            tx,
            received: 0,
            credit: Arc::default(),
        };
        assert!(!lock_map(&map).open(2, upload));
        // Nothing holds the refused upload's sender: its reader would end
        // at once instead of waiting forever.
        assert!(rx.recv().is_err());
        assert!(!lock_map(&map).open(3, StreamEnd::Download(Arc::default())));
    }

    #[test]
    fn streams_refuse_data_beyond_the_window_or_too_large_chunks() {
        let streams = Streams::default();
        let (tx, _rx) = std::sync::mpsc::channel();
        let credit = Arc::new(AtomicU64::new(0));
        lock_map(&streams.map).ends.insert(
            1,
            StreamEnd::Upload {
                tx,
                received: 0,
                credit: credit.clone(),
            },
        );
        let chunk = vec![0u8; STREAM_CHUNK];
        let fits = (STREAM_WINDOW / STREAM_CHUNK as u64) as usize;
        for _ in 0..fits {
            streams.data(1, chunk.clone()).unwrap();
        }
        // Written to disk: the client may send one more chunk, not two.
        credit.store(STREAM_CHUNK as u64, Ordering::SeqCst);
        streams.data(1, chunk.clone()).unwrap();
        let err = streams.data(1, vec![0]).unwrap_err();
        assert!(err.contains("flow-control window"), "{err}");
        let err = streams.data(1, vec![0; STREAM_CHUNK + 1]).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        // Unknown streams swallow data.
        streams.data(99, vec![1]).unwrap();
    }

    #[test]
    fn download_writer_waits_for_acks_and_stops_when_the_connection_ends() {
        let (out, mut rx) = mpsc::channel(64);
        let credit = Arc::new(Credit::default());
        let mut w = DownloadWriter {
            id: 3,
            out,
            credit: credit.clone(),
            sent: 0,
        };
        let writer = std::thread::spawn(move || {
            let chunk = vec![0u8; STREAM_CHUNK];
            let mut wrote = 0;
            while w.write_all(&chunk).is_ok() {
                wrote += 1;
            }
            wrote
        });
        let mut got = 0u64;
        for _ in 0..(STREAM_WINDOW / STREAM_CHUNK as u64) {
            match rx.blocking_recv().unwrap() {
                ServerMessage::StreamData { id: 3, data } => got += data.len() as u64,
                other => panic!("{other:?}"),
            }
        }
        // The window is full: nothing more until an ack.
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err());
        credit.set(Some(got), false);
        assert!(matches!(
            rx.blocking_recv().unwrap(),
            ServerMessage::StreamData { .. }
        ));
        credit.set(None, true);
        let wrote = writer.join().unwrap();
        assert!(wrote > STREAM_WINDOW as usize / STREAM_CHUNK, "{wrote}");
    }

    #[test]
    fn throttle_passes_every_mib_and_the_end() {
        let mut t = Throttle::default();
        let passed: Vec<u64> = (0..=10u64)
            .map(|i| i * (512 << 10))
            .filter(|&d| t.due(d, 5 << 20))
            .collect();
        assert_eq!(passed, [0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20]);
    }
}
