use super::scancodes::{KEY_PAUSE, KEY_PAUSE_ALT, KEY_PRINT_SCREEN, KEYS, set2, translate};
use super::*;
use crate::devices::testing::{RecordingIrq, RecordingRequests};

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
fn keyboard_reset_acks_and_passes_self_test() {
    let rig = Rig::new();

    rig.data(0xff);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xaa]);
}

#[test]
fn keyboard_identify_untranslated_returns_ab_83() {
    let rig = Rig::new();

    rig.data(0xf2);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xab, 0x83]);
}

#[test]
fn keyboard_identify_translated_returns_ab_41() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);

    rig.data(0xf2);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xab, 0x41]);
}

#[test]
fn scancode_set_query_reports_the_current_set() {
    let rig = Rig::new();

    rig.data(0xf0);
    rig.data(0x00);
    let untranslated = rig.drain_kbd();
    rig.set_command_byte(0x47);
    rig.data(0xf0);
    rig.data(0x00);
    let translated = rig.drain_kbd();
    rig.data(0xf0);
    rig.data(0x03);
    rig.data(0xf0);
    rig.data(0x00);
    let set3 = rig.drain_kbd();

    assert_eq!(untranslated, vec![0xfa, 0xfa, 0x02]);
    assert_eq!(translated, vec![0xfa, 0xfa, 0x41]);
    assert_eq!(set3, vec![0xfa, 0xfa, 0xfa, 0xfa, 0x3f]);
}

#[test]
fn scancode_set_out_of_range_is_refused() {
    let rig = Rig::new();

    rig.data(0xf0);
    rig.data(0x04);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xfe]);
}

#[test]
fn echo_returns_ee() {
    let rig = Rig::new();

    rig.data(0xee);

    assert_eq!(rig.drain_kbd(), vec![0xee]);
}

#[test]
fn unknown_keyboard_command_gets_resend() {
    let rig = Rig::new();

    rig.data(0x42);

    assert_eq!(rig.drain_kbd(), vec![0xfe]);
}

#[test]
fn keyboard_resend_repeats_the_last_byte() {
    let rig = Rig::new();
    rig.data(0xf2);
    rig.drain_kbd();

    rig.data(0xfe);

    assert_eq!(rig.drain_kbd(), vec![0x83]);
}

#[test]
fn set_leds_is_acked_and_queryable() {
    let rig = Rig::new();

    rig.data(0xed);
    rig.data(0x06);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xfa]);
    assert_eq!(
        lock(&rig.ctrl).keyboard_leds(),
        KeyboardLeds {
            scroll_lock: false,
            num_lock: true,
            caps_lock: true,
        }
    );
}

#[test]
fn typematic_rate_is_acked_twice() {
    let rig = Rig::new();

    rig.data(0xf3);
    rig.data(0x20);

    assert_eq!(rig.drain_kbd(), vec![0xfa, 0xfa]);
}

#[test]
fn key_untranslated_emits_set_2_make_and_f0_break() {
    let rig = Rig::new();

    rig.key(0x1e, true);
    rig.key(0x1e, false);

    assert_eq!(rig.drain_kbd(), vec![0x1c, 0xf0, 0x1c]);
}

#[test]
fn key_translated_emits_set_1_make_and_break() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);

    rig.key(0x1e, true);
    rig.key(0x1e, false);

    assert_eq!(rig.drain_kbd(), vec![0x1e, 0x9e]);
}

#[test]
fn e0_key_untranslated_emits_e0_prefix_and_f0_break() {
    let rig = Rig::new();

    rig.key(0xe048, true);
    rig.key(0xe048, false);

    assert_eq!(rig.drain_kbd(), vec![0xe0, 0x75, 0xe0, 0xf0, 0x75]);
}

#[test]
fn e0_key_translated_emits_e0_prefix_and_set_1_codes() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);

    rig.key(0xe01d, true);
    rig.key(0xe01d, false);

    assert_eq!(rig.drain_kbd(), vec![0xe0, 0x1d, 0xe0, 0x9d]);
}

#[test]
fn keyboard_in_set_1_untranslated_emits_set_1() {
    let rig = Rig::new();
    rig.data(0xf0);
    rig.data(0x01);
    rig.drain_kbd();

    rig.key(0xe048, true);
    rig.key(0xe048, false);
    rig.key(0x10, true);

    assert_eq!(rig.drain_kbd(), vec![0xe0, 0x48, 0xe0, 0xc8, 0x10]);
}

#[test]
fn keyboard_in_set_3_emits_set_3() {
    let rig = Rig::new();
    rig.data(0xf0);
    rig.data(0x03);
    rig.drain_kbd();

    rig.key(0x3b, true);
    rig.key(0x3b, false);
    rig.key(0xe048, true);

    assert_eq!(rig.drain_kbd(), vec![0x07, 0xf0, 0x07, 0x63]);
}

