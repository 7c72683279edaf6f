//! virtio-blk (virtio 1.2 §5.2) on a `vireo_storage::Image`.
//!
//! Requests: read, write, flush, get-id, discard and write-zeroes. Every
//! descriptor chain is validated before any I/O: the chain must end (no
//! loop, at most queue-size descriptors, every descriptor inside the
//! descriptor table), readable descriptors must precede writable ones, the
//! last descriptor must be writable and hold the status byte, every buffer
//! must lie in guest RAM, data lengths must be whole sectors and requests
//! must stay inside the disk. A bad request completes with
//! `VIRTIO_BLK_S_IOERR` (or `UNSUPP` for an unknown type) when the chain
//! has somewhere to put the status, and is returned with length 0
//! otherwise; it never panics the VMM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vireo_storage::{Image, IoKind, IoRequest};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::VirtioDevice;

/// The virtio device type of a block device.
pub const DEVICE_TYPE: u16 = 2;
/// Sector size of the protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes of the ID string returned by GET_ID.
pub const ID_BYTES: usize = 20;
/// Most segments in one discard or write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 16;
/// Largest discard or write-zeroes segment, in sectors (the whole u32 range
/// less one cluster's worth, as QEMU).
pub const MAX_DISCARD_SECTORS: u32 = 0x3fff_ffff;

/// Feature bits (virtio 1.2, 5.2.3).
pub mod features {
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// Several queues (`num_queues` is valid).
    pub const MQ: u64 = 1 << 12;
    /// Discard is supported.
    pub const DISCARD: u64 = 1 << 13;
    /// Write zeroes is supported.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Request types.
pub mod request {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Get the device ID string.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status values.
pub mod req_status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error (or a malformed request).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Requests a disk completed since the VMM started, across guest resets
/// (virsh
/// `domblkstat`): relaxed atomics the I/O thread adds to and the control
/// socket reads without taking the device lock.
#[derive(Debug, Default)]
pub struct BlockStats {
    /// Reads completed.
    pub rd_req: AtomicU64,
    /// Bytes read.
    pub rd_bytes: AtomicU64,
    /// Writes completed.
    pub wr_req: AtomicU64,
    /// Bytes written.
    pub wr_bytes: AtomicU64,
    /// Flushes completed.
    pub flush_req: AtomicU64,
    /// Requests that failed (an I/O error, a malformed or unsupported
    /// request).
    pub errs: AtomicU64,
}

impl BlockStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn count(&self, kind: IoKind, bytes: u64) {
        let (req, total) = match kind {
            IoKind::Read => (&self.rd_req, &self.rd_bytes),
            IoKind::Write => (&self.wr_req, &self.wr_bytes),
        };
        Self::add(req, 1);
        Self::add(total, bytes);
    }

    /// The counters as JSON (the control socket's `stats` command).
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "rd_req": get(&self.rd_req),
            "rd_bytes": get(&self.rd_bytes),
            "wr_req": get(&self.wr_req),
            "wr_bytes": get(&self.wr_bytes),
            "flush_req": get(&self.flush_req),
            "errs": get(&self.errs),
        })
    }
}

/// The virtio-blk device.
pub struct VirtioBlock {
    image: Image,
    stats: Arc<BlockStats>,
    id: [u8; ID_BYTES],
    queue_sizes: Vec<u16>,
    read_only: bool,
    features: u64,
    unmap: bool,
}

/// Why a request failed (logged; the guest sees a status byte).
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The chain or request breaks the protocol.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A request type or flag we do not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The image failed.
    #[error("{0}")]
    Io(String),
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Failure::Unsupported(_) => req_status::UNSUPP,
            _ => req_status::IOERR,
        }
    }
}

/// A validated read or write, waiting for its batch.
struct DataRequest<'m> {
    kind: IoKind,
    slices: Vec<VolatileSlice<'m, ()>>,
    offset: u64,
    status: GuestAddress,
    /// Bytes written to guest memory when it succeeds.
    to_guest: u32,
    /// Data bytes the request moves.
    len: u64,
}

/// A validated request: its descriptors split into readable and writable
/// byte ranges, with the status byte set apart.
struct Parsed {
    readable: Vec<(GuestAddress, u32)>,
    writable: Vec<(GuestAddress, u32)>,
    status: GuestAddress,
}

