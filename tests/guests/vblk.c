/*
 * vblk: drives a virtio-blk PCI device (1af4:1042) with its own minimal
 * virtio 1.x driver (lib/virtio.h): negotiates VIRTIO_F_VERSION_1, sets up
 * queue 0, then
 *   - writes 4 sectors at sector S (S = sector=, default 2), sector k
 *     filled with the byte 0xa0 + k,
 *   - writes 1 sector of 0x5a at sector 130 (the second 64 KiB cluster),
 *   - flushes,
 *   - reads the 4 sectors back and compares,
 *   - asks for the ID string,
 *   - reads one sector past the end (expects IOERR) and sends an unknown
 *     request type (expects UNSUPP).
 *
 * COM1 report (key=value lines):
 *   guest=vblk
 *   virtio_blk=found|missing  device_id=0x1042  revision=  subsystem=
 *   irq_pin=  irq_line=  caps=<cfg_types in list order, hex nibbles>
 *   msix_vectors=<MSI-X table size, 0 without MSI-X>
 *   bars=preset|assigned  features_lo=0x..  features_hi=0x..
 *   features_ok=1|0  capacity=<sectors>  blk_size=  num_queues=
 *   queue_max=  write_status=  write_used=  write2_status=  flush_status=
 *   read_status=  read_used=  read_match=1|0  id=<string>  id_status=
 *   oob_status=  unsupp_status=  isr=
 *   done
 * On failure `error=<why>` then `done` and exit status 1.
 *
 * Command line: sector=S (default 2); loop: after set-up, write 4 sectors
 * at scattered places over and over (flushing every 16 writes), printing
 * `looping` after the first 8, for crash tests that kill the VMM; ends
 * with `done` after 100000 writes. hold: after the report, print `done`
 * and halt with the VM still running (for reading its disk statistics).
 * oob=N: after set-up, read N sectors past the end (each a request the
 * VMM refuses and logs), print `oob_loop=N` and `oob_errors=` (how many
 * got IOERR), then `done` (for the VMM's log rate limit).
 */
#include "lib/bootinfo.h"
#include "lib/virtio.h"

#define VIRTIO_F_VERSION_1 (1ul << 32)
#define VBLK_T_IN 0
#define VBLK_T_OUT 1
#define VBLK_T_FLUSH 4
#define VBLK_T_GET_ID 8

struct blk_req_hdr {
    u32 type;
    u32 reserved;
    u64 sector;
};

static struct virtq vq __attribute__((aligned(4096)));
static struct blk_req_hdr hdr __attribute__((aligned(16)));
static u8 status_byte __attribute__((aligned(16)));
static u8 wbuf[4 * 512] __attribute__((aligned(4096)));
static u8 rbuf[4 * 512] __attribute__((aligned(4096)));
static u8 idbuf[20] __attribute__((aligned(16)));

static __attribute__((noreturn)) void fail(const char *why)
{
    put_str("error", why);
    finish(1);
}

/* One request: header, optional data (device-writable if `in`), status. */
static long request(struct virtio_dev *v, u32 type, u64 sector, void *data, u32 len, int in,
                    u8 *status)
{
    hdr.type = type;
    hdr.reserved = 0;
    hdr.sector = sector;
    status_byte = 0xff;
    vq.desc[0].addr = (u64)&hdr;
    vq.desc[0].len = sizeof(hdr);
    vq.desc[0].flags = VRING_DESC_F_NEXT;
    u16 s = 1;
    if (len) {
        vq.desc[1].addr = (u64)data;
        vq.desc[1].len = len;
        vq.desc[1].flags = (u16)(VRING_DESC_F_NEXT | (in ? VRING_DESC_F_WRITE : 0));
        vq.desc[0].next = 1;
        vq.desc[1].next = 2;
        s = 2;
    } else {
        vq.desc[0].next = 1;
    }
    vq.desc[s].addr = (u64)&status_byte;
    vq.desc[s].len = 1;
    vq.desc[s].flags = VRING_DESC_F_WRITE;
    vq.desc[s].next = 0;
    long used = virtio_submit_wait(v, 0, &vq, 0, 20);
    *status = *(volatile u8 *)&status_byte;
    return used;
}

