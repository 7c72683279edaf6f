//! The i8042 PS/2 controller with a keyboard and a mouse behind it, modelled
//! on QEMU's `hw/input/pckbd.c` and `hw/input/ps2.c`.
//!
//! # Wiring
//!
//! The controller answers two ports that are not adjacent: data at 0x60 and
//! status/command at 0x64. One [`I8042`] holds the state, shared behind a
//! mutex; an [`I8042Port`] for each port is what the bus sees:
//!
//! ```no_run
//! # use std::sync::{Arc, Mutex};
//! # use vireo_vmm::bus::{Bus, BusError};
//! # use vireo_vmm::devices::i8042::{I8042, I8042Port};
//! # use vireo_vmm::devices::{IrqLine, Requests};
//! # fn wire(irq1: IrqLine, irq12: IrqLine, requests: Requests, bus: &mut Bus)
//! # -> Result<(), BusError> {
//! let i8042 = I8042::new(irq1, irq12, requests);
//! // Data port at 0x60 and status/command port at 0x64, one byte each:
//! I8042::attach(&i8042, bus)?;
//! // which is the same as
//! // bus.insert(Arc::new(Mutex::new(I8042Port::data(&i8042))), 0x60, 1)?;
//! // bus.insert(Arc::new(Mutex::new(I8042Port::command(&i8042))), 0x64, 1)?;
//!
//! // Input from the control socket or the VNC server:
//! i8042.lock().unwrap().key_event(0x1e, true); // A pressed
//! i8042.lock().unwrap().key_event(0x1e, false); // A released
//! # Ok(()) }
//! ```
//!
//! Lock order: a vCPU holds the port's lock, then the controller's. Input
//! callers take only the controller's. Interrupt lines and the request sink
//! are called with the controller locked, so they must not call back into
//! it (a [`RequestSink`](crate::devices::RequestSink) returns at once). On
//! a machine reset the VMM calls [`I8042::reset`].
//!
//! # Model
//!
//! - The output buffer holds one byte. Bytes wait in three places: one
//!   controller reply (a later one replaces it, as in QEMU), the keyboard's
//!   queue and the mouse's queue. When the buffer is empty it is loaded in
//!   that order of priority; reading port 0x60 empties it and loads the next
//!   byte at once. Device bytes wait while their interface is disabled in the
//!   command byte. Reading 0x60 with nothing buffered returns the last byte
//!   read (0 after power-on), as QEMU does for EMM386. The input buffer is
//!   never full: writes are handled at once.
//! - Each device holds 16 bytes of scan codes or packets, the output buffer
//!   included, as a real keyboard and QEMU do (command replies queue apart,
//!   ahead of them). Linux gives up probing a controller that still has data
//!   after 16 reads, so a key held during boot must not queue more. Keys that
//!   do not fit are dropped whole; input sources that send many keys at once
//!   pace themselves with [`I8042::keyboard_backlog`]. Mouse motion that does
//!   not fit waits in the mouse's counters (up to ±8192 an axis) and goes out
//!   as the guest reads.
//! - Interrupts are levels: IRQ 1 is high while the buffer holds a byte from
//!   the keyboard side and command byte bit 0 is set; IRQ 12 likewise for the
//!   mouse side and bit 1. Reading the byte lowers the line, and loading the
//!   next one raises it again, so edge-triggered inputs see one edge a byte.
//! - Power-on state is QEMU's `kbd_reset`: command byte 0x03 (both
//!   interrupts on, translation off, system flag clear), status 0x18 (last
//!   write was a command, keyboard not inhibited), output port 0xcf. Firmware
//!   writes its own command byte; SeaBIOS leaves 0x61 (translation, keyboard
//!   interrupt, mouse disabled) and Linux adapts to whatever it finds.
//! - A20 is not gated (KVM guests always see it enabled); the output port
//!   only remembers bit 1 for reads.
//! - The keyboard scans in set 2 after reset. Translation (command byte
//!   bit 6) maps every byte the keyboard sends through the 8042's set 2 to
//!   set 1 table, as the real controller does, so set 2 with translation on
//!   gives set 1; replies are translated too (the identify reply becomes
//!   `AB 41`, a set query `41`). Typematic repeat is not generated: the
//!   input source repeats presses itself. `0xF5`/`0xF6` restore typematic
//!   defaults but keep the scan code set and LEDs, as a real keyboard does
//!   (QEMU also returns to set 2).
//! - The mouse is a PS/2 mouse that becomes an IntelliMouse (id 3, wheel)
//!   or IntelliMouse Explorer (id 4, wheel and buttons 4 and 5) after the
//!   usual sample-rate knocks. A host command to the mouse discards packets
//!   it had not yet sent, so a reply never lands inside a packet. Unknown
//!   commands get `FE` (resend) from either device.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bus::{Bus, BusDevice, BusError};
use crate::devices::{IrqLine, Requests, VmRequest};
use crate::layout::ports;

