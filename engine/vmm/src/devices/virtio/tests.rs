//! virtio-pci and virtio-blk on in-memory guest memory: a hand-written
//! driver programs the transport through its BAR, builds descriptor chains
//! by hand (as Firecracker's virtio test helpers do) and checks the used
//! ring, the status bytes and the image.

use std::sync::Arc;

use vireo_storage::{Image, OpenOptions, Qcow2Options, create_qcow2, create_raw};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::block::{VirtioBlock, req_status, request};
use super::pci::{BAR_INDEX, ISR_OFFSET, NOTIFY_OFFSET, VirtioPci};
use super::{VIRTIO_F_VERSION_1, status};
use crate::devices::pci::PciDevice;
use crate::devices::testing::RecordingIrq;

/// Records MSI-X messages.
#[derive(Default)]
struct RecordingMsi {
    sent: std::sync::Mutex<Vec<(u64, u32)>>,
}

impl super::MsiSink for RecordingMsi {
    fn send(&self, address: u64, data: u32) {
        self.sent.lock().unwrap().push((address, data));
    }
}

const MEM_SIZE: usize = 4 << 20;
const BAR: u64 = 0xc000_0000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const QSIZE: u16 = 16;
const DISK: u64 = 1 << 20;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

struct Rig {
    dev: VirtioPci<VirtioBlock>,
    mem: GuestMemoryMmap,
    irq: Arc<RecordingIrq>,
    msi: Arc<RecordingMsi>,
    avail_idx: u16,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(read_only: bool) -> Self {
        Self::with_queues(read_only, 1)
    }

    fn with_queues(read_only: bool, queues: u16) -> Self {
        Self::on_image(read_only, queues, false)
    }

    fn on_image(read_only: bool, queues: u16, qcow2: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        if qcow2 {
            create_qcow2(
                &path,
                &Qcow2Options {
                    size: DISK,
                    cluster_size: 65536,
                    backing: None,
                },
            )
            .unwrap();
        } else {
            create_raw(&path, DISK).unwrap();
        }
        let image = Image::open(&path, &OpenOptions::new().read_only(read_only)).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let irq = Arc::new(RecordingIrq::default());
        let msi = Arc::new(RecordingMsi::default());
        let mut dev = VirtioPci::new(
            VirtioBlock::new(image, "vireo-disk-0", queues),
            mem.clone(),
            BAR,
            irq.clone(),
            16,
            Some(msi.clone()),
        );
        dev.enable_decoding();
        Self {
            dev,
            mem,
            irq,
            msi,
            avail_idx: 0,
            path,
            _dir: dir,
        }
    }

