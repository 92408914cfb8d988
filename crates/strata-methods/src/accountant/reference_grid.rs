//! The independent check, without Python: every row of the committed grid
//! (`bench/results/2026-12-02-dp-accountant/grid.csv`, whose `epsilon_dp_accounting` column
//! Google's dp_accounting 0.6.0 computed, see `scripts/dp-accountant-reference.sh`) is
//! recomputed here and must agree to within 1 % (the requirement; the table's largest
//! difference is about 2.5e-11), at the same optimal order, with ε = 0 and ε = ∞ exactly.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Event, Neighbouring, RdpAccountant};

const GRID: &str = "../../bench/results/2026-12-02-dp-accountant/grid.csv";

/// The bound on |ε_strata − ε_dp_accounting| / ε_dp_accounting.
const TOLERANCE: f64 = 0.01;

/// One row, by column name, and its text.
struct Row<'a>(BTreeMap<&'a str, &'a str>, &'a str);

impl Row<'_> {
    fn get<T: std::str::FromStr>(&self, column: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let text = self.0.get(column).unwrap_or_else(|| panic!("no column {column}"));
        text.parse().unwrap_or_else(|e| panic!("{column} = `{text}`: {e:?}"))
    }

    fn accountant(&self) -> RdpAccountant {
        let (noise_multiplier, steps) = (self.get("z"), self.get("steps"));
        let (neighbouring, event) = match self.0["kind"] {
            "poisson" => {
                (Neighbouring::AddOrRemoveOne, Event::Poisson { sampling_rate: self.get("q"), noise_multiplier, steps })
            }
            "wor" => (
                Neighbouring::ReplaceOne,
                Event::WithoutReplacement {
                    population: self.get("population"),
                    sample_size: self.get("sample_size"),
                    noise_multiplier,
                    steps,
                },
            ),
            other => panic!("unknown kind {other}"),
        };
        let mut accountant = RdpAccountant::new(neighbouring);
        accountant.compose(event).unwrap();
        accountant
    }
}

fn relative_difference(got: f64, reference: f64) -> f64 {
    if got == reference {
        0.0
    } else if reference == 0.0 || !got.is_finite() || !reference.is_finite() {
        f64::INFINITY
    } else {
        (got - reference).abs() / reference.abs()
    }
}

#[test]
fn every_committed_row_matches_dp_accounting_within_one_percent() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GRID);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Row> = lines.map(|line| Row(header.iter().copied().zip(line.split(',')).collect(), line)).collect();
    assert_eq!(rows.len(), 508, "the grid lost rows");
    let kinds = |kind: &str| rows.iter().filter(|r| r.0["kind"] == kind).count();
    assert_eq!((kinds("poisson"), kinds("wor")), (306, 202));

    let (mut largest, mut zeros, mut infinities) = (0.0_f64, 0, 0);
    for row in &rows {
        let line = row.1;
        let spent = row.accountant().epsilon(row.get("delta")).unwrap();
        let reference: f64 = row.get("epsilon_dp_accounting");
        let difference = relative_difference(spent.epsilon, reference);
        assert!(difference <= TOLERANCE, "{line}: strata {} (difference {difference})", spent.epsilon);
        assert_eq!(spent.order, row.get::<f64>("order_dp_accounting"), "{line}");
        // The committed Strata column is what this code computes (a stale table fails here).
        let committed: f64 = row.get("epsilon_strata");
        assert!(relative_difference(spent.epsilon, committed) <= 1e-9, "{line}: now {}", spent.epsilon);
        largest = largest.max(difference);
        zeros += usize::from(reference == 0.0);
        infinities += usize::from(reference == f64::INFINITY);
    }
    assert!(largest < 1e-9, "{largest}");
    assert_eq!((zeros, infinities), (6, 2), "the edge rows");
}
