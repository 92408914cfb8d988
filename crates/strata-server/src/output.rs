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
        .map_err(|e| ServerError::Report(e.to_string()))
    }
}
