//! Puts Strata's ε beside dp_accounting's: reads the CSV that
//! `scripts/dp-accountant-reference.sh` writes (one row per event, steps and δ), computes each
//! row with `strata_methods::accountant`, and writes the same rows with Strata's ε, its order
//! and the relative difference. Prints the largest difference and every row whose optimal
//! order differs.
//!
//! Run: `cargo run -p strata-methods --example dp_accountant_grid -- REFERENCE.csv OUT.csv`
//! (the committed table is bench/results/2026-12-02-dp-accountant/grid.csv).

use std::error::Error;
use std::fmt::Write as _;

use strata_methods::accountant::{Event, Neighbouring, RdpAccountant};

/// The reference's columns this reads; the others are copied through.
const INPUT: [&str; 9] =
    ["kind", "q", "population", "sample_size", "z", "steps", "delta", "epsilon_dp_accounting", "order"];

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: dp_accountant_grid REFERENCE.csv OUT.csv".into());
    };
    let text = std::fs::read_to_string(&input)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty reference")?.split(',').collect();
    if header != INPUT {
        return Err(format!("{input}: expected the columns {}, found {}", INPUT.join(","), header.join(",")).into());
    }

    let mut out = String::from(
        "kind,q,population,sample_size,z,steps,delta,epsilon_dp_accounting,order_dp_accounting,epsilon_strata,order_strata,relative_difference\n",
    );
    let (mut rows, mut largest, mut other_orders) = (0, (0.0_f64, String::new()), Vec::new());
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != INPUT.len() {
            return Err(format!("{input}: {} fields in `{line}`", fields.len()).into());
        }
        let (reference, reference_order): (f64, f64) = (fields[7].parse()?, fields[8].parse()?);
        let (epsilon, order) = strata_epsilon(&fields)?;
        let difference = relative_difference(epsilon, reference);
        writeln!(out, "{},{epsilon:?},{order:?},{difference:e}", fields.join(","))?;
        rows += 1;
        if difference > largest.0 || largest.1.is_empty() {
            largest = (difference, line.to_string());
        }
        if order != reference_order {
            other_orders.push(format!("{line} -> strata {epsilon} at order {order}"));
        }
    }
    std::fs::write(&output, out)?;
    println!("{rows} rows written to {output}");
    println!("largest relative difference {:e}, in row: {}", largest.0, largest.1);
    println!("{} rows with another optimal order", other_orders.len());
    for row in other_orders {
        println!("  {row}");
    }
    Ok(())
}

/// (ε, order) of one reference row, through the public API.
fn strata_epsilon(fields: &[&str]) -> Result<(f64, f64), Box<dyn Error>> {
    let (noise_multiplier, steps, delta): (f64, u64, f64) =
        (fields[4].parse()?, fields[5].parse()?, fields[6].parse()?);
    let (neighbouring, event) = match fields[0] {
        "poisson" => (
            Neighbouring::AddOrRemoveOne,
            Event::Poisson { sampling_rate: fields[1].parse()?, noise_multiplier, steps },
        ),
        "wor" => (
            Neighbouring::ReplaceOne,
            Event::WithoutReplacement {
                population: fields[2].parse()?,
                sample_size: fields[3].parse()?,
                noise_multiplier,
                steps,
            },
        ),
        other => return Err(format!("unknown kind `{other}`").into()),
    };
    let mut accountant = RdpAccountant::new(neighbouring);
    accountant.compose(event)?;
    let spent = accountant.epsilon(delta)?;
    Ok((spent.epsilon, spent.order))
}

/// |a − b| / |b|; 0 when equal (both 0 or both +∞), +∞ when only one is 0 or +∞.
fn relative_difference(got: f64, reference: f64) -> f64 {
    if got == reference {
        0.0
    } else if reference == 0.0 || !got.is_finite() || !reference.is_finite() {
        f64::INFINITY
    } else {
        (got - reference).abs() / reference.abs()
    }
}
