//! One VNC connection: handshake, then a reader thread (client messages,
//! input into the guest) and a writer thread (updates when the client has
//! asked for one and something changed).
//!
//! A slow client only slows its own writer: changes keep accumulating in
//! its tile map, so it gets one coalesced update when it next asks, never
//! a queue.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vireo_rfb::encode::{Encoder, Frame};
use vireo_rfb::messages::{VERSION_3_8, parse_client_version};
use vireo_rfb::server::{self, SizeReason, encoding, security, size_status};
use vireo_rfb::{ClientMessage, PixelFormat, Rect};

use super::keymap;
use super::tracker::{ClientHandle, Display, TILE, TileBox};

/// A byte stream to a client: a unix or a TCP socket.
pub trait Conn: Read + Write + Send + 'static {
    /// A second handle on the same socket (for the writer thread).
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>>;
    /// Ends the connection in both directions.
    fn shutdown_conn(&self);
    /// Sets read and write timeouts.
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()>;
}

impl Conn for std::os::unix::net::UnixStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

impl Conn for std::net::TcpStream {
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_conn(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        let _ = self.set_nodelay(true);
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// How clients authenticate.
#[derive(Clone)]
pub enum Auth {
    /// Security type None.
    None,
    /// VncAuth with this password.
    Password(Arc<Vec<u8>>),
}

/// The longest a client may take over the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that accepts no data for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The name shown in viewers' title bars.
const DESKTOP_NAME: &str = "Vireo";

/// What the reader tells the writer.
struct Settings {
    pf: PixelFormat,
    pf_changed: bool,
    encodings: Vec<i32>,
    /// Outstanding FramebufferUpdateRequest: incremental?
    request: Option<bool>,
    ext_key_ack: bool,
    cursor: bool,
    leds: bool,
    resize_reply: bool,
    closed: bool,
}

struct Shared {
    settings: Mutex<Settings>,
    changed: Condvar,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_exact(conn: &mut dyn Conn, buf: &mut [u8]) -> io::Result<()> {
    conn.read_exact(buf)
}

fn random_challenge() -> [u8; 16] {
    let mut c = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom")
        && f.read_exact(&mut c).is_ok()
    {
        return c;
    }
    // No /dev/urandom: fall back to the clock, still unpredictable enough
    // for a loopback-only challenge.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    c.copy_from_slice(&t.to_le_bytes());
    c
}

/// The size ServerInit gives while the guest has set no mode yet (as
/// QEMU's placeholder screen): clients refuse a 0×0 desktop (vnc-rs as
/// undecodable image data), and the guest's first mode follows as a size
/// change.
pub const NO_MODE_SIZE: (u16, u16) = (640, 480);

/// What ServerInit told the client: the size, and the frame's size serial
/// it came from.
type Announced = ((u16, u16), u64);

/// Runs the handshake; `Ok(None)` when the client failed authentication.
fn handshake(conn: &mut dyn Conn, auth: &Auth, display: &Display) -> io::Result<Option<Announced>> {
    conn.write_all(VERSION_3_8)?;
    let mut line = [0u8; 12];
    read_exact(conn, &mut line)?;
    let minor = parse_client_version(&line)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an RFB version line"))?;
    let offered = match auth {
        Auth::None => security::NONE,
        Auth::Password(_) => security::VNC_AUTH,
    };
    conn.write_all(&server::security_offer(minor, &[offered]))?;
    if minor >= 7 {
        let mut choice = [0u8; 1];
        read_exact(conn, &mut choice)?;
        if choice[0] != offered {
            if minor >= 8 {
                conn.write_all(&server::security_result(
                    minor,
                    false,
                    "unsupported security type",
                ))?;
            }
            return Ok(None);
        }
    }
    match auth {
        Auth::None => {
            if minor >= 8 {
                conn.write_all(&server::security_result(minor, true, ""))?;
            }
        }
        Auth::Password(pw) => {
            let challenge = random_challenge();
            conn.write_all(&challenge)?;
            let mut response = [0u8; 16];
            read_exact(conn, &mut response)?;
            let ok = server::vnc_auth_check(pw, &challenge, &response);
            conn.write_all(&server::security_result(minor, ok, "authentication failed"))?;
            if !ok {
                return Ok(None);
            }
        }
    }
    let mut shared_flag = [0u8; 1];
    read_exact(conn, &mut shared_flag)?;
    // Every connection shares the display, whatever the flag says.
    let (size, serial) = {
        let f = display.frame();
        let size = if f.width == 0 || f.height == 0 {
            NO_MODE_SIZE
        } else {
            (f.width, f.height)
        };
        (size, f.size_serial)
    };
    conn.write_all(&server::server_init(
        size.0,
        size.1,
        &PixelFormat::XRGB8888,
        DESKTOP_NAME,
    ))?;
    Ok(Some((size, serial)))
}

/// Serves one connection until it ends; logs why it ended.
pub fn serve(mut conn: Box<dyn Conn>, peer: String, auth: Auth, display: Arc<Display>) {
    if let Err(e) = conn.set_timeouts(Some(HANDSHAKE_TIMEOUT), Some(HANDSHAKE_TIMEOUT)) {
        tracing::warn!("vnc {peer}: {e}");
        return;
    }
    // Make sure the first frame is there before ServerInit gives a size.
    display.poll();
    let announced = match handshake(conn.as_mut(), &auth, &display) {
        Ok(Some(a)) => a,
        Ok(None) => {
            tracing::warn!("vnc {peer}: authentication failed");
            conn.shutdown_conn();
            return;
        }
        Err(e) => {
            tracing::info!("vnc {peer}: handshake ended: {e}");
            conn.shutdown_conn();
            return;
        }
    };
    tracing::info!("vnc {peer}: connected");
    if conn.set_timeouts(None, Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let handle = display.add_client();
    let shared = Arc::new(Shared {
        settings: Mutex::new(Settings {
            pf: PixelFormat::XRGB8888,
            pf_changed: false,
            encodings: vec![encoding::RAW],
            request: None,
            ext_key_ack: false,
            cursor: false,
            leds: false,
            resize_reply: false,
            closed: false,
        }),
        changed: Condvar::new(),
    });
    let writer_conn = match conn.try_clone_conn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("vnc {peer}: {e}");
            return;
        }
    };
    let writer = {
        let (shared, handle, display, peer) = (
            shared.clone(),
            handle.clone(),
            display.clone(),
            peer.clone(),
        );
        std::thread::Builder::new()
            .name("vnc-writer".into())
            .spawn(move || {
                let mut w = Writer::new(
                    writer_conn,
                    shared,
                    handle,
                    display,
                    peer.clone(),
                    announced,
                );
                if let Err(e) = w.run() {
                    tracing::info!("vnc {peer}: writer ended: {e}");
                }
                w.conn.shutdown_conn();
                lock(&w.shared.settings).closed = true;
            })
    };
    if let Err(e) = writer {
        tracing::warn!("vnc {peer}: cannot start writer: {e}");
        return;
    }
    let mut reader = Reader {
        shared: shared.clone(),
        handle: handle.clone(),
        display,
        last_pointer: None,
        last_buttons: 0,
    };
    match reader.run(conn.as_mut()) {
        Ok(()) => tracing::info!("vnc {peer}: disconnected"),
        Err(e) => tracing::warn!("vnc {peer}: closing: {e}"),
    }
    conn.shutdown_conn();
    lock(&shared.settings).closed = true;
    shared.changed.notify_all();
    handle.wants_update.store(false, Ordering::Release);
    let _g = lock(&handle.dirty);
    handle.changed.notify_all();
}

struct Reader {
    shared: Arc<Shared>,
    handle: Arc<ClientHandle>,
    display: Arc<Display>,
    last_pointer: Option<(u16, u16)>,
    last_buttons: u8,
}

impl Reader {
    fn run(&mut self, conn: &mut dyn Conn) -> io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if lock(&self.shared.settings).closed {
                return Ok(());
            }
            let n = match conn.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            loop {
                match ClientMessage::parse(&buf[used..]) {
                    Ok(Some((msg, len))) => {
                        used += len;
                        self.handle(msg);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("malformed client message: {e}"),
                        ));
                    }
                }
            }
            buf.drain(..used);
        }
    }

    fn handle(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::SetPixelFormat(pf) => {
                {
                    let mut s = lock(&self.shared.settings);
                    s.pf = pf;
                    s.pf_changed = true;
                }
                self.notify_writer();
            }
            ClientMessage::SetEncodings(list) => {
                {
                    let mut s = lock(&self.shared.settings);
                    s.ext_key_ack = list.contains(&encoding::QEMU_EXTENDED_KEY);
                    s.cursor = list.contains(&encoding::CURSOR);
                    s.leds = list.contains(&encoding::QEMU_LED_STATE);
                    s.encodings = list;
                }
                self.notify_writer();
            }
            ClientMessage::FramebufferUpdateRequest { incremental, .. } => {
                {
                    let mut s = lock(&self.shared.settings);
                    // A pending full request stays full.
                    s.request = Some(incremental && s.request.unwrap_or(true));
                }
                self.handle.wants_update.store(true, Ordering::Release);
                self.display.wake();
                self.notify_writer();
            }
            ClientMessage::KeyEvent { down, keysym } => {
                self.display.input();
                if let Some(code) = keymap::keysym_to_scancode(keysym) {
                    self.key(code, down);
                }
            }
            ClientMessage::QemuExtendedKey {
                down,
                keysym,
                scancode,
            } => {
                self.display.input();
                let code = keymap::qemu_keycode_to_scancode(scancode)
                    .or_else(|| keymap::keysym_to_scancode(keysym));
                if let Some(code) = code {
                    self.key(code, down);
                }
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                self.display.input();
                self.pointer(buttons, x, y);
            }
            ClientMessage::ClientCutText(_) => {}
            ClientMessage::SetDesktopSize { .. } => {
                lock(&self.shared.settings).resize_reply = true;
                self.notify_writer();
            }
        }
    }

    /// Wakes the writer to look at the settings again (under the dirty
    /// lock, which the writer holds from its check to its wait).
    fn notify_writer(&self) {
        let _g = lock(&self.handle.dirty);
        self.handle.changed.notify_all();
    }

    /// Sends a key, waiting (at most 2 s) for the guest to read the
    /// keyboard's small buffer.
    fn key(&self, code: u16, down: bool) {
        let Some(dev) = self.display.devices() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut kbd = lock(&dev.i8042);
            if kbd.keyboard_backlog() <= 8 || Instant::now() > deadline {
                kbd.key_event(code, down);
                return;
            }
            drop(kbd);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Absolute VNC pointer positions become PS/2 relative motion.
    fn pointer(&mut self, buttons: u8, x: u16, y: u16) {
        let Some(dev) = self.display.devices() else {
            return;
        };
        let (dx, dy) = match self.last_pointer {
            Some((lx, ly)) => (i32::from(x) - i32::from(lx), i32::from(y) - i32::from(ly)),
            None => (0, 0),
        };
        self.last_pointer = Some((x, y));
        // Wheel: buttons 4 (up) and 5 (down) are clicks on press.
        let pressed = buttons & !self.last_buttons;
        let dz = i32::from(pressed & 16 != 0) - i32::from(pressed & 8 != 0);
        self.last_buttons = buttons;
        // RFB: 1 left, 2 middle, 4 right; PS/2: 1 left, 2 right, 4 middle.
        let ps2 = (buttons & 1) | ((buttons >> 1) & 2) | ((buttons << 1) & 4);
        lock(&dev.i8042).mouse_event(dx, dy, dz, ps2);
    }
}

