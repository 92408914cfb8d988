//! `report.md`, the report a person reads after a run, and the compact results table a CLI
//! prints to the terminal when the run ends.

use std::collections::BTreeMap;
use std::fmt::Write;

use strata_core::records::{ClientRoundRecord, PhaseSeconds, RoundRecord};

use crate::format::{NONE, mb, num, pct};
use crate::summary::{BestValue, DpSgdSummary, PrivacySummary, RunSummary};

/// The whole Markdown report: header, headline numbers, one row per round, one per client.
pub fn report_markdown(summary: &RunSummary, rounds: &[RoundRecord], clients: &[ClientRoundRecord]) -> String {
    let mut out = String::new();
    header(&mut out, summary);
    headline(&mut out, summary);
    if let Some(p) = &summary.privacy {
        privacy(&mut out, p);
    }
    if let Some(d) = &summary.dp_sgd {
        dp_sgd(&mut out, d);
    }
    round_table(&mut out, summary, rounds);
    phase_table(&mut out, rounds);
    if let Some(c) = &summary.calibration {
        out.push_str(&crate::calibration_summary::calibration_markdown(c));
    }
    client_table(&mut out, summary, clients);
    out
}

fn header(out: &mut String, s: &RunSummary) {
    let _ = writeln!(out, "# {} on {}\n", cell(&s.method), cell(&s.dataset));
    let _ = writeln!(out, "| setting | value |\n|---|---|");
    for (key, value) in [
        ("method", cell(&s.method)),
        ("dataset", cell(&s.dataset)),
        ("split", cell(&s.split)),
        ("model", cell(&s.model)),
        ("clients", s.clients.to_string()),
        ("cohort", format!("{} of the available clients each round", s.fraction)),
        ("evaluation", cell(&s.evaluation)),
        ("seed", s.seed.to_string()),
        ("rounds aggregated", format!("{} of {}", s.rounds_completed, s.rounds)),
        ("wall time", format!("{:.1} s ({} s per round)", s.wall_seconds, num(s.seconds_per_round, 2))),
        ("traffic", format!("{} MB up, {} MB down", mb(s.bytes_up), mb(s.bytes_down))),
    ] {
        let _ = writeln!(out, "| {key} | {value} |");
    }
    out.push('\n');
}

fn headline(out: &mut String, s: &RunSummary) {
    let f = &s.final_eval;
    let at = |round: Option<u64>| round.map_or_else(String::new, |r| format!(" (round {r})"));
    let _ = writeln!(out, "## Results\n\n| metric | accuracy % |\n|---|---:|");
    let _ = writeln!(out, "| personalized, as merged{} | **{}** |", at(f.round), pct(f.personalized_accuracy));
    let _ = writeln!(
        out,
        "| personalized, after local training{} | {} |",
        at(f.trained_round),
        pct(f.personalized_accuracy_trained)
    );
    let _ = writeln!(out, "| global{} | {} |", at(f.round), pct(f.global_accuracy));
    let spread = f.personalized_spread.map_or_else(
        || NONE.to_string(),
        |s| format!("{} / {} / {}", pct(Some(s.min)), pct(Some(s.median)), pct(Some(s.max))),
    );
    let _ = writeln!(out, "| personalized across clients, min / median / max | {spread} |");
    let _ = writeln!(out, "| clients in the final evaluation | {} of {} |", f.clients_evaluated, s.clients);
    let best = |b: Option<BestValue>| {
        b.map_or_else(|| NONE.to_string(), |b| format!("{} (round {})", pct(Some(b.accuracy)), b.round))
    };
    let _ = writeln!(out, "| best personalized, as merged | {} |", best(s.best.personalized_accuracy));
    let _ =
        writeln!(out, "| best personalized, after local training | {} |", best(s.best.personalized_accuracy_trained));
    let _ = writeln!(out, "| best global | {} |", best(s.best.global_accuracy));
    let _ = writeln!(
        out,
        "\nRow `r` evaluates the model after `r` rounds of aggregation; row {} is the final, evaluation-only one.\n",
        s.rounds
    );
}

