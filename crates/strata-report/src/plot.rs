//! Line charts as PNG: a generic `plot_series`, and `plot_accuracy` for a run's rounds.

use std::path::Path;

use plotters::prelude::*;
use strata_core::records::RoundRecord;

use crate::error::ReportError;
use crate::font::{FAMILY, ensure_font};
use crate::png::draw_png;

/// Image size of a line chart, in pixels.
const SIZE: (u32, u32) = (1000, 620);

/// Tableau's ten colours, distinguishable and print-friendly.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Accuracy (%) per round of a run: global (when the method has one), personalized as merged,
/// and personalized after local training.
pub fn plot_accuracy(rounds: &[RoundRecord], title: &str, path: &Path) -> Result<(), ReportError> {
    let mut sorted: Vec<&RoundRecord> = rounds.iter().collect();
    sorted.sort_by_key(|r| r.round);
    let curve = |metric: fn(&RoundRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        sorted.iter().filter_map(|r| Some((r.round as f64, 100.0 * metric(r)?))).collect()
    };
    let series: Vec<(String, Vec<(f64, f64)>)> = [
        ("global", curve(|r| r.global_accuracy)),
        ("personalized (merged)", curve(|r| r.personalized_accuracy)),
        ("personalized (after training)", curve(|r| r.personalized_accuracy_trained)),
    ]
    .into_iter()
    .filter(|(_, points)| !points.is_empty())
    .map(|(name, points)| (name.to_string(), points))
    .collect();
    plot_series(&series, title, "round", "accuracy (%)", path)
}

/// Draws named series of (x, y) points as lines with markers, with a legend, into a PNG.
/// The axes span the data with a margin; an empty chart is drawn when there is no point.
pub fn plot_series(
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_label: &str,
    y_label: &str,
    path: &Path,
) -> Result<(), ReportError> {
    ensure_font().map_err(|e| ReportError::plot(path, e))?;
    let err = |e: &dyn std::fmt::Display| ReportError::plot(path, e);
    let points = series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (x_range, y_range) = ranges(points);

    draw_png(path, SIZE, |root| {
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| err(&e))?;
        // Whole-number x values (rounds) get whole-number labels.
        let integral_x = series.iter().flat_map(|(_, p)| p.iter()).all(|(x, _)| x.fract() == 0.0);
        let x_span = chart.x_range().end - chart.x_range().start;
        let x_labels = if integral_x { (x_span.round() as usize + 1).clamp(2, 12) } else { 10 };
        let x_format = |v: &f64| match integral_x {
            true if v.fract().abs() < 1e-9 => format!("{}", v.round()),
            true => String::new(),
            false => format!("{v}"),
        };
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .x_label_formatter(&x_format)
            .x_desc(x_label)
            .y_desc(y_label)
            .axis_desc_style((FAMILY, 18))
            .label_style((FAMILY, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let finite = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite());
            chart
                .draw_series(LineSeries::new(finite, color.stroke_width(2)).point_size(3))
                .map_err(|e| err(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(&e))?;
        }
        Ok(())
    })
}

/// Axis ranges that hold every point with a 5 % margin (a unit span around a single value).
fn ranges<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |lo: f64, hi: f64| {
        if !lo.is_finite() {
            return 0.0..1.0;
        }
        let margin = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
        lo - margin..hi + margin
    };
    (pad(x0, x1), pad(y0, y1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::{assert_png, round};

    #[test]
    fn accuracy_chart_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy-20-rounds.png");
        let rounds: Vec<RoundRecord> = (0..=20)
            .map(|r| round(r, Some(0.1 + 0.035 * r as f64), 0.2 + 0.03 * r as f64, if r < 20 { 2.0 } else { 0.0 }))
            .collect();
        plot_accuracy(&rounds, "fedavg on fmnist (dirichlet:0.1)", &path).unwrap();
        assert_png(&path);
    }

    #[test]
    fn empty_and_single_point_charts_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        plot_series(&[], "nothing yet", "x", "y", &path).unwrap();
        assert_png(&path);
        let path = dir.path().join("one-point.png");
        let one = vec![("one".to_string(), vec![(3.0, 50.0)])];
        plot_series(&one, "one point", "x", "y", &path).unwrap();
        assert_png(&path);
    }

    #[test]
    fn unwritable_path_is_named_in_the_error() {
        let path = Path::new("/nonexistent-dir/sub/chart.png");
        let err = plot_series(&[], "t", "x", "y", path).unwrap_err().to_string();
        assert!(err.contains("chart.png"), "{err}");
    }
}
