//! A bench spec: shared `[settings]` (a `RunConfig` without `method`, `seed` and `data.split`)
//! and a `[matrix]` of methods × splits × seeds. Each cell's config is the settings with the
//! cell's method, seed and split inserted, parsed and validated by the core like any config.
//!
//! ```toml
//! [settings]                      # config.toml's keys, minus method, seed and data.split
//! rounds = 20
//! ...
//! [matrix]
//! methods = ["fedavg", "fedcac"]
//! # A split is its spec string (labelled by itself, or by the file stem for `file:`), or a
//! # table naming it: the label heads the tables and names the cell directories.
//! splits = ["pathological:2", { name = "dir0.1", split = "file:bench/split.json" }]
//! # A named split may make some clients hostile (`simulate --attack`): a column per attack.
//! # splits = [{ name = "2 scale×100", split = "file:bench/split.json", attack = "scale:100:0.1" }]
//! seeds = [1]
//! [matrix.seeds_by_method]        # optional: other seeds for some methods
//! fedcac = [1, 2, 3]
//! [matrix.model_by_method]        # optional: another model for some methods
//! fedbn = "cnn-bn"
//! [matrix.splits_by_method]       # optional: only some splits (by label) for some methods
//! fedcac = ["dir0.1"]
//! ```
//!
//! A method may carry options after `+`, each changing its cells' config: `+ccvr` calibrates
//! the classifier after the last round (`calibration.method = "ccvr"`), `+fn` normalizes the
//! features (`model.feature_norm = "sqrt-d"`), `+fn-unit` with s = 1, `+ln` the layer-norm
//! variant; a robust rule (`+median`, `+krum:4`, `+norm-bound:median`, ... as `--defense`
//! writes it) sets `defense.rule`; `+up:X` and `+down:X` compress uploads and downloads
//! (`[compression]`, X as `--compress` writes it: `+up:int8`, `+up:topk:0.1`). `fedavg+fn` is a method of its own in the tables. A label
//! may end in `@TAG`, a name and nothing else, so that one method appears in two rows that
//! differ by what `model_by_method` gives them (`fedavg@torchscript`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_client::attack::AttackSpec;
use strata_core::config::RunConfig;
use strata_core::defense::Defense;
use strata_core::method::Method;
use strata_core::partition_spec::PartitionSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    settings: toml::Table,
    matrix: Matrix,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Matrix {
    methods: Vec<String>,
    splits: Vec<SplitEntry>,
    seeds: Vec<u64>,
    #[serde(default)]
    seeds_by_method: BTreeMap<String, Vec<u64>>,
    #[serde(default)]
    model_by_method: BTreeMap<String, String>,
    #[serde(default)]
    splits_by_method: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SplitEntry {
    Plain(String),
    Named {
        name: String,
        split: String,
        #[serde(default)]
        attack: Option<String>,
    },
}

/// One split of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Shown in tables and plot titles.
    pub label: String,
    /// The label made safe as a file name (`cells/<dir>/`, `accuracy-<dir>.png`).
    pub dir: String,
    pub spec: PartitionSpec,
    /// Hostile clients in this column's runs (`simulate --attack`).
    pub attack: Option<AttackSpec>,
}

/// One run of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub method: String,
    /// Index into [`BenchSpec::splits`].
    pub split: usize,
    pub seed: u64,
}

#[derive(Debug)]
pub struct BenchSpec {
    /// Title of the results (the spec file's stem).
    pub name: String,
    pub methods: Vec<String>,
    pub splits: Vec<Split>,
    /// Seeds of each method, in the matrix's method order.
    pub seeds: BTreeMap<String, Vec<u64>>,
    model_by_method: BTreeMap<String, String>,
    /// Split indices each method runs on (every split when absent).
    splits_by_method: BTreeMap<String, Vec<usize>>,
    settings: toml::Table,
}

/// A method of the matrix: a registered method and the options after its `+`s.
struct Variant<'a> {
    base: Method,
    options: Vec<&'a str>,
}

const OPTIONS: &[&str] = &["ccvr", "fn", "fn-unit", "ln", "secagg"];