#[test]
fn every_key_translates_from_set_2_back_to_its_set_1_code() {
    for k in KEYS {
        let make = set2(k.set2, true);
        let brk = set2(k.set2, false);
        let code = (k.set1 & 0xff) as u8;
        let expected_make: Vec<u8> = if k.set1 >> 8 == 0xe0 {
            vec![0xe0, code]
        } else {
            vec![code]
        };
        let expected_break: Vec<u8> = expected_make
            .iter()
            .map(|&b| if b == 0xe0 { b } else { b | 0x80 })
            .collect();

        assert_eq!(translate(&make), expected_make, "make {:#x}", k.set1);
        assert_eq!(translate(&brk), expected_break, "break {:#x}", k.set1);
    }
}

#[test]
fn key_table_has_no_duplicates() {
    for (i, a) in KEYS.iter().enumerate() {
        for b in &KEYS[i + 1..] {
            assert_ne!(a.set1, b.set1);
            assert_ne!(a.set2, b.set2);
            assert!(a.set3 == 0 || a.set3 != b.set3, "set 3 {:#x}", a.set3);
        }
    }
}

#[test]
fn pause_sends_its_make_only_sequence() {
    let rig = Rig::new();

    rig.key(KEY_PAUSE, true);
    rig.key(KEY_PAUSE, false);
    let set2 = rig.drain_kbd();
    rig.set_command_byte(0x47);
    rig.key(KEY_PAUSE, true);
    rig.key(KEY_PAUSE, false);
    let translated = rig.drain_kbd();

    assert_eq!(set2, vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]);
    assert_eq!(translated, vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]);
}

#[test]
fn ctrl_pause_sends_break() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);
    rig.key(0x1d, true);
    rig.drain_kbd();

    rig.key(KEY_PAUSE_ALT, true);

    assert_eq!(rig.drain_kbd(), vec![0xe0, 0x46, 0xe0, 0xc6]);
}

#[test]
fn print_screen_sends_fake_shift_sequences() {
    let rig = Rig::new();
    rig.set_command_byte(0x47);

    rig.key(KEY_PRINT_SCREEN, true);
    rig.key(KEY_PRINT_SCREEN, false);
    let plain = rig.drain_kbd();
    rig.key(0x38, true);
    rig.key(KEY_PRINT_SCREEN, true);
    rig.key(KEY_PRINT_SCREEN, false);
    rig.key(0x38, false);
    let with_alt = rig.drain_kbd();

    assert_eq!(plain, vec![0xe0, 0x2a, 0xe0, 0x37, 0xe0, 0xb7, 0xe0, 0xaa]);
    assert_eq!(with_alt, vec![0x38, 0x54, 0xd4, 0xb8]);
}

#[test]
fn unknown_scancodes_are_ignored() {
    let rig = Rig::new();

    for code in [0x0000, 0x0055, 0x00ff, 0xe000, 0xe0ff, 0x1234, 0xffff] {
        rig.key(code, true);
        rig.key(code, false);
    }

    assert_eq!(rig.drain_kbd(), Vec::<u8>::new());
}

#[test]
fn keys_are_dropped_while_scanning_is_disabled() {
    let rig = Rig::new();
    rig.data(0xf5);
    rig.drain_kbd();

    rig.key(0x1e, true);
    let while_disabled = rig.drain_kbd();
    rig.data(0xf4);
    rig.drain_kbd();
    rig.key(0x1e, true);

    assert_eq!(while_disabled, Vec::<u8>::new());
    assert_eq!(rig.drain_kbd(), vec![0x1c]);
}

#[test]
fn keys_wait_while_the_keyboard_interface_is_disabled() {
    let rig = Rig::new();
    rig.cmd(0xad);

    rig.key(0x1e, true);
    let while_disabled = rig.status() & STAT_OBF;
    rig.cmd(0xae);

    assert_eq!(while_disabled, 0);
    assert_eq!(rig.drain_kbd(), vec![0x1c]);
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
fn writing_to_the_mouse_enables_the_aux_interface() {
    let rig = Rig::new();
    rig.cmd(0xa7);

    rig.mouse_cmd(0xf2);

    assert_eq!(lock(&rig.ctrl).command_byte() & CCB_AUX_DISABLE, 0);
    assert_eq!(rig.drain_aux(), vec![0xfa, 0x00]);
}

#[test]
fn mouse_reset_returns_fa_aa_00() {
    let rig = Rig::new();

    rig.mouse_cmd(0xff);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0xaa, 0x00]);
}

