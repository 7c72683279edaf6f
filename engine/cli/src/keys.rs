//! `send-key`: Linux key codes (virsh's default `--codeset linux`), by
//! number or `KEY_*` name, turned into the XT set-1 scancodes vireo-vmm's
//! keyboard takes (`0xE0xx` for extended keys).

/// Linux key names in code order from 1 (`KEY_ESC`) to 58 (`KEY_CAPSLOCK`).
const NAMES_1_TO_58: [&str; 58] = [
    "ESC",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
    "MINUS",
    "EQUAL",
    "BACKSPACE",
    "TAB",
    "Q",
    "W",
    "E",
    "R",
    "T",
    "Y",
    "U",
    "I",
    "O",
    "P",
    "LEFTBRACE",
    "RIGHTBRACE",
    "ENTER",
    "LEFTCTRL",
    "A",
    "S",
    "D",
    "F",
    "G",
    "H",
    "J",
    "K",
    "L",
    "SEMICOLON",
    "APOSTROPHE",
    "GRAVE",
    "LEFTSHIFT",
    "BACKSLASH",
    "Z",
    "X",
    "C",
    "V",
    "B",
    "N",
    "M",
    "COMMA",
    "DOT",
    "SLASH",
    "RIGHTSHIFT",
    "KPASTERISK",
    "LEFTALT",
    "SPACE",
    "CAPSLOCK",
];

/// Other names: Linux code and XT scancode.
const OTHERS: &[(&str, u16, u16)] = &[
    ("F11", 87, 0x57),
    ("F12", 88, 0x58),
    ("KPENTER", 96, 0xe01c),
    ("RIGHTCTRL", 97, 0xe01d),
    ("KPSLASH", 98, 0xe035),
    ("SYSRQ", 99, 0xe037),
    ("RIGHTALT", 100, 0xe038),
    ("HOME", 102, 0xe047),
    ("UP", 103, 0xe048),
    ("PAGEUP", 104, 0xe049),
    ("LEFT", 105, 0xe04b),
    ("RIGHT", 106, 0xe04d),
    ("END", 107, 0xe04f),
    ("DOWN", 108, 0xe050),
    ("PAGEDOWN", 109, 0xe051),
    ("INSERT", 110, 0xe052),
    ("DELETE", 111, 0xe053),
    ("LEFTMETA", 125, 0xe05b),
    ("RIGHTMETA", 126, 0xe05c),
    ("COMPOSE", 127, 0xe05d),
];

/// The XT scancode of a Linux key code: codes 1–83 (the PC/AT keys) are
/// the same numbers in both; the rest come from the table.
pub fn linux_to_xt(code: u16) -> Option<u16> {
    match code {
        1..=83 => Some(code),
        _ => OTHERS.iter().find(|k| k.1 == code).map(|k| k.2),
    }
}

/// Parses a key as virsh takes it: a number (decimal or 0x hex) or a
/// `KEY_*` name (F1–F10 included), and returns its XT scancode.
pub fn parse(key: &str) -> Result<u16, String> {
    let unknown = || format!("invalid keycode: '{key}'");
    let number = match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => key.parse::<u16>().ok(),
    };
    let code = match number {
        Some(n) => n,
        None => {
            let name = key
                .strip_prefix("KEY_")
                .ok_or_else(unknown)?
                .to_ascii_uppercase();
            if let Some(i) = NAMES_1_TO_58.iter().position(|n| *n == name) {
                i as u16 + 1
            } else if let Some(f) = name
                .strip_prefix('F')
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|n| (1..=10).contains(n))
            {
                58 + f
            } else {
                OTHERS
                    .iter()
                    .find(|k| k.0 == name)
                    .map(|k| k.1)
                    .ok_or_else(unknown)?
            }
        }
    };
    linux_to_xt(code).ok_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_alt_del_and_names_map_to_xt_scancodes() {
        assert_eq!(parse("KEY_LEFTCTRL"), Ok(0x1d));
        assert_eq!(parse("KEY_LEFTALT"), Ok(0x38));
        assert_eq!(parse("KEY_DELETE"), Ok(0xe053));
        assert_eq!(parse("KEY_A"), Ok(0x1e));
        assert_eq!(parse("KEY_F1"), Ok(0x3b));
        assert_eq!(parse("KEY_F10"), Ok(0x44));
        assert_eq!(parse("KEY_F12"), Ok(0x58));
        assert_eq!(parse("1"), Ok(0x01));
        assert_eq!(parse("0x1c"), Ok(0x1c));
        assert_eq!(parse("111"), Ok(0xe053));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert_eq!(parse("KEY_NOPE"), Err("invalid keycode: 'KEY_NOPE'".into()));
        assert!(parse("9999").is_err());
        assert!(parse("ctrl").is_err());
    }
}
