//! How labels are spread over clients: a heatmap PNG (clients as rows, classes as columns,
//! colour on a log scale) and the same counts as a Markdown table.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ReportError;
use crate::font::{FAMILY, ensure_font};
use crate::png::draw_png;

/// Margins around the grid, in pixels: room for the title, labels and colour bar.
const LEFT: i32 = 90;
const TOP: i32 = 84;
const RIGHT: i32 = 30;
const BOTTOM: i32 = 80;
/// The largest grid, in pixels, before cells shrink below their readable size.
const GRID_MAX: i32 = 4000;

/// Draws `counts[client][class]` as a heatmap PNG. Rows may differ in length (missing = 0).
pub fn plot_label_heatmap(counts: &[Vec<usize>], path: &Path) -> Result<(), ReportError> {
    ensure_font().map_err(|e| ReportError::plot(path, e))?;
    let err = |e: &dyn std::fmt::Display| ReportError::plot(path, e);
    let rows = counts.len() as i32;
    let classes = counts.iter().map(Vec::len).max().unwrap_or(0).max(1) as i32;
    let max = counts.iter().flatten().copied().max().unwrap_or(0);
    let cell_w = (720 / classes).clamp(14, 60);
    let cell_h = (720 / rows.max(1)).clamp(3, 32).min((GRID_MAX / rows.max(1)).max(1));
    let (grid_w, grid_h) = (classes * cell_w, rows * cell_h);
    let width = (LEFT + grid_w + RIGHT).max(560);
    let height = TOP + grid_h + BOTTOM;

    draw_png(path, (width as u32, height as u32), |root| {
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let text = |size: u32, h: HPos| TextStyle::from((FAMILY, size).into_font()).pos(Pos::new(h, VPos::Center));
        let draw = |s: &str, style: &TextStyle, at: (i32, i32)| root.draw_text(s, style, at).map_err(|e| err(&e));

        draw("Samples per client and class", &text(20, HPos::Center), (width / 2, 18))?;
        draw("class", &text(15, HPos::Center), (LEFT + grid_w / 2, 46))?;
        let rotated = TextStyle::from((FAMILY, 15).into_font().transform(FontTransform::Rotate270))
            .pos(Pos::new(HPos::Center, VPos::Center));
        draw("client", &rotated, (18, TOP + grid_h / 2))?;

        let label = text(12, HPos::Center);
        let class_step = step(26, cell_w);
        for c in (0..classes).step_by(class_step) {
            draw(&c.to_string(), &label, (LEFT + c * cell_w + cell_w / 2, TOP - 12))?;
        }
        let row_label = text(12, HPos::Right);
        let row_step = step(14, cell_h);
        for r in (0..rows).step_by(row_step) {
            draw(&r.to_string(), &row_label, (LEFT - 8, TOP + r * cell_h + cell_h / 2))?;
        }

        let count_size = (cell_h - 4).clamp(0, 13) as u32;
        for (r, row) in counts.iter().enumerate() {
            for c in 0..classes as usize {
                let n = row.get(c).copied().unwrap_or(0);
                let t = shade(n, max);
                let (x, y) = (LEFT + c as i32 * cell_w, TOP + r as i32 * cell_h);
                root.draw(&Rectangle::new([(x, y), (x + cell_w, y + cell_h)], colour(t).filled()))
                    .map_err(|e| err(&e))?;
                if cell_h >= 6 {
                    let grid = RGBColor(225, 225, 225);
                    root.draw(&Rectangle::new([(x, y), (x + cell_w, y + cell_h)], grid.stroke_width(1)))
                        .map_err(|e| err(&e))?;
                }
                if n == 0 || count_size < 8 {
                    continue;
                }
                let s = n.to_string();
                let ink = if t > 0.55 { WHITE } else { BLACK };
                let style = text(count_size, HPos::Center).color(&ink);
                let fits = root.estimate_text_size(&s, &style).is_ok_and(|(w, _)| w as i32 + 4 <= cell_w);
                if fits {
                    draw(&s, &style, (x + cell_w / 2, y + cell_h / 2))?;
                }
            }
        }
        colour_bar(root, max, (LEFT, TOP + grid_h + 30)).map_err(|e| err(&e))
    })
}