impl VirtioBlock {
    /// A block device on `image` with `queues` queues (1 or more). The ID
    /// string is the first 20 bytes of `id`.
    pub fn new(image: Image, id: &str, queues: u16) -> Self {
        let read_only = image.is_read_only();
        let mut bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        let queues = queues.max(1);
        let mut features = features::SEG_MAX
            | features::BLK_SIZE
            | features::FLUSH
            | features::DISCARD
            | features::WRITE_ZEROES;
        if read_only {
            features |= features::RO;
        }
        if queues > 1 {
            features |= features::MQ;
        }
        Self {
            image,
            stats: Arc::default(),
            id: bytes,
            queue_sizes: vec![QUEUE_SIZE; usize::from(queues)],
            read_only,
            features,
            unmap: true,
        }
    }

    /// Counts into `stats` (counters that outlive one boot) instead of its
    /// own.
    pub fn with_stats(mut self, stats: Arc<BlockStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Whether guest discards free space in the image (libvirt's
    /// `discard='unmap'`, the default here) or are accepted and ignored
    /// (`discard='ignore'`, as QEMU's `-drive discard=ignore`).
    pub fn with_unmap(mut self, unmap: bool) -> Self {
        self.unmap = unmap;
        self
    }

    /// The request counters, shared with whoever reads them.
    pub fn stats(&self) -> &Arc<BlockStats> {
        &self.stats
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    fn capacity_sectors(&self) -> u64 {
        self.image.size() / SECTOR_SIZE
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        // seg_max: a chain holds at most the queue size, less header and status.
        c[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[34..36].copy_from_slice(&(self.queue_sizes.len() as u16).to_le_bytes());
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
        c[44..48].copy_from_slice(&1u32.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
        c[56] = 1; // write_zeroes_may_unmap
        c
    }

    /// Splits a chain into readable and writable ranges and checks them.
    fn parse(
        descs: &[Descriptor],
        truncated: bool,
        mem: &GuestMemoryMmap,
    ) -> Result<Parsed, Failure> {
        if truncated {
            return Err(Failure::Malformed(
                "the descriptor chain does not end (a loop, too long, or outside the table)".into(),
            ));
        }
        let Some(last) = descs.last() else {
            return Err(Failure::Malformed("empty descriptor chain".into()));
        };
        if !last.is_write_only() || last.len() == 0 {
            return Err(Failure::Malformed(
                "the last descriptor cannot hold the status".into(),
            ));
        }
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        let mut total: u64 = 0;
        for d in descs {
            if d.len() == 0 {
                continue;
            }
            total += u64::from(d.len());
            if total > u64::from(u32::MAX) {
                return Err(Failure::Malformed("the chain is longer than 4 GiB".into()));
            }
            if !in_ram(mem, d.addr(), d.len()) {
                return Err(Failure::Malformed(format!(
                    "buffer of {} bytes at {:#x} is outside guest RAM",
                    d.len(),
                    d.addr().0
                )));
            }
            if d.is_write_only() {
                writable.push((d.addr(), d.len()));
            } else if writable.is_empty() {
                readable.push((d.addr(), d.len()));
            } else {
                return Err(Failure::Malformed(
                    "a readable descriptor follows a writable one".into(),
                ));
            }
        }
        // Set the status byte apart: the last byte of the last descriptor.
        let (addr, len) = writable.pop().unwrap_or((last.addr(), last.len()));
        let status = GuestAddress(addr.0 + u64::from(len) - 1);
        if len > 1 {
            writable.push((addr, len - 1));
        }
        Ok(Parsed {
            readable,
            writable,
            status,
        })
    }

    /// Processes one chain; returns (status address if known, bytes written
    /// to guest memory).
    fn handle(
        &mut self,
        descs: &[Descriptor],
        truncated: bool,
        mem: &GuestMemoryMmap,
    ) -> (Option<GuestAddress>, u32) {
        let parsed = match Self::parse(descs, truncated, mem) {
            Ok(p) => p,
            Err(e) => {
                crate::ratelimit::guest_warn!("virtio-blk: {e}");
                BlockStats::add(&self.stats.errs, 1);
                // Report the error if the chain ends properly in a writable
                // byte in RAM; a chain that does not end has no status byte
                // we could trust, and is returned with nothing written.
                let status = descs
                    .last()
                    .filter(|_| !truncated)
                    .filter(|d| d.is_write_only() && d.len() > 0)
                    .map(|d| GuestAddress(d.addr().0.wrapping_add(u64::from(d.len()) - 1)))
                    .filter(|&a| in_ram(mem, a, 1));
                if let Some(a) = status {
                    let _ = mem.write_obj(req_status::IOERR, a);
                    return (Some(a), 1);
                }
                return (None, 0);
            }
        };
        let (status, written) = match self.execute(&parsed, mem) {
            Ok(written) => (req_status::OK, written),
            Err(e) => {
                if !matches!(e, Failure::Unsupported(_)) {
                    crate::ratelimit::guest_warn!("virtio-blk: {e}");
                }
                BlockStats::add(&self.stats.errs, 1);
                (e.status(), 0)
            }
        };
        let _ = mem.write_obj(status, parsed.status);
        (Some(parsed.status), written.saturating_add(1))
    }

    /// Processes chains the driver made available together; returns the
    /// used length of each. Reads and writes run at the same time
    /// (`Image::run_batch`), as the requests a guest has in flight may;
    /// any other request (flush, discard, write-zeroes, get-id, or a bad
    /// one) runs alone after the reads and writes before it completed, so a
    /// flush covers every write the driver submitted ahead of it.
    fn handle_batch(
        &mut self,
        chains: &[(u16, Vec<Descriptor>)],
        mem: &GuestMemoryMmap,
    ) -> Vec<u32> {
        let mut lens = vec![0u32; chains.len()];
        let mut pending: Vec<(usize, DataRequest<'_>)> = Vec::new();
        for (i, (_, descs)) in chains.iter().enumerate() {
            let truncated = descs.last().is_some_and(|d| d.has_next());
            match self.data_request(descs, truncated, mem) {
                Some(request) => pending.push((i, request)),
                None => {
                    self.run_data(&mut pending, &mut lens, mem);
                    lens[i] = self.handle(descs, truncated, mem).1;
                }
            }
        }
        self.run_data(&mut pending, &mut lens, mem);
        lens
    }

    /// A valid read or write, ready to run in a batch; `None` for any other
    /// request, and for a bad one (which [`Self::handle`] then reports).
    fn data_request<'m>(
        &self,
        descs: &[Descriptor],
        truncated: bool,
        mem: &'m GuestMemoryMmap,
    ) -> Option<DataRequest<'m>> {
        let parsed = Self::parse(descs, truncated, mem).ok()?;
        let header = gather(mem, &parsed.readable, 0, 16)?;
        let ty = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let sector = u64::from_le_bytes(header[8..16].try_into().ok()?);
        let (kind, ranges) = match ty {
            request::IN => (IoKind::Read, parsed.writable.clone()),
            request::OUT if !self.read_only => (IoKind::Write, skip(&parsed.readable, 16)),
            _ => return None,
        };
        let len = byte_len(&ranges);
        let offset = self.data_offset(sector, len).ok()?;
        let slices = slices(mem, &ranges).ok()?;
        Some(DataRequest {
            kind,
            slices,
            offset,
            status: parsed.status,
            to_guest: if kind == IoKind::Read { len as u32 } else { 0 },
            len,
        })
    }

    /// Runs the pending reads and writes as one batch and completes them.
    fn run_data(
        &self,
        pending: &mut Vec<(usize, DataRequest<'_>)>,
        lens: &mut [u32],
        mem: &GuestMemoryMmap,
    ) {
        if pending.is_empty() {
            return;
        }
        let requests: Vec<IoRequest<'_, '_>> = pending
            .iter()
            .map(|(_, r)| IoRequest {
                kind: r.kind,
                slices: &r.slices,
                offset: r.offset,
            })
            .collect();
        let results = self.image.run_batch(&requests);
        for ((i, r), result) in pending.iter().zip(results) {
            let (status, written) = match result {
                Ok(()) => {
                    self.stats.count(r.kind, r.len);
                    (req_status::OK, r.to_guest)
                }
                Err(e) => {
                    crate::ratelimit::guest_warn!("virtio-blk: {e}");
                    BlockStats::add(&self.stats.errs, 1);
                    (req_status::IOERR, 0)
                }
            };
            let _ = mem.write_obj(status, r.status);
            lens[*i] = written.saturating_add(1);
        }
        pending.clear();
    }

    /// Runs a parsed request; returns the data bytes written to the guest.
    fn execute(&mut self, p: &Parsed, mem: &GuestMemoryMmap) -> Result<u32, Failure> {
        // The 16-byte header: type, reserved, sector.
        let header = gather(mem, &p.readable, 0, 16).ok_or_else(|| {
            Failure::Malformed("the request header is shorter than 16 bytes".into())
        })?;
        let ty = u32::from_le_bytes(header[0..4].try_into().unwrap_or([0; 4]));
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        match ty {
            request::IN => {
                let ranges = &p.writable;
                let len = byte_len(ranges);
                let offset = self.data_offset(sector, len)?;
                let slices = slices(mem, ranges)?;
                self.image
                    .read_volatile(&slices, offset)
                    .map_err(|e| Failure::Io(e.to_string()))?;
                self.stats.count(IoKind::Read, len);
                Ok(len as u32)
            }
            request::OUT => {
                if self.read_only {
                    return Err(Failure::Io("write to a read-only disk".into()));
                }
                let ranges = skip(&p.readable, 16);
                let len = byte_len(&ranges);
                let offset = self.data_offset(sector, len)?;
                let slices = slices(mem, &ranges)?;
                self.image
                    .write_volatile(&slices, offset)
                    .map_err(|e| Failure::Io(e.to_string()))?;
                self.stats.count(IoKind::Write, len);
                Ok(0)
            }
            request::FLUSH => {
                self.image.flush().map_err(|e| Failure::Io(e.to_string()))?;
                BlockStats::add(&self.stats.flush_req, 1);
                Ok(0)
            }
            request::GET_ID => {
                let mut left = ID_BYTES;
                let mut done = 0u32;
                for &(addr, len) in &p.writable {
                    let n = (len as usize).min(left);
                    let start = ID_BYTES - left;
                    mem.write_slice(&self.id[start..start + n], addr)
                        .map_err(|e| Failure::Malformed(e.to_string()))?;
                    left -= n;
                    done += n as u32;
                    if left == 0 {
                        break;
                    }
                }
                Ok(done)
            }
            request::DISCARD | request::WRITE_ZEROES => {
                if self.read_only {
                    return Err(Failure::Io("discard on a read-only disk".into()));
                }
                let payload = skip(&p.readable, 16);
                let len = byte_len(&payload);
                if len == 0 || !len.is_multiple_of(16) || len / 16 > u64::from(MAX_DISCARD_SEGMENTS)
                {
                    return Err(Failure::Malformed(format!(
                        "discard payload of {len} bytes is not 1 to {MAX_DISCARD_SEGMENTS} segments"
                    )));
                }
                for i in 0..len / 16 {
                    let seg = gather(mem, &payload, i * 16, 16)
                        .ok_or_else(|| Failure::Malformed("short discard segment".into()))?;
                    let start = u64::from_le_bytes(seg[0..8].try_into().unwrap_or([0; 8]));
                    let count = u32::from_le_bytes(seg[8..12].try_into().unwrap_or([0; 4]));
                    let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or([0; 4]));
                    if count > MAX_DISCARD_SECTORS {
                        return Err(Failure::Malformed(format!(
                            "{count} sectors in one segment"
                        )));
                    }
                    let bytes = u64::from(count) * SECTOR_SIZE;
                    let offset = self.data_offset(start, bytes)?;
                    let result = if ty == request::DISCARD {
                        if flags != 0 {
                            return Err(Failure::Unsupported(ty));
                        }
                        if self.unmap {
                            self.image.discard(offset, bytes)
                        } else {
                            Ok(())
                        }
                    } else {
                        if flags & !1 != 0 {
                            return Err(Failure::Unsupported(ty));
                        }
                        self.image.write_zeroes(offset, bytes)
                    };
                    result.map_err(|e| Failure::Io(e.to_string()))?;
                }
                Ok(0)
            }
            other => Err(Failure::Unsupported(other)),
        }
    }

    /// The byte offset of `sector`, checked: whole sectors, inside the disk.
    fn data_offset(&self, sector: u64, len: u64) -> Result<u64, Failure> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(Failure::Malformed(format!(
                "data length {len} is not a whole number of sectors"
            )));
        }
        let offset = sector
            .checked_mul(SECTOR_SIZE)
            .filter(|o| {
                o.checked_add(len)
                    .is_some_and(|end| end <= self.image.size())
            })
            .ok_or_else(|| {
                Failure::Io(format!(
                    "{len} bytes at sector {sector} are beyond the end of the disk"
                ))
            })?;
        Ok(offset)
    }
}

/// Whether `[addr, addr + len)` is guest RAM.
fn in_ram(mem: &GuestMemoryMmap, addr: GuestAddress, len: u32) -> bool {
    GuestMemoryBackend::get_slices(mem, addr, len as usize).all(|s| s.is_ok())
        && addr.0.checked_add(u64::from(len)).is_some()
}

fn byte_len(ranges: &[(GuestAddress, u32)]) -> u64 {
    ranges.iter().map(|&(_, l)| u64::from(l)).sum()
}

/// The ranges less their first `n` bytes.
fn skip(ranges: &[(GuestAddress, u32)], mut n: u64) -> Vec<(GuestAddress, u32)> {
    let mut out = Vec::new();
    for &(addr, len) in ranges {
        let len64 = u64::from(len);
        if n >= len64 {
            n -= len64;
            continue;
        }
        out.push((GuestAddress(addr.0 + n), (len64 - n) as u32));
        n = 0;
    }
    out
}

/// Reads `len` bytes starting `start` bytes into `ranges`.
fn gather(
    mem: &GuestMemoryMmap,
    ranges: &[(GuestAddress, u32)],
    start: u64,
    len: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    for (addr, l) in skip(ranges, start) {
        let n = (l as usize).min(len - out.len());
        let mut buf = vec![0u8; n];
        mem.read_slice(&mut buf, addr).ok()?;
        out.extend_from_slice(&buf);
        if out.len() == len {
            return Some(out);
        }
    }
    None
}

/// The guest memory slices of `ranges`.
fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    ranges: &[(GuestAddress, u32)],
) -> Result<Vec<VolatileSlice<'m, ()>>, Failure> {
    let mut out = Vec::new();
    for &(addr, len) in ranges {
        for s in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
            out.push(s.map_err(|e| Failure::Malformed(e.to_string()))?);
        }
    }
    Ok(out)
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| c.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Only `writeback` is writable in the spec, and only with
        // VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        // Each pass takes the chains available now (at most a queue's
        // worth) and runs them as one batch; the driver may add more
        // meanwhile, so bound the work per notification.
        let mut budget = usize::from(queue.size()) * 4;
        while budget > 0 {
            let mut chains = Vec::new();
            while chains.len() < usize::from(queue.size()) && budget > 0 {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                budget -= 1;
                let head = chain.head_index();
                let descs: Vec<Descriptor> = chain.collect();
                chains.push((head, descs));
            }
            if chains.is_empty() {
                break;
            }
            let lens = self.handle_batch(&chains, mem);
            for ((head, _), len) in chains.iter().zip(lens) {
                if let Err(e) = queue.add_used(mem, *head, len) {
                    crate::ratelimit::guest_warn!("virtio-blk: cannot return a buffer: {e}");
                    return used;
                }
                used = true;
            }
        }
        used
    }

    fn activate(&mut self, _features: u64) {}

    fn reset(&mut self) {
        if let Err(e) = self.image.flush() {
            tracing::warn!("virtio-blk: flush on reset: {e}");
        }
    }
}