fn privacy(out: &mut String, p: &PrivacySummary) {
    let _ = writeln!(out, "## Differential privacy (user level)\n\n| setting | value |\n|---|---|");
    let stopped =
        p.stopped_by_budget_at.map_or_else(String::new, |r| format!("; training stopped at row {r}, at the budget"));
    for (key, value) in [
        ("(ε, δ)", format!("({}, {:e}) after {} released rounds{stopped}", epsilon(p.epsilon), p.delta, p.releases)),
        ("noise multiplier z", format!("{:.4}", p.noise_multiplier)),
        ("clipping", format!("{} (last bound {:.4})", cell(&p.clipping), p.last_clipping_norm)),
        ("covers", cell(&p.covers)),
        ("accountant", cell(&p.accountant)),
    ] {
        let _ = writeln!(out, "| {key} | {value} |");
    }
    out.push('\n');
}

/// ε to four decimals; ∞ when nothing bounds it.
fn epsilon(e: Option<f64>) -> String {
    e.map_or_else(|| "∞".to_string(), |e| format!("{e:.4}"))
}

fn dp_sgd(out: &mut String, d: &DpSgdSummary) {
    let _ = writeln!(
        out,
        "## Differential privacy (example level, DP-SGD on each client)\n\n| setting | value |\n|---|---|"
    );
    let epsilon = d.max_epsilon.map_or_else(|| NONE.to_string(), |e| format!("{e:.4}"));
    for (key, value) in [
        ("largest ε a client reported for its data", format!("{epsilon} at δ = {:e} ({} clients)", d.delta, d.clients)),
        ("noise multiplier z", format!("{:.4}", d.noise_multiplier)),
        ("per-sample clipping bound", format!("{}", d.clipping_norm)),
        (
            "accountant",
            "each client's own: RDP of Poisson-sampled steps at rate 1/⌈n/B⌉, add/remove-one sample".to_string(),
        ),
    ] {
        let _ = writeln!(out, "| {key} | {value} |");
    }
    out.push('\n');
}

fn round_table(out: &mut String, s: &RunSummary, rounds: &[RoundRecord]) {
    let private = s.privacy.is_some();
    let (eps_head, eps_rule) = if private { (" ε |", "---:|") } else { ("", "") };
    let _ = writeln!(
        out,
        "## Rounds\n\n| round | global acc % | personalized acc % (merged) | personalized acc % (after training) \
         | train loss | reported/picked | seconds | MB up | MB down |{eps_head}\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|{eps_rule}"
    );
    let mut sorted: Vec<&RoundRecord> = rounds.iter().collect();
    sorted.sort_by_key(|r| r.round);
    for r in sorted {
        let last = r.round >= s.rounds || r.budget_spent;
        let label = if last { format!("{} (final)", r.round) } else { r.round.to_string() };
        let aggregated = if r.aggregated || last { "" } else { " (not aggregated)" };
        let eps = if private {
            format!(" {} |", r.privacy.as_ref().map_or_else(|| NONE.to_string(), |p| epsilon(p.epsilon)))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {}/{}{aggregated} | {:.2} | {} | {} |{eps}",
            pct(r.global_accuracy),
            pct(r.personalized_accuracy),
            pct(r.personalized_accuracy_trained),
            num(r.train_loss, 4),
            r.reported,
            r.picked,
            r.seconds,
            mb(r.bytes_up),
            mb(r.bytes_down),
        );
    }
    out.push('\n');
}

/// Where each round's time went: the server's wall clock, and the phases' seconds (client
/// phases summed over the round's clients, so they may exceed the wall clock).
fn phase_table(out: &mut String, rounds: &[RoundRecord]) {
    let mut timed: Vec<(&RoundRecord, &PhaseSeconds)> =
        rounds.iter().filter_map(|r| Some((r, r.phases.as_ref()?))).collect();
    if timed.is_empty() {
        return;
    }
    timed.sort_by_key(|(r, _)| r.round);
    let _ = writeln!(
        out,
        "## Where the time went

Seconds. Download, training, upload and validation are summed over the round's \
         clients (they work at once); aggregation and the state snapshot for `--resume` are \
         the server's (the state is written to disk beside the next round).

| round | wall clock | download | training \
         | upload | validation | aggregation | snapshot |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (r, p) in timed {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.3} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.round, r.seconds, p.download, p.train, p.upload, p.validation, p.aggregation, p.snapshot
        );
    }
    out.push('\n');
}

