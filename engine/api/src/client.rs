//! Clients of the engine protocol over any byte stream.
//!
//! [`Client`] is blocking (for `vireoctl` and tests) over any `Read` and
//! `Write` halves; [`AsyncClient`] runs on tokio over any `AsyncRead +
//! AsyncWrite` stream (a unix socket, an SSH channel), with concurrent calls
//! and a channel of [`Incoming`] events.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::proto::{
    self, ApiError, ClientMessage, Event, FrameError, Hello, PROTOCOL_VERSION, Request, Response,
    ServerMessage,
};
use crate::storage::{STREAM_CHUNK, STREAM_WINDOW};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine's socket could not be reached.
    #[error("cannot connect to the engine at '{}': {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused the handshake.
    #[error("the engine refused the connection: {0}")]
    Rejected(String),
    /// The engine answered the request with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The connection failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The engine sent something out of order.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn hello(client: &str, events: bool) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        client: client.to_owned(),
        events,
    })
}

fn welcome(msg: ServerMessage) -> Result<String, ClientError> {
    match msg {
        ServerMessage::Welcome { protocol, engine } if protocol == PROTOCOL_VERSION => Ok(engine),
        ServerMessage::Welcome { protocol, .. } => Err(ClientError::Rejected(
            proto::version_mismatch(protocol, PROTOCOL_VERSION),
        )),
        ServerMessage::Rejected { reason } => Err(ClientError::Rejected(reason)),
        other => Err(ClientError::Protocol(format!(
            "expected a welcome, got {other:?}"
        ))),
    }
}

/// A blocking client.
#[derive(Debug)]
pub struct Client<R: Read, W: Write> {
    reader: R,
    writer: W,
    next_id: u64,
    engine: String,
    pending: VecDeque<ServerMessage>,
}

impl Client<UnixStream, UnixStream> {
    /// Connects to an engine's unix socket and shakes hands.
    pub fn connect_unix(path: &Path, client: &str, events: bool) -> Result<Self, ClientError> {
        let err = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(err)?;
        let reader = stream.try_clone().map_err(err)?;
        Self::handshake(reader, stream, client, events)
    }
}

impl<R: Read, W: Write> Client<R, W> {
    /// Shakes hands over `reader`/`writer` (two halves of one stream).
    pub fn handshake(
        mut reader: R,
        mut writer: W,
        client: &str,
        events: bool,
    ) -> Result<Self, ClientError> {
        proto::write_message(&mut writer, &hello(client, events))?;
        let engine = welcome(proto::read_message(&mut reader)?)?;
        Ok(Self {
            reader,
            writer,
            next_id: 1,
            engine,
            pending: VecDeque::new(),
        })
    }

    /// The engine's version, from the handshake.
    pub fn engine_version(&self) -> &str {
        &self.engine
    }