    fn w8(&mut self, off: u64, v: u8) {
        self.dev.bar_write(BAR_INDEX, off, &[v]);
    }
    fn w16(&mut self, off: u64, v: u16) {
        self.dev.bar_write(BAR_INDEX, off, &v.to_le_bytes());
    }
    fn w32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(BAR_INDEX, off, &v.to_le_bytes());
    }
    fn r8(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.dev.bar_read(BAR_INDEX, off, &mut b);
        b[0]
    }
    fn r16(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.bar_read(BAR_INDEX, off, &mut b);
        u16::from_le_bytes(b)
    }
    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar_read(BAR_INDEX, off, &mut b);
        u32::from_le_bytes(b)
    }

    fn features(&mut self) -> u64 {
        self.w32(0x00, 0);
        let lo = self.r32(0x04);
        self.w32(0x00, 1);
        let hi = self.r32(0x04);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// The driver's bring-up, as virtio 1.2 §3.1.1 orders it.
    fn setup(&mut self, features: u64) -> u8 {
        self.w8(0x14, 0);
        self.w8(0x14, status::ACKNOWLEDGE);
        self.w8(0x14, status::ACKNOWLEDGE | status::DRIVER);
        self.w32(0x08, 0);
        self.w32(0x0c, features as u32);
        self.w32(0x08, 1);
        self.w32(0x0c, (features >> 32) as u32);
        self.w8(
            0x14,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        let st = self.r8(0x14);
        if st & status::FEATURES_OK == 0 {
            return st;
        }
        self.w16(0x16, 0);
        self.w16(0x18, QSIZE);
        for (off, addr) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            self.w32(off, addr as u32);
            self.w32(off + 4, (addr >> 32) as u32);
        }
        self.w16(0x1c, 1);
        self.w8(
            0x14,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        self.r8(0x14)
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Makes chain `head` available and notifies; returns the used length.
    fn submit(&mut self, head: u16) -> u32 {
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.w16(NOTIFY_OFFSET, 0);
        let used_idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used_idx, self.avail_idx, "request was not completed");
        let elem = USED + 4 + 8 * u64::from((used_idx.wrapping_sub(1)) % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
        assert_eq!(id, u32::from(head));
        self.mem.read_obj(GuestAddress(elem + 4)).unwrap()
    }

    /// Makes all of `heads` available, notifies once; returns the used
    /// ring entries (head, length) added by that notification.
    fn submit_all(&mut self, heads: &[u16]) -> Vec<(u32, u32)> {
        let before: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        for &head in heads {
            let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
            self.mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
        }
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.w16(NOTIFY_OFFSET, 0);
        let after: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        (0..after.wrapping_sub(before))
            .map(|k| {
                let elem = USED + 4 + 8 * u64::from(before.wrapping_add(k) % QSIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
                (id, len)
            })
            .collect()
    }

    fn header(&self, at: u64, ty: u32, sector: u64) {
        self.mem.write_obj(ty, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status_at(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// A three-descriptor data request (header, data, status).
    fn data_request(&mut self, ty: u32, sector: u64, data_at: u64, len: u32) -> (u8, u32) {
        self.header(0x10000, ty, sector);
        self.mem.write_obj(0xffu8, GuestAddress(0x10100)).unwrap();
        let data_flags = if ty == request::IN || ty == request::GET_ID {
            WRITE
        } else {
            0
        };
        self.desc(0, 0x10000, 16, NEXT, 1);
        self.desc(1, data_at, len, data_flags | NEXT, 2);
        self.desc(2, 0x10100, 1, WRITE, 0);
        let used = self.submit(0);
        (self.status_at(0x10100), used)
    }

    fn ready(read_only: bool) -> Self {
        let mut rig = Self::new(read_only);
        let st = rig.setup(VIRTIO_F_VERSION_1);
        assert_ne!(st & status::DRIVER_OK, 0);
        rig
    }
}

#[test]
fn pci_identity_and_capability_list_are_virtio_modern() {
    let mut rig = Rig::new(false);

    let id = rig.dev.config_read(0);
    let status_reg = rig.dev.config_read(4) >> 16;
    let mut caps = Vec::new();
    let mut others = Vec::new();
    let mut at = (rig.dev.config_read(0x34) & 0xff) as usize;
    for _ in 0..16 {
        if at == 0 {
            break;
        }
        let head = rig.dev.config_read(at);
        if head & 0xff == 0x09 {
            caps.push(((head >> 24) as u8, rig.dev.config_read(at + 4) as u8));
        } else {
            others.push((head & 0xff, head >> 16));
        }
        at = ((head >> 8) & 0xff) as usize;
    }

    assert_eq!(id, 0x1042_1af4);
    assert_eq!(rig.dev.config_read(0x2c), 0x1100_1af4);
    assert_ne!(status_reg & 0x10, 0, "capability list bit");
    assert_eq!(rig.dev.config_read(0x3c) & 0xffff, 0x0110, "INTA#, GSI 16");
    // (cfg_type, bar): common, notify, ISR, device, PCI cfg.
    assert_eq!(caps, [(1, 4), (2, 4), (3, 4), (4, 4), (5, 0)]);
    // MSI-X with queues + 1 = 2 vectors (table size field N - 1).
    assert_eq!(others, [(0x11, 1)]);
}

#[test]
fn feature_negotiation_requires_version_1_and_offered_bits() {
    let mut rig = Rig::new(false);
    let offered = rig.features();

    let without_v1 = rig.setup(offered & !VIRTIO_F_VERSION_1);
    let unknown_bit = rig.setup(offered | (1 << 40));
    let good = rig.setup(VIRTIO_F_VERSION_1);

    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    assert_eq!(without_v1 & status::FEATURES_OK, 0);
    assert_eq!(unknown_bit & status::FEATURES_OK, 0);
    assert_ne!(good & status::DRIVER_OK, 0);
    // Capacity in sectors, blk_size 512.
    let capacity = u64::from(rig.r32(0x2000)) | (u64::from(rig.r32(0x2004)) << 32);
    assert_eq!(capacity, DISK / 512);
    assert_eq!(rig.r32(0x2000 + 20), 512);
}

#[test]
fn write_then_read_round_trips_through_the_image_and_interrupts() {
    let mut rig = Rig::ready(false);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    rig.mem.write_slice(&data, GuestAddress(0x20000)).unwrap();

    let (write_status, write_used) = rig.data_request(request::OUT, 8, 0x20000, 4096);
    let raised = rig.irq.level();
    let isr = rig.r8(ISR_OFFSET);
    let lowered = !rig.irq.level();
    let (read_status, read_used) = rig.data_request(request::IN, 8, 0x30000, 4096);
    let mut back = vec![0u8; 4096];
    rig.mem
        .read_slice(&mut back, GuestAddress(0x30000))
        .unwrap();

    assert_eq!(write_status, req_status::OK);
    assert_eq!(write_used, 1);
    assert!(raised && lowered);
    assert_eq!(isr, 1);
    assert_eq!(read_status, req_status::OK);
    assert_eq!(read_used, 4097);
    assert_eq!(back, data);
    let file = std::fs::read(&rig.path).unwrap();
    assert_eq!(&file[8 * 512..8 * 512 + 4096], &data[..]);
}

#[test]
fn flush_and_get_id_succeed() {
    let mut rig = Rig::ready(false);
    rig.header(0x10000, request::FLUSH, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x10100, 1, WRITE, 0);
    rig.submit(0);
    let flush = rig.status_at(0x10100);

    let (id_status, id_used) = rig.data_request(request::GET_ID, 0, 0x20000, 20);
    let mut id = [0u8; 20];
    rig.mem.read_slice(&mut id, GuestAddress(0x20000)).unwrap();

    assert_eq!(flush, req_status::OK);
    assert_eq!(id_status, req_status::OK);
    assert_eq!(id_used, 21);
    assert_eq!(&id[..12], b"vireo-disk-0");
}

#[test]
fn stats_count_requests_bytes_flushes_and_errors() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rig = Rig::ready(false);
    let stats = rig.dev.device().stats().clone();

    rig.data_request(request::OUT, 0, 0x20000, 4096);
    rig.data_request(request::OUT, 16, 0x20000, 1024);
    rig.data_request(request::IN, 0, 0x30000, 512);
    // Two requests in flight together go through the batched path.
    rig.header(0x10000, request::IN, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x30000, 2048, WRITE | NEXT, 2);
    rig.desc(2, 0x10100, 1, WRITE, 0);
    rig.header(0x11000, request::OUT, 32);
    rig.desc(3, 0x11000, 16, NEXT, 4);
    rig.desc(4, 0x20000, 1536, NEXT, 5);
    rig.desc(5, 0x11100, 1, WRITE, 0);
    rig.submit_all(&[0, 3]);
    rig.header(0x10000, request::FLUSH, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x10100, 1, WRITE, 0);
    rig.submit(0);
    let (past_end, _) = rig.data_request(request::IN, DISK / 512, 0x20000, 512);
    let (unknown, _) = rig.data_request(99, 0, 0x20000, 512);

    assert_eq!(past_end, req_status::IOERR);
    assert_eq!(unknown, req_status::UNSUPP);
    assert_eq!(stats.rd_req.load(Relaxed), 2);
    assert_eq!(stats.rd_bytes.load(Relaxed), 512 + 2048);
    assert_eq!(stats.wr_req.load(Relaxed), 3);
    assert_eq!(stats.wr_bytes.load(Relaxed), 4096 + 1024 + 1536);
    assert_eq!(stats.flush_req.load(Relaxed), 1);
    assert_eq!(stats.errs.load(Relaxed), 2);
    let json = stats.to_json();
    assert_eq!(json["wr_bytes"], 4096 + 1024 + 1536);
    assert_eq!(json["errs"], 2);
}

#[test]
fn write_zeroes_and_discard_clear_sectors() {
    let mut rig = Rig::ready(false);
    rig.mem
        .write_slice(&[0xaa; 8192], GuestAddress(0x20000))
        .unwrap();
    rig.data_request(request::OUT, 0, 0x20000, 8192);
    // One segment: sector 2, 4 sectors, flags 0.
    let segment = |rig: &Rig, sector: u64, count: u32| {
        rig.mem.write_obj(sector, GuestAddress(0x20000)).unwrap();
        rig.mem.write_obj(count, GuestAddress(0x20008)).unwrap();
        rig.mem.write_obj(0u32, GuestAddress(0x2000c)).unwrap();
    };

    segment(&rig, 2, 4);
    let (zero_status, _) = rig.data_request(request::WRITE_ZEROES, 0, 0x20000, 16);
    segment(&rig, 0, 1);
    let (discard_status, _) = rig.data_request(request::DISCARD, 0, 0x20000, 16);

    assert_eq!(zero_status, req_status::OK);
    assert_eq!(discard_status, req_status::OK);
    let file = std::fs::read(&rig.path).unwrap();
    assert!(file[1024..3072].iter().all(|&b| b == 0));
    assert!(file[3072..8192].iter().all(|&b| b == 0xaa));
}

#[test]
fn descriptor_loop_is_returned_unprocessed_without_hanging() {
    let mut rig = Rig::ready(false);
    rig.header(0x10000, request::IN, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x20000, 512, WRITE | NEXT, 2);
    rig.desc(2, 0x10100, 1, WRITE | NEXT, 1);

    rig.mem.write_obj(0xffu8, GuestAddress(0x10100)).unwrap();

    let used = rig.submit(0);

    // Returned unprocessed: nothing written, used length 0.
    assert_eq!(rig.status_at(0x10100), 0xff);
    assert_eq!(rig.status_at(0x20000 + 511), 0);
    assert_eq!(used, 0);
}

#[test]
fn next_index_outside_the_table_is_returned_unprocessed() {
    let mut rig = Rig::ready(false);
    rig.header(0x10000, request::IN, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x10100, 1, WRITE | NEXT, 999);

    let used = rig.submit(0);

    assert_eq!(used, 0);
    // The device still works afterwards.
    let (ok, _) = rig.data_request(request::IN, 0, 0x20000, 512);
    assert_eq!(ok, req_status::OK);
}

#[test]
fn buffer_outside_ram_gets_ioerr() {
    let mut rig = Rig::ready(false);

    let (status, used) = rig.data_request(request::IN, 0, MEM_SIZE as u64 - 256, 512);
    let (status_far, _) = rig.data_request(request::OUT, 0, u64::MAX - 100, 512);

    assert_eq!(status, req_status::IOERR);
    assert_eq!(used, 1);
    assert_eq!(status_far, req_status::IOERR);
}

#[test]
fn requests_past_the_end_or_not_whole_sectors_get_ioerr() {
    let mut rig = Rig::ready(false);

    let (past, _) = rig.data_request(request::IN, DISK / 512, 0x20000, 512);
    let (overflow, _) = rig.data_request(request::IN, u64::MAX / 256, 0x20000, 512);
    let (partial, _) = rig.data_request(request::OUT, 0, 0x20000, 100);

    assert_eq!(past, req_status::IOERR);
    assert_eq!(overflow, req_status::IOERR);
    assert_eq!(partial, req_status::IOERR);
}

#[test]
fn short_header_readable_after_writable_and_no_status_are_rejected() {
    let mut rig = Rig::ready(false);
    // Header of 8 bytes.
    rig.desc(0, 0x10000, 8, NEXT, 1);
    rig.desc(1, 0x10100, 1, WRITE, 0);
    rig.submit(0);
    let short = rig.status_at(0x10100);
    // Readable after writable.
    rig.header(0x10000, request::OUT, 0);
    rig.desc(0, 0x10000, 16, NEXT, 1);
    rig.desc(1, 0x10100, 1, WRITE | NEXT, 2);
    rig.desc(2, 0x20000, 512, NEXT, 3);
    rig.desc(3, 0x10200, 1, WRITE, 0);
    rig.mem.write_obj(0xffu8, GuestAddress(0x10200)).unwrap();
    rig.submit(0);
    let order = rig.status_at(0x10200);
    // No writable descriptor at all: nothing to report into.
    rig.desc(0, 0x10000, 16, 0, 0);
    let used = rig.submit(0);

    assert_eq!(short, req_status::IOERR);
    assert_eq!(order, req_status::IOERR);
    assert_eq!(used, 0);
}

#[test]
fn read_only_disk_refuses_writes_and_unknown_types_are_unsupported() {
    let mut rig = Rig::ready(true);

    let offered = rig.features();
    let (write, _) = rig.data_request(request::OUT, 0, 0x20000, 512);
    let (unknown, _) = rig.data_request(99, 0, 0x20000, 512);
    let (read, _) = rig.data_request(request::IN, 0, 0x20000, 512);

    assert_ne!(offered & super::block::features::RO, 0);
    assert_eq!(write, req_status::IOERR);
    assert_eq!(unknown, req_status::UNSUPP);
    assert_eq!(read, req_status::OK);
}

#[test]
fn queue_outside_ram_is_not_enabled_and_notify_before_driver_ok_is_ignored() {
    let mut rig = Rig::new(false);
    rig.w8(0x14, status::ACKNOWLEDGE | status::DRIVER);
    rig.w32(0x08, 1);
    rig.w32(0x0c, 1);
    rig.w8(
        0x14,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    rig.w16(0x16, 0);
    rig.w32(0x20, 0xffff_f000);
    rig.w32(0x24, 0x10);

    rig.w16(0x1c, 1);
    rig.w16(NOTIFY_OFFSET, 0);

    assert_eq!(rig.r16(0x1c), 0, "queue must stay disabled");
    let used_idx: u16 = rig.mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used_idx, 0);
}

#[test]
fn several_queues_are_offered_with_their_own_notify_offsets() {
    let mut rig = Rig::with_queues(false, 4);
    let offered = rig.features();
    let num_queues = rig.r16(0x12);
    let config_queues = rig.r16(0x2000 + 34);
    rig.setup(VIRTIO_F_VERSION_1 | super::block::features::MQ);
    rig.w16(0x16, 3);
    let notify_off = rig.r16(0x1e);
    let max = rig.r16(0x18);

    let (status, _) = rig.data_request(request::IN, 0, 0x20000, 512);

    assert_ne!(offered & super::block::features::MQ, 0);
    assert_eq!(num_queues, 4);
    assert_eq!(config_queues, 4);
    assert_eq!(notify_off, 3);
    assert_eq!(max, super::block::QUEUE_SIZE);
    assert_eq!(status, req_status::OK);
}

#[test]
fn pci_cfg_capability_reaches_the_bar_from_configuration_space() {
    let mut rig = Rig::new(false);
    // pci_cfg cap at 0x84: bar at +4, offset at +8, length at +12, data at +16.
    rig.dev.config_write(0x84 + 4, &[BAR_INDEX as u8]);
    rig.dev.config_write(0x84 + 8, &0x12u32.to_le_bytes());
    rig.dev.config_write(0x84 + 12, &2u32.to_le_bytes());

    let num_queues = rig.dev.config_read(0x84 + 16) & 0xffff;
    rig.dev.config_write(0x84 + 8, &0x14u32.to_le_bytes());
    rig.dev.config_write(0x84 + 12, &1u32.to_le_bytes());
    rig.dev.config_write(0x84 + 16, &[status::ACKNOWLEDGE]);

    assert_eq!(num_queues, 1);
    assert_eq!(rig.r8(0x14), status::ACKNOWLEDGE);
}

#[test]
fn msix_delivers_queue_interrupts_and_holds_them_while_masked() {
    let mut rig = Rig::ready(false);
    // Enable MSI-X (message control bit 15) and point queue 0 at vector 1.
    rig.dev.config_write(0x98 + 3, &[0x80]);
    rig.w16(0x16, 0);
    rig.w16(0x1a, 1);
    let vector = rig.r16(0x1a);
    rig.w16(0x1a, 7);
    let refused = rig.r16(0x1a);
    rig.w16(0x1a, 1);
    // Vector 1: address 0xfee00000, data 0x41, masked at first.
    let entry = super::pci::MSIX_TABLE_OFFSET + 16;
    rig.w32(entry, 0xfee0_0000);
    rig.w32(entry + 4, 0);
    rig.w32(entry + 8, 0x41);

    rig.data_request(request::IN, 0, 0x20000, 512);
    let while_masked = rig.msi.sent.lock().unwrap().len();
    let pending = rig.r32(super::pci::MSIX_PBA_OFFSET);
    rig.w32(entry + 12, 0);
    let after_unmask = rig.msi.sent.lock().unwrap().clone();
    rig.data_request(request::IN, 0, 0x20000, 512);
    let after_second = rig.msi.sent.lock().unwrap().len();

    assert_eq!(vector, 1);
    assert_eq!(refused, 0xffff, "vector beyond the table reads NO_VECTOR");
    assert_eq!(while_masked, 0);
    assert_eq!(pending, 1 << 1);
    assert_eq!(after_unmask, [(0xfee0_0000, 0x41)]);
    assert_eq!(after_second, 2);
    assert!(!rig.irq.level(), "INTx stays low with MSI-X on");
    assert_eq!(rig.r32(super::pci::MSIX_PBA_OFFSET), 0);
}

#[test]
fn discard_ignore_accepts_discards_and_keeps_the_data() {
    let mut rig = Rig::ready(false);
    let dev = std::mem::replace(&mut rig.dev, {
        let image = Image::open(&rig.path, &OpenOptions::new()).unwrap();
        VirtioPci::new(
            VirtioBlock::new(image, "x", 1).with_unmap(false),
            rig.mem.clone(),
            BAR,
            rig.irq.clone(),
            16,
            None,
        )
    });
    drop(dev);
    rig.dev.enable_decoding();
    rig.avail_idx = 0;
    rig.setup(VIRTIO_F_VERSION_1);
    rig.mem
        .write_slice(&[0xbb; 1024], GuestAddress(0x20000))
        .unwrap();
    rig.data_request(request::OUT, 0, 0x20000, 1024);
    rig.mem.write_obj(0u64, GuestAddress(0x20000)).unwrap();
    rig.mem.write_obj(2u32, GuestAddress(0x20008)).unwrap();
    rig.mem.write_obj(0u32, GuestAddress(0x2000c)).unwrap();

    let (status, _) = rig.data_request(request::DISCARD, 0, 0x20000, 16);

    assert_eq!(status, req_status::OK);
    let file = std::fs::read(&rig.path).unwrap();
    assert!(file[..1024].iter().all(|&b| b == 0xbb));
}

/// A small deterministic generator for the random-input test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_descriptor_tables_and_register_writes_never_panic_or_hang() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let mut rig = Rig::ready(round % 7 == 0);
        // Garbage descriptors: addresses near RAM's end, beyond it, or
        // wild; lengths from 0 to huge; random flags and next indices.
        for i in 0..QSIZE {
            let addr = match rng.next() % 4 {
                0 => rng.next() % MEM_SIZE as u64,
                1 => MEM_SIZE as u64 - rng.next() % 4096,
                2 => rng.next(),
                _ => 0x10000 + (rng.next() % 64) * 16,
            };
            let len = match rng.next() % 3 {
                0 => (rng.next() % 4096) as u32,
                1 => (rng.next() % 64) as u32 * 512 + 1,
                _ => rng.next() as u32,
            };
            rig.desc(
                i,
                addr,
                len,
                (rng.next() % 8) as u16,
                (rng.next() % 20) as u16,
            );
        }
        // Plausible headers in the first descriptors' buffers.
        for h in 0..4u64 {
            let ty = [0u32, 1, 4, 8, 11, 13, 99][(rng.next() % 7) as usize];
            rig.header(0x10000 + h * 16, ty, rng.next() % 4096);
        }
        // Heads, including out-of-range ones, several per notify.
        for _ in 0..4 {
            let head = (rng.next() % 24) as u16;
            let slot = AVAIL + 4 + 2 * u64::from(rig.avail_idx % QSIZE);
            rig.mem.write_obj(head, GuestAddress(slot)).unwrap();
            rig.avail_idx = rig.avail_idx.wrapping_add(1);
        }
        rig.mem
            .write_obj(rig.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        rig.w16(NOTIFY_OFFSET, 0);
        // Random register traffic, including past the structures.
        for _ in 0..16 {
            let off = rng.next() % super::pci::BAR_SIZE;
            match rng.next() % 3 {
                0 => rig.w8(off, rng.next() as u8),
                1 => rig.w16(off, rng.next() as u16),
                _ => {
                    rig.r32(off);
                }
            }
        }
        rig.w16(NOTIFY_OFFSET, 0);
    }
}

#[test]
fn moving_the_bar_or_turning_decoding_off_calls_the_hook() {
    let mut rig = Rig::new(false);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    rig.dev
        .set_bar_moved(Box::new(move |addr| record.lock().unwrap().push(addr)));
    let bar4 = 0x10 + 4 * BAR_INDEX;

    rig.dev.config_write(bar4, &0xd000_0000u32.to_le_bytes());
    rig.dev.config_write(0x04, &0u16.to_le_bytes());
    rig.dev.config_write(0x3c, &[5]);

    assert_eq!(*seen.lock().unwrap(), [Some(0xd000_0000), None]);
    assert_eq!(rig.dev.bar_address(), None);
}

/// Eight requests in flight at once (two descriptors each: header and data
/// in one buffer), as a driver at queue depth 8 submits them: writes with a
/// bad one and a flush among them, then reads of the same sectors. The
/// reads and writes of one notification run as a batch on the image's I/O
/// threads; every request completes with its own status and length, the
/// data lands where each request said, and the qcow2 passes `qemu-img
/// check`.
fn requests_in_flight_together_complete_each_with_its_own_status(qcow2: bool) {
    let mut rig = Rig::on_image(false, 1, qcow2);
    assert_ne!(rig.setup(VIRTIO_F_VERSION_1) & status::DRIVER_OK, 0);
    // Request k: header at 0x100000 + k * 0x2000, its 4 KiB of data right
    // after the header, status in its own descriptor at 0x200000 + k.
    let base = |k: u16| 0x100000 + u64::from(k) * 0x2000;
    let status_at = |k: u16| 0x200000 + u64::from(k);
    let pattern = |k: u16| -> Vec<u8> {
        (0..4096u32)
            .map(|i| (i as u8) ^ (k as u8).wrapping_mul(37))
            .collect()
    };
    // Sectors far apart, so that a qcow2 allocates a cluster for each.
    let sector = |k: u16| u64::from(k) * 200 + 8;
    for k in 0..8u16 {
        let (ty, len) = match k {
            5 => (request::FLUSH, 16),
            _ => (request::OUT, 16 + 4096),
        };
        let at = base(k);
        // Request 3 runs past the end of the disk.
        let s = if k == 3 { DISK / 512 - 2 } else { sector(k) };
        rig.header(at, ty, s);
        if ty == request::OUT {
            rig.mem
                .write_slice(&pattern(k), GuestAddress(at + 16))
                .unwrap();
        }
        rig.mem
            .write_obj(0xffu8, GuestAddress(status_at(k)))
            .unwrap();
        rig.desc(2 * k, at, len, NEXT, 2 * k + 1);
        rig.desc(2 * k + 1, status_at(k), 1, WRITE, 0);
    }
    let heads: Vec<u16> = (0..8).map(|k| 2 * k).collect();
    let mut writes = rig.submit_all(&heads);
    let statuses: Vec<u8> = (0..8).map(|k| rig.status_at(status_at(k))).collect();

    // Reads of the same sectors: header descriptor, then data and status
    // in one writable buffer.
    for k in 0..8u16 {
        let at = base(k);
        rig.header(at, request::IN, sector(k));
        rig.mem
            .write_slice(&[0xee; 4097], GuestAddress(at + 16))
            .unwrap();
        rig.desc(2 * k, at, 16, NEXT, 2 * k + 1);
        rig.desc(2 * k + 1, at + 16, 4097, WRITE, 0);
    }
    let mut reads = rig.submit_all(&heads);

    writes.sort_unstable();
    reads.sort_unstable();
    let expected_writes: Vec<(u32, u32)> = (0..8).map(|k| (2 * k, 1)).collect();
    let expected_reads: Vec<(u32, u32)> = (0..8).map(|k| (2 * k, 4097)).collect();
    assert_eq!(
        writes, expected_writes,
        "every write and the flush completed, status only"
    );
    assert_eq!(
        reads, expected_reads,
        "every read completed with data and status"
    );
    for k in 0..8u16 {
        let want = if k == 3 {
            req_status::IOERR
        } else {
            req_status::OK
        };
        assert_eq!(
            statuses[usize::from(k)],
            want,
            "status of write request {k}"
        );
        let mut back = vec![0u8; 4097];
        rig.mem
            .read_slice(&mut back, GuestAddress(base(k) + 16))
            .unwrap();
        assert_eq!(back[4096], req_status::OK, "status of read {k}");
        if k == 3 || k == 5 {
            assert!(
                back[..4096].iter().all(|&b| b == 0),
                "sector of request {k} was never written"
            );
        } else {
            assert!(
                back[..4096] == pattern(k)[..],
                "data of request {k} read back"
            );
        }
    }
    drop(rig.dev);
    if !qcow2 {
        return;
    }
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&rig.path)
        .output()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(
        out.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn requests_in_flight_together_on_raw_complete_each_with_its_own_status() {
    requests_in_flight_together_complete_each_with_its_own_status(false);
}

#[test]
fn requests_in_flight_together_on_qcow2_complete_each_with_its_own_status() {
    requests_in_flight_together_complete_each_with_its_own_status(true);
}
