//! `strata partition`: shows how a split deals labels to clients, as a table and a heatmap.

use std::path::PathBuf;

use anyhow::Context;

use super::RunArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Where to write the heatmap PNG.
    #[arg(long, default_value = "partition.png")]
    png: PathBuf,
    /// Also write the split as a JSON file usable with `--split file:PATH`.
    #[arg(long)]
    save: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let dataset = strata_data::load(&config.data, config.seed)?;
    let split = strata_data::partition::for_run(&config.data, config.clients as usize, config.seed, &dataset)?;
    let counts = split.label_counts(&dataset.labels, dataset.shape.num_classes);
    println!(
        "{} split `{}` over {} clients (seed {}):\n",
        dataset.name, config.data.split, config.clients, config.seed
    );
    println!("{}", strata_report::label_table_markdown(&counts));
    // What a server without the data is told with --dataset-fingerprint.
    println!("Dataset fingerprint: {}", dataset.fingerprint());
    strata_report::plot_label_heatmap(&counts, &args.png)
        .with_context(|| format!("cannot write {}", args.png.display()))?;
    println!("Heatmap written to {}", args.png.display());
    if let Some(path) = args.save {
        split.save_json(&path)?;
        println!("Split written to {}", path.display());
    }
    Ok(())
}
