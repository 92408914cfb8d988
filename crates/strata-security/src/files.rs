//! Writing new files: nothing is overwritten, and secrets are readable by their owner only.

use std::io::Write;
use std::path::Path;

/// Who may read a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// 0644: certificates.
    Public,
    /// 0600: private keys and tokens.
    OwnerOnly,
}

/// Creates `path` with `contents`; fails if it exists, so an old key is never replaced by accident.
pub fn write_new(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the secret is never readable by others, not even briefly.
        options.mode(match access {
            Access::Public => 0o644,
            Access::OwnerOnly => 0o600,
        });
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_owner_only_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("a.key");
        write_new(&key, b"secret", Access::OwnerOnly).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = write_new(&key, b"other", Access::OwnerOnly).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
    }
}