    /// Sends a request and waits for its answer; events and console bytes
    /// that arrive meanwhile are kept for [`Client::next_message`].
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        self.call_with_progress(request, &mut |_, _| {})
    }

    /// Like [`Client::call`], and reports the call's progress messages
    /// (bytes done, total) to `progress`.
    pub fn call_with_progress(
        &mut self,
        request: Request,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Response, ClientError> {
        let id = self.send_call(request)?;
        loop {
            if let Some(result) = self.read_for(id, progress)? {
                return result;
            }
        }
    }

    fn send_call(&mut self, request: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        proto::write_message(&mut self.writer, &ClientMessage::Call { id, request })?;
        Ok(id)
    }

    /// Reads one message while call `id` runs: its reply ends it, its
    /// progress goes to `progress`, anything else is kept.
    fn read_for(
        &mut self,
        id: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Option<Result<Response, ClientError>>, ClientError> {
        match proto::read_message(&mut self.reader)? {
            ServerMessage::Reply { id: got, result } if got == id => {
                Ok(Some(result.map_err(ClientError::Api)))
            }
            ServerMessage::Reply { id: got, .. } => Err(ClientError::Protocol(format!(
                "reply to call {got} while waiting for {id}"
            ))),
            ServerMessage::Progress {
                id: got,
                done,
                total,
            } if got == id => {
                progress(done, total);
                Ok(None)
            }
            ServerMessage::StreamData { id: got, .. } if got == id => Err(ClientError::Protocol(
                format!("stream data for call {id}, which is not a download"),
            )),
            other => {
                self.pending.push_back(other);
                Ok(None)
            }
        }
    }

    /// Runs an upload call ([`crate::storage::StorageRequest::UploadVolume`]
    /// with `length`): streams `length` bytes from `source` in chunks,
    /// within the engine's flow-control window, reporting the bytes the
    /// engine has stored to `progress`.
    pub fn upload(
        &mut self,
        request: Request,
        source: &mut dyn Read,
        length: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Response, ClientError> {
        let id = self.send_call(request)?;
        // The engine's first progress message says it is ready.
        let mut credit: Option<u64> = None;
        let mut report = |done: u64, total: u64, credit: &mut Option<u64>| {
            *credit = Some(credit.unwrap_or(0).max(done));
            progress(done, total);
        };
        while credit.is_none() {
            if let Some(result) = self.read_for(id, &mut |d, t| report(d, t, &mut credit))? {
                return result;
            }
        }
        let mut sent = 0u64;
        let mut buf = vec![0u8; STREAM_CHUNK];
        loop {
            let acked = credit.unwrap_or(0);
            if sent < length && sent < acked + STREAM_WINDOW {
                let want = (length - sent).min(STREAM_CHUNK as u64) as usize;
                let n = source.read(&mut buf[..want]).map_err(|e| {
                    ClientError::Protocol(format!("cannot read the data to upload: {e}"))
                })?;
                if n == 0 {
                    return Err(ClientError::Protocol(format!(
                        "the data to upload ended after {sent} of {length} bytes"
                    )));
                }
                proto::write_stream_chunk(&mut self.writer, id, &buf[..n])?;
                sent += n as u64;
                continue;
            }
            if let Some(result) = self.read_for(id, &mut |d, t| report(d, t, &mut credit))? {
                return result;
            }
        }
    }

    /// Runs a download call ([`crate::storage::StorageRequest::DownloadVolume`]):
    /// writes the streamed bytes to `sink`, acknowledging each chunk once it
    /// is written, and reports (bytes received, total) to `progress`.
    pub fn download(
        &mut self,
        request: Request,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Response, ClientError> {
        let id = self.send_call(request)?;
        let mut received = 0u64;
        let mut total = 0u64;
        // Chunks are read into one buffer and written from it as they are.
        let mut frame = Vec::new();
        loop {
            let payload = proto::read_frame(&mut self.reader, &mut frame)?;
            if let Some((got, data)) = proto::stream_chunk(payload)?
                && got == id
            {
                sink.write_all(data).map_err(|e| {
                    ClientError::Protocol(format!("cannot write the download: {e}"))
                })?;
                received += data.len() as u64;
                proto::write_message(&mut self.writer, &ClientMessage::StreamAck { id, received })?;
                progress(received, total.max(received));
                continue;
            }
            match proto::decode(payload)? {
                ServerMessage::Reply { id: got, result } if got == id => {
                    sink.flush().map_err(|e| {
                        ClientError::Protocol(format!("cannot write the download: {e}"))
                    })?;
                    return result.map_err(ClientError::Api);
                }
                ServerMessage::Reply { id: got, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "reply to call {got} while waiting for {id}"
                    )));
                }
                ServerMessage::Progress {
                    id: got, total: t, ..
                } if got == id => {
                    total = t;
                    progress(received, total);
                }
                other => self.pending.push_back(other),
            }
        }
    }

    /// The next event or console message.
    pub fn next_message(&mut self) -> Result<ServerMessage, ClientError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        Ok(proto::read_message(&mut self.reader)?)
    }

    /// The next pushed [`Event`], skipping console traffic.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let ServerMessage::Event(e) = self.next_message()? {
                return Ok(e);
            }
        }
    }

    /// Sends console input (after [`Request::OpenConsole`]).
    pub fn console_input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        proto::write_message(
            &mut self.writer,
            &ClientMessage::ConsoleInput {
                data: data.to_vec(),
            },
        )?;
        Ok(())
    }

    /// The two halves and any messages already read, for callers that read
    /// and write from separate threads (the serial console).
    pub fn into_parts(self) -> (R, W, VecDeque<ServerMessage>) {
        (self.reader, self.writer, self.pending)
    }
}

