//! The PS/2 keyboard behind the controller: its commands and replies, LEDs,
//! scan code set, and key events turned into scan code sequences.

use super::scancodes::{
    HELD_ALT, HELD_CTRL, HELD_SHIFT, KEY_PAUSE, KEY_PAUSE_ALT, KEY_PRINT_SCREEN, KEYS, XLATE,
    modifier_bit, set2, set3, translate,
};
use super::{ACK, ByteQueue, DATA_QUEUE_LEN, REPLY_QUEUE_LEN, RESEND, SELF_TEST_PASSED};

/// The state of the keyboard LEDs, as the guest last set them (`0xED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyboardLeds {
    /// Scroll Lock (bit 0).
    pub scroll_lock: bool,
    /// Num Lock (bit 1).
    pub num_lock: bool,
    /// Caps Lock (bit 2).
    pub caps_lock: bool,
}

/// A keyboard command waiting for its parameter byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KbdParam {
    Leds,
    ScancodeSet,
    Typematic,
    /// Set 3 key type commands (`0xFB`–`0xFD`): acknowledged, ignored.
    KeyType,
}

/// Default typematic byte: 10.9 characters a second after 500 ms.
pub(super) const TYPEMATIC_DEFAULT: u8 = 0x2b;

/// The PS/2 keyboard (an MF2 keyboard, id `AB 83`).
#[derive(Debug)]
pub(super) struct Keyboard {
    pub(super) replies: ByteQueue,
    pub(super) scancodes: ByteQueue,
    scanning: bool,
    set: u8,
    pub(super) leds: u8,
    typematic: u8,
    param: Option<KbdParam>,
    /// Modifier keys held down (see [`modifier_bit`]).
    held: u8,
    last_sent: u8,
}

impl Keyboard {
    pub(super) fn new() -> Self {
        Self {
            replies: ByteQueue::new(REPLY_QUEUE_LEN),
            scancodes: ByteQueue::new(DATA_QUEUE_LEN),
            scanning: true,
            set: 2,
            leds: 0,
            typematic: TYPEMATIC_DEFAULT,
            param: None,
            held: 0,
            last_sent: 0,
        }
    }

    pub(super) fn pop(&mut self) -> Option<u8> {
        let b = self.replies.pop().or_else(|| self.scancodes.pop())?;
        self.last_sent = b;
        Some(b)
    }

    fn reply(&mut self, bytes: &[u8], xlate: bool) {
        if xlate {
            let t: Vec<u8> = bytes.iter().map(|&b| XLATE[usize::from(b)]).collect();
            self.replies.push_all(&t);
        } else {
            self.replies.push_all(bytes);
        }
    }

    /// Restores the defaults `0xF5`/`0xF6` restore: typematic settings and
    /// an empty buffer. The scan code set and LEDs stay, as on a real
    /// keyboard (QEMU also resets them to set 2 and off).
    fn defaults(&mut self) {
        self.typematic = TYPEMATIC_DEFAULT;
        self.scancodes.clear();
        self.replies.clear();
    }

    pub(super) fn write(&mut self, byte: u8, xlate: bool) {
        if let Some(param) = self.param.take() {
            match param {
                KbdParam::Leds => {
                    self.leds = byte & 0x07;
                    self.reply(&[ACK], xlate);
                }
                KbdParam::ScancodeSet => match byte {
                    0 => {
                        let set = self.set;
                        self.reply(&[ACK, set], xlate);
                    }
                    1..=3 => {
                        self.set = byte;
                        self.reply(&[ACK], xlate);
                    }
                    _ => self.reply(&[RESEND], xlate),
                },
                KbdParam::Typematic => {
                    self.typematic = byte & 0x7f;
                    self.reply(&[ACK], xlate);
                }
                KbdParam::KeyType => self.reply(&[ACK], xlate),
            }
            return;
        }
        match byte {
            0xed => self.expect(KbdParam::Leds, xlate),
            0xee => self.reply(&[0xee], xlate),
            0xf0 => self.expect(KbdParam::ScancodeSet, xlate),
            0xf2 => self.reply(&[ACK, 0xab, 0x83], xlate),
            0xf3 => self.expect(KbdParam::Typematic, xlate),
            0xf4 => {
                self.scanning = true;
                self.reply(&[ACK], xlate);
            }
            0xf5 => {
                self.defaults();
                self.scanning = false;
                self.reply(&[ACK], xlate);
            }
            0xf6 => {
                self.defaults();
                self.scanning = true;
                self.reply(&[ACK], xlate);
            }
            // Set 3 "all keys typematic/make-break/..." commands.
            0xf7..=0xfa => self.reply(&[ACK], xlate),
            0xfb..=0xfd => self.expect(KbdParam::KeyType, xlate),
            0xfe => {
                // The byte sent last has already been translated.
                let b = self.last_sent;
                self.replies.push_all(&[b]);
            }
            0xff => {
                self.reset();
                self.reply(&[ACK, SELF_TEST_PASSED], xlate);
            }
            _ => self.reply(&[RESEND], xlate),
        }
    }

