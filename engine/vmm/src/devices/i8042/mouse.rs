//! The PS/2 mouse behind the controller (AUX port): its commands and
//! replies, IntelliMouse knocks, and motion and buttons turned into packets.

use super::{
    ACK, ByteQueue, DATA_QUEUE_LEN, MOTION_LIMIT, REPLY_QUEUE_LEN, RESEND, SELF_TEST_PASSED,
};

/// A mouse command waiting for its parameter byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MouseParam {
    SampleRate,
    Resolution,
}

/// Where the IntelliMouse sample-rate knock sequence has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Knock {
    None,
    /// Saw 200.
    First,
    /// Saw 200, 100: 80 next makes id 3.
    Wheel,
    /// Saw 200, 200: 80 next makes id 4.
    Explorer,
}

/// The PS/2 mouse (AUX device).
#[derive(Debug)]
pub(super) struct Mouse {
    pub(super) replies: ByteQueue,
    pub(super) packets: ByteQueue,
    sample_rate: u8,
    resolution: u8,
    remote: bool,
    reporting: bool,
    scaling_2_1: bool,
    wrap: bool,
    id: u8,
    knock: Knock,
    param: Option<MouseParam>,
    /// Buttons changed since the last packet.
    buttons_changed: bool,
    /// Motion not yet reported, PS/2 orientation (Y up).
    dx: i32,
    dy: i32,
    dz: i32,
    /// Bit 0 left, 1 right, 2 middle, 3 and 4 the side buttons.
    buttons: u8,
    last_sent: u8,
}

impl Mouse {
    pub(super) fn new() -> Self {
        Self {
            replies: ByteQueue::new(REPLY_QUEUE_LEN),
            packets: ByteQueue::new(DATA_QUEUE_LEN),
            sample_rate: 100,
            resolution: 2,
            remote: false,
            reporting: false,
            scaling_2_1: false,
            wrap: false,
            id: 0,
            knock: Knock::None,
            param: None,
            buttons_changed: false,
            dx: 0,
            dy: 0,
            dz: 0,
            buttons: 0,
            last_sent: 0,
        }
    }

    pub(super) fn pop(&mut self) -> Option<u8> {
        let b = self.replies.pop().or_else(|| self.packets.pop())?;
        self.last_sent = b;
        self.pump();
        Some(b)
    }

    fn reply(&mut self, bytes: &[u8]) {
        self.replies.push_all(bytes);
    }

    /// `0xF6`: sample rate 100, resolution 4 counts/mm, scaling 1:1,
    /// stream mode, reporting off. The id stays.
    fn defaults(&mut self) {
        self.sample_rate = 100;
        self.resolution = 2;
        self.scaling_2_1 = false;
        self.remote = false;
        self.reporting = false;
        self.clear_motion();
    }

    fn clear_motion(&mut self) {
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        self.buttons_changed = false;
    }

