//! A finished cell as the tables read it: its summary, its rounds, and its last row client by
//! client with who was hostile. A cell counts once its `summary.json` exists (the run finished).

use std::path::Path;

use strata_core::config::RunConfig;
use strata_core::evaluation::EvalClients;
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_report::{HonestAccuracy, RunSummary, clients_evaluated, honest_accuracy};

use super::spec::Cell;
use crate::attack_record::{AttackRecord, read_client_rows};

/// A finished cell: its summary, its rounds and its final rows.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub cell: Cell,
    pub summary: RunSummary,
    pub rounds: Vec<RoundRecord>,
    /// `None` when the cell's client rows cannot be read.
    pub final_rows: Option<FinalRows>,
    /// Whether the cell's final evaluation asks every client (not a sample).
    pub everyone_evaluates: bool,
}

impl CellResult {
    /// `(evaluated, clients)` when a final evaluation meant for every client covered fewer:
    /// the others were not available at the end (in a simulation, clients whose results were
    /// refused sit out), so the cell's accuracies are the remaining clients' alone.
    pub fn partial_evaluation(&self) -> Option<(usize, usize)> {
        if !self.everyone_evaluates {
            return None;
        }
        let (evaluated, clients) = (self.clients_evaluated()?, self.summary.clients as usize);
        (1..clients).contains(&evaluated).then_some((evaluated, clients))
    }

    /// Clients in the final evaluation: the summary's count, or for a summary older than it
    /// (0) the cell's last rows; `None` when neither says.
    pub fn clients_evaluated(&self) -> Option<usize> {
        match self.summary.final_eval.clients_evaluated {
            0 => self.final_rows.as_ref().map(|f| clients_evaluated(&f.rows)),
            n => Some(n),
        }
    }
}

/// Reads a cell's `summary.json`; `None` when the cell has not finished (no file, or a file
/// cut short by a crash), so it runs (again).
pub fn finished_summary(dir: &Path) -> Option<RunSummary> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a run's final evaluation asks every client: all of them, or a cohort (or a
/// share) that is the whole federation.
pub fn everyone_evaluates(config: &RunConfig) -> bool {
    match config.evaluation.clients {
        EvalClients::All => true,
        EvalClients::Cohort => config.fraction >= 1.0,
        EvalClients::Fraction(f) => f >= 1.0,
    }
}

/// Loads a finished cell run with `config`; rows of `rounds.jsonl` that do not parse are left
/// out.
pub fn load_cell(dir: &Path, cell: &Cell, config: Option<&RunConfig>) -> Option<CellResult> {
    let summary = finished_summary(dir)?;
    let text = std::fs::read_to_string(dir.join("rounds.jsonl")).unwrap_or_default();
    let rounds = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let everyone_evaluates = config.is_some_and(everyone_evaluates);
    Some(CellResult { cell: cell.clone(), summary, rounds, final_rows: FinalRows::load(dir), everyone_evaluates })
}

/// A cell's last evaluated row, client by client, and who was hostile in it.
#[derive(Clone, Debug)]
pub struct FinalRows {
    pub hostile: Vec<u32>,
    pub rows: Vec<ClientRoundRecord>,
}

impl FinalRows {
    /// From the cell's `metrics.jsonl` (or `.gz`) and `attack.json`; `None`, with a warning,
    /// when its files cannot say.
    pub fn load(dir: &Path) -> Option<Self> {
        let read = || -> anyhow::Result<Self> {
            let hostile = AttackRecord::read(dir)?.map(|a| a.hostile_clients).unwrap_or_default();
            let mut rows = read_client_rows(dir)?;
            let last = rows.iter().map(|r| r.round).max().unwrap_or_default();
            rows.retain(|r| r.round == last);
            Ok(Self { hostile, rows })
        };
        read().inspect_err(|e| tracing::warn!("no final client rows for {}: {e:#}", dir.display())).ok()
    }

    /// The final accuracy of the clients that were not hostile (every client without an attack).
    pub fn honest(&self) -> Option<HonestAccuracy> {
        honest_accuracy(&self.rows, &self.hostile)
    }
}