#[test]
fn mouse_intellimouse_knock_sets_id_3() {
    let rig = Rig::new();

    for rate in [200, 100, 80] {
        rig.set_sample_rate(rate);
    }
    rig.drain_aux();
    rig.mouse_cmd(0xf2);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0x03]);
}

#[test]
fn mouse_explorer_knock_sets_id_4() {
    let rig = Rig::new();

    for rate in [200, 200, 80] {
        rig.set_sample_rate(rate);
    }
    rig.drain_aux();
    rig.mouse_cmd(0xf2);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0x04]);
}

#[test]
fn mouse_other_sample_rates_keep_id_0() {
    let rig = Rig::new();

    for rate in [200, 80, 100, 60, 40] {
        rig.set_sample_rate(rate);
    }
    rig.drain_aux();
    rig.mouse_cmd(0xf2);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0x00]);
}

#[test]
fn mouse_reset_returns_to_id_0() {
    let rig = Rig::new();
    for rate in [200, 100, 80] {
        rig.set_sample_rate(rate);
    }

    rig.mouse_cmd(0xff);
    rig.mouse_cmd(0xf2);

    assert_eq!(rig.drain_aux().last(), Some(&0x00));
}

#[test]
fn mouse_packet_encodes_buttons_signs_and_y_up() {
    let rig = Rig::new();
    rig.enable_mouse();

    // Left and middle held, moving left and down the screen.
    rig.mouse(-3, 5, 0, 0x05);

    assert_eq!(rig.drain_aux(), vec![0x08 | 0x05 | 0x10 | 0x20, 0xfd, 0xfb]);
}

#[test]
fn mouse_packet_uses_the_ninth_bit_for_large_motion() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(200, -255, 0, 0);

    // dx 200 fits in 9 bits positive; dy up 255.
    assert_eq!(rig.drain_aux(), vec![0x08, 200, 255]);
}

#[test]
fn mouse_large_motion_is_split_into_packets() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(600, -300, 0, 0);

    assert_eq!(
        rig.drain_aux(),
        vec![
            0x08, 255, 255, // 255 right, 255 up
            0x08, 255, 45, // 255 right, 45 up
            0x08, 90, 0, // the rest
        ]
    );
}

#[test]
fn mouse_negative_motion_is_clamped_to_minus_256_a_packet() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(-300, 0, 0, 0);

    assert_eq!(rig.drain_aux(), vec![0x18, 0x00, 0x00, 0x18, 0xd4, 0x00]);
}

#[test]
fn mouse_huge_motion_is_capped_and_sent_without_overflow_bits() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(i32::MAX, i32::MIN, 0, 0);
    let bytes = rig.drain_aux();

    let packets: Vec<&[u8]> = bytes.chunks(3).collect();
    let dx: i32 = packets.iter().map(|p| i32::from(p[1])).sum();
    let dy: i32 = packets.iter().map(|p| i32::from(p[2])).sum();
    assert!(packets.iter().all(|p| p[0] & 0xc0 == 0));
    assert_eq!(dx, MOTION_LIMIT);
    assert_eq!(dy, MOTION_LIMIT);
}

#[test]
fn mouse_motion_waits_while_the_queue_is_full() {
    let rig = Rig::new();
    rig.enable_mouse();

    for _ in 0..20 {
        rig.mouse(100, 0, 0, 0);
    }
    let bytes = rig.drain_aux();

    let dx: i32 = bytes.chunks(3).map(|p| i32::from(p[1])).sum();
    assert_eq!(dx, 2000);
}

#[test]
fn mouse_button_change_without_motion_sends_one_packet() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(0, 0, 0, 0x02);
    rig.mouse(0, 0, 0, 0x02);

    assert_eq!(rig.drain_aux(), vec![0x0a, 0x00, 0x00]);
}

#[test]
fn mouse_2_1_scaling_applies_to_stream_packets() {
    let rig = Rig::new();
    rig.mouse_cmd(0xe7);
    rig.drain_aux();
    rig.enable_mouse();

    rig.mouse(4, 0, 0, 0);
    rig.mouse(200, 0, 0, 0);

    assert_eq!(rig.drain_aux(), vec![0x08, 6, 0, 0x08, 255, 0]);
}

#[test]
fn mouse_wheel_packet_has_a_fourth_byte_in_intellimouse_mode() {
    let rig = Rig::new();
    for rate in [200, 100, 80] {
        rig.set_sample_rate(rate);
    }
    rig.drain_aux();
    rig.enable_mouse();

    rig.mouse(0, 0, -1, 0);

    assert_eq!(rig.drain_aux(), vec![0x08, 0x00, 0x00, 0xff]);
}

