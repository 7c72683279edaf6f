/*
 * A minimal virtio 1.x PCI driver (modern transport, split virtqueues,
 * polling, no interrupts): find the vendor capabilities, negotiate
 * VIRTIO_F_VERSION_1, set up one queue in guest memory, submit chains and
 * wait for them to be used (bounded).
 */
#ifndef VIREO_VIRTIO_H
#define VIREO_VIRTIO_H

#include "pci.h"

#define VIRTIO_VENDOR 0x1af4

#define VIRTIO_CAP_COMMON 1
#define VIRTIO_CAP_NOTIFY 2
#define VIRTIO_CAP_ISR 3
#define VIRTIO_CAP_DEVICE 4
#define VIRTIO_CAP_PCI_CFG 5

#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8

/* Common configuration registers. */
#define VCOMMON_DFSELECT 0x00
#define VCOMMON_DF 0x04
#define VCOMMON_GFSELECT 0x08
#define VCOMMON_GF 0x0c
#define VCOMMON_NUMQ 0x12
#define VCOMMON_STATUS 0x14
#define VCOMMON_Q_SELECT 0x16
#define VCOMMON_Q_SIZE 0x18
#define VCOMMON_Q_ENABLE 0x1c
#define VCOMMON_Q_NOFF 0x1e
#define VCOMMON_Q_DESCLO 0x20
#define VCOMMON_Q_DESCHI 0x24
#define VCOMMON_Q_AVAILLO 0x28
#define VCOMMON_Q_AVAILHI 0x2c
#define VCOMMON_Q_USEDLO 0x30
#define VCOMMON_Q_USEDHI 0x34

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

#define VQ_SIZE 8

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

struct vring_avail {
    u16 flags;
    u16 idx;
    u16 ring[VQ_SIZE];
    u16 used_event;
};

struct vring_used_elem {
    u32 id;
    u32 len;
};

struct vring_used {
    u16 flags;
    u16 idx;
    struct vring_used_elem ring[VQ_SIZE];
    u16 avail_event;
};

struct virtq {
    struct vring_desc desc[VQ_SIZE] __attribute__((aligned(16)));
    struct vring_avail avail __attribute__((aligned(2)));
    struct vring_used used __attribute__((aligned(4096)));
    u16 last_used;
};

struct virtio_dev {
    pci_devfn df;
    u64 common, notify, isr, device;
    u32 notify_mult;
    u32 caps_seen; /* bit n set: cfg_type n found */
    u32 cap_order; /* cfg_types in list order, 4 bits each */
    int bar_assigned;
    u32 msix_vectors; /* MSI-X table size, 0 without MSI-X */
    u64 notify_addr;
};

/* Walks the capability list; returns 1 when common, notify, ISR and
 * device structures were all found (BARs assigned if needed). */
static inline int virtio_find_caps(struct virtio_dev *v)
{
    v->caps_seen = 0;
    v->cap_order = 0;
    v->bar_assigned = 0;
    v->msix_vectors = 0;
    if (!((pci_read32(v->df, 0x04) >> 16) & 0x10))
        return 0;
    u8 at = (u8)(pci_read32(v->df, 0x34) & 0xfc);
    for (int n = 0; at && n < 48; n++) {
        u32 head = pci_read32(v->df, at);
        u8 next = (u8)((head >> 8) & 0xfc);
        if ((head & 0xff) == 0x11)
            v->msix_vectors = ((head >> 16) & 0x7ff) + 1;
        if ((head & 0xff) == 0x09) {
            u8 type = (u8)(head >> 24);
            u8 bar = (u8)(pci_read32(v->df, (u8)(at + 4)) & 0xff);
            u32 offset = pci_read32(v->df, (u8)(at + 8));
            if (type >= 1 && type <= 5) {
                v->caps_seen |= 1u << type;
                if (n < 8)
                    v->cap_order |= (u32)type << (4 * n);
            }
            if (type >= 1 && type <= 4 && bar < 6) {
                int assigned = 0;
                u64 base = pci_bar_ensure(v->df, bar, &assigned);
                v->bar_assigned |= assigned;
                u64 addr = base + offset;
                if (type == VIRTIO_CAP_COMMON)
                    v->common = addr;
                else if (type == VIRTIO_CAP_NOTIFY) {
                    v->notify = addr;
                    v->notify_mult = pci_read32(v->df, (u8)(at + 16));
                } else if (type == VIRTIO_CAP_ISR)
                    v->isr = addr;
                else
                    v->device = addr;
            }
        }
        at = next;
    }
    /* Bus mastering, for VMMs that check it (QEMU does). */
    u16 cmd = pci_read16(v->df, PCI_COMMAND);
    pci_write16(v->df, PCI_COMMAND, cmd | 0x4);
    u32 need = (1u << VIRTIO_CAP_COMMON) | (1u << VIRTIO_CAP_NOTIFY) | (1u << VIRTIO_CAP_ISR) |
               (1u << VIRTIO_CAP_DEVICE);
    return (v->caps_seen & need) == need;
}

