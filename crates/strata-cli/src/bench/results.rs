//! What a bench's finished cells add up to: `results.md`, `results.csv` and one accuracy
//! curve per split.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::cell::{CellResult, load_cell};
use super::honest;
use super::spec::BenchSpec;
use super::table::{group, pct, seeds_table, stat};

fn bytes(b: f64) -> String {
    let units = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    match units.iter().find(|(_, size)| b >= *size) {
        Some((unit, size)) => format!("{:.2} {unit}", b / size),
        None => format!("{b:.0} B"),
    }
}

/// `results.md`: final personalized and global accuracy per method and split (and, when a split
/// has an attack, the honest clients'), then one table per split.
pub fn render_markdown(spec: &BenchSpec, results: &[CellResult]) -> String {
    let total = spec.cells().len();
    let mut md = format!("# Bench `{}`\n\n", spec.name);
    let _ = writeln!(
        md,
        "{} of {total} cells finished. Accuracies in %, mean ± sample standard deviation over the seeds \
         counted (no ± for one seed); rows are measured after each aggregation (PFLlib's convention), \
         the final one after the last round.\n",
        results.len()
    );
    md.push_str("## Final personalized accuracy (seeds)\n\n");
    md.push_str(&seeds_table(spec, results, |c| c.summary.final_eval.personalized_accuracy, false));
    let global = |c: &CellResult| {
        c.summary.calibration.as_ref().and_then(|k| k.global_after).or(c.summary.final_eval.global_accuracy)
    };
    md.push_str(
        "\n## Final global accuracy (seeds)\n\nThe global model on the union of the clients' test splits; \
         for `+ccvr` methods, after calibrating its classifier.\n\n",
    );
    md.push_str(&seeds_table(spec, results, global, true));
    md.push_str(&honest::render(spec, results));
    for (index, split) in spec.splits.iter().enumerate() {
        match &split.attack {
            Some(attack) => {
                let _ = writeln!(md, "\n## {} (`{}`, attack `{attack}`)\n", split.label, split.spec);
            }
            None => {
                let _ = writeln!(md, "\n## {} (`{}`)\n", split.label, split.spec);
            }
        }
        md.push_str(
            "| method | seeds | final personalized | best personalized | best at round | final global \
             | global calibrated | s / round | up / round |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for method in spec.methods.iter().filter(|m| spec.runs_on(m, index)) {
            let cells = group(results, method, index);
            let planned = spec.seeds[method].len();
            let seed = |c: &&CellResult| {
                let mark = if c.partial_evaluation().is_some() { "†" } else { "" };
                format!("{}{mark}", c.cell.seed)
            };
            let mut seeds = cells.iter().map(seed).collect::<Vec<_>>().join(", ");
            if cells.len() < planned {
                seeds = format!("{} of {planned}", if seeds.is_empty() { "none".into() } else { seeds });
            }
            let best_rounds = cells
                .iter()
                .filter_map(|c| c.summary.best.personalized_accuracy.map(|b| b.round.to_string()))
                .collect::<Vec<_>>()
                .join(", ");
            let seconds = stat(&cells, |c| c.summary.seconds_per_round);
            let up = stat(&cells, |c| Some(c.summary.bytes_up as f64 / c.summary.rounds.max(1) as f64));
            let _ = writeln!(
                md,
                "| {method} | {seeds} | {} | {} | {} | {} | {} | {} | {} |",
                pct(stat(&cells, |c| c.summary.final_eval.personalized_accuracy)),
                pct(stat(&cells, |c| c.summary.best.personalized_accuracy.map(|b| b.accuracy))),
                if best_rounds.is_empty() { "—".into() } else { best_rounds },
                pct(stat(&cells, |c| c.summary.final_eval.global_accuracy)),
                pct(stat(&cells, |c| c.summary.calibration.as_ref().and_then(|k| k.global_after))),
                seconds.map(|s| format!("{:.2}", s.mean)).unwrap_or("—".into()),
                up.map(|s| bytes(s.mean)).unwrap_or("—".into()),
            );
        }
        let _ = writeln!(md, "\n![personalized accuracy on {}](accuracy-{}.png)", split.label, split.dir);
    }
    md
}