struct Writer {
    peer: String,
    encoding: Option<i32>,
    conn: Box<dyn Conn>,
    shared: Arc<Shared>,
    handle: Arc<ClientHandle>,
    display: Arc<Display>,
    encoder: Encoder,
    /// The size the client knows.
    size: (u16, u16),
    size_serial: u64,
    out: Vec<u8>,
    ext_key_sent: bool,
    cursor_sent: bool,
    leds_sent: Option<u8>,
}

/// The name of an encoding we send, for logs.
pub fn encoding_name(enc: i32) -> &'static str {
    match enc {
        encoding::HEXTILE => "Hextile",
        encoding::ZRLE => "ZRLE",
        encoding::TIGHT => "Tight",
        _ => "Raw",
    }
}

/// The encoding to use: the client's first choice among ours.
fn pick_encoding(list: &[i32]) -> i32 {
    list.iter()
        .copied()
        .find(|e| {
            matches!(
                *e,
                encoding::RAW | encoding::HEXTILE | encoding::ZRLE | encoding::TIGHT
            )
        })
        .unwrap_or(encoding::RAW)
}

impl Writer {
    fn new(
        conn: Box<dyn Conn>,
        shared: Arc<Shared>,
        handle: Arc<ClientHandle>,
        display: Arc<Display>,
        peer: String,
        // What ServerInit said: later size changes are told against it.
        (size, size_serial): Announced,
    ) -> Self {
        Self {
            peer,
            encoding: None,
            conn,
            shared,
            handle,
            display,
            encoder: Encoder::new(PixelFormat::XRGB8888),
            size,
            size_serial,
            out: Vec::new(),
            ext_key_sent: false,
            cursor_sent: false,
            leds_sent: None,
        }
    }

