//! How a dataset's samples are split over clients, computed by every client from the seed.
//!
//! Every spec works on the merged index space: the official train set first, then the
//! official test set (PFLlib's convention), so `file:` splits from other frameworks load as-is.
//!
//! [`partition`] is a pure function of (labels, spec, client count, train fraction, seed), so
//! every client computes the same split on its own and only the seed travels. The inner
//! modules keep one rule each: `rng` (the seeded streams), `dirichlet`, `pathological`,
//! `split_file` (JSON load/save/validation) and `train_test` (each client's own split).

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_core::partition_spec::PartitionSpec;

/// One client's samples, as indices into the merged index space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientShare {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Every client's share; client `i` is `clients[i]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub clients: Vec<ClientShare>,
}

impl Partition {
    /// Each client's training samples, by index: its weight in an average.
    pub fn train_sizes(&self) -> Vec<u64> {
        self.clients.iter().map(|c| c.train.len() as u64).collect()
    }

    /// Each client's test samples, by index: its accuracy's weight in a round's.
    pub fn test_sizes(&self) -> Vec<u64> {
        self.clients.iter().map(|c| c.test.len() as u64).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot split: {0}")]
    Impossible(String),
    #[error("split file {path}: {reason}")]
    BadFile { path: std::path::PathBuf, reason: String },
    /// Settings or a partition that contradict the dataset (bad label, overlapping shares, ...).
    #[error("invalid split: {0}")]
    Invalid(String),
}

/// PFLlib's floor for `dirichlet`: the rule is redrawn until every client holds this many
/// samples. PFLlib derived it as `batch_size / (1 - train_size)` = 10 / 0.25, so that every
/// client has at least one full test batch in its reference setup.
pub const LEAST_SAMPLES: usize = 40;

/// Draws of the Dirichlet rule before concluding that the floor cannot be met.
const MAX_ATTEMPTS: usize = 10_000;

/// The run's split of `dataset` over `clients` clients: what every client of the run computes
/// on its own from the data settings and the run's seed.
pub fn for_run(
    data: &strata_core::config::DataConfig,
    clients: usize,
    seed: u64,
    dataset: &crate::Dataset,
) -> Result<Partition, PartitionError> {
    if data.split == PartitionSpec::Natural {
        let owners = dataset.owners.as_deref().ok_or_else(|| {
            PartitionError::Invalid(format!(
                "split `natural` follows the data's owners, and dataset `{}` names none (a csv table names them \
                 with data.group_column; LEAF's users are theirs)",
                dataset.name
            ))
        })?;
        return natural(owners, clients, data.train_fraction, seed);
    }
    partition(&dataset.labels, dataset.shape.num_classes, clients, &data.split, data.train_fraction, seed)
}

/// Splits the samples (by their labels, in the merged index space) over `num_clients` clients.
///
/// A pure function of its arguments: every client computes the same partition independently.
/// For `iid`, `dirichlet` and `pathological` each client's share is then shuffled and cut into
/// train and test as sklearn's `train_test_split(train_size=train_fraction)` does (PFLlib's call):
/// `floor(train_fraction * n)` train samples, the rest test. `file:` splits are taken as-is.
pub fn partition(
    labels: &[u32],
    num_classes: usize,
    num_clients: usize,
    spec: &PartitionSpec,
    train_fraction: f64,
    seed: u64,
) -> Result<Partition, PartitionError> {
    if num_clients == 0 {
        return Err(PartitionError::Invalid("the number of clients must be at least 1".into()));
    }
    if let PartitionSpec::File { path } = spec {
        return from_file(path, labels.len(), num_clients);
    }
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(PartitionError::Invalid(format!("train_fraction must be in (0, 1), got {train_fraction}")));
    }
    if let Some((i, label)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= num_classes) {
        return Err(PartitionError::Invalid(format!(
            "sample {i} has label {label}, but the dataset has {num_classes} classes"
        )));
    }
    let mut assign = rng::stream(seed, rng::ASSIGN_STREAM);
    let shares = match spec {
        PartitionSpec::Iid => iid(labels.len(), num_clients, &mut assign),
        PartitionSpec::Dirichlet { alpha } => {
            dirichlet::split(&by_class(labels, num_classes), num_clients, *alpha, &mut assign)?
        }
        PartitionSpec::Pathological { classes_per_client } => {
            pathological::split(&by_class(labels, num_classes), num_clients, *classes_per_client, &mut assign)?
        }
        PartitionSpec::File { path } => return from_file(path, labels.len(), num_clients),
        PartitionSpec::Natural => {
            return Err(PartitionError::Invalid(
                "split `natural` needs the samples' owners: it is computed from the dataset (for_run)".into(),
            ));
        }
    };
    train_test::split(shares, train_fraction, seed)
}

