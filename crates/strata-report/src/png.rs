//! Writing a chart as a compact PNG: plotters draws into memory, and the `image` crate encodes
//! at its best compression with adaptive filtering (plotters' own saving uses the fastest
//! setting, about four times larger), replacing the file atomically.

use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::ReportError;

/// The drawing area a chart is drawn on: an RGB buffer in memory.
pub(crate) type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws a `size` image with `draw` and writes it to `path` as a PNG.
pub(crate) fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let pixels = render(path, size, draw)?;
    write_png(path, size, &pixels)
}

/// The RGB pixels, row by row, of what `draw` draws on a `size` canvas (black until filled).
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), ReportError>,
) -> Result<Vec<u8>, ReportError> {
    let mut pixels = vec![0; rgb_len(size)];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| ReportError::plot(path, e))?;
    }
    Ok(pixels)
}

/// Encodes RGB `pixels` of a `size` image as a PNG (best compression, adaptive filters) and
/// writes it to `path` atomically.
fn write_png(path: &Path, (w, h): (u32, u32), pixels: &[u8]) -> Result<(), ReportError> {
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(pixels, w, h, image::ColorType::Rgb8)
        .map_err(|e| ReportError::plot(path, e))?;
    let io = |source| ReportError::Io { path: path.to_path_buf(), source };
    strata_core::atomic_file::write(path, &png).map_err(io)?;
    // The temporary file behind the atomic write is created owner-only; a chart is for anyone
    // to open, like the summary and report beside it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    Ok(())
}

fn rgb_len((w, h): (u32, u32)) -> usize {
    w as usize * h as usize * 3
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A chart-like picture: white ground, a grid, an anti-aliased line and a filled patch.
    fn scene(root: &Canvas<'_>) -> Result<(), ReportError> {
        let err = |e: &dyn std::fmt::Display| ReportError::plot(Path::new("scene"), e);
        root.fill(&WHITE).map_err(|e| err(&e))?;
        for x in (20..300).step_by(40) {
            root.draw(&PathElement::new([(x, 10), (x, 190)], RGBColor(235, 235, 235))).map_err(|e| err(&e))?;
        }
        let curve: Vec<(i32, i32)> = (0..280).map(|x| (10 + x, 180 - (x * x / 500))).collect();
        root.draw(&PathElement::new(curve, RGBColor(31, 119, 180).stroke_width(2))).map_err(|e| err(&e))?;
        root.draw(&Rectangle::new([(200, 20), (280, 60)], RGBColor(255, 127, 14).mix(0.6).filled()))
            .map_err(|e| err(&e))
    }

    #[test]
    fn written_png_decodes_to_the_drawn_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scene.png");
        let size = (300, 200);
        let pixels = render(&path, size, scene).unwrap();
        assert!(pixels.iter().any(|&b| b != 255), "something was drawn");
        draw_png(&path, size, scene).unwrap();

        let decoded = image::open(&path).unwrap();
        assert_eq!((decoded.width(), decoded.height()), size);
        assert_eq!(decoded.color(), image::ColorType::Rgb8);
        assert!(decoded.into_rgb8().into_raw() == pixels, "the PNG holds exactly the drawn pixels");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "readable by all, as plotters' own files were");
        }
    }

    #[test]
    fn best_compression_beats_plotters_default_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let series = vec![("a".to_string(), (0..=20).map(|r| (f64::from(r), 10.0 + 3.5 * f64::from(r))).collect())];
        crate::plot::plot_series(&series, "compression", "round", "accuracy (%)", &path).unwrap();
        let decoded = image::open(&path).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (1000, 620));
        let pixels = decoded.into_rgb8().into_raw();

        // What plotters' own `BitMapBackend::new(path, ..)` writes: `image`'s default settings.
        let mut default = Vec::new();
        image::codecs::png::PngEncoder::new(&mut default)
            .write_image(&pixels, 1000, 620, image::ColorType::Rgb8)
            .unwrap();
        let ours = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(2 * ours < default.len(), "{ours} bytes, {} with the default settings", default.len());
    }
}
