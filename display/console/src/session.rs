//! A remote-display session: the vnc-rs client driven on tokio, decoding
//! into a shared [`Framebuffer`] and taking keyboard and pointer input.
//!
//! GTK-free, so it is tested against real VNC servers without a display.
//! The stream is any async byte stream: a unix socket from the local
//! engine, or an SSH channel to a remote one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use vnc::{
    ClientKeyEvent, ClientMouseEvent, PixelFormat, VncConnector, VncEncoding, VncEvent, X11Event,
};

use crate::framebuffer::{Framebuffer, Rect};

/// How often the session asks the server for changes. vnc-rs reports no
/// end-of-update, so requests are paced rather than chained.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(16);

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The RFB handshake failed.
    #[error("cannot open the remote display: {0}")]
    Handshake(String),
}

/// What the session reports to the widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// The remote screen has this size (first at connection, then on every
    /// mode change).
    Resized {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The framebuffer changed since the last `Updated` (coalesced to at
    /// most one per [`REFRESH_INTERVAL`]).
    Updated,
    /// The server rang the bell.
    Bell,
    /// The answer to [`Input::ResizeDesktop`]: `Ok` once the server
    /// resized its screen, or why it did not (e.g. the server or the guest
    /// cannot resize it from outside).
    DesktopResize(Result<(), ResizeRefused>),
    /// The session ended; the text says why.
    Closed(String),
}

/// Why a desktop resize request did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeRefused {
    /// The server does not offer resizing (no ExtendedDesktopSize), or it
    /// refused it as prohibited: the guest's display cannot be resized
    /// from outside. Asking again will not help.
    Unsupported(String),
    /// This request failed (busy, timed out, invalid size); another may
    /// succeed.
    Failed(String),
}

/// Input for the remote machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An X keysym pressed or released (GDK keyvals are X keysyms).
    Key {
        /// The keysym.
        keysym: u32,
        /// Pressed (true) or released.
        down: bool,
    },
    /// The pointer at a framebuffer position with these buttons down
    /// (bit 0 left, 1 middle, 2 right, 3/4 wheel up/down).
    Pointer {
        /// Horizontal position.
        x: u16,
        /// Vertical position.
        y: u16,
        /// Button mask.
        buttons: u8,
    },
    /// Ask the server to resize the remote screen (RFB SetDesktopSize);
    /// answered by [`ConsoleEvent::DesktopResize`].
    ResizeDesktop {
        /// Width in pixels.
        width: u16,
        /// Height in pixels.
        height: u16,
    },
}

/// A running session. Dropping it ends the session.
#[derive(Debug, Clone)]
pub struct Session {
    input: mpsc::UnboundedSender<Input>,
    framebuffer: Arc<Mutex<Framebuffer>>,
}

impl Session {
    /// Performs the RFB handshake on `stream` and starts decoding on the
    /// current tokio runtime. `password` answers VNC authentication.
    pub async fn connect<S>(
        stream: S,
        password: Option<String>,
    ) -> Result<(Session, mpsc::UnboundedReceiver<ConsoleEvent>), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        let password = password.unwrap_or_default();
        let client = VncConnector::new(stream)
            .set_auth_method(async move { Ok(password) })
            .add_encoding(VncEncoding::Tight)
            .add_encoding(VncEncoding::Zrle)
            .add_encoding(VncEncoding::CopyRect)
            .add_encoding(VncEncoding::Raw)
            .add_encoding(VncEncoding::ExtendedDesktopSizePseudo)
            .add_encoding(VncEncoding::DesktopSizePseudo)
            .add_encoding(VncEncoding::LastRectPseudo)
            .allow_shared(true)
            .set_pixel_format(PixelFormat::bgra())
            .build()
            .map_err(|e| SessionError::Handshake(e.to_string()))?
            .try_start()
            .await
            .map_err(|e| SessionError::Handshake(e.to_string()))?
            .finish()
            .map_err(|e| SessionError::Handshake(e.to_string()))?;

