//! `attack.json`: which clients `simulate --attack` made hostile and how the others fared,
//! written beside the run's records; `strata bench` reads it back to judge a defense on the
//! clients it protects.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_core::records::ClientRoundRecord;
use strata_report::HonestAccuracy;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    /// The attack as `--attack` names it, without the share (`sign-flip`, `scale:100`).
    pub attack: String,
    pub fraction: f64,
    /// Partition indices, ascending.
    pub hostile_clients: Vec<u32>,
    /// The other clients' final accuracies (absent from files written before they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honest_clients: Option<HonestAccuracy>,
}

impl AttackRecord {
    pub const FILE: &'static str = "attack.json";

    /// The record in `dir`; `None` when the run had no attack (no file).
    pub fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).with_context(|| format!("{} is not an attack record", path.display()))
    }

    /// One line for the terminal: who was hostile, and how the others ended.
    pub fn describe(&self) -> String {
        let hostile = self.hostile_clients.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let mut line = format!("Hostile clients ({}): {hostile}", self.attack);
        if let Some(h) = &self.honest_clients {
            let pct = |a: Option<f64>| a.map_or("—".to_string(), |a| format!("{:.2} %", 100.0 * a));
            line += &format!(
                "; the other {} at the end: personalized {}, global {}",
                h.clients,
                pct(h.personalized_accuracy),
                pct(h.global_accuracy)
            );
        }
        line
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(Self::FILE);
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, json + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A run's client rows: `metrics.jsonl`, or the `metrics.jsonl.gz` a committed bench cell
/// keeps; a line that does not parse (cut short by a crash) is left out.
pub fn read_client_rows(dir: &Path) -> anyhow::Result<Vec<ClientRoundRecord>> {
    let plain = dir.join("metrics.jsonl");
    let reader: Box<dyn Read> = match std::fs::File::open(&plain) {
        Ok(file) => Box::new(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let gz = dir.join("metrics.jsonl.gz");
            let file = std::fs::File::open(&gz)
                .with_context(|| format!("cannot read {} or {}", plain.display(), gz.display()))?;
            Box::new(flate2::read::GzDecoder::new(file))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", plain.display())),
    };
    let mut rows = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.with_context(|| format!("cannot read the client rows in {}", dir.display()))?;
        if let Ok(row) = serde_json::from_str(&line) {
            rows.push(row);
        }
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written_and_a_run_without_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AttackRecord::read(dir.path()).unwrap().is_none());
        let record = AttackRecord {
            attack: "scale:100".into(),
            fraction: 0.1,
            hostile_clients: vec![12, 16],
            honest_clients: Some(HonestAccuracy {
                round: 20,
                clients: 18,
                global_accuracy: Some(0.6643),
                personalized_accuracy: Some(0.6643),
            }),
        };
        record.write(dir.path()).unwrap();
        assert_eq!(AttackRecord::read(dir.path()).unwrap(), Some(record.clone()));
        let line = record.describe();
        assert!(
            line.contains("(scale:100): 12, 16") && line.contains("the other 18 at the end: personalized 66.43 %"),
            "{line}"
        );
    }

    #[test]
    fn a_file_written_before_the_honest_accuracies_still_reads_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{ "attack": "sign-flip", "fraction": 0.1, "hostile_clients": [12, 16] }"#;
        std::fs::write(dir.path().join(AttackRecord::FILE), old).unwrap();
        let record = AttackRecord::read(dir.path()).unwrap().unwrap();
        assert_eq!((record.hostile_clients, record.honest_clients), (vec![12, 16], None));
        std::fs::write(dir.path().join(AttackRecord::FILE), "{\"attack\": ").unwrap();
        let err = format!("{:#}", AttackRecord::read(dir.path()).unwrap_err());
        assert!(err.contains("attack.json is not an attack record"), "{err}");
    }

    #[test]
    fn client_rows_come_from_the_plain_or_the_compressed_file_and_a_cut_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", read_client_rows(dir.path()).unwrap_err());
        assert!(err.contains("metrics.jsonl.gz"), "{err}");
        let row = r#"{"round":3,"client":1,"trained":false,"train_samples":30,"test_samples":10,"accuracy":0.5,"bytes_up":0,"bytes_down":0,"train_seconds":0.0}"#;
        let text = format!("{row}\n{row}\n{{\"round\":4,\"cli");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        std::fs::write(dir.path().join("metrics.jsonl.gz"), gz.finish().unwrap()).unwrap();
        assert_eq!(read_client_rows(dir.path()).unwrap().len(), 2);
        // The plain file, while a run writes it, comes first.
        std::fs::write(dir.path().join("metrics.jsonl"), format!("{row}\n")).unwrap();
        assert_eq!(read_client_rows(dir.path()).unwrap().len(), 1);
    }
}
