//! The one error type of the crate; every variant names the file it was about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("cannot draw {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

impl ReportError {
    /// A drawing error from plotters, attributed to the image being drawn.
    pub(crate) fn plot(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        ReportError::Plot { path: path.to_path_buf(), reason: err.to_string() }
    }
}