/// A disk the VMM attaches as virtio-blk (`--disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file.
    pub path: std::path::PathBuf,
    /// Its format; `None` probes the header.
    pub format: Option<vireo_storage::ImageFormat>,
    /// Attach read-only.
    pub read_only: bool,
    /// The host cache mode.
    pub cache: vireo_storage::CacheMode,
    /// Number of request queues (1 to [`MAX_QUEUES`]).
    pub queues: u16,
    /// Whether guest discards free space (`discard=unmap`, the default)
    /// or are ignored (`discard=ignore`).
    pub unmap: bool,
    /// The ID the guest reads (get-id, at most 20 bytes); `None` gives
    /// `vireo-disk-N`.
    pub serial: Option<String>,
}

/// Most request queues a disk offers.
pub const MAX_QUEUES: u16 = 16;

impl DiskConfig {
    /// Parses `path=FILE[,format=qcow2|raw][,readonly=on|off][,cache=none|writeback|writethrough][,queues=N][,discard=unmap|ignore][,serial=ID]`.
    /// A comma inside a value is written twice (`path=a,,b.img`), as QEMU
    /// escapes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut path = None;
        let mut format = None;
        let mut read_only = false;
        let mut cache = vireo_storage::CacheMode::default();
        let mut queues = 1;
        let mut unmap = true;
        let mut serial = None;
        for part in split_escaped(s) {
            let part = part.as_str();
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' in --disk is not KEY=VALUE"))?;
            match key {
                "path" if !value.is_empty() => path = Some(std::path::PathBuf::from(value)),
                "format" => {
                    format = Some(match value {
                        "qcow2" => vireo_storage::ImageFormat::Qcow2,
                        "raw" => vireo_storage::ImageFormat::Raw,
                        other => return Err(format!("disk format '{other}' is not qcow2 or raw")),
                    })
                }
                "readonly" => {
                    read_only = match value {
                        "on" | "yes" | "true" => true,
                        "off" | "no" | "false" => false,
                        other => return Err(format!("readonly={other}: expected on or off")),
                    }
                }
                "cache" => cache = value.parse().map_err(|e| format!("{e}"))?,
                "discard" => {
                    unmap = match value {
                        "unmap" | "on" => true,
                        "ignore" | "off" => false,
                        other => return Err(format!("discard={other}: expected unmap or ignore")),
                    }
                }
                "queues" => {
                    queues = value
                        .parse::<u16>()
                        .ok()
                        .filter(|q| (1..=MAX_QUEUES).contains(q))
                        .ok_or_else(|| format!("queues={value}: expected 1 to {MAX_QUEUES}"))?
                }
                "serial" => {
                    if value.len() > ID_BYTES {
                        return Err(format!(
                            "serial={value}: {} bytes, at most {ID_BYTES}",
                            value.len()
                        ));
                    }
                    serial = Some(value.to_owned());
                }
                other => return Err(format!("unknown --disk option '{other}'")),
            }
        }
        let path = path.ok_or("--disk needs path=FILE")?;
        Ok(Self {
            path,
            format,
            read_only,
            cache,
            queues,
            unmap,
            serial,
        })
    }

    /// Opens the image as configured.
    pub fn open(&self) -> Result<Image, vireo_storage::StorageError> {
        let mut options = vireo_storage::OpenOptions::new()
            .read_only(self.read_only)
            .cache(self.cache);
        options.format = self.format;
        Image::open(&self.path, &options)
    }
}