/// Draws the colour scale from 0 to `max`, with ticks at the powers of ten in between.
fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    max: usize,
    (x, y): (i32, i32),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    const W: i32 = 240;
    for i in 0..W {
        let t = f64::from(i) / f64::from(W - 1);
        root.draw(&Rectangle::new([(x + i, y), (x + i + 1, y + 12)], colour(t).filled()))?;
    }
    root.draw(&Rectangle::new([(x, y), (x + W, y + 12)], RGBColor(160, 160, 160).stroke_width(1)))?;
    let style = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let at = |n: usize| x + (shade(n, max) * f64::from(W - 1)).round() as i32;
    // 0, the powers of ten that keep clear of their neighbours, and the maximum.
    let mut ticks = vec![0];
    let mut p = 10;
    while p < max {
        let clear = |n: usize| (at(p) - at(n)).abs() >= 28;
        if ticks.last().is_none_or(|&n| clear(n)) && clear(max) {
            ticks.push(p);
        }
        p *= 10;
    }
    if max > 0 {
        ticks.push(max);
    }
    for n in ticks {
        let tx = at(n);
        root.draw(&PathElement::new([(tx, y + 12), (tx, y + 16)], BLACK))?;
        root.draw_text(&n.to_string(), &style, (tx, y + 18))?;
    }
    let caption = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    root.draw_text("samples (log scale)", &caption, (x + W + 28, y + 6))
}

/// Every how many rows (columns) a label goes, so labels are at least `gap` pixels apart.
fn step(gap: i32, cell: i32) -> usize {
    ((gap + cell - 1) / cell.max(1)).max(1) as usize
}

/// Position of `n` on the log colour scale, in [0, 1].
fn shade(n: usize, max: usize) -> f64 {
    if max == 0 { 0.0 } else { (n as f64).ln_1p() / (max as f64).ln_1p() }
}

/// White through light blue to dark blue (matplotlib's "Blues", three stops).
fn colour(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 3] = [(247.0, 251.0, 255.0), (107.0, 174.0, 214.0), (8.0, 48.0, 107.0)];
    let t = t.clamp(0.0, 1.0) * 2.0;
    let (a, b, f) = if t <= 1.0 { (STOPS[0], STOPS[1], t) } else { (STOPS[1], STOPS[2], t - 1.0) };
    let mix = |u: f64, v: f64| (u + (v - u) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The counts as a Markdown table: one row per client, one column per class, with totals.
pub fn label_table_markdown(counts: &[Vec<usize>]) -> String {
    let classes = counts.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::from("| client |");
    for c in 0..classes {
        let _ = write!(out, " {c} |");
    }
    out.push_str(" total |\n|---:|");
    out.push_str(&"---:|".repeat(classes + 1));
    out.push('\n');
    let mut column_totals = vec![0usize; classes];
    for (client, row) in counts.iter().enumerate() {
        let _ = write!(out, "| {client} |");
        for (c, total) in column_totals.iter_mut().enumerate() {
            let n = row.get(c).copied().unwrap_or(0);
            *total += n;
            let _ = write!(out, " {n} |");
        }
        let _ = writeln!(out, " {} |", row.iter().sum::<usize>());
    }
    out.push_str("| total |");
    for total in &column_totals {
        let _ = write!(out, " {total} |");
    }
    let _ = writeln!(out, " {} |", column_totals.iter().sum::<usize>());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::assert_png;

    #[test]
    fn table_has_client_rows_class_columns_and_totals() {
        let table = label_table_markdown(&[vec![5, 0, 1], vec![0, 7]]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| client | 0 | 1 | 2 | total |");
        assert_eq!(lines[1], "|---:|---:|---:|---:|---:|");
        assert_eq!(lines[2], "| 0 | 5 | 0 | 1 | 6 |");
        assert_eq!(lines[3], "| 1 | 0 | 7 | 0 | 7 |");
        assert_eq!(lines[4], "| total | 5 | 7 | 1 | 13 |");
    }

    #[test]
    fn heatmap_is_a_png_for_small_and_large_federations() {
        let dir = tempfile::tempdir().unwrap();
        // A Dirichlet-like skew: each client dominated by one or two classes.
        let counts: Vec<Vec<usize>> = (0..20)
            .map(|k| {
                (0..10)
                    .map(|c| {
                        if c == k % 10 {
                            1500 + 37 * k
                        } else if c == (k * 3) % 10 {
                            120
                        } else {
                            k % 3
                        }
                    })
                    .collect()
            })
            .collect();
        let path = dir.path().join("labels.png");
        plot_label_heatmap(&counts, &path).unwrap();
        assert_png(&path);

        let many: Vec<Vec<usize>> = (0..500).map(|k| (0..100).map(|c| (k * c) % 7).collect()).collect();
        let path = dir.path().join("labels-many.png");
        plot_label_heatmap(&many, &path).unwrap();
        assert_png(&path);

        let path = dir.path().join("labels-empty.png");
        plot_label_heatmap(&[], &path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }

    #[test]
    fn log_shade_spans_zero_to_one() {
        assert_eq!(shade(0, 100), 0.0);
        assert_eq!(shade(100, 100), 1.0);
        assert!(shade(10, 100) > 0.4 && shade(10, 100) < 0.6);
        assert_eq!(shade(0, 0), 0.0);
        assert_eq!(colour(0.0), RGBColor(247, 251, 255));
        assert_eq!(colour(1.0), RGBColor(8, 48, 107));
    }
}
