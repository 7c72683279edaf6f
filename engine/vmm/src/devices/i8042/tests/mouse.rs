//! The mouse: its commands, ID knocks, packets and modes.

use super::*;

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
