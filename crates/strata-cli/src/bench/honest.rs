//! A defense judged on the clients it protects. Under an attack the federation-wide accuracy
//! also counts the hostile clients' own test splits, which a rule that rightly leaves their
//! updates out cannot serve when one of them holds most of a class (as under a Dirichlet
//! split). So `results.md` gets two more tables from each cell's final rows
//! ([`super::cell::FinalRows`]): the honest clients' final accuracy, and its distance from the run
//! with neither attack nor rule, read on the same clients (the same seed, the cell's split
//! without its attack, the method without its rule).

use strata_core::defense::Defense;
use strata_report::honest_accuracy;

use super::cell::CellResult;
use super::spec::BenchSpec;
use super::table::seeds_table;

/// The honest clients' final personalized accuracy.
fn honest_personalized(cell: &CellResult) -> Option<f64> {
    cell.final_rows.as_ref()?.honest()?.personalized_accuracy
}

/// The method label without its robust rule (`fedavg+median` → `fedavg`), tag kept.
fn undefended(label: &str) -> String {
    let (untagged, tag) = label.split_once('@').map_or((label, None), |(m, t)| (m, Some(t)));
    let kept: Vec<&str> = untagged
        .split('+')
        .enumerate()
        .filter(|(i, o)| *i == 0 || o.parse::<Defense>().is_err())
        .map(|(_, o)| o)
        .collect();
    let mut base = kept.join("+");
    if let Some(tag) = tag {
        base = format!("{base}@{tag}");
    }
    base
}

/// How far `cell`'s honest clients end from where the run with neither its attack nor its
/// rule leaves those same clients (a fraction; negative is worse); `None` without that run.
pub fn gap_to_honest_run(spec: &BenchSpec, results: &[CellResult], cell: &CellResult) -> Option<f64> {
    let split = &spec.splits[cell.cell.split];
    let plain_split = spec.splits.iter().position(|s| s.attack.is_none() && s.spec == split.spec)?;
    let method = undefended(&cell.cell.method);
    let plain = results
        .iter()
        .find(|r| r.cell.method == method && r.cell.split == plain_split && r.cell.seed == cell.cell.seed)?;
    let own = cell.final_rows.as_ref()?;
    let reference = honest_accuracy(&plain.final_rows.as_ref()?.rows, &own.hostile)?.personalized_accuracy?;
    Some(own.honest()?.personalized_accuracy? - reference)
}

/// The two tables, when some split has an attack; empty otherwise.
pub fn render(spec: &BenchSpec, results: &[CellResult]) -> String {
    if spec.splits.iter().all(|s| s.attack.is_none()) {
        return String::new();
    }
    let mut md = String::from(
        "\n## Final personalized accuracy of the honest clients (seeds)\n\nAs the first table, over the clients \
         that were not hostile in the cell (`attack.json`; every client in a column without an attack): what a \
         defense protects. The tables above also count the hostile clients' own test splits, which a rule \
         that leaves their updates out cannot serve when one of them holds most of a class.\n\n",
    );
    md.push_str(&seeds_table(spec, results, honest_personalized, false));
    md.push_str(
        "\n## Honest clients against the run with neither attack nor rule (points, seeds)\n\nThe table above \
         minus the accuracy that the method without its rule, on the split without its attack and the same \
         seed, ends with on the same clients: what the attack and the rule together cost the clients the \
         rule protects (negative is worse).\n\n",
    );
    md.push_str(&seeds_table(spec, results, |c| gap_to_honest_run(spec, results, c), false));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_undefended_method_drops_only_the_rule() {
        assert_eq!(undefended("fedavg+median"), "fedavg");
        assert_eq!(undefended("fedper+norm-bound:median"), "fedper");
        assert_eq!(undefended("fedavg+ccvr+krum:4@v2"), "fedavg+ccvr@v2");
        assert_eq!(undefended("fedavg"), "fedavg");
    }
}