/// One row per client of the last evaluated round, with what it did over the whole run.
fn client_table(out: &mut String, s: &RunSummary, clients: &[ClientRoundRecord]) {
    let Some(last) = s.final_eval.round else {
        return;
    };
    let mut by_client: BTreeMap<u32, ClientTotals> = BTreeMap::new();
    for c in clients {
        let t = by_client.entry(c.client).or_default();
        t.bytes_up += c.bytes_up;
        t.bytes_down += c.bytes_down;
        if c.round == last {
            t.last = Some(c);
        }
        if c.trained && c.accuracy_trained.is_some() && t.trained.is_none_or(|p| p.round < c.round) {
            t.trained = Some(c);
        }
    }
    let _ = writeln!(
        out,
        "## Clients at round {last}\n\n| client | train samples | test samples | accuracy % | accuracy after training % \
         | MB up (total) | MB down (total) |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (id, t) in by_client.iter().filter(|(_, t)| t.last.is_some()) {
        let Some(row) = t.last else { continue };
        let trained =
            t.trained.map_or_else(|| NONE.to_string(), |c| format!("{} (round {})", pct(c.accuracy_trained), c.round));
        let _ = writeln!(
            out,
            "| {id} | {} | {} | {} | {trained} | {} | {} |",
            row.train_samples,
            row.test_samples,
            pct(row.accuracy),
            mb(t.bytes_up),
            mb(t.bytes_down),
        );
    }
}

#[derive(Default)]
struct ClientTotals<'a> {
    last: Option<&'a ClientRoundRecord>,
    trained: Option<&'a ClientRoundRecord>,
    bytes_up: u64,
    bytes_down: u64,
}

