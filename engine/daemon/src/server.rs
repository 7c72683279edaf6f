//! Serving the API: one task per connection, one task per call.
//!
//! A connection must open with a hello of our protocol version within
//! [`HELLO_TIMEOUT`]; anything else is refused with a sentence and closed.
//! A frame that cannot be decoded ends that connection only.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use vireo_api::proto::{
    self, ApiError, ClientMessage, ErrorCode, PROTOCOL_VERSION, Request, Response, ServerMessage,
};

use crate::engine::Engine;
use crate::serial::Next;

/// How long a new connection may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections forever.
pub async fn serve(listener: UnixListener, engine: Arc<Engine>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, engine).await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, engine: Arc<Engine>) -> Result<(), String> {
    let (mut reader, mut writer) = stream.into_split();
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        proto::read_message_async::<_, ClientMessage>(&mut reader),
    )
    .await
    .map_err(|_| "no hello in time".to_owned())?;
    let hello = match hello {
        Ok(ClientMessage::Hello(h)) if h.protocol == PROTOCOL_VERSION => h,
        Ok(ClientMessage::Hello(h)) => {
            let reason = proto::version_mismatch(PROTOCOL_VERSION, h.protocol);
            let _ =
                proto::write_message_async(&mut writer, &ServerMessage::Rejected { reason }).await;
            return Err(format!("refused '{}': protocol {}", h.client, h.protocol));
        }
        Ok(_) => {
            let reason = "the first message must be a hello".to_owned();
            let _ =
                proto::write_message_async(&mut writer, &ServerMessage::Rejected { reason }).await;
            return Err("no hello".into());
        }
        Err(e) => {
            let reason = format!("not a Vireo client: {e}");
            let _ =
                proto::write_message_async(&mut writer, &ServerMessage::Rejected { reason }).await;
            return Err(e.to_string());
        }
    };
    proto::write_message_async(
        &mut writer,
        &ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            engine: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    // Everything this connection sends goes through one writer task, which
    // hands the socket back for an upgrade to a raw stream (AttachVnc).
    let (out_tx, mut out_rx) = mpsc::channel::<ServerMessage>(256);
    let (upgrade_tx, mut upgrade_rx) = mpsc::channel::<oneshot::Sender<OwnedWriteHalf>>(1);
    let writer_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                msg = out_rx.recv() => match msg {
                    Some(msg) => {
                        if proto::write_message_async(&mut writer, &msg).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                Some(back) = upgrade_rx.recv() => {
                    let _ = back.send(writer);
                    return;
                }
            }
        }
    });
    let events_task = hello.events.then(|| {
        let mut events = engine.subscribe();
        let out = out_tx.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if out.send(ServerMessage::Event(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("a slow client missed {n} events");
                    }
                    Err(_) => return,
                }
            }
        })
    });

    let streams = crate::pools::Streams::default();
    // This connection's console session: its input handle, and the task
    // forwarding its output (which owns the session).
    let mut console: Option<crate::serial::ConsoleInput> = None;
    let mut console_task: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        // Upload chunks land in buffers the disk writer has finished with.
        let msg =
            proto::read_message_async_with::<_, ClientMessage, _>(&mut reader, || streams.spare());
        let msg = match msg.await {
            Ok(m) => m,
            Err(proto::FrameError::Closed) => break Ok(()),
            Err(e) => break Err(format!("dropping client '{}': {e}", hello.client)),
        };
        match msg {
            ClientMessage::Hello(_) => break Err("a second hello".into()),
            ClientMessage::ConsoleInput { data } => {
                if let Some(input) = console.as_ref()
                    && let Err(e) = input.send(&data).await
                {
                    tracing::debug!("console input not delivered: {e}");
                }
            }
            ClientMessage::StreamData { id, data } => {
                if let Err(e) = streams.data(id, data) {
                    break Err(format!("dropping client '{}': {e}", hello.client));
                }
            }
            ClientMessage::StreamAck { id, received } => streams.ack(id, received),
            ClientMessage::Call {
                id,
                request: Request::Storage(request),
            } => {
                let pools = engine.pools().clone();
                crate::pools::spawn_call(pools, &streams, id, request, out_tx.clone());
            }
            ClientMessage::Call {
                id,
                request:
                    Request::OpenConsole {
                        domain,
                        exclusive,
                        force,
                        notify,
                    },
            } => {
                // A connection has one console: a new open replaces it.
                if let Some(t) = console_task.take() {
                    t.abort();
                    // The aborted task drops its session (and any hold on
                    // the console) before the new one asks.
                    let _ = t.await;
                }
                console = None;
                let session = engine
                    .serial_console(&domain)
                    .and_then(|c| c.attach_as(exclusive, force, notify, &hello.client));
                let (result, session) = match session {
                    Ok(s) => (Ok(Response::Done), Some(s)),
                    Err(e) => (Err(e), None),
                };
                // The reply goes out before the first output.
                let _ = out_tx.send(ServerMessage::Reply { id, result }).await;
                if let Some(mut session) = session {
                    console = Some(session.input());
                    let out = out_tx.clone();
                    console_task = Some(tokio::spawn(async move {
                        loop {
                            let msg = match session.next().await {
                                Next::Output(data) => ServerMessage::ConsoleOutput { data },
                                Next::Held(Some(by)) => ServerMessage::ConsoleHeld { by },
                                Next::Held(None) => ServerMessage::ConsoleReleased,
                                Next::Ended | Next::Displaced => break,
                            };
                            if out.send(msg).await.is_err() {
                                return;
                            }
                        }
                        drop(session);
                        let _ = out.send(ServerMessage::ConsoleClosed).await;
                    }));
                }
            }
            ClientMessage::Call {
                id,
                request: Request::AttachVnc { domain },
            } => {
                let vnc = match engine.vnc_socket(&domain) {
                    Ok(path) => UnixStream::connect(&path).await.map_err(|e| {
                        ApiError::new(
                            ErrorCode::Internal,
                            format!("cannot reach the VNC server: {e}"),
                        )
                    }),
                    Err(e) => Err(e),
                };
                let mut vnc = match vnc {
                    Ok(v) => v,
                    Err(e) => {
                        let reply = ServerMessage::Reply { id, result: Err(e) };
                        let _ = out_tx.send(reply).await;
                        continue;
                    }
                };
                if let Some(t) = events_task.as_ref() {
                    t.abort();
                }
                if let Some(t) = console_task.take() {
                    t.abort();
                }
                let (back_tx, back_rx) = oneshot::channel();
                let _ = upgrade_tx.send(back_tx).await;
                let Ok(mut writer) = back_rx.await else {
                    break Err("the connection closed during the VNC upgrade".into());
                };
                let reply = ServerMessage::Reply {
                    id,
                    result: Ok(Response::Done),
                };
                proto::write_message_async(&mut writer, &reply)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut stream = reader.reunite(writer).map_err(|e| e.to_string())?;
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut vnc).await;
                return Ok(());
            }
            ClientMessage::Call { id, request } => {
                let engine = engine.clone();
                let out = out_tx.clone();
                tokio::spawn(async move {
                    let result = engine.handle(request).await;
                    let _ = out.send(ServerMessage::Reply { id, result }).await;
                });
            }
        }
    };
    if let Some(t) = console_task {
        t.abort();
    }
    if let Some(t) = events_task {
        t.abort();
    }
    // Ends this connection's uploads and downloads.
    drop(streams);
    drop(out_tx);
    // Let queued replies go out before the socket closes.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer_task).await;
    result
}