/// Owners dealt to clients in order (owner k to client k mod n, so an owner's samples never
/// straddle two clients), then each client's samples cut into train and test as for the
/// other rules. There must be at least as many owners as clients.
pub fn natural(
    owners: &[u32],
    num_clients: usize,
    train_fraction: f64,
    seed: u64,
) -> Result<Partition, PartitionError> {
    if num_clients == 0 {
        return Err(PartitionError::Invalid("the number of clients must be at least 1".into()));
    }
    let distinct = owners.iter().copied().collect::<std::collections::BTreeSet<u32>>();
    if distinct.len() < num_clients {
        return Err(PartitionError::Impossible(format!(
            "the data has {} owners for {num_clients} clients: a client needs an owner of its own; use at most {} \
             clients",
            distinct.len(),
            distinct.len()
        )));
    }
    let client_of: std::collections::HashMap<u32, usize> =
        distinct.into_iter().enumerate().map(|(k, owner)| (owner, k % num_clients)).collect();
    let mut shares = vec![Vec::new(); num_clients];
    for (i, owner) in owners.iter().enumerate() {
        shares[client_of[owner]].push(i);
    }
    train_test::split(shares, train_fraction, seed)
}

/// Sample indices per class, each in index order.
fn by_class(labels: &[u32], num_classes: usize) -> Vec<Vec<usize>> {
    let mut classes = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        classes[label as usize].push(i);
    }
    classes
}

