//! The run's files: `metrics.jsonl` and `rounds.jsonl` grow as rounds finish (so a crash
//! keeps what was measured); `summary.json`, `report.md` and `accuracy.png` come at the end.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use strata_core::config::RunConfig;
use strata_core::records::{CalibrationRecord, ClientRoundRecord, RoundRecord};
use strata_report::RunSummary;

use crate::ServerError;

pub struct RunOutput {
    dir: PathBuf,
    metrics: BufWriter<File>,
    rounds_file: BufWriter<File>,
    clients: Vec<ClientRoundRecord>,
    rounds: Vec<RoundRecord>,
    calibrations: Vec<CalibrationRecord>,
}

impl RunOutput {
    /// Creates the directory and writes the resolved `config.toml`.
    pub fn create(dir: &Path, config: &RunConfig) -> Result<Self, ServerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Output { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.to_toml()).map_err(io(&config_path))?;
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map(BufWriter::new)
                .map_err(io(&path))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: open("metrics.jsonl")?,
            rounds_file: open("rounds.jsonl")?,
            clients: Vec::new(),
            rounds: Vec::new(),
            calibrations: Vec::new(),
        })
    }

    /// Reopens a run's files to go on at round `next_round` (`--resume`): rows of later
    /// rounds (written before a crash, after the last saved state) are dropped, so every
    /// completed round appears exactly once; a line cut short by the crash is dropped too.
    pub fn resume(dir: &Path, next_round: u64) -> Result<Self, ServerError> {
        let rounds: Vec<RoundRecord> = keep_rows(&dir.join("rounds.jsonl"), |r: &RoundRecord| r.round < next_round)?;
        let clients: Vec<ClientRoundRecord> =
            keep_rows(&dir.join("metrics.jsonl"), |r: &ClientRoundRecord| r.round < next_round)?;
        // A calibration after round r evaluates row r + 1: it belongs with the saved state.
        let calibration = dir.join("calibration.jsonl");
        let calibrations: Vec<CalibrationRecord> = if calibration.exists() {
            keep_rows(&calibration, |r: &CalibrationRecord| r.round <= next_round)?
        } else {
            Vec::new()
        };
        let append = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map(BufWriter::new)
                .map_err(|source| ServerError::Output { path, source })
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: append("metrics.jsonl")?,
            rounds_file: append("rounds.jsonl")?,
            clients,
            rounds,
            calibrations,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rounds(&self) -> &[RoundRecord] {
        &self.rounds
    }

    /// Appends one round's rows and flushes, so the files are current after every round.
    pub fn append(&mut self, rows: &[ClientRoundRecord], record: &RoundRecord) -> std::io::Result<()> {
        for row in rows {
            serde_json::to_writer(&mut self.metrics, row)?;
            self.metrics.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut self.rounds_file, record)?;
        self.rounds_file.write_all(b"\n")?;
        self.metrics.flush()?;
        self.rounds_file.flush()?;
        self.clients.extend_from_slice(rows);
        self.rounds.push(record.clone());
        Ok(())
    }

    /// Appends one calibration to `calibration.jsonl` (created by the first one).
    pub fn append_calibration(&mut self, record: &CalibrationRecord) -> std::io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(self.dir.join("calibration.jsonl"))?;
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.flush()?;
        self.calibrations.push(record.clone());
        Ok(())
    }

    /// Writes the summary, the report and the plot.
    pub fn finish(&self, config: &RunConfig, wall_seconds: f64) -> Result<RunSummary, ServerError> {
        strata_report::write_run_outputs(
            &self.dir,
            config,
            &self.rounds,
            &self.clients,
            &self.calibrations,
            wall_seconds,
        )
        .map_err(ServerError::from)
    }
}

/// Keeps the rows of a JSON-lines file that parse and pass `keep`, rewriting it atomically.
fn keep_rows<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, ServerError> {
    let io = |source| ServerError::Output { path: path.to_path_buf(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let rows: Vec<T> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|r| keep(r)).collect();
    strata_core::atomic_file::write_with(path, |out| {
        for row in &rows {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(io)?;
    Ok(rows)
}