// Status register.
const STAT_OBF: u8 = 0x01;
const STAT_SYS: u8 = 0x04;
const STAT_CMD: u8 = 0x08;
const STAT_UNLOCKED: u8 = 0x10;
const STAT_AUX_OBF: u8 = 0x20;

// Controller command byte.
const CCB_KBD_INT: u8 = 0x01;
const CCB_AUX_INT: u8 = 0x02;
const CCB_SYS: u8 = 0x04;
const CCB_KBD_DISABLE: u8 = 0x10;
const CCB_AUX_DISABLE: u8 = 0x20;
const CCB_TRANSLATE: u8 = 0x40;

// Output port.
const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_OBF: u8 = 0x10;
const OUT_AUX_OBF: u8 = 0x20;
/// QEMU's power-on output port: reset high, A20 on, the unused bits high.
const OUT_POWER_ON: u8 = 0xcf;

/// QEMU's power-on command byte: keyboard and mouse interrupts enabled.
pub const POWER_ON_COMMAND_BYTE: u8 = CCB_KBD_INT | CCB_AUX_INT;

/// What `0xC0` (read input port) answers: keyboard not inhibited (QEMU).
const INPUT_PORT: u8 = 0x80;

// Replies shared by the keyboard and the mouse.
const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
const SELF_TEST_PASSED: u8 = 0xaa;

/// Most bytes of scan codes or motion packets a device holds besides the
/// one in the output buffer: 16 in all, a real keyboard's buffer and
/// QEMU's `PS2_QUEUE_SIZE`. It must stay small: Linux's `i8042_flush` reads
/// at most 16 bytes before it declares the controller stuck and gives up
/// probing, so a key held during boot must not queue more. Scan codes that
/// do not fit are dropped, whole sequences at a time; mouse motion that
/// does not fit waits in the mouse's counters.
const DATA_QUEUE_LEN: usize = 15;
/// Motion the mouse keeps in its counters while its queue is full, per
/// axis; beyond this it is dropped, so a stalled guest does not replay a
/// long drag later.
const MOTION_LIMIT: i32 = 8192;
/// Most command reply bytes a device holds.
const REPLY_QUEUE_LEN: usize = 16;

/// Which device a byte in the output buffer belongs to (status bit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Keyboard,
    Aux,
}

