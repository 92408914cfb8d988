//! Statistics over a cell's seeds and the tables made of them: one row per method, one
//! column per split.

use std::fmt::Write as _;

use super::cell::CellResult;
use super::spec::BenchSpec;

/// Mean and sample standard deviation (n − 1; `None` for a single value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

pub fn mean_std(values: &[f64]) -> Option<Stat> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some(Stat { mean, std, n })
}

/// An accuracy statistic in %, e.g. `84.10 ± 0.52`; `—` when there is no value.
pub fn pct(stat: Option<Stat>) -> String {
    match stat {
        None => "—".into(),
        Some(Stat { mean, std: None, .. }) => format!("{:.2}", 100.0 * mean),
        Some(Stat { mean, std: Some(s), .. }) => format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * s),
    }
}

/// The finished cells of one method on one split, in seed order.
pub fn group<'a>(results: &'a [CellResult], method: &str, split: usize) -> Vec<&'a CellResult> {
    let mut cells: Vec<&CellResult> =
        results.iter().filter(|r| r.cell.method == method && r.cell.split == split).collect();
    cells.sort_by_key(|r| r.cell.seed);
    cells
}

pub fn stat<'a>(cells: &[&'a CellResult], metric: impl Fn(&'a CellResult) -> Option<f64>) -> Option<Stat> {
    mean_std(&cells.iter().filter_map(|&c| metric(c)).collect::<Vec<f64>>())
}

/// A table of `metric`'s mean ± std over the seeds (with their count), one row per method and
/// one column per split; with `skip_empty`, a method with no value anywhere gets no row. A mean
/// that counts a seed evaluated on fewer clients than the run has is marked †, and those seeds
/// are listed under the table: their accuracy is a few remaining clients', not the federation's.
pub fn seeds_table(
    spec: &BenchSpec,
    results: &[CellResult],
    metric: impl Fn(&CellResult) -> Option<f64>,
    skip_empty: bool,
) -> String {
    let mut md = String::from("| method |");
    for split in &spec.splits {
        let _ = write!(md, " {} |", split.label);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(spec.splits.len()));
    md.push('\n');
    let mut partial = Vec::new();
    for method in &spec.methods {
        let cells: Vec<Vec<&CellResult>> = (0..spec.splits.len()).map(|i| group(results, method, i)).collect();
        if skip_empty && cells.iter().flatten().all(|c| metric(c).is_none()) {
            continue;
        }
        let _ = write!(md, "| {method} |");
        for split_cells in &cells {
            let Some(s) = stat(split_cells, &metric) else {
                md.push_str(" — |");
                continue;
            };
            let mut mark = "";
            for c in split_cells {
                if let (Some(value), Some((evaluated, clients))) = (metric(c), c.partial_evaluation()) {
                    mark = "†";
                    let label = &spec.splits[c.cell.split].label;
                    partial.push(format!(
                        "{method} on {label}, seed {}: {:.2} on {evaluated} of {clients} clients",
                        c.cell.seed,
                        100.0 * value
                    ));
                }
            }
            let _ = write!(md, " {} ({}){mark} |", pct(Some(s)), s.n);
        }
        md.push('\n');
    }
    if !partial.is_empty() {
        let _ = writeln!(
            md,
            "\n† The mean counts a seed whose final evaluation covered fewer clients than the run has (the \
             others were not available at the end, such as clients whose results were refused and who sat \
             out): {}.",
            partial.join("; ")
        );
    }
    md
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[0.5]), Some(Stat { mean: 0.5, std: None, n: 1 }));
        let s = mean_std(&[0.2, 0.4, 0.6]).unwrap();
        assert!((s.mean - 0.4).abs() < 1e-12 && (s.std.unwrap() - 0.2).abs() < 1e-12, "{s:?}");
    }
}