    pub(super) fn write(&mut self, byte: u8) {
        if let Some(param) = self.param.take() {
            match param {
                MouseParam::SampleRate => {
                    self.sample_rate = byte;
                    self.knock(byte);
                }
                MouseParam::Resolution => self.resolution = byte & 0x03,
            }
            self.reply(&[ACK]);
            return;
        }
        if self.wrap && byte != 0xec && byte != 0xff {
            self.reply(&[byte]);
            return;
        }
        // A command abandons motion not yet sent.
        if byte != 0xfe {
            self.packets.clear();
        }
        match byte {
            0xe6 => self.ack_with(|m| m.scaling_2_1 = false),
            0xe7 => self.ack_with(|m| m.scaling_2_1 = true),
            0xe8 => self.expect(MouseParam::Resolution),
            0xe9 => {
                let status = self.status_byte();
                let (res, rate) = (self.resolution, self.sample_rate);
                self.reply(&[ACK, status, res, rate]);
            }
            0xea => self.ack_with(|m| {
                m.remote = false;
                m.clear_motion();
            }),
            0xeb => {
                self.reply(&[ACK]);
                let pkt = self.packet(false);
                self.clear_motion();
                self.reply(&pkt);
            }
            0xec => self.ack_with(|m| m.wrap = false),
            0xee => self.ack_with(|m| {
                m.wrap = true;
                m.clear_motion();
            }),
            0xf0 => self.ack_with(|m| {
                m.remote = true;
                m.clear_motion();
            }),
            0xf2 => {
                let id = self.id;
                self.reply(&[ACK, id]);
            }
            0xf3 => self.expect(MouseParam::SampleRate),
            0xf4 => self.ack_with(|m| m.reporting = true),
            0xf5 => self.ack_with(|m| {
                m.reporting = false;
                m.clear_motion();
            }),
            0xf6 => self.ack_with(Mouse::defaults),
            0xfe => {
                let b = self.last_sent;
                self.reply(&[b]);
            }
            0xff => {
                let last_sent = self.last_sent;
                *self = Self::new();
                self.last_sent = last_sent;
                self.reply(&[ACK, SELF_TEST_PASSED, 0x00]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn ack_with(&mut self, f: impl FnOnce(&mut Self)) {
        f(self);
        self.reply(&[ACK]);
    }

    fn expect(&mut self, param: MouseParam) {
        self.param = Some(param);
        self.reply(&[ACK]);
    }

    /// QEMU's detection of the IntelliMouse knocks: sample rates 200, 100,
    /// 80 make id 3; 200, 200, 80 make id 4.
    fn knock(&mut self, rate: u8) {
        self.knock = match (self.knock, rate) {
            (Knock::None, 200) => Knock::First,
            (Knock::First, 100) => Knock::Wheel,
            (Knock::First, 200) => Knock::Explorer,
            (Knock::Wheel, 80) => {
                self.id = 3;
                Knock::None
            }
            (Knock::Explorer, 80) => {
                self.id = 4;
                Knock::None
            }
            _ => Knock::None,
        };
    }

    /// The first byte of the `0xE9` status reply.
    fn status_byte(&self) -> u8 {
        let mut s = 0;
        if self.remote {
            s |= 0x40;
        }
        if self.reporting {
            s |= 0x20;
        }
        if self.scaling_2_1 {
            s |= 0x10;
        }
        if self.buttons & 0x01 != 0 {
            s |= 0x04; // left
        }
        if self.buttons & 0x04 != 0 {
            s |= 0x02; // middle
        }
        if self.buttons & 0x02 != 0 {
            s |= 0x01; // right
        }
        s
    }

    pub(super) fn event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        if !self.reporting {
            return;
        }
        let limit = |v: i32| v.clamp(-MOTION_LIMIT, MOTION_LIMIT);
        self.dx = limit(self.dx.saturating_add(dx));
        // Screen Y grows downwards; PS/2 Y grows upwards.
        self.dy = limit(self.dy.saturating_sub(dy));
        if self.id != 0 {
            self.dz = limit(self.dz.saturating_add(dz));
        }
        let buttons = buttons & 0x1f;
        if buttons != self.buttons {
            self.buttons = buttons;
            self.buttons_changed = true;
        }
        self.pump();
    }

    /// In stream mode, turns pending motion and button changes into packets
    /// while the queue has room; the rest waits for the guest to read.
    fn pump(&mut self) {
        if self.remote || !self.reporting {
            return;
        }
        let size = if self.id == 0 { 3 } else { 4 };
        while (self.buttons_changed || self.dx != 0 || self.dy != 0 || self.dz != 0)
            && self.packets.len() + size <= DATA_QUEUE_LEN
        {
            let pkt = self.packet(true);
            self.packets.push_all(&pkt);
            self.buttons_changed = false;
        }
    }

    /// Takes one packet's worth of motion out of the accumulators. Stream
    /// packets (`stream`) carry at most -256..=255 a packet, with 2:1 scaling
    /// applied if set, and leave the rest for the next packet; a remote
    /// mode poll reports everything, with the overflow bits set where it
    /// does not fit.
    fn packet(&mut self, stream: bool) -> Vec<u8> {
        let (x, x_ovf) = take(&mut self.dx);
        let (y, y_ovf) = take(&mut self.dy);
        let (x, y) = if stream && self.scaling_2_1 {
            (scale_2_1(x), scale_2_1(y))
        } else {
            (x, y)
        };
        let mut b0 = 0x08 | (self.buttons & 0x07);
        if x < 0 {
            b0 |= 0x10;
        }
        if y < 0 {
            b0 |= 0x20;
        }
        if !stream && x_ovf {
            b0 |= 0x40;
        }
        if !stream && y_ovf {
            b0 |= 0x80;
        }
        let mut pkt = vec![b0, x as u8, y as u8];
        match self.id {
            3 => {
                let z = self.dz.clamp(-8, 7);
                self.dz -= z;
                pkt.push(z as u8);
            }
            4 => {
                let z = self.dz.clamp(-8, 7);
                self.dz -= z;
                pkt.push((z as u8 & 0x0f) | ((self.buttons & 0x18) << 1));
            }
            _ => self.dz = 0,
        }
        pkt
    }
}

/// Takes up to one packet's motion (-256..=255) out of `acc`; says whether
/// more was left.
pub(super) fn take(acc: &mut i32) -> (i32, bool) {
    let v = (*acc).clamp(-256, 255);
    *acc -= v;
    (v, *acc != 0)
}

/// PS/2 2:1 scaling of one packet's motion.
pub(super) fn scale_2_1(v: i32) -> i32 {
    let m = match v.abs() {
        0 => 0,
        1 | 2 => 1,
        3 => 3,
        4 => 6,
        5 => 9,
        n => n.saturating_mul(2),
    };
    (v.signum() * m).clamp(-256, 255)
}