/// A bounded byte FIFO.
#[derive(Debug)]
struct ByteQueue {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl ByteQueue {
    fn new(cap: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Appends all of `seq`, or nothing if it does not fit.
    fn push_all(&mut self, seq: &[u8]) -> bool {
        if self.bytes.len() + seq.len() > self.cap {
            return false;
        }
        self.bytes.extend(seq.iter().copied());
        true
    }

    fn pop(&mut self) -> Option<u8> {
        self.bytes.pop_front()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// The 8042's scan code translation: a set 2 byte to its set 1 byte. Bytes
/// from 0x80 up are passed unchanged except 0x83 (F7) and 0x84 (SysRq).
const XLATE: [u8; 256] = {
    const LOW: [u8; 128] = [
        0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, // 0x00
        0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59, // 0x08
        0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, // 0x10
        0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b, // 0x18
        0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, // 0x20
        0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d, // 0x28
        0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, // 0x30
        0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f, // 0x38
        0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, // 0x40
        0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61, // 0x48
        0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, // 0x50
        0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76, // 0x58
        0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, // 0x60
        0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f, // 0x68
        0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, // 0x70
        0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54, // 0x78
    ];
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 128 { LOW[i] } else { i as u8 };
        i += 1;
    }
    t[0x83] = 0x41;
    t[0x84] = 0x54;
    t
};

/// Translates a run of set 2 bytes as the 8042 does: `F0 xx` becomes
/// `XLATE[xx] | 0x80`, everything else goes through [`XLATE`].
fn translate(seq: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seq.len());
    let mut release = false;
    for &b in seq {
        if b == 0xf0 {
            release = true;
            continue;
        }
        let t = XLATE[usize::from(b)];
        out.push(if release { t | 0x80 } else { t });
        release = false;
    }
    out
}

/// A key of the standard 104-key layout (plus the JIS and media keys that
/// have codes in every set): its set 1 make code as [`I8042::key_event`]
/// takes it (`0xE0xx` for extended keys), its set 2 make code (same
/// convention) and its set 3 code (0: none).
struct Key {
    set1: u16,
    set2: u16,
    set3: u8,
}

const fn key(set1: u16, set2: u16, set3: u8) -> Key {
    Key { set1, set2, set3 }
}

/// Set 1 to set 2 and set 3. Print Screen and Pause are special-cased.
/// Set 3 codes are those of QEMU's keycodemapdb.
const KEYS: &[Key] = &[
    key(0x01, 0x76, 0x08),     // Esc
    key(0x02, 0x16, 0x16),     // 1
    key(0x03, 0x1e, 0x1e),     // 2
    key(0x04, 0x26, 0x26),     // 3
    key(0x05, 0x25, 0x25),     // 4
    key(0x06, 0x2e, 0x2e),     // 5
    key(0x07, 0x36, 0x36),     // 6
    key(0x08, 0x3d, 0x3d),     // 7
    key(0x09, 0x3e, 0x3e),     // 8
    key(0x0a, 0x46, 0x46),     // 9
    key(0x0b, 0x45, 0x45),     // 0
    key(0x0c, 0x4e, 0x4e),     // -
    key(0x0d, 0x55, 0x55),     // =
    key(0x0e, 0x66, 0x66),     // Backspace
    key(0x0f, 0x0d, 0x0d),     // Tab
    key(0x10, 0x15, 0x15),     // Q
    key(0x11, 0x1d, 0x1d),     // W
    key(0x12, 0x24, 0x24),     // E
    key(0x13, 0x2d, 0x2d),     // R
    key(0x14, 0x2c, 0x2c),     // T
    key(0x15, 0x35, 0x35),     // Y
    key(0x16, 0x3c, 0x3c),     // U
    key(0x17, 0x43, 0x43),     // I
    key(0x18, 0x44, 0x44),     // O
    key(0x19, 0x4d, 0x4d),     // P
    key(0x1a, 0x54, 0x54),     // [
    key(0x1b, 0x5b, 0x5b),     // ]
    key(0x1c, 0x5a, 0x5a),     // Enter
    key(0x1d, 0x14, 0x11),     // Left Ctrl
    key(0x1e, 0x1c, 0x1c),     // A
    key(0x1f, 0x1b, 0x1b),     // S
    key(0x20, 0x23, 0x23),     // D
    key(0x21, 0x2b, 0x2b),     // F
    key(0x22, 0x34, 0x34),     // G
    key(0x23, 0x33, 0x33),     // H
    key(0x24, 0x3b, 0x3b),     // J
    key(0x25, 0x42, 0x42),     // K
    key(0x26, 0x4b, 0x4b),     // L
    key(0x27, 0x4c, 0x4c),     // ;
    key(0x28, 0x52, 0x52),     // '
    key(0x29, 0x0e, 0x0e),     // `
    key(0x2a, 0x12, 0x12),     // Left Shift
    key(0x2b, 0x5d, 0x5d),     // backslash
    key(0x2c, 0x1a, 0x1a),     // Z
    key(0x2d, 0x22, 0x22),     // X
    key(0x2e, 0x21, 0x21),     // C
    key(0x2f, 0x2a, 0x2a),     // V
    key(0x30, 0x32, 0x32),     // B
    key(0x31, 0x31, 0x31),     // N
    key(0x32, 0x3a, 0x3a),     // M
    key(0x33, 0x41, 0x41),     // ,
    key(0x34, 0x49, 0x49),     // .
    key(0x35, 0x4a, 0x4a),     // /
    key(0x36, 0x59, 0x59),     // Right Shift
    key(0x37, 0x7c, 0x7e),     // Keypad *
    key(0x38, 0x11, 0x19),     // Left Alt
    key(0x39, 0x29, 0x29),     // Space
    key(0x3a, 0x58, 0x14),     // Caps Lock
    key(0x3b, 0x05, 0x07),     // F1
    key(0x3c, 0x06, 0x0f),     // F2
    key(0x3d, 0x04, 0x17),     // F3
    key(0x3e, 0x0c, 0x1f),     // F4
    key(0x3f, 0x03, 0x27),     // F5
    key(0x40, 0x0b, 0x2f),     // F6
    key(0x41, 0x83, 0x37),     // F7
    key(0x42, 0x0a, 0x3f),     // F8
    key(0x43, 0x01, 0x47),     // F9
    key(0x44, 0x09, 0x4f),     // F10
    key(0x45, 0x77, 0x76),     // Num Lock
    key(0x46, 0x7e, 0x5f),     // Scroll Lock
    key(0x47, 0x6c, 0x6c),     // Keypad 7
    key(0x48, 0x75, 0x75),     // Keypad 8
    key(0x49, 0x7d, 0x7d),     // Keypad 9
    key(0x4a, 0x7b, 0x84),     // Keypad -
    key(0x4b, 0x6b, 0x6b),     // Keypad 4
    key(0x4c, 0x73, 0x73),     // Keypad 5
    key(0x4d, 0x74, 0x74),     // Keypad 6
    key(0x4e, 0x79, 0x7c),     // Keypad +
    key(0x4f, 0x69, 0x69),     // Keypad 1
    key(0x50, 0x72, 0x72),     // Keypad 2
    key(0x51, 0x7a, 0x7a),     // Keypad 3
    key(0x52, 0x70, 0x70),     // Keypad 0
    key(0x53, 0x71, 0x71),     // Keypad .
    key(0x54, 0x84, 0x57),     // SysRq (Alt + Print Screen)
    key(0x56, 0x61, 0x13),     // the ISO key left of Z
    key(0x57, 0x78, 0x56),     // F11
    key(0x58, 0x07, 0x5e),     // F12
    key(0x59, 0x0f, 0x00),     // Keypad =
    key(0x70, 0x13, 0x87),     // Katakana/Hiragana
    key(0x73, 0x51, 0x00),     // Ro
    key(0x79, 0x64, 0x86),     // Henkan
    key(0x7b, 0x67, 0x85),     // Muhenkan
    key(0x7d, 0x6a, 0x00),     // Yen
    key(0xe01c, 0xe05a, 0x79), // Keypad Enter
    key(0xe01d, 0xe014, 0x58), // Right Ctrl
    key(0xe020, 0xe023, 0x9c), // Mute
    key(0xe02e, 0xe021, 0x9d), // Volume Down
    key(0xe030, 0xe032, 0x95), // Volume Up
    key(0xe035, 0xe04a, 0x77), // Keypad /
    key(0xe038, 0xe011, 0x39), // Right Alt
    key(0xe047, 0xe06c, 0x6e), // Home
    key(0xe048, 0xe075, 0x63), // Up
    key(0xe049, 0xe07d, 0x6f), // Page Up
    key(0xe04b, 0xe06b, 0x61), // Left
    key(0xe04d, 0xe074, 0x6a), // Right
    key(0xe04f, 0xe069, 0x65), // End
    key(0xe050, 0xe072, 0x60), // Down
    key(0xe051, 0xe07a, 0x6d), // Page Down
    key(0xe052, 0xe070, 0x67), // Insert
    key(0xe053, 0xe071, 0x64), // Delete
    key(0xe05b, 0xe01f, 0x8b), // Left Windows
    key(0xe05c, 0xe027, 0x8c), // Right Windows
    key(0xe05d, 0xe02f, 0x8d), // Menu
    key(0xe05e, 0xe037, 0x00), // Power
    key(0xe05f, 0xe03f, 0x00), // Sleep
    key(0xe063, 0xe05e, 0x00), // Wake
];

/// Print Screen's set 1 code.
const KEY_PRINT_SCREEN: u16 = 0xe037;
/// Pause, as the first two bytes of its set 1 sequence `E1 1D 45`.
const KEY_PAUSE: u16 = 0xe11d;
/// Pause as QEMU's key numbers and Ctrl+Break spell it.
const KEY_PAUSE_ALT: u16 = 0xe046;

// Modifier keys, one bit each, for Print Screen's and Pause's variants.
const HELD_CTRL: u8 = 0x03;
const HELD_SHIFT: u8 = 0x0c;
const HELD_ALT: u8 = 0x30;

/// The bit of a modifier key in [`Keyboard::held`]; 0 for other keys.
fn modifier_bit(scancode: u16) -> u8 {
    match scancode {
        0x1d => 0x01,   // left Ctrl
        0xe01d => 0x02, // right Ctrl
        0x2a => 0x04,   // left Shift
        0x36 => 0x08,   // right Shift
        0x38 => 0x10,   // left Alt
        0xe038 => 0x20, // right Alt
        _ => 0,
    }
}

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
enum KbdParam {
    Leds,
    ScancodeSet,
    Typematic,
    /// Set 3 key type commands (`0xFB`–`0xFD`): acknowledged, ignored.
    KeyType,
}

/// Default typematic byte: 10.9 characters a second after 500 ms.
const TYPEMATIC_DEFAULT: u8 = 0x2b;

/// The PS/2 keyboard (an MF2 keyboard, id `AB 83`).
#[derive(Debug)]
struct Keyboard {
    replies: ByteQueue,
    scancodes: ByteQueue,
    scanning: bool,
    set: u8,
    leds: u8,
    typematic: u8,
    param: Option<KbdParam>,
    /// Modifier keys held down (see [`modifier_bit`]).
    held: u8,
    last_sent: u8,
}

impl Keyboard {
    fn new() -> Self {
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

    fn pop(&mut self) -> Option<u8> {
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

    fn write(&mut self, byte: u8, xlate: bool) {
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
    fn key_event(&mut self, scancode: u16, down: bool, xlate: bool) {
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

/// A set 2 make (`[E0] xx`) or break (`[E0] F0 xx`) sequence.
fn set2(code: u16, down: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(3);
    if code >> 8 == 0xe0 {
        v.push(0xe0);
    }
    if !down {
        v.push(0xf0);
    }
    v.push((code & 0xff) as u8);
    v
}

/// A set 3 make (`xx`) or break (`F0 xx`) sequence.
fn set3(code: u8, down: bool) -> Vec<u8> {
    if down { vec![code] } else { vec![0xf0, code] }
}

/// A mouse command waiting for its parameter byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MouseParam {
    SampleRate,
    Resolution,
}

/// Where the IntelliMouse sample-rate knock sequence has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knock {
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
struct Mouse {
    replies: ByteQueue,
    packets: ByteQueue,
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
    fn new() -> Self {
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

    fn pop(&mut self) -> Option<u8> {
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

    fn write(&mut self, byte: u8) {
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

    fn event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
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
fn take(acc: &mut i32) -> (i32, bool) {
    let v = (*acc).clamp(-256, 255);
    *acc -= v;
    (v, *acc != 0)
}

/// PS/2 2:1 scaling of one packet's motion.
fn scale_2_1(v: i32) -> i32 {
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

/// The i8042 controller with its keyboard and mouse. Shared by the two
/// [`I8042Port`]s and the VMM's input sources; see the module docs.
pub struct I8042 {
    /// Status bits kept here: SYS and CMD. OBF and AUX_OBF come from `ob`.
    status: u8,
    ccb: u8,
    outport: u8,
    /// A controller command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    /// The output buffer.
    ob: Option<(u8, Source)>,
    /// The last byte read from port 0x60.
    last_read: u8,
    /// A controller reply waiting for the output buffer.
    ctrl_out: Option<(u8, Source)>,
    kbd: Keyboard,
    mouse: Mouse,
    kbd_irq: IrqLine,
    mouse_irq: IrqLine,
    requests: Requests,
    kbd_level: bool,
    mouse_level: bool,
}

impl fmt::Debug for I8042 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042")
            .field("status", &self.status())
            .field("command_byte", &self.ccb)
            .field("outport", &self.outport)
            .field("output_buffer", &self.ob)
            .field("keyboard", &self.kbd)
            .field("mouse", &self.mouse)
            .finish_non_exhaustive()
    }
}

/// Locks the controller, recovering from a poisoned lock as the bus does.
fn lock(c: &Mutex<I8042>) -> MutexGuard<'_, I8042> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl I8042 {
    /// A controller in its power-on state, raising `kbd_irq` (IRQ 1) and
    /// `mouse_irq` (IRQ 12) and sending resets to `requests`.
    pub fn new(kbd_irq: IrqLine, mouse_irq: IrqLine, requests: Requests) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            status: STAT_CMD,
            ccb: POWER_ON_COMMAND_BYTE,
            outport: OUT_POWER_ON,
            pending: None,
            ob: None,
            last_read: 0,
            ctrl_out: None,
            kbd: Keyboard::new(),
            mouse: Mouse::new(),
            kbd_irq,
            mouse_irq,
            requests,
            kbd_level: false,
            mouse_level: false,
        }))
    }

    /// Inserts the controller's data port at 0x60 and its command port at
    /// 0x64, one byte each. On failure nothing stays inserted.
    pub fn attach(this: &Arc<Mutex<Self>>, bus: &mut Bus) -> Result<(), BusError> {
        let data = u64::from(ports::I8042_DATA);
        let command = u64::from(ports::I8042_COMMAND);
        bus.insert(Arc::new(Mutex::new(I8042Port::data(this))), data, 1)?;
        if let Err(e) = bus.insert(Arc::new(Mutex::new(I8042Port::command(this))), command, 1) {
            bus.remove(data);
            return Err(e);
        }
        Ok(())
    }

    /// Returns to the power-on state (machine reset), lowering both lines.
    pub fn reset(&mut self) {
        self.status = STAT_CMD;
        self.ccb = POWER_ON_COMMAND_BYTE;
        self.outport = OUT_POWER_ON;
        self.pending = None;
        self.ob = None;
        self.last_read = 0;
        self.ctrl_out = None;
        self.kbd = Keyboard::new();
        self.mouse = Mouse::new();
        self.update_irqs();
    }

    /// A key pressed (`down`) or released. `scancode` is the key's set 1
    /// make code; extended keys are `0xE0xx` (`0xE048` Up, `0xE01D` right
    /// Ctrl). Print Screen is `0xE037`, Pause `0xE11D` (or `0xE046`). The
    /// keyboard sends the key in its current set (set 1 again if the guest
    /// turned translation on with the keyboard in set 2). Ignored while the
    /// keyboard is not scanning or the code is unknown.
    pub fn key_event(&mut self, scancode: u16, down: bool) {
        let xlate = self.translating();
        self.kbd.key_event(scancode, down, xlate);
        self.fill();
    }

    /// Mouse motion and buttons. `dx` grows to the right and `dy` grows
    /// downwards, as on screen (the mouse negates it: PS/2 Y grows upwards);
    /// `dz` is wheel clicks, positive towards the user (scrolling down), as
    /// PS/2 reports it. `buttons`: bit 0 left, 1 right, 2 middle, 3 and 4
    /// the side buttons (reported only in IntelliMouse Explorer mode).
    /// Ignored until the guest enables reporting (`0xF4`). Large motions are
    /// sent as several packets of at most -256..=255 each; an event that
    /// changes nothing sends nothing.
    pub fn mouse_event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.mouse.event(dx, dy, dz, buttons);
        self.fill();
    }

    /// The keyboard LEDs as the guest last set them.
    pub fn keyboard_leds(&self) -> KeyboardLeds {
        KeyboardLeds {
            scroll_lock: self.kbd.leds & 0x01 != 0,
            num_lock: self.kbd.leds & 0x02 != 0,
            caps_lock: self.kbd.leds & 0x04 != 0,
        }
    }

    /// Keyboard bytes not yet read by the guest, the one in the output
    /// buffer included. Input sources that send many keys at once (a paste,
    /// a scripted key sequence) wait for this to fall, as QEMU's input layer
    /// paces `sendkey`: the keyboard holds 16 bytes, like a real one.
    pub fn keyboard_backlog(&self) -> usize {
        let in_buffer = matches!(self.ob, Some((_, Source::Keyboard)));
        self.kbd.replies.len() + self.kbd.scancodes.len() + usize::from(in_buffer)
    }

    /// The controller command byte (what `0x20` reads).
    pub fn command_byte(&self) -> u8 {
        self.ccb
    }

    /// The status register (port 0x64 reads).
    pub fn status(&self) -> u8 {
        let mut s = self.status | STAT_UNLOCKED;
        match self.ob {
            Some((_, Source::Keyboard)) => s |= STAT_OBF,
            Some((_, Source::Aux)) => s |= STAT_OBF | STAT_AUX_OBF,
            None => {}
        }
        s
    }

    /// A read of port 0x60: the output buffer, then the next byte is loaded.
    pub fn read_data(&mut self) -> u8 {
        if let Some((b, _)) = self.ob.take() {
            self.last_read = b;
            self.update_irqs();
            self.fill();
        }
        self.last_read
    }

    /// A write to port 0x60: a parameter of the pending controller command,
    /// or else a byte for the keyboard.
    pub fn write_data(&mut self, v: u8) {
        self.status &= !STAT_CMD;
        match self.pending.take() {
            None => {
                // Sending to the keyboard enables its interface (QEMU).
                self.ccb &= !CCB_KBD_DISABLE;
                let xlate = self.translating();
                self.kbd.write(v, xlate);
            }
            Some(0x60) => {
                self.ccb = v;
                if v & CCB_SYS != 0 {
                    self.status |= STAT_SYS;
                } else {
                    self.status &= !STAT_SYS;
                }
                self.update_irqs();
            }
            Some(0xd1) => self.write_outport(v),
            Some(0xd2) => self.ctrl_reply(v, Source::Keyboard),
            Some(0xd3) => self.ctrl_reply(v, Source::Aux),
            Some(0xd4) => {
                self.ccb &= !CCB_AUX_DISABLE;
                self.mouse.write(v);
            }
            Some(_) => {}
        }
        self.fill();
    }

    /// A write to port 0x64: a controller command.
    pub fn write_command(&mut self, cmd: u8) {
        self.status |= STAT_CMD;
        self.pending = None;
        // 0xF0-0xFF pulse the output port bits that are clear in the low
        // nibble; only bit 0 (reset) matters.
        let cmd = match cmd {
            0xf0..=0xff if cmd & 0x01 == 0 => 0xfe,
            0xf0..=0xff => 0xff,
            c => c,
        };
        match cmd {
            0x20 => self.ctrl_reply(self.ccb, Source::Keyboard),
            0x60 | 0xd1..=0xd4 => self.pending = Some(cmd),
            0xa7 => self.ccb |= CCB_AUX_DISABLE,
            0xa8 => self.ccb &= !CCB_AUX_DISABLE,
            0xa9 | 0xab => self.ctrl_reply(0x00, Source::Keyboard),
            0xaa => {
                self.status |= STAT_SYS;
                self.ctrl_reply(0x55, Source::Keyboard);
            }
            0xad => self.ccb |= CCB_KBD_DISABLE,
            0xae => self.ccb &= !CCB_KBD_DISABLE,
            0xc0 => self.ctrl_reply(INPUT_PORT, Source::Keyboard),
            0xd0 => {
                let v = self.outport_value();
                self.ctrl_reply(v, Source::Keyboard);
            }
            0xdd => self.outport &= !OUT_A20,
            0xdf => self.outport |= OUT_A20,
            0xfe => self.requests.request(VmRequest::Reset),
            _ => {}
        }
        self.fill();
    }

    fn translating(&self) -> bool {
        self.ccb & CCB_TRANSLATE != 0
    }

    fn outport_value(&self) -> u8 {
        let mut v = self.outport & !(OUT_OBF | OUT_AUX_OBF);
        match self.ob {
            Some((_, Source::Keyboard)) => v |= OUT_OBF,
            Some((_, Source::Aux)) => v |= OUT_AUX_OBF,
            None => {}
        }
        v
    }

    fn write_outport(&mut self, v: u8) {
        self.outport = v & !(OUT_OBF | OUT_AUX_OBF);
        if v & OUT_RESET == 0 {
            self.requests.request(VmRequest::Reset);
        }
    }

    fn ctrl_reply(&mut self, b: u8, src: Source) {
        self.ctrl_out = Some((b, src));
    }

    /// Loads the output buffer if it is empty and something waits.
    fn fill(&mut self) {
        if self.ob.is_none() {
            self.ob = if let Some(c) = self.ctrl_out.take() {
                Some(c)
            } else if self.ccb & CCB_KBD_DISABLE == 0
                && let Some(b) = self.kbd.pop()
            {
                Some((b, Source::Keyboard))
            } else if self.ccb & CCB_AUX_DISABLE == 0
                && let Some(b) = self.mouse.pop()
            {
                Some((b, Source::Aux))
            } else {
                None
            };
        }
        self.update_irqs();
    }

    /// Drives IRQ 1 and 12 from the output buffer and the command byte.
    fn update_irqs(&mut self) {
        let kbd = matches!(self.ob, Some((_, Source::Keyboard))) && self.ccb & CCB_KBD_INT != 0;
        let aux = matches!(self.ob, Some((_, Source::Aux))) && self.ccb & CCB_AUX_INT != 0;
        if kbd != self.kbd_level {
            self.kbd_level = kbd;
            self.kbd_irq.set_level(kbd);
        }
        if aux != self.mouse_level {
            self.mouse_level = aux;
            self.mouse_irq.set_level(aux);
        }
    }
}

/// Which of the controller's two ports an [`I8042Port`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Register {
    Data,
    Command,
}

/// One port of a shared [`I8042`], for the bus: the data port (insert at
/// 0x60, length 1) or the status/command port (insert at 0x64, length 1).
/// Accesses wider than a byte use their first byte; reads fill the rest
/// with 0xff (nothing else answers there in this device).
pub struct I8042Port {
    controller: Arc<Mutex<I8042>>,
    register: Register,
}

impl fmt::Debug for I8042Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042Port")
            .field("register", &self.register)
            .finish_non_exhaustive()
    }
}

impl I8042Port {
    /// The data port (0x60) of `controller`.
    pub fn data(controller: &Arc<Mutex<I8042>>) -> Self {
        Self {
            controller: Arc::clone(controller),
            register: Register::Data,
        }
    }

    /// The status (read) / command (write) port (0x64) of `controller`.
    pub fn command(controller: &Arc<Mutex<I8042>>) -> Self {
        Self {
            controller: Arc::clone(controller),
            register: Register::Command,
        }
    }
}

impl BusDevice for I8042Port {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if offset != 0 {
            return;
        }
        let mut c = lock(&self.controller);
        *first = match self.register {
            Register::Data => c.read_data(),
            Register::Command => c.status(),
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset != 0 {
            return;
        }
        let mut c = lock(&self.controller);
        match self.register {
            Register::Data => c.write_data(v),
            Register::Command => c.write_command(v),
        }
    }
}

#[cfg(test)]
mod tests;