/// Shuffles all indices and deals them out in near-equal runs (the first `n mod clients`
/// clients get one more).
fn iid(len: usize, clients: usize, rng: &mut rng::Stream) -> Vec<Vec<usize>> {
    let mut all: Vec<usize> = (0..len).collect();
    rng::shuffle(rng, &mut all);
    let (base, extra) = (len / clients, len % clients);
    let mut rest = all.as_slice();
    (0..clients)
        .map(|i| {
            let (share, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            share.to_vec()
        })
        .collect()
}

fn from_file(path: &Path, dataset_len: usize, num_clients: usize) -> Result<Partition, PartitionError> {
    let partition = Partition::load_json(path)?;
    let bad = |reason: String| PartitionError::BadFile { path: path.to_path_buf(), reason };
    if partition.clients.len() != num_clients {
        return Err(bad(format!("lists {} clients, but the run has {num_clients}", partition.clients.len())));
    }
    partition.check(dataset_len).map_err(bad)?;
    Ok(partition)
}

impl Partition {
    /// Reads `{"clients": [{"train": [...], "test": [...]}, ...]}`; other top-level keys
    /// (`description`, ...) are ignored. Indices are not checked here: see [`Partition::validate`].
    pub fn load_json(path: &Path) -> Result<Self, PartitionError> {
        let bad = |reason: String| PartitionError::BadFile { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a split file ({e}); expected {{\"clients\": [{{\"train\": [...], \"test\": [...]}}, ...]}}"
            ))
        })
    }

    /// Writes the partition in the format [`Partition::load_json`] reads.
    pub fn save_json(&self, path: &Path) -> Result<(), PartitionError> {
        let bad = |reason: String| PartitionError::BadFile { path: path.to_path_buf(), reason };
        let text = serde_json::to_string(self).map_err(|e| bad(format!("cannot encode it: {e}")))?;
        std::fs::write(path, text).map_err(|e| bad(format!("cannot write it: {e}")))
    }

    /// Checks that every index is below `dataset_len`, that no index appears twice (within
    /// or across clients), and that every client has train samples.
    pub fn validate(&self, dataset_len: usize) -> Result<(), PartitionError> {
        self.check(dataset_len).map_err(PartitionError::Invalid)
    }

    /// Samples per client and class, train and test together. Indices or labels out of range
    /// are skipped; [`Partition::validate`] reports them.
    pub fn label_counts(&self, labels: &[u32], num_classes: usize) -> Vec<Vec<usize>> {
        self.clients
            .iter()
            .map(|share| {
                let mut counts = vec![0; num_classes];
                for &i in share.train.iter().chain(&share.test) {
                    if let Some(slot) = labels.get(i).and_then(|&l| counts.get_mut(l as usize)) {
                        *slot += 1;
                    }
                }
                counts
            })
            .collect()
    }

    /// [`Partition::validate`] with a bare message, for callers that add their own context.
    fn check(&self, dataset_len: usize) -> Result<(), String> {
        // Who first listed each index: 0 for nobody, else 1 + 2 * client + (0 train, 1 test).
        let mut owner = vec![0usize; dataset_len];
        let describe = |code: usize| {
            let part = match (code - 1) % 2 {
                0 => "train",
                _ => "test",
            };
            format!("client {}'s {part}", (code - 1) / 2)
        };
        for (client, share) in self.clients.iter().enumerate() {
            if share.train.is_empty() {
                return Err(format!("client {client} has no train samples"));
            }
            for (part, indices) in [&share.train, &share.test].into_iter().enumerate() {
                let code = 1 + 2 * client + part;
                for &i in indices {
                    let Some(slot) = owner.get_mut(i) else {
                        return Err(format!(
                            "client {client} lists index {i}, but the dataset has {dataset_len} samples"
                        ));
                    };
                    if *slot != 0 {
                        return Err(format!(
                            "index {i} appears twice: in {} and in {}",
                            describe(*slot),
                            describe(code)
                        ));
                    }
                    *slot = code;
                }
            }
        }
        Ok(())
    }
}

/// Seeded random streams, and the few draws the rules need, written out here rather than taken
/// from `rand`: `rand` does not promise that `shuffle` or its distributions give the same values
/// across releases, and a client built against another release would compute another split.
/// ChaCha12's output is fixed by the cipher, so everything below is too.
mod rng {
    use rand::{RngCore, SeedableRng};

    pub type Stream = rand_chacha::ChaCha12Rng;

    /// Stream of the assignment of samples to clients ("PART" in ASCII); client i shuffles its
    /// train/test split on stream `ASSIGN_STREAM + 1 + i`. Distinct from other users of the seed.
    pub const ASSIGN_STREAM: u64 = 0x5041_5254_0000_0000;

    pub fn stream(seed: u64, stream: u64) -> Stream {
        let mut rng = Stream::seed_from_u64(seed);
        rng.set_stream(stream);
        rng
    }

    /// Uniform in `0..n` (n >= 1), without modulo bias (Lemire's multiply-and-reject).
    pub fn below(rng: &mut Stream, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(rng.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(rng: &mut Stream, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, below(rng, i + 1));
        }
    }