/// What an [`AsyncClient`] receives besides replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An engine event.
    Event(Event),
    /// Serial console output.
    ConsoleOutput(Vec<u8>),
    /// The serial console ended.
    ConsoleClosed,
    /// An exclusive session (named by its client) holds the serial console
    /// this watcher opened with `notify`: its input is dropped.
    ConsoleHeld(String),
    /// The exclusive session ended: the watcher's input reaches the guest.
    ConsoleReleased,
    /// The connection ended; no more messages follow.
    Disconnected(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, ApiError>>>>>;
type ProgressSinks = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<(u64, u64)>>>>;
type StreamSinks = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<StreamEvent>>>>;

/// What the reading task hands a running upload or download.
#[derive(Debug)]
enum StreamEvent {
    Progress(u64, u64),
    Data(Vec<u8>),
}

/// Removes a call's stream sink when the call ends, however it ends.
struct StreamGuard {
    streams: StreamSinks,
    id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn stream_io(what: &str, e: std::io::Error) -> ClientError {
    ClientError::Protocol(format!("cannot {what}: {e}"))
}
type Writer = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// An async client: cheap to clone, calls may run concurrently. Needs a
/// tokio runtime (it spawns the task that reads the connection).
#[derive(Clone)]
pub struct AsyncClient {
    writer: Writer,
    pending: Pending,
    progress: ProgressSinks,
    streams: StreamSinks,
    next_id: Arc<AtomicU64>,
    engine: String,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl AsyncClient {
    /// Connects to an engine's unix socket and shakes hands.
    pub async fn connect_unix(
        path: &Path,
        client: &str,
        events: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Incoming>), ClientError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Self::handshake(stream, client, events).await
    }

    /// Shakes hands over `stream`; returns the client and the receiver of
    /// events and console bytes.
    pub async fn handshake<S>(
        stream: S,
        client: &str,
        events: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Incoming>), ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        proto::write_message_async(&mut writer, &hello(client, events)).await?;
        let engine = welcome(proto::read_message_async(&mut reader).await?)?;
        let pending: Pending = Arc::default();
        let progress: ProgressSinks = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending2 = pending.clone();
        let progress2 = progress.clone();
        let streams: StreamSinks = Arc::default();
        let streams2 = streams.clone();
        tokio::spawn(async move {
            let why = loop {
                let msg: ServerMessage = match proto::read_message_async(&mut reader).await {
                    Ok(m) => m,
                    Err(e) => break e.to_string(),
                };
                let incoming = match msg {
                    ServerMessage::Reply { id, result } => {
                        let waiter = pending2
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                        progress2
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        continue;
                    }
                    ServerMessage::Progress { id, done, total } => {
                        if let Some(sink) =
                            streams2.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
                        {
                            let _ = sink.send(StreamEvent::Progress(done, total));
                            continue;
                        }
                        if let Some(sink) =
                            progress2.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
                        {
                            let _ = sink.send((done, total));
                        }
                        continue;
                    }
                    // Flow control bounds what a download has in flight.
                    ServerMessage::StreamData { id, data } => {
                        if let Some(sink) =
                            streams2.lock().unwrap_or_else(|e| e.into_inner()).get(&id)
                        {
                            let _ = sink.send(StreamEvent::Data(data));
                        }
                        continue;
                    }
                    ServerMessage::Event(e) => Incoming::Event(e),
                    ServerMessage::ConsoleOutput { data } => Incoming::ConsoleOutput(data),
                    ServerMessage::ConsoleClosed => Incoming::ConsoleClosed,
                    ServerMessage::ConsoleHeld { by } => Incoming::ConsoleHeld(by),
                    ServerMessage::ConsoleReleased => Incoming::ConsoleReleased,
                    other => break format!("unexpected message {other:?}"),
                };
                let _ = tx.send(incoming);
            };
            // Dropping the waiters fails every pending call.
            pending2.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let _ = tx.send(Incoming::Disconnected(why));
        });
        Ok((
            Self {
                writer: Arc::new(tokio::sync::Mutex::new(Box::new(writer))),
                pending,
                progress,
                streams,
                next_id: Arc::new(AtomicU64::new(1)),
                engine,
            },
            rx,
        ))
    }

    /// The engine's version, from the handshake.
    pub fn engine_version(&self) -> &str {
        &self.engine
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.call_id(id, request).await
    }

    /// Like [`AsyncClient::call`], and sends the call's progress (bytes
    /// done, total; e.g. of a volume clone) to `progress` while it runs.
    pub async fn call_with_progress(
        &self,
        request: Request,
        progress: mpsc::UnboundedSender<(u64, u64)>,
    ) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, progress);
        let result = self.call_id(id, request).await;
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        result
    }

    async fn call_id(&self, id: u64, request: Request) -> Result<Response, ClientError> {
        let rx = self.start_call(id, request).await?;
        match rx.await {
            Ok(result) => result.map_err(ClientError::Api),
            Err(_) => Err(FrameError::Closed.into()),
        }
    }

    async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        proto::write_message_async(&mut *w, msg).await?;
        Ok(())
    }

    fn open_stream(&self) -> (u64, StreamGuard, mpsc::UnboundedReceiver<StreamEvent>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let guard = StreamGuard {
            streams: self.streams.clone(),
            id,
        };
        (id, guard, rx)
    }

    /// Runs an upload call ([`crate::storage::StorageRequest::UploadVolume`]
    /// with `length`): streams `length` bytes from `source` within the
    /// engine's flow-control window, and sends (bytes stored, total) to
    /// `progress`.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        request: Request,
        mut source: R,
        length: u64,
        progress: Option<mpsc::UnboundedSender<(u64, u64)>>,
    ) -> Result<Response, ClientError> {
        use tokio::io::AsyncReadExt;
        let (id, _guard, mut events) = self.open_stream();
        let mut reply = self.start_call(id, request).await?;
        let mut credit: Option<u64> = None;
        let mut sent = 0u64;
        let mut buf = vec![0u8; STREAM_CHUNK];
        let note = |done: u64, total: u64, credit: &mut Option<u64>| {
            *credit = Some(credit.unwrap_or(0).max(done));
            if let Some(p) = &progress {
                let _ = p.send((done, total));
            }
        };
        loop {
            while let Ok(event) = events.try_recv() {
                if let StreamEvent::Progress(done, total) = event {
                    note(done, total, &mut credit);
                }
            }
            if let Some(acked) = credit
                && sent < length
                && sent < acked + STREAM_WINDOW
            {
                match reply.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {}
                    Ok(result) => return result.map_err(ClientError::Api),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        return Err(FrameError::Closed.into());
                    }
                }
                let want = (length - sent).min(STREAM_CHUNK as u64) as usize;
                let n = source
                    .read(&mut buf[..want])
                    .await
                    .map_err(|e| stream_io("read the data to upload", e))?;
                if n == 0 {
                    return Err(ClientError::Protocol(format!(
                        "the data to upload ended after {sent} of {length} bytes"
                    )));
                }
                let data = buf[..n].to_vec();
                self.send(&ClientMessage::StreamData { id, data }).await?;
                sent += n as u64;
                continue;
            }
            tokio::select! {
                r = &mut reply => {
                    return match r {
                        Ok(result) => result.map_err(ClientError::Api),
                        Err(_) => Err(FrameError::Closed.into()),
                    };
                }
                event = events.recv() => match event {
                    Some(StreamEvent::Progress(done, total)) => note(done, total, &mut credit),
                    Some(StreamEvent::Data(_)) => {
                        return Err(ClientError::Protocol(format!(
                            "stream data for call {id}, which is an upload"
                        )));
                    }
                    None => return Err(FrameError::Closed.into()),
                },
            }
        }
    }

    /// Runs a download call ([`crate::storage::StorageRequest::DownloadVolume`]):
    /// writes the streamed bytes to `sink`, acknowledging each chunk once
    /// written, and sends (bytes received, total) to `progress`.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        request: Request,
        mut sink: W,
        progress: Option<mpsc::UnboundedSender<(u64, u64)>>,
    ) -> Result<Response, ClientError> {
        use tokio::io::AsyncWriteExt;
        let (id, _guard, mut events) = self.open_stream();
        let mut reply = self.start_call(id, request).await?;
        let mut received = 0u64;
        let mut total = 0u64;
        loop {
            let (event, result) = tokio::select! {
                biased;
                event = events.recv() => (event, None),
                r = &mut reply => (None, Some(r)),
            };
            if let Some(r) = result {
                // Every chunk was queued before the reply: write them all.
                while let Ok(event) = events.try_recv() {
                    if let StreamEvent::Data(data) = event {
                        sink.write_all(&data)
                            .await
                            .map_err(|e| stream_io("write the download", e))?;
                        received += data.len() as u64;
                    }
                }
                sink.flush()
                    .await
                    .map_err(|e| stream_io("write the download", e))?;
                if let Some(p) = &progress {
                    let _ = p.send((received, total.max(received)));
                }
                return match r {
                    Ok(result) => result.map_err(ClientError::Api),
                    Err(_) => Err(FrameError::Closed.into()),
                };
            }
            match event {
                Some(StreamEvent::Data(data)) => {
                    sink.write_all(&data)
                        .await
                        .map_err(|e| stream_io("write the download", e))?;
                    received += data.len() as u64;
                    self.send(&ClientMessage::StreamAck { id, received })
                        .await?;
                    if let Some(p) = &progress {
                        let _ = p.send((received, total.max(received)));
                    }
                }
                Some(StreamEvent::Progress(_, t)) => total = t,
                None => return Err(FrameError::Closed.into()),
            }
        }
    }

    /// Registers call `id` and sends it; the receiver gets its reply.
    async fn start_call(
        &self,
        id: u64,
        request: Request,
    ) -> Result<oneshot::Receiver<Result<Response, ApiError>>, ClientError> {
        let (tx, rx) = oneshot::channel();

        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let sent = {
            let mut w = self.writer.lock().await;
            proto::write_message_async(&mut *w, &ClientMessage::Call { id, request }).await
        };
        if let Err(e) = sent {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(e.into());
        }
        Ok(rx)
    }

    /// Sends console input (after [`Request::OpenConsole`]).
    pub async fn console_input(&self, data: &[u8]) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        proto::write_message_async(
            &mut *w,
            &ClientMessage::ConsoleInput {
                data: data.to_vec(),
            },
        )
        .await?;
        Ok(())
    }
}