/// `results.csv`: one row per finished cell; accuracies as fractions in [0, 1], empty when absent.
pub fn render_csv(spec: &BenchSpec, results: &[CellResult]) -> String {
    let mut csv = String::from(
        "method,split,seed,rounds_completed,final_personalized,best_personalized,best_personalized_round,\
         final_global,best_global,best_global_round,seconds_per_round,bytes_up,bytes_down,wall_seconds,\
         global_calibrated,honest_personalized,honest_global,honest_gap,clients_evaluated,clients\n",
    );
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let opt_u = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in results {
        let s = &r.summary;
        let (bp, bg) = (s.best.personalized_accuracy, s.best.global_accuracy);
        let honest = r.final_rows.as_ref().and_then(|f| f.honest());
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.cell.method),
            csv_field(&spec.splits[r.cell.split].label),
            r.cell.seed,
            s.rounds_completed,
            opt(s.final_eval.personalized_accuracy),
            opt(bp.map(|b| b.accuracy)),
            opt_u(bp.map(|b| b.round)),
            opt(s.final_eval.global_accuracy),
            opt(bg.map(|b| b.accuracy)),
            opt_u(bg.map(|b| b.round)),
            opt(s.seconds_per_round),
            s.bytes_up,
            s.bytes_down,
            s.wall_seconds,
            opt(s.calibration.as_ref().and_then(|k| k.global_after)),
            opt(honest.as_ref().and_then(|h| h.personalized_accuracy)),
            opt(honest.as_ref().and_then(|h| h.global_accuracy)),
            opt(honest::gap_to_honest_run(spec, results, r)),
            r.clients_evaluated().map(|n| n.to_string()).unwrap_or_default(),
            s.clients,
        );
    }
    csv
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// Personalized accuracy (%) per round on one split: one series per method with a finished
/// cell, the mean over its seeds at each round.
pub fn accuracy_series(spec: &BenchSpec, results: &[CellResult], split: usize) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series = Vec::new();
    for method in &spec.methods {
        let cells = group(results, method, split);
        let mut by_round: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for cell in &cells {
            for row in &cell.rounds {
                if let Some(a) = row.personalized_accuracy {
                    by_round.entry(row.round).or_default().push(a);
                }
            }
        }
        if by_round.is_empty() {
            continue;
        }
        let points = by_round.iter().map(|(&r, v)| (r as f64, 100.0 * v.iter().sum::<f64>() / v.len() as f64));
        let name = match cells.len() {
            1 => method.clone(),
            n => format!("{method} ({n} seeds)"),
        };
        series.push((name, points.collect()));
    }
    series
}