impl<'a> Variant<'a> {
    fn parse(label: &'a str) -> anyhow::Result<Self> {
        let untagged = label.split_once('@').map_or(label, |(method, _)| method);
        let mut parts = untagged.split('+');
        let base: Method =
            parts.next().unwrap_or_default().parse().map_err(|e| anyhow::anyhow!("[matrix] methods: {e}"))?;
        let options: Vec<&str> = parts.collect();
        let known = |o: &str| {
            OPTIONS.contains(&o)
                || o.parse::<Defense>().is_ok()
                || privacy_option(o).is_some()
                || compression_option(o).is_some()
        };
        if let Some(o) = options.iter().find(|o| !known(o)) {
            bail!(
                "[matrix] methods: unknown option `+{o}` in `{label}` (known: +{}, a defense rule as --defense \
                 writes it, e.g. +median, or privacy: +dp-eps:E, +dp-z:Z, +dp-clip:C, +dp-quantile:G, +dp-client, \
                 +dp-sgd:Z, +dp-sgd-clip:C, or compression: +up:X, +down:X as --compress writes X)",
                OPTIONS.join(", +")
            );
        }
        Ok(Self { base, options })
    }

    /// Writes the options into a cell's config table.
    fn apply(&self, table: &mut toml::Table) {
        fn section<'t>(table: &'t mut toml::Table, name: &str) -> Option<&'t mut toml::Table> {
            table.entry(name.to_string()).or_insert_with(|| toml::Table::new().into()).as_table_mut()
        }
        fn set(table: &mut toml::Table, name: &str, key: &str, value: toml::Value) {
            if let Some(t) = section(table, name) {
                t.insert(key.into(), value);
            }
        }
        for option in &self.options {
            if let Some((name, key, value)) = privacy_option(option).or_else(|| compression_option(option)) {
                set(table, name, key, value);
                continue;
            }
            match *option {
                "ccvr" => set(table, "calibration", "method", "ccvr".into()),
                "fn" => set(table, "model", "feature_norm", "sqrt-d".into()),
                "fn-unit" => set(table, "model", "feature_norm", "unit".into()),
                "ln" => set(table, "model", "feature_norm", "layer-norm".into()),
                // `[secure_aggregation]` with its defaults (settings may hold its keys).
                "secagg" => {
                    let _ = section(table, "secure_aggregation");
                }
                rule => set(table, "defense", "rule", rule.into()),
            }
        }
    }
}

/// A privacy section, key and value from a method option: `[privacy]` from `dp-eps:E`
/// (target ε), `dp-z:Z`, `dp-clip:C`, `dp-quantile:G` (adaptive clipping) or `dp-client`
/// (clipped on clients); `[dp_sgd]` from `dp-sgd:Z` and `dp-sgd-clip:C`.
fn privacy_option(option: &str) -> Option<(&'static str, &'static str, toml::Value)> {
    if option == "dp-client" {
        return Some(("privacy", "placement", "client".into()));
    }
    let (name, value) = option.split_once(':')?;
    let (section, key) = match name {
        "dp-eps" => ("privacy", "target_epsilon"),
        "dp-z" => ("privacy", "noise_multiplier"),
        "dp-clip" => ("privacy", "clipping_norm"),
        "dp-quantile" => ("privacy", "target_quantile"),
        "dp-sgd" => ("dp_sgd", "noise_multiplier"),
        "dp-sgd-clip" => ("dp_sgd", "clipping_norm"),
        _ => return None,
    };
    let value: f64 = value.parse().ok()?;
    Some((section, key, value.into()))
}

/// `[compression]`'s key and value from a method option: `up:X` or `down:X`, X as
/// `--compress` writes it (`up:int8`, `up:topk:0.1`, `down:fp16`).
fn compression_option(option: &str) -> Option<(&'static str, &'static str, toml::Value)> {
    let (direction, value) = option.split_once(':')?;
    let key = match direction {
        "up" => "up",
        "down" => "down",
        _ => return None,
    };
    value.parse::<strata_core::compression::Compression>().ok()?;
    Some(("compression", key, value.into()))
}