    /// Uniform in the open interval (0, 1), so that its logarithm is finite.
    pub fn open01(rng: &mut Stream) -> f64 {
        ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller, one of the pair).
    fn normal(rng: &mut Stream) -> f64 {
        let (u, v) = (open01(rng), open01(rng));
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// ln of a Gamma(shape, 1) draw. For shape < 1 it uses Gamma(shape) = Gamma(shape + 1) *
    /// U^(1/shape) in log space: the product itself underflows to 0 for small shapes (alpha =
    /// 0.01 and below), which would leave a Dirichlet draw of all zeros.
    pub fn ln_gamma_draw(rng: &mut Stream, shape: f64) -> f64 {
        if shape < 1.0 {
            return ln_gamma_draw(rng, shape + 1.0) + open01(rng).ln() / shape;
        }
        // Marsaglia and Tsang (2000).
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = normal(rng);
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && open01(rng).ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return (d * v).ln();
            }
        }
    }
}

/// PFLlib's `dir` rule (`dataset_utils.separate_data`): per class, proportions ~ Dir(α) over
/// clients, zeroed for clients already holding their average share, normalized, and the class
/// cut at their cumulative sums; redrawn until every client holds [`LEAST_SAMPLES`].
mod dirichlet {
    use super::{LEAST_SAMPLES, MAX_ATTEMPTS, PartitionError, rng};

    pub fn split(
        classes: &[Vec<usize>],
        clients: usize,
        alpha: f64,
        rng: &mut rng::Stream,
    ) -> Result<Vec<Vec<usize>>, PartitionError> {
        let total: usize = classes.iter().map(Vec::len).sum();
        if total < clients * LEAST_SAMPLES {
            return Err(PartitionError::Impossible(format!(
                "dirichlet gives every client at least {LEAST_SAMPLES} samples: {clients} clients need {}, \
                 but the dataset has {total}; use fewer clients",
                clients * LEAST_SAMPLES
            )));
        }
        let average = total as f64 / clients as f64;
        let mut weights = vec![0.0; clients];
        // Only the counts decide whether an attempt meets the floor, so attempts draw counts
        // alone and the samples are shuffled and dealt once, for the attempt that is kept.
        for _ in 0..MAX_ATTEMPTS {
            let mut sizes = vec![0usize; clients];
            let mut counts = Vec::with_capacity(classes.len());
            for class in classes {
                masked_proportions(rng, alpha, &sizes, average, &mut weights);
                let class_counts = cut(&weights, class.len());
                for (size, n) in sizes.iter_mut().zip(&class_counts) {
                    *size += n;
                }
                counts.push(class_counts);
            }
            if sizes.iter().all(|&s| s >= LEAST_SAMPLES) {
                return Ok(deal(classes, &counts, clients, rng));
            }
        }
        Err(PartitionError::Impossible(format!(
            "dirichlet:{alpha} left some client with fewer than {LEAST_SAMPLES} samples in each of \
             {MAX_ATTEMPTS} draws; use fewer clients or a larger alpha"
        )))
    }

    /// Dir(α) weights (unnormalized) with clients at or above the average share zeroed, as
    /// PFLlib's `p * (len(idx_j) < N / num_clients)`. Computed in log space and scaled by the
    /// largest open client's weight, so the open clients' weights cannot all underflow to 0 (in
    /// numpy they can, and the division by zero makes that class's cut garbage).
    fn masked_proportions(rng: &mut rng::Stream, alpha: f64, sizes: &[usize], average: f64, weights: &mut [f64]) {
        for w in weights.iter_mut() {
            *w = rng::ln_gamma_draw(rng, alpha);
        }
        let open = |j: usize| (sizes[j] as f64) < average;
        // With every client full, all samples are dealt and the remaining classes are empty:
        // any weights do.
        let any_open = (0..sizes.len()).any(open);
        let top =
            (0..sizes.len()).filter(|&j| !any_open || open(j)).map(|j| weights[j]).fold(f64::NEG_INFINITY, f64::max);
        for (j, w) in weights.iter_mut().enumerate() {
            *w = if !any_open || open(j) { (*w - top).exp() } else { 0.0 };
        }
    }

