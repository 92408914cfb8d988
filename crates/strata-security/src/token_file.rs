//! The server's tokens file: one `<sha256-hex>  <label>` line per client, `#` comments.
//!
//! ```text
//! # strata token new --label alice
//! sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  alice
//! ```
//!
//! The `sha256:` prefix is optional, so `printf %s "$TOKEN" | sha256sum` output also works
//! once its `-` is replaced by a label.

use crate::token::{TOKEN_PREFIX, TokenHash};

/// One accepted token, known by its hash.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub hash: TokenHash,
    /// Who the token was given to: it names the client in the server's logs.
    pub label: String,
}

/// A line of the tokens file that is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// 1-based, as editors count.
    pub line: usize,
    pub reason: String,
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct TokenList {
    entries: Vec<TokenEntry>,
}

impl TokenList {
    /// Parses a whole file; the first bad line is an error, so a typo never half-applies.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let mut entries: Vec<(usize, TokenEntry)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| LineError { line, reason };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (hash_text, label) = match trimmed.split_once(char::is_whitespace) {
                Some((hash, label)) => (hash, label.trim()),
                None => (trimmed, ""),
            };
            if hash_text.starts_with(TOKEN_PREFIX) {
                return Err(err("this is a token, not its hash: the server keeps only hashes \
                     (put the `sha256:...` line that `strata token new` printed here, and remove the token)"
                    .to_string()));
            }
            let hex = hash_text.strip_prefix("sha256:").unwrap_or(hash_text);
            let hash = TokenHash::from_hex(hex).ok_or_else(|| {
                err(format!(
                    "`{}` is not a SHA-256 in hex (64 hex digits, optionally after `sha256:`)",
                    shorten(hash_text)
                ))
            })?;
            if label.is_empty() {
                return Err(err("no label after the hash: write `sha256:<hex>  <label>`".into()));
            }
            if let Some((first, _)) = entries.iter().find(|(_, e)| e.hash.ct_eq(&hash)) {
                return Err(err(format!("the same hash as line {first}")));
            }
            entries.push((line, TokenEntry { hash, label: label.to_string() }));
        }
        Ok(Self { entries: entries.into_iter().map(|(_, e)| e).collect() })
    }

    /// The label of `token` if it is accepted. Every entry is compared, in constant time, so
    /// the time taken says nothing about which entry (if any) matched.
    pub fn label_of(&self, token: &str) -> Option<&str> {
        let presented = TokenHash::of(token);
        let mut found = None;
        for entry in &self.entries {
            if entry.hash.ct_eq(&presented) {
                found = Some(entry.label.as_str());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }
}

/// The line to put in a tokens file for `token`.
pub fn line_for(token: &str, label: &str) -> String {
    format!("sha256:{}  {label}", TokenHash::of(token).to_hex())
}

/// Error messages quote what they refuse, but never a whole pasted secret.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(12) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn comments_blank_lines_and_both_hash_forms_are_read() {
        let text = format!(
            "# clients of the lab\n\n   \nsha256:{ABC}  alice\n{}\tbob the builder  \n  # revoked: carol\n",
            TokenHash::of("def").to_hex().to_uppercase()
        );
        let list = TokenList::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.label_of("abc"), Some("alice"));
        assert_eq!(list.label_of("def"), Some("bob the builder"));
        assert_eq!(list.label_of("carol"), None);
        assert_eq!(list.label_of(""), None);
    }

    #[test]
    fn line_for_round_trips() {
        let token = crate::new_token();
        let list = TokenList::parse(&line_for(&token, "dave")).unwrap();
        assert_eq!(list.label_of(&token), Some("dave"));
        assert_eq!(list.label_of(&format!("{token}x")), None);
    }

    #[test]
    fn an_empty_file_accepts_nothing() {
        let list = TokenList::parse("# nobody yet\n").unwrap();
        assert!(list.is_empty());
        assert_eq!(list.label_of("abc"), None);
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            (format!("# ok\nsha256:{ABC} alice\nsha256:abc bob\n"), 3, "not a SHA-256"),
            (format!("sha256:{ABC}\n"), 1, "no label"),
            (format!("\n\nsha256:{ABC}  alice\n{ABC}  again\n"), 4, "same hash as line 3"),
            ("md5:0123  eve\n".to_string(), 1, "not a SHA-256"),
            (format!("{}  mallory\n", crate::new_token()), 1, "this is a token, not its hash"),
        ];
        for (text, line, needle) in cases {
            let err = TokenList::parse(&text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")), "{err}");
        }
    }

    #[test]
    fn a_pasted_token_is_not_repeated_in_the_error() {
        let token = crate::new_token();
        let err = TokenList::parse(&format!("{token}  mallory\n")).unwrap_err();
        assert!(!err.to_string().contains(&token), "{err}");
        let err = TokenList::parse(&format!("sha256:{}x  mallory\n", &token[7..])).unwrap_err();
        assert!(!err.to_string().contains(&token[7..]), "{err}");
    }
}