void guest_main(u32 kind, u64 info)
{
    guest_start("vblk");
    const char *cmdline = boot_cmdline(kind, info);
    u64 sector = cmdline_number(cmdline, "sector", 2);

    struct virtio_dev v = {0};
    if (!pci_find(VIRTIO_VENDOR, 0x1042, &v.df)) {
        put_str("virtio_blk", "missing");
        finish(1);
    }
    put_str("virtio_blk", "found");
    put_hex("device_id", pci_read32(v.df, 0) >> 16);
    put_dec("revision", pci_read32(v.df, 0x08) & 0xff);
    put_hex("subsystem", pci_read32(v.df, 0x2c));
    u32 irq = pci_read32(v.df, 0x3c);
    put_dec("irq_pin", (irq >> 8) & 0xff);
    put_dec("irq_line", irq & 0xff);
    if (!virtio_find_caps(&v))
        fail("capabilities");
    put_hex("caps", v.cap_order);
    put_dec("msix_vectors", v.msix_vectors);
    put_str("bars", v.bar_assigned ? "assigned" : "preset");

    u64 features = virtio_begin(&v);
    put_hex("features_lo", features & 0xffffffffu);
    put_hex("features_hi", features >> 32);
    if (!(features & VIRTIO_F_VERSION_1))
        fail("no VIRTIO_F_VERSION_1");
    u8 st = virtio_set_features(&v, VIRTIO_F_VERSION_1);
    put_dec("features_ok", (st & VIRTIO_STATUS_FEATURES_OK) ? 1 : 0);
    if (!(st & VIRTIO_STATUS_FEATURES_OK))
        fail("features refused");

    u64 capacity = (u64)mmio_read32(v.device) | (u64)mmio_read32(v.device + 4) << 32;
    put_dec("capacity", capacity);
    put_dec("blk_size", mmio_read32(v.device + 20));
    put_dec("num_queues", vc_read16(&v, VCOMMON_NUMQ));

    u16 max = virtio_setup_queue(&v, 0, &vq);
    put_dec("queue_max", max);
    if (max < VQ_SIZE)
        fail("queue too small");
    virtio_driver_ok(&v);

    u8 status;
    u64 oob = cmdline_number(cmdline, "oob", 0);
    if (oob) {
        u64 errors = 0;
        for (u64 i = 0; i < oob; i++) {
            request(&v, VBLK_T_IN, capacity + i, rbuf, 512, 1, &status);
            if (status == 1)
                errors++;
        }
        put_dec("oob_loop", oob);
        put_dec("oob_errors", errors);
        finish(0);
    }
    if (cmdline_has(cmdline, "loop")) {
        for (u64 i = 0; i < 100000; i++) {
            fill32(wbuf, 0x01010101u * (u32)(i & 0xff), sizeof(wbuf) / 4);
            request(&v, VBLK_T_OUT, (i * 2053) % (capacity - 4), wbuf, sizeof(wbuf), 0, &status);
            if (status != 0)
                fail("write in loop");
            if (i % 16 == 15)
                request(&v, VBLK_T_FLUSH, 0, 0, 0, 0, &status);
            if (i == 8)
                put_line("looping");
        }
        finish(0);
    }

    for (u32 k = 0; k < 4; k++)
        fill32(wbuf + 512 * k, 0x01010101u * (0xa0 + k), 128);
    long used = request(&v, VBLK_T_OUT, sector, wbuf, sizeof(wbuf), 0, &status);
    put_dec("write_status", status);
    put_dec("write_used", (u64)used);
    put_dec("isr", mmio_read8(v.isr));

    fill32(wbuf, 0x5a5a5a5au, 128);
    request(&v, VBLK_T_OUT, 130, wbuf, 512, 0, &status);
    put_dec("write2_status", status);

    request(&v, VBLK_T_FLUSH, 0, 0, 0, 0, &status);
    put_dec("flush_status", status);

    fill32(rbuf, 0, sizeof(rbuf) / 4);
    used = request(&v, VBLK_T_IN, sector, rbuf, sizeof(rbuf), 1, &status);
    put_dec("read_status", status);
    put_dec("read_used", (u64)used);
    int match = 1;
    for (u32 i = 0; i < sizeof(rbuf); i++)
        if (rbuf[i] != (u8)(0xa0 + i / 512))
            match = 0;
    put_dec("read_match", match);

    fill32(idbuf, 0, sizeof(idbuf) / 4);
    request(&v, VBLK_T_GET_ID, 0, idbuf, sizeof(idbuf), 1, &status);
    char id[21];
    for (int i = 0; i < 20; i++)
        id[i] = (idbuf[i] >= 0x20 && idbuf[i] < 0x7f) ? (char)idbuf[i] : 0;
    id[20] = 0;
    put_str("id", id);
    put_dec("id_status", status);

    request(&v, VBLK_T_IN, capacity, rbuf, 512, 1, &status);
    put_dec("oob_status", status);
    request(&v, 0x7777, 0, rbuf, 512, 1, &status);
    put_dec("unsupp_status", status);

    if (cmdline_has(cmdline, "hold")) {
        put_line("done");
        halt_forever();
    }
    finish(0);
}