        let framebuffer = Arc::new(Mutex::new(Framebuffer::empty()));
        let (input_tx, mut input_rx) = mpsc::unbounded_channel::<Input>();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let fb = framebuffer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut changed = false;
            let reason = loop {
                tokio::select! {
                    event = client.recv_event() => match event {
                        Ok(event) => match apply(&fb, event) {
                            Ok(Applied::Event(out)) => {
                                if events_tx.send(out).is_err() {
                                    break "the console was closed".to_owned();
                                }
                            }
                            Ok(Applied::Pixels) => changed = true,
                            Ok(Applied::Nothing) => {}
                            Err(e) => break e,
                        },
                        Err(e) => break format!("the remote display closed: {e}"),
                    },
                    input = input_rx.recv() => {
                        let Some(input) = input else {
                            break "the console was closed".to_owned();
                        };
                        let event = match input {
                            Input::ResizeDesktop { width, height } => {
                                // Answered while this loop keeps draining
                                // events, which carry the confirmation.
                                let (client, events_tx) = (client.clone(), events_tx.clone());
                                tokio::spawn(async move {
                                    let result = client
                                        .resize_desktop(width, height)
                                        .await
                                        .map(|_| ())
                                        .map_err(resize_refused);
                                    let _ = events_tx.send(ConsoleEvent::DesktopResize(result));
                                });
                                continue;
                            }
                            Input::Key { keysym, down } => {
                                X11Event::KeyEvent(ClientKeyEvent { keycode: keysym, down })
                            }
                            Input::Pointer { x, y, buttons } => {
                                X11Event::PointerEvent(ClientMouseEvent {
                                    position_x: x,
                                    position_y: y,
                                    bottons: buttons,
                                })
                            }
                        };
                        if let Err(e) = client.input(event).await {
                            break format!("cannot send input: {e}");
                        }
                    }
                    _ = tick.tick() => {
                        if changed {
                            changed = false;
                            if events_tx.send(ConsoleEvent::Updated).is_err() {
                                break "the console was closed".to_owned();
                            }
                        }
                        if let Err(e) = client.input(X11Event::Refresh).await {
                            break format!("the remote display closed: {e}");
                        }
                    }
                }
            };
            tracing::debug!("console session ended: {reason}");
            let _ = events_tx.send(ConsoleEvent::Closed(reason));
            let _ = client.close().await;
        });
        Ok((
            Session {
                input: input_tx,
                framebuffer,
            },
            events_rx,
        ))
    }

    /// Sends input to the remote machine; ignored once the session ended.
    pub fn send(&self, input: Input) {
        let _ = self.input.send(input);
    }

    /// The decoded screen.
    pub fn framebuffer(&self) -> &Arc<Mutex<Framebuffer>> {
        &self.framebuffer
    }
}

/// Sorts vnc-rs's resize errors into final and passing ones.
fn resize_refused(e: vnc::ResizeError) -> ResizeRefused {
    match e {
        vnc::ResizeError::Unsupported => ResizeRefused::Unsupported(
            "the display server does not offer resizing (no ExtendedDesktopSize)".to_owned(),
        ),
        vnc::ResizeError::Denied(vnc::DesktopStatus::Prohibited) => ResizeRefused::Unsupported(
            "the display server refused: the guest's screen cannot be resized from outside"
                .to_owned(),
        ),
        other => ResizeRefused::Failed(other.to_string()),
    }
}

/// What one decoded event did.
enum Applied {
    /// Something to tell the widget now.
    Event(ConsoleEvent),
    /// Pixels changed (reported at the next tick).
    Pixels,
    /// Nothing visible.
    Nothing,
}

/// Applies one decoded event, or fails with a reason that ends the session.
fn apply(fb: &Mutex<Framebuffer>, event: VncEvent) -> Result<Applied, String> {
    let mut fb = fb.lock().unwrap_or_else(|e| e.into_inner());
    let rect = |r: vnc::Rect| Rect {
        x: u32::from(r.x),
        y: u32::from(r.y),
        width: u32::from(r.width),
        height: u32::from(r.height),
    };
    match event {
        VncEvent::SetResolution(screen) => {
            let (width, height) = (u32::from(screen.width), u32::from(screen.height));
            *fb = Framebuffer::new(width, height).map_err(|e| e.to_string())?;
            Ok(Applied::Event(ConsoleEvent::Resized { width, height }))
        }
        VncEvent::RawImage(r, data) => {
            fb.blit(rect(r), &data)
                .map_err(|e| format!("the server sent a bad update: {e}"))?;
            Ok(Applied::Pixels)
        }
        VncEvent::Copy(dst, src) => {
            fb.copy_rect(u32::from(src.x), u32::from(src.y), rect(dst))
                .map_err(|e| format!("the server sent a bad copy: {e}"))?;
            Ok(Applied::Pixels)
        }
        // ExtendedDesktopSize: a new size (from the guest or a resize we
        // asked for); the same size keeps the pixels.
        VncEvent::DesktopUpdate(update) => match update.layout {
            Some(layout)
                if (u32::from(layout.width), u32::from(layout.height))
                    != (fb.width(), fb.height()) =>
            {
                let (width, height) = (u32::from(layout.width), u32::from(layout.height));
                *fb = Framebuffer::new(width, height).map_err(|e| e.to_string())?;
                Ok(Applied::Event(ConsoleEvent::Resized { width, height }))
            }
            _ => Ok(Applied::Nothing),
        },
        VncEvent::Bell => Ok(Applied::Event(ConsoleEvent::Bell)),
        VncEvent::Error(e) => Err(format!("the remote display failed: {e}")),
        // JPEG rectangles are never asked for (no quality level is sent);
        // cursor shapes are drawn by the server; clipboard text is not
        // shared yet.
        other => {
            tracing::debug!("console: ignored {other:?}");
            Ok(Applied::Nothing)
        }
    }
}