static inline u8 vc_read8(struct virtio_dev *v, u32 off) { return mmio_read8(v->common + off); }
static inline u16 vc_read16(struct virtio_dev *v, u32 off) { return mmio_read16(v->common + off); }
static inline u32 vc_read32(struct virtio_dev *v, u32 off) { return mmio_read32(v->common + off); }
static inline void vc_write8(struct virtio_dev *v, u32 off, u8 x) { *(volatile u8 *)(v->common + off) = x; }
static inline void vc_write16(struct virtio_dev *v, u32 off, u16 x) { mmio_write16(v->common + off, x); }
static inline void vc_write32(struct virtio_dev *v, u32 off, u32 x) { mmio_write32(v->common + off, x); }

/* Reset, ACKNOWLEDGE, DRIVER; returns the 64 device feature bits. */
static inline u64 virtio_begin(struct virtio_dev *v)
{
    vc_write8(v, VCOMMON_STATUS, 0);
    for (int i = 0; i < 1000 && vc_read8(v, VCOMMON_STATUS); i++)
        cpu_relax();
    vc_write8(v, VCOMMON_STATUS, VIRTIO_STATUS_ACK);
    vc_write8(v, VCOMMON_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
    vc_write32(v, VCOMMON_DFSELECT, 0);
    u64 lo = vc_read32(v, VCOMMON_DF);
    vc_write32(v, VCOMMON_DFSELECT, 1);
    u64 hi = vc_read32(v, VCOMMON_DF);
    return lo | hi << 32;
}

/* Writes the driver features and sets FEATURES_OK; returns the status
 * read back (FEATURES_OK stays clear if the device refused). */
static inline u8 virtio_set_features(struct virtio_dev *v, u64 features)
{
    vc_write32(v, VCOMMON_GFSELECT, 0);
    vc_write32(v, VCOMMON_GF, (u32)features);
    vc_write32(v, VCOMMON_GFSELECT, 1);
    vc_write32(v, VCOMMON_GF, (u32)(features >> 32));
    vc_write8(v, VCOMMON_STATUS,
              VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    return vc_read8(v, VCOMMON_STATUS);
}

/* Sets up queue `index` on `q`; returns the device's maximum queue size
 * (0 if the queue does not exist). */
static inline u16 virtio_setup_queue(struct virtio_dev *v, u16 index, struct virtq *q)
{
    vc_write16(v, VCOMMON_Q_SELECT, index);
    u16 max = vc_read16(v, VCOMMON_Q_SIZE);
    if (max < VQ_SIZE)
        return max;
    fill32(q, 0, sizeof(*q) / 4);
    vc_write16(v, VCOMMON_Q_SIZE, VQ_SIZE);
    u64 desc = (u64)q->desc, avail = (u64)&q->avail, used = (u64)&q->used;
    vc_write32(v, VCOMMON_Q_DESCLO, (u32)desc);
    vc_write32(v, VCOMMON_Q_DESCHI, (u32)(desc >> 32));
    vc_write32(v, VCOMMON_Q_AVAILLO, (u32)avail);
    vc_write32(v, VCOMMON_Q_AVAILHI, (u32)(avail >> 32));
    vc_write32(v, VCOMMON_Q_USEDLO, (u32)used);
    vc_write32(v, VCOMMON_Q_USEDHI, (u32)(used >> 32));
    u16 noff = vc_read16(v, VCOMMON_Q_NOFF);
    v->notify_addr = v->notify + (u64)noff * v->notify_mult;
    vc_write16(v, VCOMMON_Q_ENABLE, 1);
    return max;
}

static inline void virtio_driver_ok(struct virtio_dev *v)
{
    vc_write8(v, VCOMMON_STATUS,
              VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                  VIRTIO_STATUS_DRIVER_OK);
}

/* Makes chain `head` available, notifies queue `index`, and waits (up to
 * `seconds`) for it to be used. Returns the used length, or -1 on timeout. */
static inline long virtio_submit_wait(struct virtio_dev *v, u16 index, struct virtq *q, u16 head,
                                      u32 seconds)
{
    q->avail.ring[q->avail.idx % VQ_SIZE] = head;
    barrier();
    __asm__ volatile("mfence" ::: "memory");
    q->avail.idx++;
    __asm__ volatile("mfence" ::: "memory");
    mmio_write16(v->notify_addr, index);
    struct deadline d;
    deadline_start(&d, seconds);
    while (*(volatile u16 *)&q->used.idx == q->last_used) {
        if (deadline_passed(&d))
            return -1;
    }
    __asm__ volatile("mfence" ::: "memory");
    struct vring_used_elem e = q->used.ring[q->last_used % VQ_SIZE];
    q->last_used++;
    return (long)e.len;
}

#endif
