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
//!
//! # Code
//!
//! This file is the controller ([`I8042`], its ports and registers, the
//! output buffer); `i8042/keyboard.rs` the keyboard, `i8042/mouse.rs` the
//! mouse, `i8042/scancodes.rs` the scan code sets and the 8042's
//! translation table; `i8042/tests.rs` the tests.

mod keyboard;
mod mouse;
mod scancodes;

pub use keyboard::KeyboardLeds;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bus::{Bus, BusDevice, BusError};
use crate::devices::{IrqLine, Requests, VmRequest};
use crate::layout::ports;

use keyboard::Keyboard;
use mouse::Mouse;

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
