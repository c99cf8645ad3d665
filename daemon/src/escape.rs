//! Strings that come from peers and processes (a binary's name, a label value, a
//! collector's host, an endpoint's error text) are stored as sent, but printed escaped:
//! a control character in a terminal or a log line can set the window title, clear the
//! screen or forge a line. [`escape`] is for output meant to be read whole (the CLI),
//! [`Escaped`] for log fields, where the string is also cut to a bounded length.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// How many characters of a peer string a log line shows by default.
pub const LOG_CHARS: usize = 200;

/// Whether `c` must not reach a terminal as is: C0 and C1 controls, DEL, and the
/// Unicode format characters that reorder or hide text (bidi overrides, zero widths).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every unsafe character written as a Rust-style escape (`\e` for ESC,
/// `\n`, `\t`, `\x07`, `\u{202e}`) and backslashes doubled only where an escape was
/// needed; borrowed when nothing needed escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 && is_unsafe(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A peer string for a log field: escaped, and cut after `max` characters with the
/// number of bytes left out (`"abc…(+1234 bytes)"`).
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Escaped<'a> {
    pub fn new(text: &'a str) -> Escaped<'a> {
        Escaped {
            text,
            max: LOG_CHARS,
        }
    }

    pub fn max(text: &'a str, max: usize) -> Escaped<'a> {
        Escaped { text, max }
    }
}

/// Shorthand for [`Escaped::new`].
pub fn peer(text: &str) -> Escaped<'_> {
    Escaped::new(text)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs = self.text.chars().any(is_unsafe);
        let mut shown = String::new();
        let mut rest = "";
        for (n, (i, c)) in self.text.char_indices().enumerate() {
            if n == self.max {
                rest = &self.text[i..];
                break;
            }
            if needs && (is_unsafe(c) || c == '\\') {
                push_escaped(&mut shown, c);
            } else {
                shown.push(c);
            }
        }
        f.write_str(&shown)?;
        if !rest.is_empty() {
            write!(f, "…(+{} bytes)", rest.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_escaped_and_plain_text_is_borrowed() {
        let evil = "\u{1b}]0;PWNED\u{7}\u{1b}[31mred\u{9b}2J";
        let shown = escape(evil);
        assert_eq!(shown, "\\e]0;PWNED\\x07\\e[31mred\\x9b2J");
        assert!(!shown.chars().any(is_unsafe));
        assert!(matches!(escape("billing-api v1.2"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{202e}b\nc"), "a\\u{202e}b\\nc");
    }

    #[test]
    fn log_fields_are_escaped_and_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(Escaped::max(&long, 3).to_string(), "xxx…(+997 bytes)");
        assert_eq!(peer("a\u{1b}b").to_string(), "a\\eb");
        assert_eq!(format!("{:?}", peer("ok")), "\"ok\"");
        // Cut on a character boundary, never inside a multi-byte character.
        assert_eq!(Escaped::max("ééé", 2).to_string(), "éé…(+2 bytes)");
    }
}