    fn expect(&mut self, param: KbdParam, xlate: bool) {
        self.param = Some(param);
        self.reply(&[ACK], xlate);
    }

    fn reset(&mut self) {
        let last_sent = self.last_sent;
        *self = Self::new();
        self.last_sent = last_sent;
    }

    /// Queues the codes for a key press or release in the current set.
    pub(super) fn key_event(&mut self, scancode: u16, down: bool, xlate: bool) {
        if !self.scanning {
            return;
        }
        let bit = modifier_bit(scancode);
        if down {
            self.held |= bit;
        } else {
            self.held &= !bit;
        }
        let seq = self.sequence(scancode, down);
        if seq.is_empty() {
            return;
        }
        if xlate {
            self.scancodes.push_all(&translate(&seq));
        } else {
            self.scancodes.push_all(&seq);
        }
    }

    /// The bytes the keyboard sends, before any translation.
    fn sequence(&self, scancode: u16, down: bool) -> Vec<u8> {
        let ctrl = self.held & HELD_CTRL != 0;
        let shift = self.held & HELD_SHIFT != 0;
        let alt = self.held & HELD_ALT != 0;
        match (self.set, scancode) {
            (1, KEY_PAUSE | KEY_PAUSE_ALT) => match (down, ctrl) {
                (false, _) => vec![],
                (true, true) => vec![0xe0, 0x46, 0xe0, 0xc6],
                (true, false) => vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
            },
            (2, KEY_PAUSE | KEY_PAUSE_ALT) => match (down, ctrl) {
                (false, _) => vec![],
                (true, true) => vec![0xe0, 0x7e, 0xe0, 0xf0, 0x7e],
                (true, false) => vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77],
            },
            (3, KEY_PAUSE | KEY_PAUSE_ALT) => set3(0x62, down),
            (1, KEY_PRINT_SCREEN) => {
                if alt {
                    vec![if down { 0x54 } else { 0xd4 }]
                } else if ctrl || shift {
                    vec![0xe0, if down { 0x37 } else { 0xb7 }]
                } else if down {
                    vec![0xe0, 0x2a, 0xe0, 0x37]
                } else {
                    vec![0xe0, 0xb7, 0xe0, 0xaa]
                }
            }
            (2, KEY_PRINT_SCREEN) => {
                if alt {
                    set2(0x84, down)
                } else if ctrl || shift {
                    set2(0xe07c, down)
                } else if down {
                    vec![0xe0, 0x12, 0xe0, 0x7c]
                } else {
                    vec![0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12]
                }
            }
            (3, KEY_PRINT_SCREEN) => set3(0x57, down),
            (set, _) => {
                let Some(k) = KEYS.iter().find(|k| k.set1 == scancode) else {
                    return vec![];
                };
                match set {
                    1 => {
                        let code = (k.set1 & 0xff) as u8;
                        let code = if down { code } else { code | 0x80 };
                        if k.set1 >> 8 == 0xe0 {
                            vec![0xe0, code]
                        } else {
                            vec![code]
                        }
                    }
                    3 if k.set3 == 0 => vec![],
                    3 => set3(k.set3, down),
                    _ => set2(k.set2, down),
                }
            }
        }
    }
}
