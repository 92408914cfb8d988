//! Client-sent text as the server's messages and logs show it: control characters escaped
//! and cut to a length, so that a hostile client cannot make a status or a log line of a
//! megabyte, nor forge a line of the log.

/// `text` with control characters escaped, cut to `max_chars` characters (marked with `…`).
pub fn clip(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// How much of a client-sent name or id a message shows.
pub const SHOWN_CHARS: usize = 100;

/// [`clip`] to [`SHOWN_CHARS`].
pub fn shown(text: &str) -> String {
    clip(text, SHOWN_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_and_control_characters_escaped() {
        assert_eq!(clip("head.weight", 100), "head.weight");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("a\nINFO forged line\r", 100), "a\\nINFO forged line\\r");
        assert_eq!(shown(&"x".repeat(1 << 20)).chars().count(), SHOWN_CHARS + 1);
        assert_eq!(clip("", 5), "");
    }
}