    fn closed(&self) -> bool {
        lock(&self.shared.settings).closed
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            // Wait for a request and something to send. Whoever changes
            // either notifies `changed` holding the dirty lock, which is
            // held here from the check to the wait, so no wake-up is
            // missed; the timeout is only a safety net.
            let incremental = loop {
                let d = lock(&self.handle.dirty);
                if self.closed() {
                    return Ok(());
                }
                let request = lock(&self.shared.settings).request;
                if let Some(incremental) = request
                    && (d.any() || !incremental || self.pseudo_pending())
                {
                    break incremental;
                }
                let _ = self
                    .handle
                    .changed
                    .wait_timeout(d, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner());
            };
            self.update(incremental)?;
        }
    }

    fn pseudo_pending(&self) -> bool {
        let s = lock(&self.shared.settings);
        let size_changed = self.display.frame().size_serial != self.size_serial;
        (s.ext_key_ack && !self.ext_key_sent)
            || (s.cursor && !self.cursor_sent)
            || s.resize_reply
            || s.pf_changed
            || size_changed
    }

    fn update(&mut self, incremental: bool) -> io::Result<()> {
        let (pf, pf_changed, encodings, ext_key, cursor, leds, resize_reply) = {
            let mut s = lock(&self.shared.settings);
            s.request = None;
            let r = (
                s.pf,
                s.pf_changed,
                s.encodings.clone(),
                s.ext_key_ack,
                s.cursor,
                s.leds,
                s.resize_reply,
            );
            s.pf_changed = false;
            s.resize_reply = false;
            r
        };
        self.handle.wants_update.store(false, Ordering::Release);
        if pf_changed {
            self.encoder.set_pixel_format(pf);
            if !pf.true_colour {
                self.conn.write_all(&server::bgr233_colour_map())?;
            }
        }
        if let Some(level) = encodings.iter().find_map(|&e| {
            (encoding::COMPRESS_LEVEL_0..=encoding::COMPRESS_LEVEL_9)
                .contains(&e)
                .then(|| (e - encoding::COMPRESS_LEVEL_0) as u32)
        }) {
            self.encoder.set_compression_level(level);
        }
        let enc = pick_encoding(&encodings);
        if self.encoding != Some(enc) {
            self.encoding = Some(enc);
            tracing::info!("vnc {}: sending {} updates", self.peer, encoding_name(enc));
        }
        let ext_size = encodings.contains(&encoding::EXTENDED_DESKTOP_SIZE);
        let size_ok = ext_size || encodings.contains(&encoding::DESKTOP_SIZE);

        let mut count: u16 = 0;
        self.out.clear();
        self.out.extend_from_slice(&[0, 0, 0, 0]); // header, patched below
        let mut dirty = {
            let mut d = lock(&self.handle.dirty);
            let taken = (
                d.full,
                std::mem::take(&mut d.tiles),
                d.tiles_w,
                d.leds_changed,
            );
            d.full = false;
            d.tiles = vec![TileBox::default(); taken.1.len()];
            d.leds_changed = false;
            taken
        };
        if ext_key && !self.ext_key_sent {
            server::qemu_extended_key_ack(&mut self.out);
            count += 1;
            self.ext_key_sent = true;
        }
        if leds && let Some(dev) = self.display.devices() {
            let k = lock(&dev.i8042).keyboard_leds();
            let v =
                u8::from(k.scroll_lock) | u8::from(k.num_lock) << 1 | u8::from(k.caps_lock) << 2;
            if self.leds_sent != Some(v) {
                server::qemu_led_state(k.scroll_lock, k.num_lock, k.caps_lock, &mut self.out);
                count += 1;
                self.leds_sent = Some(v);
            }
        }
        if cursor && !self.cursor_sent {
            server::arrow_cursor(&pf, &mut self.out);
            count += 1;
            self.cursor_sent = true;
        }
        // A size rectangle (a new size, or the answer to the client's
        // SetDesktopSize) goes last in an update of its own, without
        // pixel data: clients apply an ExtendedDesktopSize only once the
        // whole update is read (vnc-rs refuses pixels beside one as
        // undecodable), and some need DesktopSize last (rfbproto's
        // DesktopSize server semantics). The pixels follow in the answer
        // to the next request, the whole screen.
        let mut size_sent = false;
        if resize_reply && ext_size {
            size_sent = true;
            // bochs-display cannot be resized from outside the guest.
            server::extended_desktop_size(
                SizeReason::ThisClient,
                size_status::PROHIBITED,
                self.size.0,
                self.size.1,
                &mut self.out,
            );
            count += 1;
        }
        {
            let frame = self.display.frame();
            if frame.size_serial != self.size_serial {
                self.size_serial = frame.size_serial;
                if size_ok && (frame.width, frame.height) != self.size && frame.width > 0 {
                    self.size = (frame.width, frame.height);
                    if ext_size {
                        server::extended_desktop_size(
                            SizeReason::Server,
                            size_status::OK,
                            frame.width,
                            frame.height,
                            &mut self.out,
                        );
                    } else {
                        server::desktop_size(frame.width, frame.height, &mut self.out);
                    }
                    count += 1;
                    size_sent = true;
                }
                dirty.0 = true;
            }
            // Rectangles to send, in the client's size: dirty tiles merged,
            // each cut down to the pixels that changed in it.
            let (cw, ch) = (self.size.0.min(frame.width), self.size.1.min(frame.height));
            let tiles_h = usize::from(frame.height).div_ceil(TILE);
            let map_fits = dirty.2 == usize::from(frame.width).div_ceil(TILE)
                && dirty.1.len() == dirty.2 * tiles_h;
            let full = dirty.0 || !incremental || !map_fits;
            let rects = if cw == 0 || ch == 0 || size_sent {
                Vec::new()
            } else if full {
                vec![Rect::new(0, 0, cw, ch)]
            } else {
                tiles_to_rects(&dirty.1, dirty.2, cw, ch)
            };
            // Encoded straight from the shadow frame, which the tracker
            // cannot change while this read lock is held.
            if let Some(f) = Frame::new(&frame.pixels, frame.width, frame.height) {
                for r in rects {
                    let n = self.encoder.encode(enc, &f, r, &mut self.out);
                    count = count.saturating_add(n);
                }
            }
        }
        if size_sent {
            lock(&self.handle.dirty).full = true;
        }
        if count == 0 {
            // Nothing after all (e.g. the display is off): keep the request.
            let mut s = lock(&self.shared.settings);
            if s.request.is_none() {
                s.request = Some(true);
            }
            self.handle.wants_update.store(true, Ordering::Release);
            return Ok(());
        }
        self.out[2..4].copy_from_slice(&count.to_be_bytes());
        self.conn.write_all(&self.out)?;
        self.conn.flush()
    }
}