/// Loads every finished cell under `out` and writes `results.md`, `results.csv` and the plots.
pub fn write_results(spec: &BenchSpec, out: &Path) -> anyhow::Result<Vec<CellResult>> {
    let results: Vec<CellResult> = spec
        .cells()
        .iter()
        .filter_map(|cell| load_cell(&spec.cell_dir(out, cell), cell, spec.config(cell).ok().as_ref()))
        .collect();
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.md", render_markdown(spec, &results))?;
    write("results.csv", render_csv(spec, &results))?;
    for (index, split) in spec.splits.iter().enumerate() {
        let series = accuracy_series(spec, &results, index);
        let title = format!("Personalized accuracy on {} ({})", split.label, spec.name);
        strata_report::plot_series(
            &series,
            &title,
            "round",
            "personalized accuracy (%)",
            &out.join(format!("accuracy-{}.png", split.dir)),
        )?;
    }
    Ok(results)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attack_record::AttackRecord;
    use crate::bench::cell::{FinalRows, everyone_evaluates, finished_summary};
    use crate::bench::spec::Cell;
    use crate::bench::spec::tests::SPEC;
    use strata_core::records::{ClientRoundRecord, RoundRecord};
    use strata_report::{BestMetrics, BestValue, FinalMetrics, RunSummary};

    fn spec() -> BenchSpec {
        BenchSpec::parse(SPEC, "t").unwrap()
    }

    fn row(round: u64, acc: f64) -> RoundRecord {
        RoundRecord {
            round,
            picked: 3,
            reported: 3,
            aggregated: true,
            seconds: 1.0,
            global_accuracy: None,
            personalized_accuracy: Some(acc),
            personalized_accuracy_trained: None,
            train_loss: None,
            bytes_up: 1000,
            bytes_down: 2000,
            defense: None,
            privacy: None,
            budget_spent: false,
            dp_sgd_epsilon: None,
            secure_aggregation: None,
            phases: None,
        }
    }

    fn result(method: &str, split: usize, seed: u64, accs: &[f64]) -> CellResult {
        let rounds: Vec<RoundRecord> = accs.iter().enumerate().map(|(r, &a)| row(r as u64, a)).collect();
        let last = *accs.last().unwrap();
        let (best_round, best) =
            accs.iter().copied().enumerate().fold((0, f64::MIN), |b, (r, a)| if a > b.1 { (r, a) } else { b });
        CellResult {
            cell: Cell { method: method.into(), split, seed },
            summary: RunSummary {
                method: method.into(),
                dataset: "synthetic".into(),
                split: "iid".into(),
                model: "mlp".into(),
                clients: 3,
                seed,
                rounds: accs.len() as u64 - 1,
                fraction: 1.0,
                evaluation: String::new(),
                rounds_completed: accs.len() as u64 - 1,
                final_eval: FinalMetrics {
                    round: Some(accs.len() as u64 - 1),
                    personalized_accuracy: Some(last),
                    global_accuracy: (method == "fedavg").then_some(0.5),
                    ..FinalMetrics::default()
                },
                best: BestMetrics {
                    personalized_accuracy: Some(BestValue { accuracy: best, round: best_round as u64 }),
                    ..BestMetrics::default()
                },
                wall_seconds: 3.0,
                bytes_up: 2000,
                bytes_down: 4000,
                seconds_per_round: Some(1.5),
                calibration: None,
                privacy: None,
                dp_sgd: None,
            },
            rounds,
            final_rows: None,
            everyone_evaluates: true,
        }
    }

    #[test]
    fn markdown_tables_show_mean_std_and_seeds() {
        let spec = spec();
        let results = [
            result("fedcac", 0, 1, &[0.1, 0.7, 0.6]),
            result("fedcac", 0, 2, &[0.1, 0.5, 0.8]),
            result("fedavg", 0, 1, &[0.1, 0.3, 0.5]),
        ];
        let md = render_markdown(&spec, &results);
        assert!(md.contains("3 of 12 cells finished"), "{md}");
        assert!(md.contains("| fedcac | 70.00 ± 14.14 (2) | — | — |"), "{md}");
        assert!(md.contains("| fedavg | 50.00 (1) | — | — |"), "{md}");
        assert!(md.contains("| fedbn | — | — | — |"), "{md}");
        assert!(
            md.contains("| fedcac | 1, 2 | 70.00 ± 14.14 | 75.00 ± 7.07 | 1, 2 | — | — | 1.50 | 1.00 kB |"),
            "{md}"
        );
        assert!(md.contains("| fedavg | 1 | 50.00 | 50.00 | 2 | 50.00 | — | 1.50 | 1.00 kB |"), "{md}");
        // Only methods with a global model get a row in the global table.
        let global = &md[md.find("## Final global accuracy").unwrap()..md.find("## iid").unwrap()];
        assert!(global.contains("| fedavg | 50.00 (1) | — | — |") && !global.contains("fedcac"), "{global}");
        assert!(md.contains("| fedcac | none of 2 |"), "{md}");
        assert!(md.contains("## dir0.5 (`dirichlet:0.5`)"), "{md}");
    }

    #[test]
    fn a_seed_evaluated_on_fewer_clients_than_the_run_has_is_marked() {
        let spec = spec();
        let mut whole = result("fedcac", 0, 1, &[0.1, 0.6]);
        whole.summary.final_eval.clients_evaluated = 3;
        let mut few = result("fedcac", 0, 2, &[0.1, 1.0]);
        few.summary.final_eval.clients_evaluated = 1;
        let md = render_markdown(&spec, &[whole.clone(), few.clone()]);
        assert!(md.contains("| fedcac | 80.00 ± 28.28 (2)† | — | — |"), "{md}");
        assert!(md.contains("fedcac on iid, seed 2: 100.00 on 1 of 3 clients."), "{md}");
        assert!(md.contains("| fedcac | 1, 2† |"), "{md}");
        // A summary older than the count (0) is read from its last rows: 3 of 3, then 2 of 3.
        whole.summary.final_eval.clients_evaluated = 0;
        let rows = (0..3).map(|c| client_row(1, c, 0.6, 10)).collect();
        whole.final_rows = Some(FinalRows { hostile: vec![], rows });
        let md = render_markdown(&spec, &[whole.clone()]);
        assert!(md.contains("| fedcac | 60.00 (1) |") && md.contains("| fedcac | 1 of 2 |"), "{md}");
        whole.final_rows.as_mut().unwrap().rows.pop();
        let md = render_markdown(&spec, &[whole.clone()]);
        assert!(md.contains("| fedcac | 60.00 (1)† |") && md.contains("| fedcac | 1† of 2 |"), "{md}");
        assert!(md.contains("fedcac on iid, seed 1: 60.00 on 2 of 3 clients"), "{md}");
        assert!(render_csv(&spec, &[whole.clone()]).lines().nth(1).unwrap().ends_with(",2,3"));
        whole.final_rows = None;
        assert!(render_csv(&spec, &[whole]).lines().nth(1).unwrap().ends_with(",,3"));
        // A run that evaluates a sample by design is not marked.
        let mut sampled = few.clone();
        sampled.everyone_evaluates = false;
        assert!(!render_markdown(&spec, &[sampled]).contains('†'));
        let config = |clients: &str, fraction: f64| {
            let mut c = spec.config(&spec.cells()[0]).unwrap();
            c.evaluation.clients = clients.parse().unwrap();
            c.fraction = fraction;
            everyone_evaluates(&c)
        };
        assert!(config("all", 0.1) && config("cohort", 1.0) && config("1", 0.1));
        assert!(!config("cohort", 0.1) && !config("0.5", 1.0));
        let csv = render_csv(&spec, &[few]);
        assert!(csv.lines().nth(1).unwrap().ends_with(",1,3"), "{csv}");
    }

    #[test]
    fn a_split_table_lists_only_the_methods_the_matrix_runs_on_it() {
        let text = format!("{SPEC}[matrix.splits_by_method]\nfedbn = [\"iid\"]\n");
        let spec = BenchSpec::parse(&text, "t").unwrap();
        let md = render_markdown(&spec, &[result("fedbn", 0, 1, &[0.1, 0.2])]);
        let iid = &md[md.find("## iid").unwrap()..md.find("## dir0.5").unwrap()];
        let dir = &md[md.find("## dir0.5").unwrap()..];
        assert!(iid.contains("| fedbn | 1 |"), "{iid}");
        assert!(!dir.contains("| fedbn |") && dir.contains("| fedavg | none of 1 |"), "{dir}");
    }

    #[test]
    fn csv_has_a_row_per_cell() {
        let spec = spec();
        let csv = render_csv(&spec, &[result("fedavg", 1, 1, &[0.25, 0.5])]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[1].starts_with("fedavg,dir0.5,1,1,0.5,0.5,1,0.5,,,1.5,2000,4000,3"), "{}", lines[1]);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn curves_average_the_seeds_per_round() {
        let spec = spec();
        let results =
            [result("fedcac", 2, 1, &[0.2, 0.4]), result("fedcac", 2, 2, &[0.4, 0.8]), result("fedavg", 0, 1, &[0.1])];
        let series = accuracy_series(&spec, &results, 2);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].0, "fedcac (2 seeds)");
        let points = &series[0].1;
        assert!((points[0].1 - 30.0).abs() < 1e-9 && (points[1].1 - 60.0).abs() < 1e-9, "{points:?}");
    }

    #[test]
    fn only_cells_with_a_readable_summary_count_as_finished() {
        let spec = spec();
        let dir = tempfile::tempdir().unwrap();
        let cells = spec.cells();
        let (done, cut, running) = (&cells[0], &cells[1], &cells[2]);
        let r = result(&done.method, done.split, done.seed, &[0.1, 0.6]);
        let d = spec.cell_dir(dir.path(), done);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.json"), serde_json::to_string(&r.summary).unwrap()).unwrap();
        let rows: Vec<String> = r.rounds.iter().map(|x| serde_json::to_string(x).unwrap()).collect();
        std::fs::write(d.join("rounds.jsonl"), rows.join("\n") + "\n{\"round\": 9").unwrap();
        let d = spec.cell_dir(dir.path(), cut);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.json"), "{\"method\": ").unwrap();
        let d = spec.cell_dir(dir.path(), running);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("rounds.jsonl"), rows.join("\n")).unwrap();

        assert!(finished_summary(&spec.cell_dir(dir.path(), done)).is_some());
        assert!(finished_summary(&spec.cell_dir(dir.path(), cut)).is_none());
        assert!(finished_summary(&spec.cell_dir(dir.path(), running)).is_none());
        let results = write_results(&spec, dir.path()).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].rounds.len(), 2);
        let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
        assert!(md.contains("1 of 12 cells finished"), "{md}");
        for split in &spec.splits {
            let png = std::fs::read(dir.path().join(format!("accuracy-{}.png", split.dir))).unwrap();
            assert!(png.starts_with(b"\x89PNG"));
        }
    }

    fn client_row(round: u64, client: u32, accuracy: f64, test_samples: u64) -> ClientRoundRecord {
        ClientRoundRecord {
            round,
            client,
            trained: false,
            train_samples: 3 * test_samples,
            test_samples,
            train_loss: None,
            accuracy: Some(accuracy),
            accuracy_trained: None,
            global_accuracy: Some(accuracy),
            bytes_up: 0,
            bytes_down: 0,
            train_seconds: 0.0,
            device: None,
            dp_sgd_epsilon: None,
            secagg_seconds: None,
        }
    }

    #[test]
    fn an_attacked_column_is_also_judged_on_the_honest_clients_alone() {
        let text = SPEC.replace(
            r#"splits = ["iid", { name = "dir0.5", split = "dirichlet:0.5" }, "file:bench/some-split.json"]"#,
            r#"splits = ["iid", { name = "1 sign-flip", split = "iid", attack = "sign-flip:0.34" }]"#,
        );
        let spec = BenchSpec::parse(&text, "t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Client 2 holds most test samples and does badly: the hostile one in column 2, where
        // client 0 also ends lower (0.5 against 0.9).
        let write_cell = |split: usize, hostile: Option<&[u32]>, client0: f64| {
            let cell = Cell { method: "fedavg".into(), split, seed: 1 };
            let d = spec.cell_dir(dir.path(), &cell);
            std::fs::create_dir_all(&d).unwrap();
            let r = result("fedavg", split, 1, &[0.1, 0.5]);
            std::fs::write(d.join("summary.json"), serde_json::to_string(&r.summary).unwrap()).unwrap();
            let rows = [
                client_row(1, 0, 0.1, 10),
                client_row(2, 0, client0, 10),
                client_row(2, 1, 0.7, 30),
                client_row(2, 2, 0.1, 60),
            ];
            let jsonl: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
            if let Some(hostile) = hostile {
                // A committed cell keeps its rows compressed.
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                std::io::Write::write_all(&mut gz, jsonl.as_bytes()).unwrap();
                std::fs::write(d.join("metrics.jsonl.gz"), gz.finish().unwrap()).unwrap();
                let record = AttackRecord {
                    attack: "sign-flip".into(),
                    fraction: 0.34,
                    hostile_clients: hostile.to_vec(),
                    honest_clients: None,
                };
                record.write(&d).unwrap();
            } else {
                std::fs::write(d.join("metrics.jsonl"), jsonl).unwrap();
            }
        };
        write_cell(0, None, 0.9);
        write_cell(1, Some(&[2]), 0.5);
        let results = write_results(&spec, dir.path()).unwrap();
        let honest: Vec<f64> = results
            .iter()
            .map(|r| r.final_rows.as_ref().unwrap().honest().unwrap().personalized_accuracy.unwrap())
            .collect();
        // Every client without an attack, (9 + 21 + 6) / 100; the two honest ones under it, 26 / 40.
        assert!((honest[0] - 0.36).abs() < 1e-12 && (honest[1] - 0.65).abs() < 1e-12, "{honest:?}");
        let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
        let table = &md[md.find("## Final personalized accuracy of the honest clients").unwrap()..];
        assert!(table.contains("| fedavg | 36.00 (1) | 65.00 (1) |"), "{md}");
        // Against the run without attack on the same two clients, 30 / 40: 10 points lower.
        let gap = &md[md.find("## Honest clients against the run").unwrap()..];
        assert!(gap.contains("| fedavg | 0.00 (1) | -10.00 (1) |"), "{md}");
        let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        assert!(csv.lines().next().unwrap().ends_with(",honest_gap,clients_evaluated,clients"), "{csv}");
        let attacked = csv.lines().nth(2).unwrap();
        assert!(attacked.starts_with("fedavg,1 sign-flip,") && attacked.contains(",0.65,0.65,-0.09999"), "{csv}");

        // Without an attacked column the table is left out.
        assert!(!render_markdown(&BenchSpec::parse(SPEC, "t").unwrap(), &results).contains("honest clients"));
    }
}
