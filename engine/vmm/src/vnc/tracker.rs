//! The frame tracker: the one reader of KVM's dirty log on VRAM.
//!
//! KVM clears the log on every read, so a single tracker reads it for every
//! consumer: it keeps a shadow copy of the last frame, compares the rows the
//! guest dirtied against it in 16×16 tiles, and marks only the tiles that
//! really changed, with the box of pixels that changed in each, in every
//! client's own dirty map. Clients encode straight from the shadow frame.
//! Pages it read are also kept for the control socket's `dirty-pages`
//! command.
//!
//! It polls every [`POLL_INTERVAL`] while a client waits for an update and
//! the screen keeps changing; on a still screen the interval grows to
//! [`MAX_POLL_INTERVAL`] (as QEMU's refresh timer backs off), and client
//! input brings it back at once.
//!
//! It follows the current [`crate::vm::Vm`]: the machine hands it the new
//! devices after each reset, and a new device or mode means a full re-read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::devices::bochs::{BochsDisplay, Mode};
use crate::devices::i8042::I8042;

/// Side of a dirty tile, in pixels.
pub const TILE: usize = 16;
/// How often the tracker polls while a client waits for an update and the
/// screen changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much the interval grows per poll that finds nothing.
const POLL_BACKOFF: Duration = Duration::from_millis(40);
/// The longest interval between polls on a still screen.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Polls that find nothing before the interval starts to grow.
const QUIET_POLLS: u32 = 2;
/// Size of a VRAM page in the dirty log.
const PAGE: u64 = 4096;

/// The devices of the current boot.
#[derive(Clone)]
pub struct Devices {
    /// The framebuffer.
    pub bochs: Arc<Mutex<BochsDisplay>>,
    /// Keyboard and mouse.
    pub i8042: Arc<Mutex<I8042>>,
}

/// The last frame, as `0x00RRGGBB` pixels.
pub struct Frame {
    /// Width in pixels (0 while the display is off).
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// `width * height` pixels.
    pub pixels: Vec<u32>,
    /// Bumped on every size change.
    pub size_serial: u64,
}

/// The pixels that changed inside one tile: columns `x0..x1` and rows
/// `y0..y1`, relative to the tile (empty while the tile is clean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TileBox {
    /// First changed column.
    pub x0: u8,
    /// First changed row.
    pub y0: u8,
    /// One past the last changed column.
    pub x1: u8,
    /// One past the last changed row.
    pub y1: u8,
}

impl TileBox {
    /// Whether anything changed in the tile.
    pub fn is_dirty(&self) -> bool {
        self.x1 > self.x0
    }

    /// Grows the box to take in `o`.
    pub fn add(&mut self, o: TileBox) {
        if !o.is_dirty() {
            return;
        }
        if !self.is_dirty() {
            *self = o;
            return;
        }
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
    }
}

/// What a client is told by the tracker.
pub struct ClientDirty {
    /// Tiles changed since the client last took them, `tiles_w * tiles_h`,
    /// each with the box of its pixels that changed.
    pub tiles: Vec<TileBox>,
    /// Width of the tile map.
    pub tiles_w: usize,
    /// Everything changed (new mode or device).
    pub full: bool,
    /// The keyboard LEDs changed.
    pub leds_changed: bool,
}

impl ClientDirty {
    /// Anything to send.
    pub fn any(&self) -> bool {
        self.full || self.leds_changed || self.tiles.iter().any(TileBox::is_dirty)
    }
}

/// The tracker's view of one client.
pub struct ClientHandle {
    /// What changed for this client.
    pub dirty: Mutex<ClientDirty>,
    /// Signalled when `dirty` gains something.
    pub changed: Condvar,
    /// The client has an update request outstanding.
    pub wants_update: AtomicBool,
}

impl ClientHandle {
    fn new() -> Self {
        Self {
            dirty: Mutex::new(ClientDirty {
                tiles: Vec::new(),
                tiles_w: 0,
                full: true,
                leds_changed: false,
            }),
            changed: Condvar::new(),
            wants_update: AtomicBool::new(false),
        }
    }
}

struct Source {
    devices: Option<Devices>,
    generation: u64,
}

struct PollState {
    generation: u64,
    mode: Option<Mode>,
    leds: u8,
    /// Pages read from the log and not yet handed to `dirty-pages`.
    control_pages: Vec<u64>,
    row: Vec<u32>,
}

/// The display shared by the machine, the tracker thread and the clients.
pub struct Display {
    source: Mutex<Source>,
    frame: RwLock<Frame>,
    poll: Mutex<PollState>,
    clients: Mutex<Vec<Weak<ClientHandle>>>,
    wake: Condvar,
    wake_lock: Mutex<Wake>,
}