/// Turns a fresh connection into a domain's VNC stream: shakes hands, asks
/// for [`Request::AttachVnc`], and on success returns the stream, which from
/// then on carries RFB in both directions (the engine relays it to the
/// domain's VNC server). Over SSH, `stream` is a fresh channel.
pub async fn attach_vnc<S>(mut stream: S, client: &str, domain: &str) -> Result<S, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    proto::write_message_async(&mut stream, &hello(client, false)).await?;
    welcome(proto::read_message_async(&mut stream).await?)?;
    let request = Request::AttachVnc {
        domain: domain.to_owned(),
    };
    proto::write_message_async(&mut stream, &ClientMessage::Call { id: 1, request }).await?;
    match proto::read_message_async(&mut stream).await? {
        ServerMessage::Reply { id: 1, result } => {
            result?;
            Ok(stream)
        }
        other => Err(ClientError::Protocol(format!(
            "expected the reply to AttachVnc, got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ErrorCode, read_message_async, write_message_async};

    /// A minimal engine on one end of a duplex pipe: answers Version and
    /// fails anything else, and pushes one event after the handshake.
    async fn toy_engine(stream: tokio::io::DuplexStream, protocol: u32) {
        let (mut r, mut w) = tokio::io::split(stream);
        let ClientMessage::Hello(h) = read_message_async(&mut r).await.unwrap() else {
            panic!("no hello");
        };
        if h.protocol != protocol {
            let reason = proto::version_mismatch(protocol, h.protocol);
            write_message_async(&mut w, &ServerMessage::Rejected { reason })
                .await
                .unwrap();
            return;
        }
        let welcome = ServerMessage::Welcome {
            protocol,
            engine: "9.9".into(),
        };
        write_message_async(&mut w, &welcome).await.unwrap();
        let event = ServerMessage::Event(Event::Stats { domains: vec![] });
        write_message_async(&mut w, &event).await.unwrap();
        while let Ok(ClientMessage::Call { id, request }) = read_message_async(&mut r).await {
            let result = match request {
                Request::Version => Ok(Response::Version {
                    engine: "9.9".into(),
                }),
                _ => Err(ApiError::new(ErrorCode::Unsupported, "not here")),
            };
            write_message_async(&mut w, &ServerMessage::Reply { id, result })
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn async_client_calls_and_receives_events() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(toy_engine(b, PROTOCOL_VERSION));
        let (client, mut incoming) = AsyncClient::handshake(a, "test", true).await.unwrap();
        assert_eq!(client.engine_version(), "9.9");
        let (v, e) = tokio::join!(
            client.call(Request::Version),
            client.call(Request::ListDomains { all: true })
        );
        assert_eq!(
            v.unwrap(),
            Response::Version {
                engine: "9.9".into()
            }
        );
        assert_eq!(e.unwrap_err().to_string(), "not here");
        assert_eq!(
            incoming.recv().await.unwrap(),
            Incoming::Event(Event::Stats { domains: vec![] })
        );
    }

    #[tokio::test]
    async fn incompatible_engine_is_refused_with_a_clear_message() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(toy_engine(b, PROTOCOL_VERSION + 1));
        let err = AsyncClient::handshake(a, "test", false).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the engine refused the connection: protocol version mismatch: the engine speaks \
             Vireo protocol 2, the client speaks 1; install matching versions of the engine \
             and its clients"
        );
    }

    #[test]
    fn blocking_client_over_a_socket_pair() {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = std::thread::spawn(move || {
            theirs.set_nonblocking(true).unwrap();
            rt.block_on(async {
                let s = tokio::net::UnixStream::from_std(theirs).unwrap();
                let (a, b) = tokio::io::duplex(1 << 16);
                tokio::spawn(toy_engine(b, PROTOCOL_VERSION));
                let (mut a, mut s) = (a, s);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut s).await;
            });
        });
        let reader = mine.try_clone().unwrap();
        let mut c = Client::handshake(reader, mine, "test", true).unwrap();
        assert_eq!(
            c.call(Request::Version).unwrap(),
            Response::Version {
                engine: "9.9".into()
            }
        );
        // The event that arrived before the reply was kept.
        assert_eq!(c.next_event().unwrap(), Event::Stats { domains: vec![] });
        drop(c);
        engine.join().unwrap();
    }
}