    /// Counts per client from cutting `n` samples at the cumulative proportions, truncated to
    /// integers as numpy's `astype(int)`; the last client takes the rest.
    fn cut(weights: &[f64], n: usize) -> Vec<usize> {
        let sum: f64 = weights.iter().sum();
        let mut counts = Vec::with_capacity(weights.len());
        let (mut cumulative, mut previous) = (0.0, 0);
        for w in &weights[..weights.len() - 1] {
            cumulative += w;
            let at = ((cumulative / sum * n as f64) as usize).clamp(previous, n);
            counts.push(at - previous);
            previous = at;
        }
        counts.push(n - previous);
        counts
    }

    /// Shuffles each class and hands out consecutive runs of the drawn sizes.
    fn deal(classes: &[Vec<usize>], counts: &[Vec<usize>], clients: usize, rng: &mut rng::Stream) -> Vec<Vec<usize>> {
        let mut shares = vec![Vec::new(); clients];
        for (class, class_counts) in classes.iter().zip(counts) {
            let mut indices = class.clone();
            rng::shuffle(rng, &mut indices);
            let mut rest = indices.as_slice();
            for (share, &n) in shares.iter_mut().zip(class_counts) {
                let (run, tail) = rest.split_at(n);
                share.extend_from_slice(run);
                rest = tail;
            }
        }
        shares
    }
}

/// PFLlib's `pat` rule (`dataset_utils.separate_data`), with the class assignment made exact:
/// client i holds classes (i*k + j) mod C for j < k, so every client has exactly k distinct
/// classes and every class has a holder. (PFLlib hands classes to the first clients with
/// quota left, which can leave late clients short of k classes.) Each class is then cut among
/// its holders as PFLlib's unbalanced branch does: every holder but the last gets a uniform
/// size in [max(m/10, LEAST_SAMPLES/C), m) with m = class size / holders, the last the rest.
/// Unlike PFLlib, a class is shuffled before it is cut, so that no holder gets only official
/// train or only official test samples.
mod pathological {
    use super::{LEAST_SAMPLES, PartitionError, rng};

    pub fn split(
        classes: &[Vec<usize>],
        clients: usize,
        per_client: usize,
        rng: &mut rng::Stream,
    ) -> Result<Vec<Vec<usize>>, PartitionError> {
        let num_classes = classes.len();
        if per_client > num_classes {
            return Err(PartitionError::Impossible(format!(
                "pathological:{per_client} asks for more classes per client than the dataset's {num_classes}"
            )));
        }
        if clients * per_client < num_classes {
            return Err(PartitionError::Impossible(format!(
                "pathological:{per_client} with {clients} clients covers only {} of {num_classes} classes; \
                 use at least {} clients",
                clients * per_client,
                num_classes.div_ceil(per_client)
            )));
        }
        let mut holders = vec![Vec::new(); num_classes];
        for client in 0..clients {
            for j in 0..per_client {
                holders[(client * per_client + j) % num_classes].push(client);
            }
        }
        let least = LEAST_SAMPLES as f64 / num_classes as f64;
        let mut shares = vec![Vec::new(); clients];
        for (class, holders) in classes.iter().zip(&holders) {
            let mut indices = class.clone();
            rng::shuffle(rng, &mut indices);
            let mean = indices.len() as f64 / holders.len() as f64;
            // numpy's randint truncates float bounds the same way.
            let (low, high) = ((mean / 10.0).max(least) as usize, mean as usize);
            let mut rest = indices.as_slice();
            for (h, &client) in holders.iter().enumerate() {
                let n = if h + 1 == holders.len() {
                    rest.len()
                } else if low < high {
                    low + rng::below(rng, high - low)
                } else {
                    // Too few samples for PFLlib's range (numpy would raise): an equal share.
                    high
                };
                let (run, tail) = rest.split_at(n);
                shares[client].extend_from_slice(run);
                rest = tail;
            }
        }
        Ok(shares)
    }
}

/// Each client's own train/test split, on its own stream so that it depends on nothing but
/// the seed, the client's index and its share.
mod train_test {
    use super::{ClientShare, Partition, PartitionError, rng};

