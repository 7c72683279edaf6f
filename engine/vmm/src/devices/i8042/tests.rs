//! The i8042 on a bus (`Rig`): controller commands, interrupts, AUX
//! routing, robustness; `keyboard.rs` and `mouse.rs` the devices behind it.

use super::*;
use crate::devices::testing::{RecordingIrq, RecordingRequests};

mod keyboard;
mod mouse;

/// A controller on a bus, with its recorders.
struct Rig {
    bus: Bus,
    ctrl: Arc<Mutex<I8042>>,
    kbd_irq: Arc<RecordingIrq>,
    mouse_irq: Arc<RecordingIrq>,
    requests: Arc<RecordingRequests>,
}

impl Rig {
    fn new() -> Self {
        let kbd_irq = Arc::new(RecordingIrq::default());
        let mouse_irq = Arc::new(RecordingIrq::default());
        let requests = Arc::new(RecordingRequests::default());
        let ctrl = I8042::new(kbd_irq.clone(), mouse_irq.clone(), requests.clone());
        let mut bus = Bus::new();
        I8042::attach(&ctrl, &mut bus).unwrap();
        Self {
            bus,
            ctrl,
            kbd_irq,
            mouse_irq,
            requests,
        }
    }

    fn status(&self) -> u8 {
        let mut b = [0u8];
        self.bus.read(0x64, &mut b).unwrap();
        b[0]
    }

    fn read(&self) -> u8 {
        let mut b = [0u8];
        self.bus.read(0x60, &mut b).unwrap();
        b[0]
    }

    fn cmd(&self, v: u8) {
        self.bus.write(0x64, &[v]).unwrap();
    }

    fn data(&self, v: u8) {
        self.bus.write(0x60, &[v]).unwrap();
    }

    /// Reads every byte waiting, with its AUX bit.
    fn drain(&self) -> Vec<(u8, bool)> {
        let mut out = Vec::new();
        while self.status() & STAT_OBF != 0 {
            let aux = self.status() & STAT_AUX_OBF != 0;
            out.push((self.read(), aux));
            assert!(out.len() < 10_000, "output never drains");
        }
        out
    }

    /// Reads every byte waiting, asserting they come from the keyboard.
    fn drain_kbd(&self) -> Vec<u8> {
        self.drain()
            .into_iter()
            .map(|(b, aux)| {
                assert!(!aux, "byte {b:#x} marked as AUX");
                b
            })
            .collect()
    }

    /// Reads every byte waiting, asserting they come from the mouse.
    fn drain_aux(&self) -> Vec<u8> {
        self.drain()
            .into_iter()
            .map(|(b, aux)| {
                assert!(aux, "byte {b:#x} not marked as AUX");
                b
            })
            .collect()
    }

    fn set_command_byte(&self, v: u8) {
        self.cmd(0x60);
        self.data(v);
    }

    fn mouse_cmd(&self, v: u8) {
        self.cmd(0xd4);
        self.data(v);
    }

    fn key(&self, scancode: u16, down: bool) {
        lock(&self.ctrl).key_event(scancode, down);
    }

    fn mouse(&self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        lock(&self.ctrl).mouse_event(dx, dy, dz, buttons);
    }

    /// Resets the mouse and turns reporting on; the replies are read.
    fn enable_mouse(&self) {
        self.mouse_cmd(0xf4);
        assert_eq!(self.drain_aux(), vec![ACK]);
    }

    fn set_sample_rate(&self, rate: u8) {
        self.mouse_cmd(0xf3);
        self.mouse_cmd(rate);
    }

    fn reset_requests(&self) -> usize {
        let seen = self.requests.seen.lock().unwrap();
        seen.iter().filter(|r| **r == VmRequest::Reset).count()
    }
}

