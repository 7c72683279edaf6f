//! Reads what a test guest printed on COM1.
//!
//! Guests print one fact per line as `key=value` (split at the first `=`),
//! plus bare marker lines such as `done`. Keys are lower-case letters,
//! digits and `_`; any other line (firmware banners, escape sequences) is
//! neither a fact nor a marker and is ignored. Numbers are decimal unless
//! they start with `0x`.

/// The lines a guest printed, with `\r` and surrounding blanks removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    lines: Vec<String>,
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses `123` or `0x7b`.
pub fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Report {
    /// Splits `text` into lines. A partial last line (no `\n` yet) is left
    /// out, so a fact is never read half-printed.
    pub fn parse(text: &str) -> Self {
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        let lines = complete
            .split('\n')
            .map(|l| l.trim_matches(|c: char| c == '\r' || c == ' ').to_owned())
            .collect();
        Self { lines }
    }

    /// Every line, in order.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Every `key=value` fact, in order.
    pub fn facts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            is_key(k).then_some((k, v))
        })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.facts().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.facts()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }

    /// The first value of `key` as a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_number)
    }

    /// Whether a line is exactly `line` (a marker such as `done`, or a
    /// whole fact such as `power=button`).
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// How many lines are exactly `line`.
    pub fn count(&self, line: &str) -> usize {
        self.lines.iter().filter(|l| *l == line).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_skip_firmware_noise_and_partial_lines() {
        let r = Report::parse(
            "\x1bcSeaBIOS (version 1.16)\r\nBooting from ROM..\nguest=fb\nbar0=0xfd000000\n\
             cmdline=a=b c\nap=1 up\ndone\nxres=6",
        );
        assert_eq!(r.get("guest"), Some("fb"));
        assert_eq!(r.number("bar0"), Some(0xfd00_0000));
        assert_eq!(r.get("cmdline"), Some("a=b c"));
        assert_eq!(r.all("ap"), ["1 up"]);
        assert!(r.has("done"));
        assert_eq!(r.get("xres"), None, "a half-printed line is not a fact");
        assert_eq!(r.facts().count(), 4);
    }

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0x2a"), Some(42));
        assert_eq!(parse_number("0xzz"), None);
        assert_eq!(parse_number("none"), None);
    }
}