impl BenchSpec {
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Self> {
        let file: SpecFile = toml::from_str(text).context("cannot parse the bench spec")?;
        let m = file.matrix;
        for key in ["method", "seed"] {
            if file.settings.contains_key(key) {
                bail!("[settings] must not set `{key}`: it comes from [matrix]");
            }
        }
        if file.settings.get("data").and_then(|d| d.get("split")).is_some() {
            bail!("[settings.data] must not set `split`: it comes from [matrix] splits");
        }
        if m.methods.is_empty() || m.splits.is_empty() {
            bail!("[matrix] needs at least one method and one split");
        }
        for (i, method) in m.methods.iter().enumerate() {
            Variant::parse(method)?;
            if m.methods[..i].contains(method) {
                bail!("[matrix] methods: `{method}` is listed twice");
            }
        }
        let seed_keys = m.seeds_by_method.keys().map(|k| ("seeds_by_method", k));
        let model_keys = m.model_by_method.keys().map(|k| ("model_by_method", k));
        let split_keys = m.splits_by_method.keys().map(|k| ("splits_by_method", k));
        for (table, key) in seed_keys.chain(model_keys).chain(split_keys) {
            {
                if !m.methods.contains(key) {
                    bail!("[matrix.{table}] names `{key}`, which is not in [matrix] methods");
                }
            }
        }
        let mut seeds = BTreeMap::new();
        for method in &m.methods {
            let list = m.seeds_by_method.get(method).unwrap_or(&m.seeds);
            if list.is_empty() {
                bail!("[matrix] gives method `{method}` no seed");
            }
            seeds.insert(method.clone(), list.clone());
        }
        let mut splits: Vec<Split> = Vec::new();
        for entry in m.splits {
            let (name, text, attack) = match entry {
                SplitEntry::Plain(text) => (None, text, None),
                SplitEntry::Named { name, split, attack } => (Some(name), split, attack),
            };
            let attack = attack
                .map(|a| a.parse::<AttackSpec>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("[matrix] splits: {e}"))?;
            let spec: PartitionSpec =
                text.parse().map_err(|e| anyhow::anyhow!("[matrix] splits: bad split `{text}`: {e}"))?;
            let label = name.unwrap_or_else(|| default_label(&text));
            let dir = file_safe(&label);
            if splits.iter().any(|s| s.dir == dir) {
                bail!("[matrix] splits: two splits are labelled `{label}`; name them apart");
            }
            splits.push(Split { label, dir, spec, attack });
        }
        let mut splits_by_method = BTreeMap::new();
        for (method, labels) in &m.splits_by_method {
            let mut indices = Vec::new();
            for label in labels {
                let i = splits.iter().position(|s| &s.label == label).ok_or_else(|| {
                    anyhow::anyhow!(
                        "[matrix.splits_by_method] `{method}` names split `{label}`, which is not in [matrix] splits"
                    )
                })?;
                indices.push(i);
            }
            splits_by_method.insert(method.clone(), indices);
        }
        let spec = Self {
            name: name.to_string(),
            methods: m.methods,
            splits,
            seeds,
            model_by_method: m.model_by_method,
            splits_by_method,
            settings: file.settings,
        };
        // Every cell's config is checked before anything runs.
        for cell in spec.cells() {
            spec.config(&cell)?;
        }
        Ok(spec)
    }

    /// Every cell, in running order: all cells of the first seed (a whole table early), then
    /// the next seed's, ...; within a seed, split by split, method by method.
    pub fn cells(&self) -> Vec<Cell> {
        let mut order: Vec<u64> = Vec::new();
        for method in &self.methods {
            for &seed in &self.seeds[method] {
                if !order.contains(&seed) {
                    order.push(seed);
                }
            }
        }
        let mut cells = Vec::new();
        for seed in order {
            for split in 0..self.splits.len() {
                for method in &self.methods {
                    if self.seeds[method].contains(&seed) && self.runs_on(method, split) {
                        cells.push(Cell { method: method.clone(), split, seed });
                    }
                }
            }
        }
        cells
    }