#[test]
fn power_on_status_and_command_byte_match_qemu() {
    let rig = Rig::new();

    let status = rig.status();
    rig.cmd(0x20);
    let ccb = rig.drain_kbd();

    assert_eq!(status, STAT_CMD | STAT_UNLOCKED);
    assert_eq!(ccb, vec![0x03]);
}

#[test]
fn self_test_returns_0x55_and_sets_system_flag() {
    let rig = Rig::new();

    rig.cmd(0xaa);

    assert_eq!(rig.status() & (STAT_OBF | STAT_SYS), STAT_OBF | STAT_SYS);
    assert_eq!(rig.drain_kbd(), vec![0x55]);
}

#[test]
fn interface_tests_return_zero() {
    let rig = Rig::new();

    rig.cmd(0xab);
    let kbd = rig.drain_kbd();
    rig.cmd(0xa9);
    let aux = rig.drain_kbd();

    assert_eq!(kbd, vec![0x00]);
    assert_eq!(aux, vec![0x00]);
}

#[test]
fn command_byte_write_then_read_round_trips() {
    let rig = Rig::new();

    rig.set_command_byte(0x47);
    rig.cmd(0x20);

    assert_eq!(rig.drain_kbd(), vec![0x47]);
    assert_eq!(lock(&rig.ctrl).command_byte(), 0x47);
    assert_ne!(rig.status() & STAT_SYS, 0, "bit 2 copies to the status");
}

#[test]
fn aux_and_keyboard_disable_commands_toggle_command_byte_bits() {
    let rig = Rig::new();

    rig.cmd(0xa7);
    rig.cmd(0xad);
    let disabled = lock(&rig.ctrl).command_byte();
    rig.cmd(0xa8);
    rig.cmd(0xae);
    let enabled = lock(&rig.ctrl).command_byte();

    assert_eq!(disabled & 0x30, 0x30);
    assert_eq!(enabled & 0x30, 0x00);
}

#[test]
fn status_bit_3_tracks_the_port_written_last() {
    let rig = Rig::new();

    rig.cmd(0xae);
    let after_command = rig.status() & STAT_CMD;
    rig.data(0xf4);
    let after_data = rig.status() & STAT_CMD;

    assert_eq!(after_command, STAT_CMD);
    assert_eq!(after_data, 0);
}

#[test]
fn input_and_output_ports_read_power_on_values() {
    let rig = Rig::new();

    rig.cmd(0xc0);
    let input = rig.drain_kbd();
    rig.cmd(0xd0);
    let output = rig.drain_kbd();

    assert_eq!(input, vec![0x80]);
    assert_eq!(output, vec![0xcf]);
}

#[test]
fn a20_commands_and_output_port_write_are_read_back() {
    let rig = Rig::new();

    rig.cmd(0xdd);
    rig.cmd(0xd0);
    let a20_off = rig.drain_kbd();
    rig.cmd(0xd1);
    rig.data(0xdf);
    rig.cmd(0xd0);
    let written = rig.drain_kbd();

    assert_eq!(a20_off, vec![0xcd]);
    assert_eq!(written, vec![0xcf]);
    assert_eq!(rig.reset_requests(), 0);
}

#[test]
fn output_port_write_with_bit_0_clear_requests_reset() {
    let rig = Rig::new();

    rig.cmd(0xd1);
    rig.data(0xfe);

    assert_eq!(rig.reset_requests(), 1);
}

#[test]
fn pulse_command_0xfe_requests_reset() {
    let rig = Rig::new();

    rig.cmd(0xfe);

    assert_eq!(rig.reset_requests(), 1);
}

#[test]
fn pulse_commands_reset_only_when_bit_0_is_pulsed() {
    let rig = Rig::new();

    for cmd in 0xf0..=0xffu8 {
        rig.cmd(cmd);
    }

    // 0xf0, 0xf2, ..., 0xfe pulse bit 0.
    assert_eq!(rig.reset_requests(), 8);
}

