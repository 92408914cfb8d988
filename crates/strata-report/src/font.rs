//! The embedded font: DejaVu Sans (from the `dejavu` crate), registered once with plotters as
//! `sans-serif`, so that plots render their text on machines without any font installed.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// The family name plotters looks up for default text.
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers the font on first use; returns why it could not be, if it could not.
pub(crate) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font is not a valid font".to_string())
        })
        .clone()
}