    /// Whether the matrix runs `method` on split `split` ([matrix.splits_by_method]).
    pub fn runs_on(&self, method: &str, split: usize) -> bool {
        self.splits_by_method.get(method).is_none_or(|s| s.contains(&split))
    }

    /// The cell's directory under the bench's output directory.
    pub fn cell_dir(&self, out: &Path, cell: &Cell) -> PathBuf {
        let method = cell.method.replace(|c: char| !(c.is_ascii_alphanumeric() || "+.-_".contains(c)), "-");
        out.join("cells").join(&self.splits[cell.split].dir).join(method).join(format!("seed{}", cell.seed))
    }

    /// The cell's run config: the settings with its method, seed, split (and model) inserted.
    pub fn config(&self, cell: &Cell) -> anyhow::Result<RunConfig> {
        let split = &self.splits[cell.split];
        let mut table = self.settings.clone();
        let variant = Variant::parse(&cell.method)?;
        table.insert("method".into(), variant.base.name().into());
        variant.apply(&mut table);
        let seed = i64::try_from(cell.seed).context("seeds must fit in an i64")?;
        table.insert("seed".into(), seed.into());
        let sub = |table: &mut toml::Table, key: &str| -> anyhow::Result<toml::Table> {
            match table.remove(key) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t),
                Some(_) => bail!("[settings] `{key}` must be a table"),
            }
        };
        let mut data = sub(&mut table, "data")?;
        data.insert("split".into(), split.spec.to_string().into());
        table.insert("data".into(), data.into());
        if let Some(model) = self.model_by_method.get(&cell.method) {
            let mut m = sub(&mut table, "model")?;
            m.insert("name".into(), model.clone().into());
            table.insert("model".into(), m.into());
        }
        let text = toml::to_string(&table).context("cannot write the cell's config")?;
        RunConfig::from_toml(&text)
            .with_context(|| format!("[settings] for {} on {}, seed {}", cell.method, split.label, cell.seed))
    }
}

/// A split's label when the spec names none: the file's stem for `file:PATH`, else the spec.
fn default_label(text: &str) -> String {
    match text.strip_prefix("file:") {
        Some(path) => Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(text.into()),
        None => text.to_string(),
    }
}

/// Letters, digits, `.`, `-` and `_` kept; anything else becomes `-`.
fn file_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' }).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use strata_core::compression::Compression;

    pub(crate) const SPEC: &str = r#"
