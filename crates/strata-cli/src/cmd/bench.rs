//! `strata bench SPEC.toml`: every cell of a spec's matrix (method × split × seed), one after
//! another, each a `simulate` run into `OUT/cells/<split>/<method>/seed<k>/`. A cell whose
//! `summary.json` exists is skipped, so the same command resumes after Ctrl-C or a crash.
//! `OUT/results.md`, `results.csv` and `accuracy-<split>.png` are rewritten after every cell.

use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_server::Ending;

use crate::bench::cell::finished_summary;
use crate::bench::results::write_results;
use crate::bench::spec::BenchSpec;

#[derive(clap::Args)]
pub struct Args {
    /// The bench spec (TOML: [settings] and [matrix]; see bench/fmnist.toml).
    spec: PathBuf,
    /// Output directory (default: bench/runs/<spec file stem>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Clients that train at the same time in each cell.
    #[arg(long)]
    parallel: Option<usize>,
    /// Where the clients train: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Run nothing: rewrite results.md, results.csv and the plots from the cells already
    /// finished in OUT (e.g. after running part of the matrix with another spec).
    #[arg(long)]
    tabulate: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.spec));
    if args.tabulate {
        let (finished, cells) = tabulate(&args.spec, &out)?;
        println!("{}", std::fs::read_to_string(out.join("results.md")).unwrap_or_default());
        println!("{finished} of {cells} cells finished; results rewritten in {}", out.display());
        return Ok(());
    }
    let tally = run_bench(&args.spec, &out, args.parallel, &args.device).await?;
    let md = std::fs::read_to_string(out.join("results.md")).unwrap_or_default();
    println!("\n{md}");
    println!(
        "{} cells run, {} skipped (already finished), {} failed; results in {}",
        tally.ran,
        tally.skipped,
        tally.failed,
        out.display()
    );
    if tally.interrupted {
        println!("Interrupted: run the same command again to resume.");
    } else if tally.failed > 0 {
        anyhow::bail!("{} cells failed (see error.txt in their directories); a rerun retries them", tally.failed);
    }
    Ok(())
}

/// `bench/runs/<spec file stem>`.
fn default_out(spec: &Path) -> PathBuf {
    PathBuf::from("bench/runs").join(spec.file_stem().unwrap_or_default())
}

/// What a bench did this time.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub ran: usize,
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: bool,
}

/// Runs the spec's unfinished cells into `out` and writes the results after each.
pub async fn run_bench(spec_path: &Path, out: &Path, parallel: Option<usize>, device: &str) -> anyhow::Result<Tally> {
    let spec = load_spec(spec_path, out)?;

    let cells = spec.cells();
    let mut tally = Tally::default();
    for (i, cell) in cells.iter().enumerate() {
        let dir = spec.cell_dir(out, cell);
        let what = format!(
            "[{}/{}] {} on {}, seed {}",
            i + 1,
            cells.len(),
            cell.method,
            spec.splits[cell.split].label,
            cell.seed
        );
        if finished_summary(&dir).is_some() {
            eprintln!("{what}: finished before, skipped");
            tally.skipped += 1;
            continue;
        }
        eprintln!("{what}");
        // Leftovers of an interrupted or failed try go, so the cell's files are all this run's.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let config = spec.config(cell)?;
        match super::simulate::simulate(
            config,
            dir.clone(),
            parallel,
            device,
            Default::default(),
            spec.splits[cell.split].attack,
        )
        .await
        {
            Ok(outcome) if outcome.ending == Ending::Interrupted => {
                // The server writes a summary of what it had; the cell is not finished.
                let _ = std::fs::rename(dir.join("summary.json"), dir.join("summary.interrupted.json"));
                tally.interrupted = true;
                break;
            }
            Ok(outcome) => {
                let s = &outcome.summary;
                let pct = |x: Option<f64>| x.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or("-".into());
                eprintln!(
                    "{what}: final personalized {}, global {}, {:.1} s",
                    pct(s.final_eval.personalized_accuracy),
                    pct(s.final_eval.global_accuracy),
                    s.wall_seconds
                );
                tally.ran += 1;
            }
            Err(e) => {
                eprintln!("{what}: failed: {e:#}");
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join("error.txt"), format!("{e:#}\n"));
                tally.failed += 1;
            }
        }
        write_results(&spec, out)?;
    }
    write_results(&spec, out)?;
    Ok(tally)
}

/// Rewrites `out`'s results for the spec from the cells finished there; returns how many of
/// how many cells are finished.
pub fn tabulate(spec_path: &Path, out: &Path) -> anyhow::Result<(usize, usize)> {
    let spec = load_spec(spec_path, out)?;
    write_results(&spec, out)?;
    let cells = spec.cells();
    let finished = cells.iter().filter(|c| finished_summary(&spec.cell_dir(out, c)).is_some()).count();
    Ok((finished, cells.len()))
}

/// Parses the spec and copies it into `out` (the results there are this spec's).
fn load_spec(spec_path: &Path, out: &Path) -> anyhow::Result<BenchSpec> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read bench spec {}", spec_path.display()))?;
    let name = spec_path.file_stem().unwrap_or_default().to_string_lossy();
    let spec = BenchSpec::parse(&text, &name).with_context(|| format!("in bench spec {}", spec_path.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("spec.toml"), &text).with_context(|| format!("cannot write into {}", out.display()))?;
    Ok(spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The smoke spec end to end, twice: the second time every cell is skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke_spec_runs_then_resumes() {
        // At run time, not env!(): a test binary reused from another checkout must read this one.
        let spec =
            std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bench/smoke.toml");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("smoke");
        let first = run_bench(&spec, &out, None, "cpu").await.unwrap();
        assert_eq!(first, Tally { ran: 12, ..Tally::default() });
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 13, "{csv}");
        let second = run_bench(&spec, &out, None, "cpu").await.unwrap();
        assert_eq!(second, Tally { skipped: 12, ..Tally::default() });
        assert!(out.join("accuracy-dirichlet-0.5.png").is_file());
        // Tabulating runs nothing and writes the same tables; a cell gone is counted out.
        let table = std::fs::read_to_string(out.join("results.md")).unwrap();
        std::fs::remove_file(out.join("results.md")).unwrap();
        assert_eq!(tabulate(&spec, &out).unwrap(), (12, 12));
        assert_eq!(std::fs::read_to_string(out.join("results.md")).unwrap(), table);
        let cell = std::fs::read_dir(out.join("cells")).unwrap().next().unwrap().unwrap().path();
        std::fs::remove_dir_all(cell).unwrap();
        let (finished, cells) = tabulate(&spec, &out).unwrap();
        assert!(finished < 12 && cells == 12, "{finished} of {cells}");
    }
}