    pub fn split(shares: Vec<Vec<usize>>, train_fraction: f64, seed: u64) -> Result<Partition, PartitionError> {
        let clients = shares
            .into_iter()
            .enumerate()
            .map(|(i, mut share)| {
                let n = share.len();
                // sklearn: n_train = floor(train_size * n), the rest is test.
                let n_train = (train_fraction * n as f64).floor() as usize;
                if n_train == 0 || n_train == n {
                    return Err(PartitionError::Impossible(format!(
                        "client {i} gets {n} samples, too few to split into train and test at \
                         train_fraction {train_fraction}; use fewer clients"
                    )));
                }
                rng::shuffle(&mut rng::stream(seed, rng::ASSIGN_STREAM + 1 + i as u64), &mut share);
                let test = share.split_off(n_train);
                Ok(ClientShare { train: share, test })
            })
            .collect::<Result<_, _>>()?;
        Ok(Partition { clients })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// `classes` balanced classes of `per_class` samples each, interleaved: label i mod classes.
    fn labels(classes: usize, per_class: usize) -> Vec<u32> {
        (0..classes * per_class).map(|i| (i % classes) as u32).collect()
    }

    fn spec(text: &str) -> PartitionSpec {
        text.parse().expect("valid spec")
    }

    fn split(labels: &[u32], clients: usize, text: &str, seed: u64) -> Partition {
        partition(labels, 10, clients, &spec(text), 0.75, seed).expect("partition")
    }

    /// Asserts that the shares are disjoint and together cover 0..len.
    fn assert_disjoint_cover(p: &Partition, len: usize) {
        let mut all: Vec<usize> = p.clients.iter().flat_map(|c| c.train.iter().chain(&c.test).copied()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..len).collect::<Vec<_>>());
        p.validate(len).expect("valid");
    }

    fn classes_held(p: &Partition, labels: &[u32]) -> Vec<usize> {
        p.label_counts(labels, 10).iter().map(|c| c.iter().filter(|&&n| n > 0).count()).collect()
    }

    /// Owners are dealt whole: no owner's samples straddle two clients, every sample is placed
    /// once, and a client needs an owner of its own.
    #[test]
    fn the_natural_split_keeps_each_owners_samples_together() {
        let owners: Vec<u32> = (0..200u32).map(|i| (i * 7) % 5).collect();
        let p = natural(&owners, 3, 0.75, 9).expect("five owners for three clients");
        p.validate(owners.len()).expect("every sample once");
        for owner in 0..5 {
            let holders: Vec<usize> = (0..3)
                .filter(|&c| p.clients[c].train.iter().chain(&p.clients[c].test).any(|&i| owners[i] == owner))
                .collect();
            assert_eq!(holders.len(), 1, "owner {owner} is on clients {holders:?}");
        }
        assert_eq!(p, natural(&owners, 3, 0.75, 9).unwrap(), "a pure function of its arguments");
        let err = natural(&owners, 6, 0.75, 9).unwrap_err().to_string();
        assert!(err.contains("5 owners for 6 clients"), "{err}");
        let err = partition(&[0, 1], 2, 1, &PartitionSpec::Natural, 0.75, 0).unwrap_err().to_string();
        assert!(err.contains("owners"), "{err}");
    }

    #[test]
    fn every_rule_covers_all_samples_once() {
        let labels = labels(10, 500);
        for text in ["iid", "dirichlet:0.5", "dirichlet:0.1", "pathological:2", "pathological:3"] {
            let p = split(&labels, 20, text, 1);
            assert_eq!(p.clients.len(), 20, "{text}");
            assert_disjoint_cover(&p, labels.len());
        }
    }

    #[test]
    fn the_seed_decides_the_split() {
        let labels = labels(10, 500);
        for text in ["iid", "dirichlet:0.3", "pathological:2"] {
            assert_eq!(split(&labels, 10, text, 4), split(&labels, 10, text, 4), "{text}");
            assert_ne!(split(&labels, 10, text, 4), split(&labels, 10, text, 5), "{text}");
        }
    }