[settings]
rounds = 2
clients = 3
min_clients = 3
fraction = 1.0
round_timeout_secs = 60
[settings.data]
dataset = "synthetic"
[settings.data.synthetic]
samples = 300
[settings.model]
name = "mlp"
[settings.train]
lr = 0.05
batch_size = 10
local_epochs = 1
[matrix]
methods = ["fedavg", "fedbn", "fedcac"]
splits = ["iid", { name = "dir0.5", split = "dirichlet:0.5" }, "file:bench/some-split.json"]
seeds = [1]
[matrix.seeds_by_method]
fedcac = [1, 2]
[matrix.model_by_method]
fedbn = "cnn-bn"
"#;

    /// A tag names a row apart; the cell runs the method before it with the row's model.
    #[test]
    fn a_tagged_method_is_its_own_row_with_its_own_model() {
        let text = SPEC
            .replace(r#"methods = ["fedavg", "fedbn", "fedcac"]"#, r#"methods = ["fedavg", "fedavg@wide"]"#)
            .replace(r#"fedbn = "cnn-bn""#, r#""fedavg@wide" = "mlp-wide""#)
            .replace("fedcac = [1, 2]", "");
        let spec = BenchSpec::parse(&text, "t").unwrap();
        let cells = spec.cells();
        let tagged = cells.iter().find(|c| c.method == "fedavg@wide").unwrap();
        let config = spec.config(tagged).unwrap();
        assert_eq!((config.method, config.model.name.as_str()), (Method::FedAvg, "mlp-wide"));
        let plain = spec.config(cells.iter().find(|c| c.method == "fedavg").unwrap()).unwrap();
        assert_eq!(plain.model.name, "mlp");
        assert!(spec.cell_dir(Path::new("out"), tagged).to_string_lossy().contains("fedavg-wide"));
    }

    #[test]
    fn cells_run_the_first_seed_everywhere_first() {
        let spec = BenchSpec::parse(SPEC, "t").unwrap();
        let labels: Vec<&str> = spec.splits.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["iid", "dir0.5", "some-split"]);
        let cells = spec.cells();
        assert_eq!(cells.len(), 3 * 3 + 3);
        assert!(cells[..9].iter().all(|c| c.seed == 1));
        assert!(cells[9..].iter().all(|c| c.seed == 2 && c.method == "fedcac"));
        let dir = spec.cell_dir(Path::new("out"), &cells[4]);
        assert_eq!(dir, Path::new("out/cells/dir0.5/fedbn/seed1"));
    }

    #[test]
    fn cell_configs_come_from_the_settings_and_the_matrix() {
        let spec = BenchSpec::parse(SPEC, "t").unwrap();
        let cells = spec.cells();
        let c = spec.config(&cells[4]).unwrap();
        assert_eq!((c.method.name(), c.seed, c.model.name.as_str()), ("fedbn", 1, "cnn-bn"));
        assert_eq!(c.data.split, PartitionSpec::Dirichlet { alpha: 0.5 });
        assert_eq!(c.data.synthetic.samples, 300);
        let c = spec.config(&cells[11]).unwrap();
        assert_eq!((c.method.name(), c.seed, c.model.name.as_str()), ("fedcac", 2, "mlp"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = |text: &str| BenchSpec::parse(text, "t").unwrap_err().to_string();
        assert!(err(&SPEC.replace("rounds = 2", "rounds = 2\nseed = 4")).contains("seed"));
        assert!(err(&SPEC.replace("\"fedcac\"]", "\"fedcak\"]")).contains("fedcak"));
        assert!(err(&SPEC.replace("fedcac = [1, 2]", "fedcak = [1, 2]")).contains("fedcak"));
        assert!(err(&SPEC.replace("\"iid\"", "\"dirichlet:-1\"")).contains("dirichlet:-1"));
        assert!(err(&SPEC.replace("{ name = \"dir0.5\", split = \"dirichlet:0.5\" }", "\"iid\"")).contains("iid"));
        // The core's validation, with the cell named.
        let e =
            format!("{:#}", BenchSpec::parse(&SPEC.replace("min_clients = 3", "min_clients = 9"), "t").unwrap_err());
        assert!(e.contains("min_clients") && e.contains("fedavg"), "{e}");
    }

    use strata_core::config::FeatureNorm;

    #[test]
    fn shipped_specs_parse() {
        let spec = BenchSpec::parse(include_str!("../../../../bench/fmnist.toml"), "fmnist").unwrap();
        // 11 methods (two of them on one split) on seeds 1-3.
        assert_eq!(spec.cells().len(), 3 * (2 * 11 - 2));
        let fedbn = spec.cells().into_iter().find(|c| c.method == "fedbn").unwrap();
        assert_eq!(spec.config(&fedbn).unwrap().model.name, "cnn-bn");
        assert_eq!(spec.splits[1].dir, "pathological-2");
        let robust = BenchSpec::parse(include_str!("../../../../bench/fmnist-robust.toml"), "fmnist-robust").unwrap();
        assert_eq!(robust.cells().len(), 12 * 5 * 3);
        assert_eq!(robust.splits.iter().filter(|s| s.attack.is_some()).count(), 4);
        let spec = include_str!("../../../../bench/fmnist-robust-reference.toml");
        let reference = BenchSpec::parse(spec, "fmnist-robust-reference").unwrap();
        assert_eq!(reference.cells().len(), 2 * 3);
        // Its cells are the robust bench's FedAvg cells with free riders in place of attackers.
        for cell in reference.cells() {
            let same = robust.cells().into_iter().find(|c| c.method == cell.method && c.seed == cell.seed).unwrap();
            assert_eq!(reference.config(&cell).unwrap(), robust.config(&same).unwrap());
        }
        let dp = BenchSpec::parse(include_str!("../../../../bench/fmnist-dp.toml"), "fmnist-dp").unwrap();
        assert_eq!(dp.cells().len(), 8 * 3);
        let cell = dp.cells().into_iter().find(|c| c.method == "fedper+dp-clip:0.15+dp-eps:3").unwrap();
        let c = dp.config(&cell).unwrap();
        assert_eq!(
            (c.privacy.target_epsilon, c.privacy.clipping_norm, c.privacy.noise_multiplier),
            (Some(3.0), 0.15, None)
        );
        let ts = BenchSpec::parse(include_str!("../../../../bench/fmnist-torchscript.toml"), "ts").unwrap();
        let cell = ts.cells().into_iter().find(|c| c.method == "fedavg@torchscript").unwrap();
        assert_eq!(
            (ts.cells().len(), ts.config(&cell).unwrap().model.torchscript_path()),
            (6, Some("bench/models/fedavg-cnn-seed1.pt"))
        );
        let dp = BenchSpec::parse(include_str!("../../../../bench/fmnist-dp-1000.toml"), "fmnist-dp-1000").unwrap();
        assert_eq!(dp.cells().len(), 4 * 3);
        let secagg = BenchSpec::parse(include_str!("../../../../bench/fmnist-secagg.toml"), "fmnist-secagg").unwrap();
        assert_eq!(secagg.cells().len(), 6 * 3);
        let cell = secagg.cells().into_iter().find(|c| c.method == "fedper+secagg").unwrap();
        let c = secagg.config(&cell).unwrap();
        assert_eq!((c.method, c.secure_aggregation), (Method::FedPer, Some(Default::default())));
        let cell = secagg.cells().into_iter().find(|c| c.method == "fedavg+ccvr+secagg").unwrap();
        let c = secagg.config(&cell).unwrap();
        assert!(c.secure_aggregation.is_some() && !c.calibration.is_off());
        let spec = include_str!("../../../../bench/fmnist-dp-secagg.toml");
        let dp_secagg = BenchSpec::parse(spec, "fmnist-dp-secagg").unwrap();
        assert_eq!(dp_secagg.cells().len(), 2 * 3);
        let cell = dp_secagg.cells().into_iter().find(|c| c.method.ends_with("+secagg")).unwrap();
        let c = dp_secagg.config(&cell).unwrap();
        assert!(c.secure_aggregation.is_some() && c.privacy.is_on(), "a valid private secure config");
        let dp = BenchSpec::parse(include_str!("../../../../bench/fmnist-dp-sgd.toml"), "fmnist-dp-sgd").unwrap();
        let c = dp.config(&dp.cells()[0]).unwrap();
        assert_eq!((c.dp_sgd.noise_multiplier, c.method), (Some(1.0), strata_core::method::Method::FedPer));
        let spec = include_str!("../../../../bench/fmnist-compress.toml");
        let compress = BenchSpec::parse(spec, "fmnist-compress").unwrap();
        assert_eq!(compress.cells().len(), 12 * 3);
        let cell = compress.cells().into_iter().find(|c| c.method == "fedper+up:topk:0.1").unwrap();
        let c = compress.config(&cell).unwrap().compression;
        assert_eq!((c.up, c.down), (Compression::TopK { ratio: 0.1 }, Compression::None));
        let cell = compress.cells().into_iter().find(|c| c.method == "fedavg+up:int8+down:int8").unwrap();
        let c = compress.config(&cell).unwrap().compression;
        assert_eq!((c.up, c.down), (Compression::Int8, Compression::Int8));
        let smoke = BenchSpec::parse(include_str!("../../../../bench/smoke.toml"), "smoke").unwrap();
        assert_eq!(smoke.cells().len(), 12);
        let fn_spec = BenchSpec::parse(include_str!("../../../../bench/fmnist-fn.toml"), "fmnist-fn").unwrap();
        let cells = fn_spec.cells();
        assert_eq!(cells.len(), 2 * 3);
        let c = fn_spec.config(&cells[1]).unwrap();
        assert_eq!((c.clients, c.train.local_steps, c.model.feature_norm), (10, Some(10), FeatureNorm::SqrtD));
    }

    #[test]
    fn method_options_and_split_restrictions_shape_the_cells() {
        let text = SPEC
            .replace(
                r#"methods = ["fedavg", "fedbn", "fedcac"]"#,
                r#"methods = ["fedavg", "fedavg+ccvr+fn", "fedcac+ln"]"#,
            )
            .replace("fedcac = [1, 2]", "\"fedcac+ln\" = [1, 2]")
            .replace("fedbn = \"cnn-bn\"", "[matrix.splits_by_method]\n\"fedavg+ccvr+fn\" = [\"dir0.5\"]");
        let spec = BenchSpec::parse(&text, "t").unwrap();
        let cells = spec.cells();
        let variant: Vec<&Cell> = cells.iter().filter(|c| c.method == "fedavg+ccvr+fn").collect();
        assert_eq!(variant.len(), 1);
        assert_eq!(spec.splits[variant[0].split].label, "dir0.5");
        let c = spec.config(variant[0]).unwrap();
        assert_eq!(c.method, Method::FedAvg);
        assert_eq!(c.calibration.method, strata_core::calibration::CalibrationMethod::Ccvr);
        assert_eq!(c.model.feature_norm, strata_core::config::FeatureNorm::SqrtD);
        let ln = cells.iter().find(|c| c.method == "fedcac+ln").unwrap();
        let robust = SPEC
            .replace(r#""fedbn", "fedcac"]"#, r#""fedavg+norm-bound:median*2", "fedcac"]"#)
            .replace("fedbn = \"cnn-bn\"", "");
        let spec = BenchSpec::parse(&robust, "t").unwrap();
        let bounded = spec.cells().into_iter().find(|c| c.method == "fedavg+norm-bound:median*2").unwrap();
        let rule = spec.config(&bounded).unwrap().defense.rule;
        assert_eq!(rule, Defense::NormBound(strata_core::defense::NormBound::Median(2.0)));
        assert!(spec.cell_dir(Path::new("o"), &bounded).ends_with("fedavg+norm-bound-median-2/seed1"));
        let refused =
            format!("{:#}", BenchSpec::parse(&robust.replace("norm-bound:median*2", "krum:1"), "t").unwrap_err());
        assert!(refused.contains("at least 5 updates"), "3 clients are too few for krum:1: {refused}");
        assert_eq!(spec.config(ln).unwrap().model.feature_norm, strata_core::config::FeatureNorm::LayerNorm);
        let err = |t: &str| format!("{:#}", BenchSpec::parse(t, "t").unwrap_err());
        assert!(err(&text.replace("fedcac+ln\"]", "fedcac+bn\"]")).contains("+bn"));
        assert!(err(&text.replace("fedcac+ln\"]", "fedcac+up:int4\"]")).contains("+up:int4"));
        let refused = err(&text.replace("fedcac+ln", "fedavg+down:topk:0.1"));
        assert!(refused.contains("whole model"), "{refused}");
        assert!(err(&text.replace("[\"dir0.5\"]", "[\"dir9\"]")).contains("dir9"));
    }

    #[test]
    fn a_named_split_can_carry_an_attack() {
        let text = SPEC.replace(
            r#"{ name = "dir0.5", split = "dirichlet:0.5" }"#,
            r#"{ name = "dir0.5 2 flip", split = "dirichlet:0.5", attack = "sign-flip:0.1" }"#,
        );
        let spec = BenchSpec::parse(&text, "t").unwrap();
        assert_eq!(spec.splits[0].attack, None);
        let attack = spec.splits[1].attack.unwrap();
        assert_eq!((attack.to_string().as_str(), spec.splits[1].dir.as_str()), ("sign-flip:0.1", "dir0.5-2-flip"));
        let err = format!("{:#}", BenchSpec::parse(&text.replace("sign-flip:0.1", "sign-flop:0.1"), "t").unwrap_err());
        assert!(err.contains("sign-flop") && err.contains("[matrix] splits"), "{err}");
    }

    #[test]
    fn labels_are_made_file_safe() {
        assert_eq!(file_safe("pathological:2"), "pathological-2");
        assert_eq!(default_label("file:bench/fmnist-dir0.1.json"), "fmnist-dir0.1");
    }
}