/// The tracker's interval between polls.
#[derive(Default)]
struct Backoff {
    /// The interval after the last poll (zero before the first).
    interval: Duration,
    /// Polls in a row that found nothing.
    quiet: u32,
}

impl Backoff {
    /// The interval to wait after a poll that found a change or not.
    fn after_poll(&mut self, changed: bool) -> Duration {
        self.quiet = if changed { 0 } else { self.quiet + 1 };
        self.interval = if self.quiet <= QUIET_POLLS {
            POLL_INTERVAL
        } else {
            (self.interval + POLL_BACKOFF).min(MAX_POLL_INTERVAL)
        };
        self.interval
    }
}

/// Why the tracker thread was woken.
#[derive(Default)]
struct Wake {
    /// A client asked for an update.
    request: bool,
    /// A client sent input: poll often again.
    input: bool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Display {
    /// A display with no devices yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            source: Mutex::new(Source {
                devices: None,
                generation: 0,
            }),
            frame: RwLock::new(Frame {
                width: 0,
                height: 0,
                pixels: Vec::new(),
                size_serial: 0,
            }),
            poll: Mutex::new(PollState {
                generation: 0,
                mode: None,
                leds: 0,
                control_pages: Vec::new(),
                row: Vec::new(),
            }),
            clients: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(Wake::default()),
        })
    }

    /// Points the display at a new boot's devices.
    pub fn set_devices(&self, devices: Devices) {
        let mut s = lock(&self.source);
        s.devices = Some(devices);
        s.generation += 1;
    }

    /// The current devices.
    pub fn devices(&self) -> Option<Devices> {
        lock(&self.source).devices.clone()
    }

    /// The last frame.
    pub fn frame(&self) -> std::sync::RwLockReadGuard<'_, Frame> {
        self.frame.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client; it starts with everything dirty.
    pub fn add_client(&self) -> Arc<ClientHandle> {
        let c = Arc::new(ClientHandle::new());
        let mut clients = lock(&self.clients);
        clients.retain(|w| w.strong_count() > 0);
        clients.push(Arc::downgrade(&c));
        c
    }

    /// Wakes the tracker thread (a client asked for an update).
    pub fn wake(&self) {
        lock(&self.wake_lock).request = true;
        self.wake.notify_all();
    }

    /// A client sent a key or pointer event: the screen is about to change,
    /// so the tracker goes back to its shortest interval.
    pub fn input(&self) {
        lock(&self.wake_lock).input = true;
        self.wake.notify_all();
    }

    /// Waits up to `d` unless woken by a request or input; returns whether
    /// input came.
    fn sleep(&self, d: Duration) -> bool {
        let mut w = lock(&self.wake_lock);
        if !w.request && !w.input {
            w = self
                .wake
                .wait_timeout(w, d)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        w.request = false;
        std::mem::take(&mut w.input)
    }

    fn live_clients(&self) -> Vec<Arc<ClientHandle>> {
        lock(&self.clients)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Runs the tracker: polls while a client waits for an update, every
    /// [`POLL_INTERVAL`] while the screen changes, backing off by
    /// [`POLL_BACKOFF`] per poll after [`QUIET_POLLS`] quiet ones up to
    /// [`MAX_POLL_INTERVAL`]; sleeps while no client waits.
    pub fn spawn_tracker(self: &Arc<Self>) -> std::io::Result<()> {
        let this = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("vnc-tracker".into())
            .spawn(move || {
                let mut backoff = Backoff::default();
                while let Some(d) = this.upgrade() {
                    let waiting = d
                        .live_clients()
                        .iter()
                        .any(|c| c.wants_update.load(Ordering::Acquire));
                    let limit = if waiting {
                        backoff.after_poll(d.poll())
                    } else {
                        // Woken by a request; the timeout only guards
                        // against the Display going away.
                        Duration::from_secs(1)
                    };
                    if d.sleep(limit) {
                        backoff = Backoff::default();
                    }
                }
            })?;
        Ok(())
    }

    /// Reads the dirty log and hands the pages read since the last call,
    /// ascending, to the control socket.
    pub fn take_control_pages(&self) -> Result<Vec<u64>, String> {
        self.poll_inner()?;
        let mut p = lock(&self.poll);
        Ok(std::mem::take(&mut p.control_pages))
    }

    /// One round: dirty log, compare, notify; returns whether anything
    /// changed.
    pub fn poll(&self) -> bool {
        self.poll_inner().unwrap_or_else(|e| {
            tracing::warn!("vnc: cannot read the VRAM dirty log: {e}");
            false
        })
    }

    fn poll_inner(&self) -> Result<bool, String> {
        let (devices, generation) = {
            let s = lock(&self.source);
            (s.devices.clone(), s.generation)
        };
        let Some(devices) = devices else {
            return Ok(false);
        };
        let mut p = lock(&self.poll);
        let leds = {
            let k = lock(&devices.i8042).keyboard_leds();
            u8::from(k.scroll_lock) | u8::from(k.num_lock) << 1 | u8::from(k.caps_lock) << 2
        };
        let bochs = lock(&devices.bochs);
        let mode = bochs.mode();
        let pages = bochs
            .take_dirty_pages()
            .map_err(|e| format!("KVM_GET_DIRTY_LOG: {e}"))?;
        // Pages for `dirty-pages`: a sorted set, bounded by VRAM's size.
        if !pages.is_empty() {
            p.control_pages.extend_from_slice(&pages);
            p.control_pages.sort_unstable();
            p.control_pages.dedup();
        }
        let leds_changed = leds != p.leds;
        p.leds = leds;
        let clients = self.live_clients();
        if generation != p.generation || mode != p.mode {
            p.generation = generation;
            p.mode = mode;
            let (w, h, pixels) = match mode {
                Some(m) => read_screen(&bochs, &m),
                None => (0, 0, Vec::new()),
            };
            drop(bochs);
            {
                let mut f = self.frame.write().unwrap_or_else(|e| e.into_inner());
                if (f.width, f.height) != (w, h) {
                    f.size_serial += 1;
                }
                f.width = w;
                f.height = h;
                f.pixels = pixels;
            }
            for c in &clients {
                let mut d = lock(&c.dirty);
                d.full = true;
                d.leds_changed |= leds_changed;
                c.changed.notify_all();
            }
            return Ok(true);
        }
        let Some(mode) = mode else {
            return Ok(leds_changed);
        };
        // Rows the dirty pages touch, as merged ranges.
        let mut rows: Vec<(u32, u32)> = Vec::new();
        let start = mode.offset;
        let end = mode.offset + mode.size();
        for &page in &pages {
            let (a, b) = (page * PAGE, (page + 1) * PAGE);
            if b <= start || a >= end {
                continue;
            }
            let y0 = ((a.max(start) - start) / u64::from(mode.stride)) as u32;
            let y1 = ((b.min(end) - 1 - start) / u64::from(mode.stride)) as u32 + 1;
            match rows.last_mut() {
                Some(last) if y0 <= last.1 => last.1 = last.1.max(y1),
                _ => rows.push((y0, y1)),
            }
        }
        if rows.is_empty() {
            if leds_changed {
                for c in &clients {
                    lock(&c.dirty).leds_changed = true;
                    c.changed.notify_all();
                }
            }
            return Ok(leds_changed);
        }
        let width = mode.width as usize;
        let tiles_w = width.div_ceil(TILE);
        let tiles_h = (mode.height as usize).div_ceil(TILE);
        let mut changed = vec![TileBox::default(); tiles_w * tiles_h];
        let mut any = false;
        {
            let mut f = self.frame.write().unwrap_or_else(|e| e.into_inner());
            if f.pixels.len() < width * mode.height as usize {
                // The shadow could not be read for this mode: nothing to compare.
                return Ok(false);
            }
            let mut row = std::mem::take(&mut p.row);
            for &(y0, y1) in &rows {
                let len = (y1 - y0) as usize * mode.stride as usize;
                let Some(bytes) =
                    bochs.read_vram(mode.offset + u64::from(y0) * u64::from(mode.stride), len)
                else {
                    continue;
                };
                for (i, line) in bytes.chunks_exact(mode.stride as usize).enumerate() {
                    let y = y0 as usize + i;
                    convert_row(line, &mode, &mut row);
                    if row.len() < width || y >= mode.height as usize {
                        continue;
                    }
                    let shadow = &mut f.pixels[y * width..(y + 1) * width];
                    let boxes = &mut changed[(y / TILE) * tiles_w..(y / TILE + 1) * tiles_w];
                    any |= update_row(shadow, &row[..width], y % TILE, boxes);
                }
            }
            p.row = row;
        }
        drop(bochs);
        if any || leds_changed {
            for c in &clients {
                let mut d = lock(&c.dirty);
                if any {
                    // A map of another size predates this mode: a mode
                    // change set `full` for that client already.
                    if d.tiles.len() != changed.len() || d.tiles_w != tiles_w {
                        d.tiles = vec![TileBox::default(); changed.len()];
                        d.tiles_w = tiles_w;
                    }
                    for (t, &ch) in d.tiles.iter_mut().zip(&changed) {
                        t.add(ch);
                    }
                }
                d.leds_changed |= leds_changed;
                c.changed.notify_all();
            }
        }
        Ok(any || leds_changed)
    }
}

/// Copies `new` over `old` (one row of the shadow), tile by tile, and adds
/// the pixels that differed to the boxes of the tiles of this row (`ty` is
/// the row inside them); returns whether any did.
fn update_row(old: &mut [u32], new: &[u32], ty: usize, boxes: &mut [TileBox]) -> bool {
    let mut any = false;
    for ((old, new), b) in old.chunks_mut(TILE).zip(new.chunks(TILE)).zip(boxes) {
        if old == new {
            continue;
        }
        let differs = |(a, b): (&u32, &u32)| a != b;
        let first = old.iter().zip(new).position(differs).unwrap_or(0);
        let last = old.iter().zip(new).rposition(differs).unwrap_or(0);
        old.copy_from_slice(new);
        b.add(TileBox {
            x0: first as u8,
            y0: ty as u8,
            x1: last as u8 + 1,
            y1: ty as u8 + 1,
        });
        any = true;
    }
    any
}

/// One line of VRAM in `mode` as `0x00RRGGBB` pixels.
fn convert_row(line: &[u8], mode: &Mode, out: &mut Vec<u32>) {
    out.clear();
    let width = mode.width as usize;
    if mode.bpp == 16 {
        out.extend(line.chunks_exact(2).take(width).map(|p| {
            let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
            let (r, g, b) = ((v >> 11) & 31, (v >> 5) & 63, v & 31);
            (r * 255 / 31) << 16 | (g * 255 / 63) << 8 | (b * 255 / 31)
        }));
    } else {
        out.extend(
            line.chunks_exact(4)
                .take(width)
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], 0])),
        );
    }
}