    #[test]
    fn iid_shares_are_even_and_cut_like_sklearn() {
        let labels = labels(10, 101);
        let p = split(&labels, 4, "iid", 2);
        let sizes: Vec<(usize, usize)> = p.clients.iter().map(|c| (c.train.len(), c.test.len())).collect();
        // 1010 samples: 253, 253, 252, 252; train = floor(0.75 n).
        assert_eq!(sizes, vec![(189, 64), (189, 64), (189, 63), (189, 63)]);
    }

    #[test]
    fn dirichlet_keeps_pfllibs_floor_at_fmnist_scale() {
        let labels = labels(10, 7000);
        let p = split(&labels, 20, "dirichlet:0.1", 1);
        assert_disjoint_cover(&p, labels.len());
        for (i, c) in p.clients.iter().enumerate() {
            assert!(c.train.len() + c.test.len() >= LEAST_SAMPLES, "client {i}");
        }
        // Non-IID for real: most clients miss some classes.
        let held = classes_held(&p, &labels);
        assert!(held.iter().filter(|&&k| k < 10).count() >= 10, "{held:?}");
    }

    #[test]
    fn dirichlet_survives_tiny_alpha() {
        let labels = labels(10, 500);
        let p = split(&labels, 5, "dirichlet:0.001", 3);
        assert_disjoint_cover(&p, labels.len());
    }

    #[test]
    fn dirichlet_refuses_too_many_clients() {
        let labels = labels(10, 50);
        let err = partition(&labels, 10, 20, &spec("dirichlet:0.1"), 0.75, 1).expect_err("500 < 20 * 40");
        assert!(err.to_string().contains("20 clients need 800"), "{err}");
    }

    #[test]
    fn pathological_gives_exactly_k_classes() {
        let labels = labels(10, 500);
        let p = split(&labels, 20, "pathological:2", 7);
        assert_eq!(classes_held(&p, &labels), vec![2; 20]);
        let p = split(&labels, 10, "pathological:1", 7);
        assert_eq!(classes_held(&p, &labels), vec![1; 10]);
        let counts = p.label_counts(&labels, 10);
        let mut own: Vec<usize> = counts.iter().map(|c| c.iter().position(|&n| n > 0).unwrap_or(99)).collect();
        own.sort_unstable();
        assert_eq!(own, (0..10).collect::<Vec<_>>());
        assert!(counts.iter().all(|c| c.iter().sum::<usize>() == 500));
    }

