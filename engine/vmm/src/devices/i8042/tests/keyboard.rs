//! The keyboard: its commands, scancode sets and translation, the key
//! queue.

use super::*;
use crate::devices::i8042::scancodes::{
    KEY_PAUSE, KEY_PAUSE_ALT, KEY_PRINT_SCREEN, KEYS, set2, translate,
};

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
