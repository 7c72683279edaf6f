//! X keysyms (US layout) and QEMU XT keycodes to set-1 scancodes, as
//! [`crate::devices::i8042::I8042::key_event`] takes them (extended keys
//! as `0xE0xx`).

/// The set-1 make code of the key that produces `keysym` on a US keyboard,
/// or `None` for keysyms without a PS/2 key. Shifted symbols map to their
/// unshifted key: clients send Shift themselves.
pub fn keysym_to_scancode(keysym: u32) -> Option<u16> {
    let code = match keysym {
        // Latin-1 printable characters.
        0x20 => 0x39,
        0x21 => 0x02, // !
        0x22 => 0x28, // "
        0x23 => 0x04, // #
        0x24 => 0x05, // $
        0x25 => 0x06, // %
        0x26 => 0x08, // &
        0x27 => 0x28, // '
        0x28 => 0x0a, // (
        0x29 => 0x0b, // )
        0x2a => 0x09, // *
        0x2b => 0x0d, // +
        0x2c => 0x33, // ,
        0x2d => 0x0c, // -
        0x2e => 0x34, // .
        0x2f => 0x35, // /
        0x30 => 0x0b,
        0x31..=0x39 => (keysym - 0x31 + 0x02) as u16,
        0x3a | 0x3b => 0x27, // : ;
        0x3c => 0x33,        // <
        0x3d => 0x0d,        // =
        0x3e => 0x34,        // >
        0x3f => 0x35,        // ?
        0x40 => 0x03,        // @
        0x41..=0x5a => letter(keysym - 0x41),
        0x5b => 0x1a, // [
        0x5c => 0x2b, // backslash
        0x5d => 0x1b, // ]
        0x5e => 0x07, // ^
        0x5f => 0x0c, // _
        0x60 => 0x29, // `
        0x61..=0x7a => letter(keysym - 0x61),
        0x7b => 0x1a, // {
        0x7c => 0x2b, // |
        0x7d => 0x1b, // }
        0x7e => 0x29, // ~
        // Function and editing keys.
        0xff08 => 0x0e,                                     // BackSpace
        0xff09 => 0x0f,                                     // Tab
        0xfe20 => 0x0f,                                     // ISO_Left_Tab (Shift+Tab)
        0xff0d => 0x1c,                                     // Return
        0xff13 => 0xe11d,                                   // Pause
        0xff14 => 0x46,                                     // Scroll_Lock
        0xff15 => 0xe037,                                   // Sys_Req
        0xff1b => 0x01,                                     // Escape
        0xff50 => 0xe047,                                   // Home
        0xff51 => 0xe04b,                                   // Left
        0xff52 => 0xe048,                                   // Up
        0xff53 => 0xe04d,                                   // Right
        0xff54 => 0xe050,                                   // Down
        0xff55 => 0xe049,                                   // Page_Up
        0xff56 => 0xe051,                                   // Page_Down
        0xff57 => 0xe04f,                                   // End
        0xff61 => 0xe037,                                   // Print
        0xff63 => 0xe052,                                   // Insert
        0xff67 => 0xe05d,                                   // Menu
        0xff7f => 0x45,                                     // Num_Lock
        0xff8d => 0xe01c,                                   // KP_Enter
        0xff95 | 0xffb7 => 0x47,                            // KP_Home, KP_7
        0xff96 | 0xffb4 => 0x4b,                            // KP_Left, KP_4
        0xff97 | 0xffb8 => 0x48,                            // KP_Up, KP_8
        0xff98 | 0xffb6 => 0x4d,                            // KP_Right, KP_6
        0xff99 | 0xffb2 => 0x50,                            // KP_Down, KP_2
        0xff9a | 0xffb9 => 0x49,                            // KP_Page_Up, KP_9
        0xff9b | 0xffb3 => 0x51,                            // KP_Page_Down, KP_3
        0xff9c | 0xffb1 => 0x4f,                            // KP_End, KP_1
        0xff9d | 0xffb5 => 0x4c,                            // KP_Begin, KP_5
        0xff9e | 0xffb0 => 0x52,                            // KP_Insert, KP_0
        0xff9f | 0xffae => 0x53,                            // KP_Delete, KP_Decimal
        0xffaa => 0x37,                                     // KP_Multiply
        0xffab => 0x4e,                                     // KP_Add
        0xffad => 0x4a,                                     // KP_Subtract
        0xffaf => 0xe035,                                   // KP_Divide
        0xffbe..=0xffc7 => (keysym - 0xffbe + 0x3b) as u16, // F1..F10
        0xffc8 => 0x57,                                     // F11
        0xffc9 => 0x58,                                     // F12
        0xffe1 => 0x2a,                                     // Shift_L
        0xffe2 => 0x36,                                     // Shift_R
        0xffe3 => 0x1d,                                     // Control_L
        0xffe4 => 0xe01d,                                   // Control_R
        0xffe5 => 0x3a,                                     // Caps_Lock
        0xffe7 | 0xffeb => 0xe05b,                          // Meta_L, Super_L
        0xffe8 | 0xffec => 0xe05c,                          // Meta_R, Super_R
        0xffe9 => 0x38,                                     // Alt_L
        0xffea | 0xfe03 => 0xe038,                          // Alt_R, ISO_Level3_Shift (AltGr)
        0xffff => 0xe053,                                   // Delete
        _ => return None,
    };
    Some(code)
}