#[test]
fn keyboard_irq_is_high_while_a_byte_waits_and_low_after_the_read() {
    let rig = Rig::new();

    rig.key(0x1e, true);
    let raised = rig.kbd_irq.level();
    rig.read();
    let after_read = rig.kbd_irq.level();

    assert!(raised);
    assert!(!after_read);
    assert!(!rig.mouse_irq.level());
}

#[test]
fn keyboard_irq_gives_one_edge_per_byte() {
    let rig = Rig::new();

    rig.key(0xe048, true); // two bytes
    rig.drain_kbd();

    assert_eq!(rig.kbd_irq.rising_edges(), 2);
    assert!(!rig.kbd_irq.level());
}

#[test]
fn keyboard_irq_stays_low_when_disabled_in_command_byte() {
    let rig = Rig::new();
    rig.set_command_byte(0x00);

    rig.key(0x1e, true);

    assert_ne!(rig.status() & STAT_OBF, 0);
    assert!(!rig.kbd_irq.level());
}

#[test]
fn enabling_the_interrupt_raises_it_for_a_waiting_byte() {
    let rig = Rig::new();
    rig.set_command_byte(0x00);
    rig.key(0x1e, true);

    rig.set_command_byte(0x01);

    assert!(rig.kbd_irq.level());
}

#[test]
fn aux_bytes_set_status_bit_5_and_raise_irq_12_not_irq_1() {
    let rig = Rig::new();

    rig.mouse_cmd(0xf2);

    assert_eq!(rig.status() & 0x21, 0x21);
    assert!(rig.mouse_irq.level());
    assert!(!rig.kbd_irq.level());
    assert_eq!(rig.drain_aux(), vec![0xfa, 0x00]);
    assert!(!rig.mouse_irq.level());
}

#[test]
fn keyboard_and_aux_bytes_are_not_mixed_up() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.key(0x1e, true);
    rig.mouse(1, 0, 0, 0);
    rig.key(0x1e, false);
    let bytes = rig.drain();

    let kbd: Vec<u8> = bytes.iter().filter(|b| !b.1).map(|b| b.0).collect();
    let aux: Vec<u8> = bytes.iter().filter(|b| b.1).map(|b| b.0).collect();
    assert_eq!(kbd, vec![0x1c, 0xf0, 0x1c]);
    assert_eq!(aux, vec![0x08, 0x01, 0x00]);
}

#[test]
fn aux_loopback_d3_returns_the_byte_as_aux_data() {
    let rig = Rig::new();

    rig.cmd(0xd3);
    rig.data(0x5a);

    assert!(rig.mouse_irq.level());
    assert_eq!(rig.drain_aux(), vec![0x5a]);
}

#[test]
fn keyboard_loopback_d2_returns_the_byte_as_keyboard_data() {
    let rig = Rig::new();

    rig.cmd(0xd2);
    rig.data(0x77);

    assert_eq!(rig.drain_kbd(), vec![0x77]);
}

#[test]
fn aux_interrupt_not_raised_when_disabled_in_command_byte() {
    let rig = Rig::new();
    rig.set_command_byte(0x01);

    rig.mouse_cmd(0xf2);

    assert!(!rig.mouse_irq.level());
    assert_eq!(rig.drain_aux(), vec![0xfa, 0x00]);
}

#[test]
fn empty_data_read_returns_zero_then_the_last_byte() {
    let rig = Rig::new();

    let first = rig.read();
    rig.data(0xee);
    let echo = rig.read();
    let again = rig.read();

    assert_eq!(first, 0);
    assert_eq!(echo, 0xee);
    assert_eq!(again, 0xee);
}

#[test]
fn controller_reply_replaces_an_unread_one() {
    let rig = Rig::new();
    rig.key(0x1e, true); // fills the output buffer

    rig.cmd(0xaa);
    rig.cmd(0x20);

    assert_eq!(rig.drain_kbd(), vec![0x1c, 0x03]);
}

