//! Turns a run's records into the files a person opens: `summary.json`, `report.md` and
//! `accuracy.png` (see [`write_run_outputs`]), the results table a CLI prints at the end of a
//! run, and the label-distribution heatmap and table of a partition.
//!
//! # Layout
//! - [`summary`]: the headline numbers of a run ([`RunSummary`], `summary.json`).
//! - [`calibration_summary`]: accuracy before and after classifier calibration (CCVR).
//! - [`honest`]: the final accuracy of the clients that were not hostile, under an attack.
//! - [`markdown`]: `report.md` and the terminal results table.
//! - [`plot`]: line charts as PNG (accuracy per round, any named series).
//! - [`heatmap`]: samples per client and class, as a PNG heatmap and a Markdown table.
//!
//! Plots embed their font (DejaVu Sans), so they render text on any machine.

pub mod calibration_summary;
mod error;
mod font;
mod format;
pub mod heatmap;
pub mod honest;
pub mod markdown;
pub mod plot;
mod png;
pub mod summary;
#[cfg(test)]
mod test_records;

use std::path::Path;

use strata_core::config::RunConfig;
use strata_core::records::{CalibrationRecord, ClientRoundRecord, RoundRecord};

pub use error::ReportError;
pub use heatmap::{label_table_markdown, plot_label_heatmap};
pub use honest::{HonestAccuracy, honest_accuracy};
pub use markdown::{report_markdown, results_table};
pub use plot::{plot_accuracy, plot_series};
pub use summary::{BestMetrics, BestValue, FinalMetrics, RunSummary, clients_evaluated, summarize};

/// Writes `summary.json`, `report.md` and `accuracy.png` into `dir` (created if missing) and
/// returns the summary. `config.toml` and `metrics.jsonl` are written elsewhere, as rounds finish.
pub fn write_run_outputs(
    dir: &Path,
    config: &RunConfig,
    rounds: &[RoundRecord],
    clients: &[ClientRoundRecord],
    calibrations: &[CalibrationRecord],
    wall_seconds: f64,
) -> Result<RunSummary, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let mut summary = summarize(config, rounds, clients, wall_seconds);
    summary.calibration = calibration_summary::summarize_calibration(rounds, clients, calibrations);

    let path = dir.join("summary.json");
    let json =
        serde_json::to_string_pretty(&summary).map_err(|source| ReportError::Json { path: path.clone(), source })?;
    write(&path, json + "\n")?;
    write(&dir.join("report.md"), report_markdown(&summary, rounds, clients))?;

    let title = format!(
        "{} on {} ({}), {}, {} clients",
        summary.method, summary.dataset, summary.split, summary.model, summary.clients
    );
    plot_accuracy(rounds, &title, &dir.join("accuracy.png"))?;
    Ok(summary)
}

fn write(path: &Path, contents: String) -> Result<(), ReportError> {
    std::fs::write(path, contents).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::{assert_png, client, config, round};

    #[test]
    fn run_outputs_are_written_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let rounds = vec![round(0, None, 0.3, 1.5), round(1, None, 0.6, 0.0)];
        let clients = vec![client(0, 0, true, 0.3, Some(0.5), 10), client(1, 0, false, 0.6, None, 10)];
        let summary = write_run_outputs(&out, &config(1), &rounds, &clients, &[], 3.0).unwrap();
        assert_eq!(summary.rounds_completed, 1);

        let json = std::fs::read_to_string(out.join("summary.json")).unwrap();
        assert_eq!(serde_json::from_str::<RunSummary>(&json).unwrap(), summary);
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(md.starts_with("# fedavg on fmnist"), "{md}");
        assert_png(&out.join("accuracy.png"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let err = write_run_outputs(&blocker, &config(1), &[], &[], &[], 0.0).unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