fn read_screen(bochs: &BochsDisplay, mode: &Mode) -> (u16, u16, Vec<u32>) {
    let (Ok(w), Ok(h)) = (u16::try_from(mode.width), u16::try_from(mode.height)) else {
        return (0, 0, Vec::new());
    };
    let Some(bytes) = bochs.read_vram(mode.offset, mode.size() as usize) else {
        return (0, 0, Vec::new());
    };
    let mut pixels = Vec::with_capacity(usize::from(w) * usize::from(h));
    let mut row = Vec::new();
    for line in bytes.chunks_exact(mode.stride as usize) {
        convert_row(line, mode, &mut row);
        pixels.extend_from_slice(&row);
    }
    (w, h, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_on_a_still_screen_and_return_on_a_change() {
        let mut b = Backoff::default();
        let ms = |b: &mut Backoff, changed| b.after_poll(changed).as_millis();
        let still: Vec<u128> = (0..8).map(|_| ms(&mut b, false)).collect();
        assert_eq!(still, [20, 20, 60, 100, 140, 180, 200, 200]);
        assert_eq!(ms(&mut b, true), 20);
        assert_eq!(ms(&mut b, false), 20);
    }

    #[test]
    fn changed_pixels_grow_their_tiles_boxes() {
        // Two tiles and a narrow third; pixels change in the first on two
        // rows and in the third on one.
        let mut shadow = vec![7u32; 36];
        let mut boxes = [TileBox::default(); 3];
        let mut row = shadow.clone();
        row[3] = 1;
        row[5] = 1;
        assert!(update_row(&mut shadow, &row, 2, &mut boxes));
        assert_eq!(shadow, row);
        let mut row2 = row.clone();
        row2[1] = 2;
        row2[33] = 2;
        assert!(update_row(&mut shadow, &row2, 6, &mut boxes));
        assert!(!update_row(&mut shadow, &row2, 7, &mut boxes));
        assert_eq!(
            boxes,
            [
                TileBox {
                    x0: 1,
                    y0: 2,
                    x1: 6,
                    y1: 7
                },
                TileBox::default(),
                TileBox {
                    x0: 1,
                    y0: 6,
                    x1: 2,
                    y1: 7
                },
            ]
        );
    }

    #[test]
    fn rows_convert_from_32_and_16_bpp() {
        let mode32 = Mode {
            width: 2,
            height: 1,
            bpp: 32,
            stride: 8,
            offset: 0,
        };
        let mut out = Vec::new();
        convert_row(&[0x56, 0x34, 0x12, 0xff, 1, 2, 3, 4], &mode32, &mut out);
        assert_eq!(out, [0x0012_3456, 0x0003_0201]);
        let mode16 = Mode {
            bpp: 16,
            stride: 4,
            ..mode32
        };
        convert_row(&[0x00, 0xf8, 0x1f, 0x00], &mode16, &mut out);
        assert_eq!(out, [0x00ff_0000, 0x0000_00ff]);
    }
}