/// A value made safe for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The compact table a CLI prints when a run ends: one aligned line per round, then the
/// headline numbers.
pub fn results_table(summary: &RunSummary, rounds: &[RoundRecord]) -> String {
    let mut sorted: Vec<&RoundRecord> = rounds.iter().collect();
    sorted.sort_by_key(|r| r.round);
    // The trained model's accuracy is a column only when the run measured it (`[evaluation]`).
    let trained = sorted.iter().any(|r| r.personalized_accuracy_trained.is_some());
    let mut head = vec!["round", "global %", "personalized %", "trained %", "loss", "seconds"];
    let keep = |cells: Vec<String>| -> Vec<String> {
        cells.into_iter().enumerate().filter(|(i, _)| trained || *i != 3).map(|(_, c)| c).collect()
    };
    if !trained {
        head.remove(3);
    }
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            keep(vec![
                r.round.to_string(),
                pct(r.global_accuracy),
                pct(r.personalized_accuracy),
                pct(r.personalized_accuracy_trained),
                num(r.train_loss, 4),
                format!("{:.1}", r.seconds),
            ])
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([head[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[&str]| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        parts.join("  ")
    };
    let mut out = line(&head) + "\n";
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        out += &line(&cells);
        out.push('\n');
    }
    out += &headline_line(summary);
    out.push('\n');
    out
}

/// One line with the numbers a person remembers from the run.
fn headline_line(s: &RunSummary) -> String {
    let f = &s.final_eval;
    let trained =
        f.personalized_accuracy_trained.map_or_else(String::new, |a| format!(" (after training {}%)", pct(Some(a))));
    let mut line =
        format!("final: personalized {}%{trained}, global {}%", pct(f.personalized_accuracy), pct(f.global_accuracy));
    if let Some(spread) = f.personalized_spread {
        let _ = write!(
            line,
            ", clients min/median/max {}/{}/{}%",
            pct(Some(spread.min)),
            pct(Some(spread.median)),
            pct(Some(spread.max))
        );
    }
    if let Some(c) = &s.calibration {
        let _ = write!(line, "; global {}% after {} calibration", pct(c.global_after), c.method);
    }
    if let Some(p) = &s.privacy {
        let _ = write!(line, "; user-level DP (ε, δ) = ({}, {:e})", epsilon(p.epsilon), p.delta);
    }
    if let Some(e) = s.dp_sgd.as_ref().and_then(|d| d.max_epsilon) {
        let _ = write!(line, "; DP-SGD ε ≤ {e:.3} per client");
    }
    let _ = write!(line, "; {}/{} rounds aggregated in {:.1} s", s.rounds_completed, s.rounds, s.wall_seconds);
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::summary::summarize;
    use crate::test_records::{client, config, round};

    fn run() -> (RunSummary, Vec<RoundRecord>, Vec<ClientRoundRecord>) {
        let rounds = vec![round(0, Some(0.1), 0.2, 2.0), round(1, Some(0.5), 0.6, 2.0), round(2, Some(0.55), 0.7, 0.0)];
        let clients = vec![
            client(0, 0, true, 0.2, Some(0.3), 10),
            client(1, 0, true, 0.6, Some(0.65), 10),
            client(1, 1, false, 0.6, None, 20),
            client(2, 0, false, 0.75, None, 10),
            client(2, 1, false, 0.68, None, 20),
        ];
        (summarize(&config(2), &rounds, &clients, 12.5), rounds, clients)
    }

    #[test]
    fn report_has_header_headline_rounds_and_clients() {
        let (s, rounds, clients) = run();
        let md = report_markdown(&s, &rounds, &clients);
        assert!(md.contains("| method | fedavg |"), "{md}");
        assert!(md.contains("| split | dirichlet:0.1 |"), "{md}");
        assert!(md.contains("| personalized, as merged (round 2) | **70.00** |"), "{md}");
        assert!(md.contains("| personalized, after local training (round 1) | 65.00 |"), "{md}");
        assert!(md.contains("| 68.00 / 71.50 / 75.00 |"), "{md}");
        assert!(md.contains("| 1 | 50.00 | 60.00 | 65.00 | 0.5000 | 2/2 | 2.00 | 0.000 | 0.000 |"), "{md}");
        assert!(md.contains("| 2 (final) | 55.00 | 70.00 | - | - | 0/0 | 0.00 |"), "{md}");
        // Client 0 trained last in round 1; client 1 never trained.
        assert!(md.contains("| 0 | 30 | 10 | 75.00 | 65.00 (round 1) | 2.000 | 6.000 |"), "{md}");
        assert!(md.contains("| 1 | 60 | 20 | 68.00 | - | 0.000 | 4.000 |"), "{md}");
    }

    /// Rounds with phase timings get a row each; a run without them gets no section.
    #[test]
    fn the_time_table_lists_each_timed_rounds_phases() {
        let (s, mut rounds, clients) = run();
        assert!(!report_markdown(&s, &rounds, &clients).contains("Where the time went"));
        rounds[1].phases = Some(PhaseSeconds {
            download: 0.25,
            train: 3.5,
            upload: 0.125,
            validation: 0.0625,
            aggregation: 0.5,
            snapshot: 0.75,
        });
        let md = report_markdown(&s, &rounds, &clients);
        assert!(md.contains("## Where the time went"), "{md}");
        assert!(md.contains("| 1 | 2.00 | 0.250 | 3.50 | 0.125 | 0.062 | 0.500 | 0.750 |"), "{md}");
        assert!(!md.contains("| 0 | 2.00 | 0."), "untimed rounds have no row: {md}");
    }

    #[test]
    fn terminal_table_aligns_columns_and_ends_with_the_headline() {
        let (s, rounds, _) = run();
        let table = results_table(&s, &rounds);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(lines[0].len(), lines[1].len(), "{table}");
        assert_eq!(lines[1].len(), lines[3].len(), "{table}");
        assert!(lines[4].starts_with("final: personalized 70.00% (after training 65.00%), global 55.00%"), "{table}");
        assert!(lines[4].contains("2/2 rounds aggregated"), "{table}");
    }

    #[test]
    fn a_run_that_never_measured_the_trained_model_has_no_column_for_it() {
        let (mut s, mut rounds, _) = run();
        rounds.iter_mut().for_each(|r| r.personalized_accuracy_trained = None);
        s.final_eval.personalized_accuracy_trained = None;
        let table = results_table(&s, &rounds);
        assert!(!table.contains("trained %") && table.lines().next().is_some_and(|h| h.contains("loss")), "{table}");
        assert!(table.contains("final: personalized 70.00%, global 55.00%"), "{table}");
    }
}