#[test]
fn mouse_explorer_packet_carries_side_buttons() {
    let rig = Rig::new();
    for rate in [200, 200, 80] {
        rig.set_sample_rate(rate);
    }
    rig.drain_aux();
    rig.enable_mouse();

    rig.mouse(0, 0, 2, 0x18 | 0x01);

    assert_eq!(rig.drain_aux(), vec![0x09, 0x00, 0x00, 0x30 | 0x02]);
}

#[test]
fn mouse_wheel_is_dropped_in_plain_ps2_mode() {
    let rig = Rig::new();
    rig.enable_mouse();

    rig.mouse(0, 0, 5, 0);
    rig.mouse(1, 0, 5, 0);

    assert_eq!(rig.drain_aux(), vec![0x08, 0x01, 0x00]);
}

#[test]
fn mouse_events_are_ignored_until_reporting_is_enabled() {
    let rig = Rig::new();

    rig.mouse(10, 10, 0, 1);
    let before = rig.drain_aux();
    rig.enable_mouse();
    rig.mouse(1, 0, 0, 0);

    assert_eq!(before, Vec::<u8>::new());
    assert_eq!(rig.drain_aux(), vec![0x08, 0x01, 0x00]);
}

#[test]
fn mouse_status_request_reports_settings() {
    let rig = Rig::new();
    rig.mouse_cmd(0xe8);
    rig.mouse_cmd(0x03);
    rig.set_sample_rate(40);
    rig.mouse_cmd(0xe7);
    rig.drain_aux();
    rig.enable_mouse();
    rig.mouse(0, 0, 0, 0x01);
    rig.drain_aux();

    rig.mouse_cmd(0xe9);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0x20 | 0x10 | 0x04, 0x03, 40]);
}

#[test]
fn mouse_remote_mode_reports_only_on_read_data() {
    let rig = Rig::new();
    rig.enable_mouse();
    rig.mouse_cmd(0xf0);
    rig.drain_aux();

    rig.mouse(3, 0, 0, 0);
    rig.mouse(400, 0, 0, 0);
    let streamed = rig.drain_aux();
    rig.mouse_cmd(0xeb);

    assert_eq!(streamed, Vec::<u8>::new());
    // 403 does not fit: clamped with the X overflow bit.
    assert_eq!(rig.drain_aux(), vec![0xfa, 0x48, 0xff, 0x00]);
}

#[test]
fn mouse_wrap_mode_echoes_until_reset_wrap() {
    let rig = Rig::new();
    rig.mouse_cmd(0xee);

    rig.mouse_cmd(0x42);
    rig.mouse_cmd(0xf2);
    rig.mouse_cmd(0xec);
    rig.mouse_cmd(0xf2);

    assert_eq!(rig.drain_aux(), vec![0xfa, 0x42, 0xf2, 0xfa, 0xfa, 0x00]);
}

#[test]
fn mouse_command_discards_unsent_motion() {
    let rig = Rig::new();
    rig.enable_mouse();
    rig.mouse(1, 0, 0, 0);
    rig.mouse(2, 0, 0, 0);
    // The first packet byte is already in the output buffer.
    let first = rig.read();

    rig.mouse_cmd(0xf5);

    // The byte already in the controller's buffer stays; the rest goes.
    assert_eq!(first, 0x08);
    assert_eq!(rig.drain_aux(), vec![0x01, 0xfa]);
}

#[test]
fn unknown_mouse_command_gets_resend() {
    let rig = Rig::new();

    rig.mouse_cmd(0x12);

    assert_eq!(rig.drain_aux(), vec![0xfe]);
}

#[test]
fn held_key_never_queues_more_than_linux_flushes() {
    let rig = Rig::new();

    for _ in 0..100 {
        rig.key(0x1e, true);
    }
    let backlog = lock(&rig.ctrl).keyboard_backlog();
    let bytes = rig.drain_kbd();

    // Linux's i8042_flush gives up after 16 bytes.
    assert_eq!(backlog, 16);
    assert_eq!(bytes, vec![0x1c; 16]);
    assert_eq!(lock(&rig.ctrl).keyboard_backlog(), 0);
}

#[test]
fn keyboard_queue_is_bounded_and_drops_whole_sequences() {
    let rig = Rig::new();
    rig.cmd(0xad);

    for _ in 0..1000 {
        rig.key(0xe048, true);
    }
    rig.cmd(0xae);
    let bytes = rig.drain_kbd();

    assert!(bytes.len() <= DATA_QUEUE_LEN + 1);
    assert_eq!(bytes.len() % 2, 0, "a sequence was cut");
    assert!(bytes.chunks(2).all(|c| c == [0xe0, 0x75]));
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
