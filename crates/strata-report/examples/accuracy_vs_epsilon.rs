//! Final accuracy against the privacy budget ε from `strata bench` results: each method's
//! cells labelled `+dp-eps:E` become points (E, mean final personalized accuracy over seeds),
//! and its cells without DP a flat line across the same ε, for reference.
//!
//! `cargo run -p strata-report --example accuracy_vs_epsilon -- OUT.png TITLE results.csv...`

use std::collections::BTreeMap;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, title, csvs @ ..] = args.as_slice() else {
        return Err("usage: accuracy_vs_epsilon OUT.png TITLE results.csv...".into());
    };
    // (method, split) → ε (None: no DP) → accuracies over seeds.
    let mut cells: BTreeMap<String, BTreeMap<Option<u64>, Vec<f64>>> = BTreeMap::new();
    for path in csvs {
        let text = std::fs::read_to_string(path)?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("{path}: no column {name}"));
        let (method, split, accuracy) = (column("method")?, column("split")?, column("final_personalized")?);
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            let label = fields[method];
            let base = label.split('+').next().unwrap_or(label);
            let epsilon =
                label.split('+').find_map(|o| o.strip_prefix("dp-eps:")).map(str::parse::<f64>).transpose()?;
            if label.split('+').any(|o| o.starts_with("dp-") && !o.starts_with("dp-eps:") && !o.starts_with("dp-clip:"))
            {
                continue;
            }
            let value: f64 = fields[accuracy].parse()?;
            let key = format!("{base} ({})", fields[split]);
            // ε as thousandths, to key a map.
            cells.entry(key).or_default().entry(epsilon.map(|e| (e * 1000.0) as u64)).or_default().push(100.0 * value);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut series = Vec::new();
    for (key, by_epsilon) in &cells {
        let private: Vec<(f64, f64)> =
            by_epsilon.iter().filter_map(|(e, v)| Some(((*e)? as f64 / 1000.0, mean(v)))).collect();
        if let (Some(reference), Some(first), Some(last)) = (by_epsilon.get(&None), private.first(), private.last()) {
            series.push((format!("{key}, no DP"), vec![(first.0, mean(reference)), (last.0, mean(reference))]));
        }
        series.push((format!("{key}, user-level DP"), private));
    }
    strata_report::plot::plot_series(&series, title, "ε (δ = 1e-5)", "final accuracy (%)", Path::new(out))?;
    println!("wrote {out}");
    Ok(())
}