#[test]
fn unknown_controller_commands_are_ignored() {
    let rig = Rig::new();

    for cmd in [0x00, 0x21, 0x61, 0xa1, 0xa4, 0xc1, 0xe0, 0xd5] {
        rig.cmd(cmd);
    }
    rig.data(0x42); // goes to the keyboard: resend

    assert_eq!(rig.drain_kbd(), vec![0xfe]);
    assert_eq!(rig.reset_requests(), 0);
    assert_eq!(lock(&rig.ctrl).command_byte(), POWER_ON_COMMAND_BYTE);
}

#[test]
fn odd_sized_accesses_use_the_first_byte_and_never_panic() {
    let rig = Rig::new();
    let mut port = I8042Port::data(&rig.ctrl);
    let mut cmd = I8042Port::command(&rig.ctrl);

    port.write(0, &[]);
    cmd.write(0, &[]);
    port.read(0, &mut []);
    cmd.write(0, &[0xaa, 0x12, 0x34, 0x56, 0x78, 0x9a]);
    let mut wide = [0u8; 4];
    cmd.read(0, &mut wide);
    let status = wide;
    port.read(0, &mut wide);
    let mut beyond = [0u8; 2];
    port.read(7, &mut beyond);
    port.write(7, &[0xff]);

    assert_eq!(status[0] & STAT_OBF, STAT_OBF);
    assert_eq!(&status[1..], &[0xff, 0xff, 0xff]);
    assert_eq!(wide, [0x55, 0xff, 0xff, 0xff]);
    assert_eq!(beyond, [0xff, 0xff]);
    assert_eq!(rig.drain_kbd(), Vec::<u8>::new());
}

#[test]
fn hostile_byte_streams_never_panic_and_stay_bounded() {
    let rig = Rig::new();
    let mut x: u32 = 0x1234_5678;
    let mut next = move || {
        // xorshift32: deterministic noise.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };

    for _ in 0..50_000 {
        let r = next();
        let v = (r >> 8) as u8;
        match r % 7 {
            0 => rig.cmd(v),
            1 | 2 => rig.data(v),
            3 => {
                rig.read();
            }
            4 => {
                rig.status();
            }
            5 => rig.key(
                u16::from(v) | if r & 0x100_0000 != 0 { 0xe000 } else { 0 },
                r & 1 == 0,
            ),
            _ => rig.mouse((r as i32) >> 8, (r as i32) >> 12, (r as i32) >> 28, v),
        }
        let c = lock(&rig.ctrl);
        assert!(c.kbd.scancodes.len() <= DATA_QUEUE_LEN);
        assert!(c.kbd.replies.len() <= REPLY_QUEUE_LEN);
        assert!(c.mouse.packets.len() <= DATA_QUEUE_LEN);
        assert!(c.mouse.replies.len() <= REPLY_QUEUE_LEN);
    }
}

#[test]
fn reset_restores_power_on_state_and_lowers_irqs() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);
    rig.data(0xed);
    rig.data(0x07);
    rig.key(0x1e, true);

    lock(&rig.ctrl).reset();

    assert_eq!(lock(&rig.ctrl).command_byte(), POWER_ON_COMMAND_BYTE);
    assert_eq!(lock(&rig.ctrl).keyboard_leds(), KeyboardLeds::default());
    assert_eq!(rig.status(), STAT_CMD | STAT_UNLOCKED);
    assert!(!rig.kbd_irq.level());
}

#[test]
fn attach_refuses_taken_ports_and_leaves_nothing_behind() {
    let rig = Rig::new();
    let mut bus = Bus::new();
    let squatter = Arc::new(Mutex::new(I8042Port::command(&rig.ctrl)));
    bus.insert(squatter, 0x64, 1).unwrap();

    let result = I8042::attach(&rig.ctrl, &mut bus);

    assert!(matches!(result, Err(BusError::Overlap { .. })));
    assert!(bus.resolve(0x60).is_none());
}
