//! Colour on a terminal, plain text elsewhere or with NO_COLOR.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether this process writes colour: standard output is a terminal and NO_COLOR is unset.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
    })
}

fn paint(code: &str, s: &str) -> String {
    if enabled() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn ok(s: &str) -> String {
    paint("32", s)
}

pub fn bad(s: &str) -> String {
    paint("31", s)
}

pub fn dim(s: &str) -> String {
    paint("2", s)
}

pub fn bold(s: &str) -> String {
    paint("1", s)
}

pub fn error(s: &str) -> String {
    paint("1;31", s)
}

/// `s` without its ANSI escape sequences.
pub fn strip(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ending with a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_removes_colour_codes_only() {
        assert_eq!(
            super::strip("\x1b[1m\x1b[91merror\x1b[0m: x → y"),
            "error: x → y"
        );
    }
}