/// Merges a tile map into rectangles: runs of dirty tiles per tile row,
/// joined with the row above when they span the same columns; each is then
/// cut down to the box of pixels that changed in its tiles and to the
/// client's `width`×`height`.
pub fn tiles_to_rects(tiles: &[TileBox], tiles_w: usize, width: u16, height: u16) -> Vec<Rect> {
    // Merged runs in tile units: x, y, w, h.
    let mut runs: Vec<(usize, usize, usize, usize)> = Vec::new();
    if tiles_w == 0 {
        return Vec::new();
    }
    let mut open: Vec<usize> = Vec::new(); // indices into `runs` from the row above
    for (ty, row) in tiles.chunks(tiles_w).enumerate() {
        if ty * TILE >= usize::from(height) {
            break;
        }
        let mut next_open = Vec::new();
        let mut tx = 0;
        while tx < row.len() {
            if !row[tx].is_dirty() {
                tx += 1;
                continue;
            }
            let start = tx;
            while tx < row.len() && row[tx].is_dirty() {
                tx += 1;
            }
            if start * TILE >= usize::from(width) {
                break;
            }
            let joined = open.iter().copied().find(|&i| {
                let r = runs[i];
                r.0 == start && r.2 == tx - start && r.1 + r.3 == ty
            });
            match joined {
                Some(i) => {
                    runs[i].3 += 1;
                    next_open.push(i);
                }
                None => {
                    runs.push((start, ty, tx - start, 1));
                    next_open.push(runs.len() - 1);
                }
            }
        }
        open = next_open;
    }
    runs.into_iter()
        .filter_map(|(x, y, w, h)| {
            // The box of changed pixels over the run's tiles.
            let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
            for ty in y..y + h {
                for tx in x..x + w {
                    let b = tiles[ty * tiles_w + tx];
                    x0 = x0.min(tx * TILE + usize::from(b.x0));
                    y0 = y0.min(ty * TILE + usize::from(b.y0));
                    x1 = x1.max(tx * TILE + usize::from(b.x1));
                    y1 = y1.max(ty * TILE + usize::from(b.y1));
                }
            }
            let (x1, y1) = (x1.min(usize::from(width)), y1.min(usize::from(height)));
            (x0 < x1 && y0 < y1)
                .then(|| Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Connects a client to `serve` over a socket pair, sends `input` after
    /// the handshake, closes its side and waits (bounded) for the server.
    fn serve_input(display: &Arc<Display>, input: &[u8]) {
        let (server_end, mut client) = UnixStream::pair().unwrap();
        let d = display.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            serve(Box::new(server_end), "test".into(), Auth::None, d);
            let _ = done_tx.send(());
        });
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut version = [0u8; 12];
        client.read_exact(&mut version).unwrap();
        client.write_all(b"RFB 003.008\n").unwrap();
        let mut types = [0u8; 2];
        client.read_exact(&mut types).unwrap();
        assert_eq!(types, [1, security::NONE]);
        client.write_all(&[security::NONE]).unwrap();
        let mut result = [0u8; 4];
        client.read_exact(&mut result).unwrap();
        client.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        client.read_exact(&mut init).unwrap();
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = vec![0u8; name_len as usize];
        client.read_exact(&mut name).unwrap();
        // The server may close first (malformed input): ignore write errors.
        let _ = client.write_all(input);
        let _ = client.shutdown(std::net::Shutdown::Write);
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server loop did not end");
    }

    #[test]
    fn a_display_without_a_mode_is_announced_at_the_placeholder_size() {
        // No devices yet (as before the machine is up, or with the
        // display off): the frame is 0x0, which vnc-rs refuses in
        // ServerInit; the client is told 640x480 and gets the guest's
        // mode later as a size change.
        let display = Display::new();
        assert_eq!((display.frame().width, display.frame().height), (0, 0));
        let (server_end, mut client) = UnixStream::pair().unwrap();
        let d = display.clone();
        let server = std::thread::spawn(move || {
            serve(Box::new(server_end), "test".into(), Auth::None, d);
        });
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut version = [0u8; 12];
        client.read_exact(&mut version).unwrap();
        client.write_all(b"RFB 003.008\n").unwrap();
        let mut types = [0u8; 2];
        client.read_exact(&mut types).unwrap();
        client.write_all(&[security::NONE]).unwrap();
        let mut result = [0u8; 4];
        client.read_exact(&mut result).unwrap();
        client.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        client.read_exact(&mut init).unwrap();
        let size = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        assert_eq!(size, NO_MODE_SIZE);
        client.shutdown(std::net::Shutdown::Both).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn the_message_loop_survives_the_fuzz_corpus_and_random_input() {
        let display = Display::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../display/rfb/fuzz/corpus/client_messages");
        let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(inputs.len() >= 10, "corpus missing in {}", dir.display());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..60 {
            let mut d = inputs[i % inputs.len()].clone();
            let n = d.len();
            for _ in 0..3 {
                if n > 0 {
                    d[(rand() as usize) % n] = rand() as u8;
                }
            }
            d.extend((0..(rand() % 32)).map(|_| rand() as u8));
            inputs.push(d);
        }
        for input in &inputs {
            serve_input(&display, input);
        }
    }

    #[test]
    fn dirty_tiles_merge_into_few_rectangles() {
        // 4x3 tiles on a 60x40 screen: a 2x2 block and a lone tile, all of
        // each tile changed.
        let all = TileBox {
            x0: 0,
            y0: 0,
            x1: 16,
            y1: 16,
        };
        let o = TileBox::default();
        #[rustfmt::skip]
        let tiles = [
            o, all, all, o,
            o, all, all, o,
            o, o, o, all,
        ];
        let rects = tiles_to_rects(&tiles, 4, 60, 40);
        assert_eq!(rects, [Rect::new(16, 0, 32, 32), Rect::new(48, 32, 12, 8)]);
    }

    #[test]
    fn merged_tiles_shrink_to_the_pixels_that_changed() {
        // Two neighbouring tiles with small boxes: one rectangle spanning
        // both boxes; a lone box at the screen's edge is clipped to it.
        let mut tiles = vec![TileBox::default(); 4 * 2];
        tiles[1] = TileBox {
            x0: 4,
            y0: 5,
            x1: 16,
            y1: 6,
        };
        tiles[2] = TileBox {
            x0: 0,
            y0: 9,
            x1: 2,
            y1: 12,
        };
        tiles[7] = TileBox {
            x0: 10,
            y0: 0,
            x1: 16,
            y1: 3,
        };
        let rects = tiles_to_rects(&tiles, 4, 60, 18);
        assert_eq!(rects, [Rect::new(20, 5, 14, 7), Rect::new(58, 16, 2, 2)]);
    }

    #[test]
    fn encodings_follow_the_client_preference() {
        assert_eq!(pick_encoding(&[-239, 7, 16, 0]), encoding::TIGHT);
        assert_eq!(pick_encoding(&[16, 7]), encoding::ZRLE);
        assert_eq!(pick_encoding(&[99, -223]), encoding::RAW);
    }
}
