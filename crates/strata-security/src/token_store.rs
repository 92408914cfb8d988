//! The server's tokens, re-read from their file when it changes, so that deleting a line
//! revokes that token at its next call without a restart.
//!
//! Each check looks at the file's metadata (a `stat`, microseconds) and re-reads the file only
//! when its modification time, size or inode changed. The stamp is taken *before* reading, and
//! reading happens under the lock, so a file changed during a read is read again at the next
//! check and two checks never install different versions out of order. A file that becomes
//! unreadable or invalid refuses every token (fail closed) until it is fixed: keeping the old
//! list would keep a token valid that the operator meant to revoke.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::{error, info};

use crate::token_file::{LineError, TokenList};

/// The tokens file could not be used at startup.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tokens file {path}, {source}")]
    Invalid { path: PathBuf, source: LineError },
}

/// Why a call's token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is not in the server's tokens file (unknown, or revoked)")]
    Unknown,
    /// The server's own file is broken; the detail is in the server's log, not sent out.
    #[error("the server cannot read its tokens file, so it accepts no token until its operator fixes it")]
    FileUnusable,
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self { modified: meta.modified().ok(), len: meta.len(), inode })
    }
}

struct Loaded {
    /// `None` when the file could not even be stat'ed.
    stamp: Option<Stamp>,
    tokens: Result<TokenList, ()>,
}

/// The accepted tokens, kept in step with their file.
pub struct TokenStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Reads the file; a server must not start on a file it cannot use.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let read_err = |source| TokenFileError::Read { path: path.clone(), source };
        let stamp = Stamp::of(&path).map_err(read_err)?;
        let text = std::fs::read_to_string(&path).map_err(read_err)?;
        let tokens =
            TokenList::parse(&text).map_err(|source| TokenFileError::Invalid { path: path.clone(), source })?;
        if tokens.is_empty() {
            tracing::warn!(path = %path.display(), "the tokens file lists no token: every call is refused until one is added");
        }
        info!(path = %path.display(), tokens = tokens.len(), "client tokens loaded");
        Ok(Self { path, loaded: Mutex::new(Loaded { stamp: Some(stamp), tokens: Ok(tokens) }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The label of `token` if the file, as it is now, accepts it.
    pub fn check(&self, token: &str) -> Result<String, Refusal> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut loaded);
        match &loaded.tokens {
            Ok(tokens) => tokens.label_of(token).map(str::to_string).ok_or(Refusal::Unknown),
            Err(()) => Err(Refusal::FileUnusable),
        }
    }

    /// Re-reads the file if its stamp changed; logs each change once.
    fn refresh(&self, loaded: &mut Loaded) {
        let stamp = Stamp::of(&self.path);
        let now = stamp.as_ref().ok().copied();
        if now.is_some() && now == loaded.stamp {
            return;
        }
        let path = self.path.display();
        let text = match stamp.and_then(|_| std::fs::read_to_string(&self.path)) {
            Ok(text) => text,
            Err(e) => {
                if loaded.stamp.is_some() || loaded.tokens.is_ok() {
                    error!(%path, "cannot read the tokens file ({e}): refusing every token until it is back");
                }
                *loaded = Loaded { stamp: now, tokens: Err(()) };
                return;
            }
        };
        loaded.stamp = now;
        loaded.tokens = match TokenList::parse(&text) {
            Ok(tokens) => {
                info!(%path, tokens = tokens.len(), "tokens file changed; reloaded");
                Ok(tokens)
            }
            Err(e) => {
                error!(%path, "tokens file changed and is invalid, {e}: refusing every token until it is fixed");
                Err(())
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_file::line_for;

    /// Replaces the file the way editors and `mv` do: a new inode, so the change is seen even
    /// within one tick of the file system's clock.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_deleted_line_is_refused_at_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (alice, bob) = (crate::new_token(), crate::new_token());
        replace(&path, &format!("{}\n{}\n", line_for(&alice, "alice"), line_for(&bob, "bob")));
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(store.check(&alice).unwrap(), "alice");
        assert_eq!(store.check(&bob).unwrap(), "bob");
        assert_eq!(store.check("strata_nope").unwrap_err(), Refusal::Unknown);

        replace(&path, &format!("{}\n", line_for(&bob, "bob")));
        assert_eq!(store.check(&alice).unwrap_err(), Refusal::Unknown);
        assert_eq!(store.check(&bob).unwrap(), "bob");
    }

    #[test]
    fn an_in_place_edit_of_another_size_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let alice = crate::new_token();
        std::fs::write(&path, format!("{}\n", line_for(&alice, "alice"))).unwrap();
        let store = TokenStore::open(&path).unwrap();
        assert!(store.check(&alice).is_ok());
        std::fs::write(&path, format!("# {}\n", line_for(&alice, "alice"))).unwrap();
        assert_eq!(store.check(&alice).unwrap_err(), Refusal::Unknown);
    }

    #[test]
    fn a_broken_or_missing_file_refuses_everything_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let alice = crate::new_token();
        let good = format!("{}\n", line_for(&alice, "alice"));
        replace(&path, &good);
        let store = TokenStore::open(&path).unwrap();

        replace(&path, &format!("{good}not-a-hash  bob\n"));
        assert_eq!(store.check(&alice).unwrap_err(), Refusal::FileUnusable);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.check(&alice).unwrap_err(), Refusal::FileUnusable);
        replace(&path, &good);
        assert_eq!(store.check(&alice).unwrap(), "alice");
    }

    #[test]
    fn a_server_does_not_start_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let err = TokenStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("cannot read the tokens file") && err.contains("tokens"), "{err}");
        std::fs::write(&path, "# header\nzzz  alice\n").unwrap();
        let err = TokenStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains(&path.display().to_string()), "{err}");
    }
}