/// Splits `s` at single commas; `,,` stands for a comma.
fn split_escaped(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            current.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            current.push(',');
        } else {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod disk_config_tests {
    use super::*;

    #[test]
    fn disk_option_parses_every_key_and_rejects_unknown_ones() {
        let full =
            DiskConfig::parse("path=/a b.qcow2,format=qcow2,readonly=on,cache=none").unwrap();
        let plain = DiskConfig::parse("path=x.img").unwrap();

        assert_eq!(full.path, std::path::PathBuf::from("/a b.qcow2"));
        assert_eq!(full.format, Some(vireo_storage::ImageFormat::Qcow2));
        assert!(full.read_only);
        assert_eq!(full.cache, vireo_storage::CacheMode::None);
        assert_eq!(plain.format, None);
        assert!(!plain.read_only);
        assert_eq!(plain.cache, vireo_storage::CacheMode::Writeback);
        assert!(DiskConfig::parse("format=raw").is_err());
        assert!(DiskConfig::parse("path=x,format=vmdk").is_err());
        assert!(DiskConfig::parse("path=x,cache=sometimes").is_err());
        assert!(DiskConfig::parse("path=x,bogus=1").is_err());
        assert_eq!(plain.queues, 1);
        assert!(plain.unmap);
        assert!(!DiskConfig::parse("path=x,discard=ignore").unwrap().unmap);
        assert!(DiskConfig::parse("path=x,discard=maybe").is_err());
        assert_eq!(DiskConfig::parse("path=x,queues=4").unwrap().queues, 4);
        assert!(DiskConfig::parse("path=x,queues=0").is_err());
        assert!(DiskConfig::parse("path=x,queues=17").is_err());
        let escaped = DiskConfig::parse("path=/a,,b.img,serial=SN,,1").unwrap();
        assert_eq!(escaped.path, std::path::PathBuf::from("/a,b.img"));
        assert_eq!(escaped.serial.as_deref(), Some("SN,1"));
        assert_eq!(plain.serial, None);
        assert!(DiskConfig::parse("path=x,serial=123456789012345678901").is_err());
    }
}