    #[test]
    fn pathological_refuses_impossible_settings() {
        let labels = labels(10, 50);
        let err = partition(&labels, 10, 3, &spec("pathological:2"), 0.75, 1).expect_err("3 * 2 < 10");
        assert!(err.to_string().contains("covers only 6 of 10 classes"), "{err}");
        let err = partition(&labels, 10, 3, &spec("pathological:11"), 0.75, 1).expect_err("11 > 10");
        assert!(err.to_string().contains("more classes per client"), "{err}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let labels = labels(10, 50);
        let err = partition(&labels, 5, 3, &spec("iid"), 0.75, 1).expect_err("labels >= 5");
        assert!(err.to_string().contains("label 5"), "{err}");
        assert!(partition(&labels, 10, 3, &spec("iid"), 1.0, 1).is_err());
        assert!(partition(&labels, 10, 0, &spec("iid"), 0.75, 1).is_err());
        let err = partition(&labels[..10], 10, 10, &spec("iid"), 0.75, 1).expect_err("1 sample each");
        assert!(err.to_string().contains("client 0 gets 1 samples"), "{err}");
    }

    #[test]
    fn files_round_trip_and_load_as_is() {
        let labels = labels(10, 100);
        let p = split(&labels, 6, "dirichlet:0.5", 9);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("split.json");
        p.save_json(&path).expect("save");
        assert_eq!(Partition::load_json(&path).expect("load"), p);
        let file_spec = PartitionSpec::File { path: path.clone() };
        // The seed and train fraction do not matter to a file split.
        assert_eq!(partition(&labels, 10, 6, &file_spec, 0.5, 123).expect("file split"), p);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        let try_file = |text: &str, clients: usize| {
            std::fs::write(&path, text).expect("write");
            let spec = PartitionSpec::File { path: path.clone() };
            let err = partition(&labels(10, 10), 10, clients, &spec, 0.75, 1).expect_err(text);
            assert!(matches!(err, PartitionError::BadFile { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("bad.json"), "{message}");
            message
        };
        let two = r#"{"description": "x", "clients": [{"train": [0, 1], "test": [2]}, {"train": [3], "test": []}]}"#;
        let out_of_range = r#"{"clients": [{"train": [0, 1], "test": [2]}, {"train": [3, 100], "test": []}]}"#;
        let duplicate = r#"{"clients": [{"train": [0, 1], "test": [2]}, {"train": [3], "test": [1]}]}"#;
        assert!(try_file(two, 3).contains("lists 2 clients, but the run has 3"));
        assert!(try_file(out_of_range, 2).contains("client 1 lists index 100, but the dataset has 100 samples"));
        assert!(try_file(duplicate, 2).contains("index 1 appears twice: in client 0's train and in client 1's test"));
        assert!(try_file("not json", 2).contains("not a split file"));
        assert!(try_file(r#"{"clients": [{"train": []}]}"#, 1).contains("not a split file"));
        let missing = PartitionSpec::File { path: dir.path().join("nope.json") };
        let err = partition(&labels(10, 10), 10, 1, &missing, 0.75, 1).expect_err("missing file").to_string();
        assert!(err.contains("nope.json: cannot read it"), "{err}");
    }

    #[test]
    fn the_pfllib_reference_split_loads() {
        // At run time, not env!(): a test binary reused from another checkout must read this one.
        let path = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../../bench/fmnist-dir0.1-20clients-pfllib.json");
        let labels = vec![0u32; 70_000];
        let spec = PartitionSpec::File { path };
        let p = partition(&labels, 10, 20, &spec, 0.75, 1).expect("reference split");
        assert_eq!(p.clients.len(), 20);
        let seen: HashSet<usize> = p.clients.iter().flat_map(|c| c.train.iter().chain(&c.test).copied()).collect();
        assert_eq!(seen.len(), 70_000);
        assert!(p.clients.iter().all(|c| c.train.len() + c.test.len() >= LEAST_SAMPLES));
    }

    #[test]
    fn specs_round_trip_and_bad_ones_explain() {
        for text in ["iid", "dirichlet:0.1", "dirichlet:2", "pathological:3", "file:/tmp/s.json"] {
            assert_eq!(spec(text).to_string(), text);
        }
        assert_eq!(spec("dirichlet:0.1"), PartitionSpec::Dirichlet { alpha: 0.1 });
        for (bad, needle) in [
            ("dirichlet:0", "positive alpha"),
            ("dirichlet:x", "positive alpha"),
            ("dirichlet", "unknown split"),
            ("pathological:0", "class count"),
            ("file:", "unknown split"),
            ("iid:3", "unknown split"),
            ("random", "expected iid"),
        ] {
            let err = bad.parse::<PartitionSpec>().expect_err(bad);
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn gamma_draws_have_the_right_mean() {
        let mut rng = rng::stream(1, 0);
        for shape in [0.1, 1.0, 3.5] {
            let n = 20_000;
            let mean = (0..n).map(|_| rng::ln_gamma_draw(&mut rng, shape).exp()).sum::<f64>() / n as f64;
            assert!((mean - shape).abs() < 0.05 * shape.max(1.0), "shape {shape}: mean {mean}");
        }
    }
}