fn letter(i: u32) -> u16 {
    const QWERTY: [u16; 26] = [
        0x1e, 0x30, 0x2e, 0x20, 0x12, 0x21, 0x22, 0x23, 0x17, 0x24, 0x25, 0x26, 0x32, 0x31, 0x18,
        0x19, 0x10, 0x13, 0x1f, 0x14, 0x16, 0x2f, 0x11, 0x2d, 0x15, 0x2c,
    ];
    QWERTY.get(i as usize).copied().unwrap_or(0)
}

/// A QEMU Extended Key Event keycode (XT: one byte, or an 0xE0-prefixed
/// key with the high bit of the low byte set, as QEMU's `ui/vnc.c` reads
/// it) as a set-1 scancode. An explicit `0xE0xx` is accepted too.
pub fn qemu_keycode_to_scancode(keycode: u32) -> Option<u16> {
    match keycode {
        0 => None,
        1..=0x7f => Some(keycode as u16),
        0x80..=0xff => Some(0xe000 | (keycode & 0x7f) as u16),
        0xe000..=0xe0ff | 0xe11d => Some(keycode as u16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_keysyms_map_to_set1_make_codes() {
        assert_eq!(keysym_to_scancode(u32::from(b'a')), Some(0x1e));
        assert_eq!(keysym_to_scancode(u32::from(b'A')), Some(0x1e));
        assert_eq!(keysym_to_scancode(u32::from(b'z')), Some(0x2c));
        assert_eq!(keysym_to_scancode(u32::from(b'1')), Some(0x02));
        assert_eq!(keysym_to_scancode(u32::from(b'0')), Some(0x0b));
        assert_eq!(keysym_to_scancode(u32::from(b'?')), Some(0x35));
        assert_eq!(keysym_to_scancode(0xff1b), Some(0x01));
        assert_eq!(keysym_to_scancode(0xff52), Some(0xe048));
        assert_eq!(keysym_to_scancode(0xffc9), Some(0x58));
        assert_eq!(keysym_to_scancode(0xffbe), Some(0x3b));
        assert_eq!(keysym_to_scancode(0x20ac), None, "euro sign has no key");
    }

    #[test]
    fn qemu_keycodes_carry_the_e0_prefix_in_bit_7() {
        assert_eq!(qemu_keycode_to_scancode(0x1e), Some(0x1e));
        assert_eq!(qemu_keycode_to_scancode(0xc8), Some(0xe048), "Up");
        assert_eq!(qemu_keycode_to_scancode(0x9d), Some(0xe01d), "right Ctrl");
        assert_eq!(qemu_keycode_to_scancode(0xe048), Some(0xe048));
        assert_eq!(qemu_keycode_to_scancode(0x1234_5678), None);
    }
}
