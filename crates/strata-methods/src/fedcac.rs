//! FedCAC's arithmetic on plain data: sensitivities, critical masks, overlaps, the
//! collaboration threshold, collaborator sets and the per-client combination.
//!
//! Wu et al., "Bold but Cautious: Unlocking the Potential of Personalized Federated Learning
//! through Cautiously Aggressive Collaboration", ICCV 2023; the semantics follow the author's
//! Fling code (`fedcac_client.py`, `fedcac_group.py`), as pinned in `shared/methods/fedcac.md`.
//! The client half calls [`sensitivity`] and [`critical_mask`]; the server half calls
//! [`collaboration`], [`customize`] and [`combine`]. No libtorch here, so every rule is unit-tested on
//! hand-computed cases.
//!
//! Masks run over the *covered* tensors (those a [`Selector`] keeps), concatenated in the
//! set's order, one bit per entry (see [`strata_core::mask`]).

use strata_core::mask::{BitMask, MaskError};
use strata_core::selection::Selector;
use strata_core::tensor::{NamedTensor, TensorSet};

/// A k-th largest sensitivity at or below this is "tiny": the threshold moves up to the
/// smallest sensitivity above [`NONZERO`].
pub const TINY: f32 = 1e-10;
/// Sensitivities above this count as non-zero for the tiny-threshold rule.
pub const NONZERO: f32 = 1e-20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FedCacError {
    #[error("tensor `{0}` is missing from one of the sets")]
    MissingTensor(String),
    #[error("tensor `{name}` has {left} values in one set and {right} in the other")]
    SizeMismatch { name: String, left: usize, right: usize },
    #[error("the mask has {mask} bits but the covered tensors hold {covered} values")]
    MaskLength { mask: usize, covered: usize },
    #[error("{masks} masks, {sets} collaborator sets and {uploads} uploads: one of each per client")]
    Counts { masks: usize, sets: usize, uploads: usize },
    #[error("client {client}'s collaborator set is empty or names a client past the {clients} given")]
    BadCollaborators { client: usize, clients: usize },
    #[error("{weights} weights and {models} models to write for {uploads} uploads: one of each per upload")]
    Outputs { weights: usize, models: usize, uploads: usize },
    #[error("no update has training samples to weigh it by")]
    NoWeight,
    #[error("{values} critical values for a mask with {ones} bits set")]
    CriticalCount { values: usize, ones: usize },
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// Sensitivity of each entry: `|(after − before) · after|`, the update times the trained
/// value (no gradients, no normalization). Pairs up entries up to the shorter slice.
pub fn sensitivity(before: &[f32], after: &[f32]) -> Vec<f32> {
    before.iter().zip(after).map(|(&b, &a)| ((a - b) * a).abs()).collect()
}

/// The per-tensor threshold: `None` when no entry is critical (k = floor(τ·n) = 0), else the
/// value an entry's sensitivity must reach (`s ≥ thr`).
///
/// thr is the k-th largest sensitivity; if thr ≤ 1e-10 it becomes the smallest sensitivity
/// above 1e-20, and if there is none it stays (so an all-zero tensor is wholly critical).
/// O(n) on average (`select_nth_unstable`), with one scratch copy of the tensor.
pub fn tensor_threshold(sensitivity: &[f32], tau: f64) -> Option<f32> {
    let n = sensitivity.len();
    let k = ((tau * n as f64).floor().max(0.0) as usize).min(n);
    if k == 0 {
        return None;
    }
    let mut scratch = sensitivity.to_vec();
    let (_, &mut kth_largest, _) = scratch.select_nth_unstable_by(n - k, f32::total_cmp);
    let mut thr = kth_largest;
    if thr <= TINY
        && let Some(smallest) = sensitivity.iter().copied().filter(|&s| s > NONZERO).min_by(f32::total_cmp)
    {
        thr = smallest;
    }
    Some(thr)
}

/// The critical entries of one tensor (see [`tensor_threshold`]): `s ≥ thr`, ties included,
/// so slightly more than τ·n entries can be critical.
pub fn tensor_critical_mask(sensitivity: &[f32], tau: f64) -> Vec<bool> {
    match tensor_threshold(sensitivity, tau) {
        None => vec![false; sensitivity.len()],
        Some(thr) => sensitivity.iter().map(|&s| s >= thr).collect(),
    }
}

/// The client's critical mask: per covered tensor, in `after`'s order, the entries whose
/// sensitivity (between `before` and `after`) passes that tensor's own threshold.
pub fn critical_mask(
    before: &TensorSet,
    after: &TensorSet,
    covered: &Selector,
    tau: f64,
) -> Result<BitMask, FedCacError> {
    let mut pairs = Vec::new();
    for a in after.tensors().iter().filter(|t| covered.matches(t.name())) {
        let b = before.get(a.name()).ok_or_else(|| FedCacError::MissingTensor(a.name().to_string()))?;
        same_size(a, b)?;
        pairs.push((b, a));
    }
    let mut mask = BitMask::zeros(pairs.iter().map(|(_, a)| a.numel()).sum());
    let mut offset = 0;
    for (b, a) in pairs {
        let s = sensitivity(b.values(), a.values());
        if let Some(thr) = tensor_threshold(&s, tau) {
            for (i, _) in s.iter().enumerate().filter(|(_, v)| **v >= thr) {
                mask.set(offset + i, true);
            }
        }
        offset += s.len();
    }
    Ok(mask)
}

/// Overlap from popcounts: `1 − hamming / (2·ones_i)`.
///
/// When mask i is empty (`ones_i = 0`) the formula is 0/0 or −∞; we define it as 1 when mask j
/// is empty too (identical masks, `hamming = 0`) and 0 otherwise (nothing of i's to share).
/// Honest clients with the same τ never mix empty and non-empty masks: a mask is empty only
/// when every covered tensor has floor(τ·n) = 0.
pub fn overlap_from_counts(ones_i: u64, hamming: u64) -> f64 {
    match (ones_i, hamming) {
        (0, 0) => 1.0,
        (0, _) => 0.0,
        _ => 1.0 - hamming as f64 / (2.0 * ones_i as f64),
    }
}

/// FedCAC's overlap of client i's critical set with client j's:
/// `o_ij = 1 − |m_i − m_j|₁ / (2 |m_i|₁)`. It equals `|m_i ∧ m_j| / k` when both masks have
/// k ones, is not symmetric in general, and can be negative when j has many more ones than i.
/// See [`overlap_from_counts`] for an empty `m_i`.
pub fn overlap(mi: &BitMask, mj: &BitMask) -> Result<f64, MaskError> {
    Ok(overlap_from_counts(mi.count_ones(), mi.hamming(mj)?))
}

/// The collaboration threshold of round `round`: `ō + ((t+1)/β)(o_max − ō)` over the given
/// overlaps (all ordered pairs i ≠ j), with no clamping: from t ≥ β on it exceeds `o_max`
/// (when the overlaps differ) and nobody collaborates. With no pairs (one client) it is +∞.
pub fn threshold(overlaps: &[f64], round: u64, beta: f64) -> f64 {
    if overlaps.is_empty() {
        return f64::INFINITY;
    }
    let mean = overlaps.iter().sum::<f64>() / overlaps.len() as f64;
    let max = overlaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    mean + ((round as f64 + 1.0) / beta) * (max - mean)
}

/// Overlaps among K clients: `get(i, j)` is `o_ij`; the diagonal is unused.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlaps {
    k: usize,
    values: Vec<f64>,
}

impl Overlaps {
    /// Computes every `o_ij` from K masks of equal length.
    ///
    /// Hamming distance is symmetric, so each unordered pair costs one popcount pass over
    /// P/64 words (K(K−1)/2 passes in all), spread over the machine's threads.
    pub fn compute(masks: &[&BitMask]) -> Result<Self, FedCacError> {
        let k = masks.len();
        if let Some(first) = masks.first()
            && let Some(other) = masks.iter().find(|m| m.len() != first.len())
        {
            return Err(MaskError::LengthMismatch(first.len(), other.len()).into());
        }
        let ones: Vec<u64> = masks.iter().map(|m| m.count_ones()).collect();
        // Row i holds the pairs (i, j > i): rows shrink, and threads take the next row as they go.
        let rows: Vec<usize> = (0..k).collect();
        let rows = strata_core::parallel::map(&rows, |&i| {
            // Lengths were checked above, so hamming cannot fail.
            (i + 1..k).map(|j| (i, j, masks[i].hamming(masks[j]).unwrap_or(0))).collect::<Vec<_>>()
        });
        let mut values = vec![f64::NAN; k * k];
        for (i, j, h) in rows.into_iter().flatten() {
            values[i * k + j] = overlap_from_counts(ones[i], h);
            values[j * k + i] = overlap_from_counts(ones[j], h);
        }
        Ok(Self { k, values })
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.k
    }

    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// `o_ij`, for i ≠ j.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.k + j]
    }

    /// Every `o_ij` over ordered pairs i ≠ j, row by row.
    pub fn off_diagonal(&self) -> Vec<f64> {
        (0..self.k).flat_map(|i| (0..self.k).filter(move |&j| j != i).map(move |j| self.get(i, j))).collect()
    }

    /// `C_i = {i} ∪ {j : o_ij ≥ θ}` for each client, in increasing order.
    pub fn collaborators(&self, theta: f64) -> Vec<Vec<usize>> {
        (0..self.k).map(|i| (0..self.k).filter(|&j| j == i || self.get(i, j) >= theta).collect()).collect()
    }
}

/// One round's collaboration structure among the clients that reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Collaboration {
    pub overlaps: Overlaps,
    /// θ_t; +∞ with a single client.
    pub theta: f64,
    /// `C_i` for each client, by position in the masks given.
    pub collaborators: Vec<Vec<usize>>,
}

/// Overlaps, threshold and collaborator sets of round `round` among the given masks.
pub fn collaboration(masks: &[&BitMask], round: u64, beta: f64) -> Result<Collaboration, FedCacError> {
    let overlaps = Overlaps::compute(masks)?;
    let theta = threshold(&overlaps.off_diagonal(), round, beta);
    let collaborators = overlaps.collaborators(theta);
    Ok(Collaboration { overlaps, theta, collaborators })
}

/// Client i's next model: `w_i = m ⊙ u + (1 − m) ⊙ w̄` entry by entry over the covered
/// tensors of `global` (mask bits run over them in `global`'s order); the other tensors come
/// from `global` unchanged. `customized` must hold every covered tensor (by name; it may hold
/// others, which are ignored).
pub fn combine(
    mask: &BitMask,
    customized: &TensorSet,
    global: &TensorSet,
    covered: &Selector,
) -> Result<TensorSet, FedCacError> {
    mask_covers(mask, global, covered)?;
    let mut out = global.clone();
    let mut offset = 0;
    for (g, (_, values)) in global.tensors().iter().zip(out.values_mut()).filter(|(g, _)| covered.matches(g.name())) {
        let u = customized.get(g.name()).ok_or_else(|| FedCacError::MissingTensor(g.name().to_string()))?;
        same_size(g, u)?;
        for (i, (w, &c)) in values.iter_mut().zip(u.values()).enumerate() {
            if mask.get(offset + i) {
                *w = c;
            }
        }
        offset += g.numel();
    }
    Ok(out)
}

/// `model` made `combine(mask, model, global)` in place: w̄'s values outside the critical
/// entries and in the tensors not covered, its own at the critical entries (an absent client's
/// model after a round). `model` must have `global`'s tensors.
pub fn refresh(
    mask: &BitMask,
    model: &mut TensorSet,
    global: &TensorSet,
    covered: &Selector,
) -> Result<(), FedCacError> {
    mask_covers(mask, global, covered)?;
    same_tensors(model, global)?;
    let mut offset = 0;
    for (index, g) in global.tensors().iter().enumerate() {
        let Some(values) = model.values_mut_at(index) else { continue };
        if !covered.matches(g.name()) {
            values.copy_from_slice(g.values());
            continue;
        }
        for (c, (out, from)) in values.chunks_mut(64).zip(g.values().chunks(64)).enumerate() {
            let word = mask.word_at(offset + c * 64);
            for (p, (o, &w)) in out.iter_mut().zip(from).enumerate() {
                if word >> p & 1 == 0 {
                    *o = w;
                }
            }
        }
        offset += g.numel();
    }
    Ok(())
}

/// One round's uploads as [`customize`] takes them: each client's trained tensors (at least the
/// covered ones), its training samples (its weight in w̄), its critical mask and its
/// collaborator set `C_i` (positions in these slices).
#[derive(Clone, Copy, Debug)]
pub struct Uploads<'a> {
    pub models: &'a [&'a TensorSet],
    pub weights: &'a [f64],
    pub masks: &'a [&'a BitMask],
    pub collaborators: &'a [Vec<usize>],
}

/// A round of FedCAC's server step in one pass over the parameters: the new w̄ (covered tensors:
/// the sample-weighted mean of the uploads; the others stay as they are in `average`), and every
/// reporting client's next model `w_i = m_i ⊙ u_i + (1 − m_i) ⊙ w̄` (as [`combine`]), where
/// `u_i` is the unweighted mean of the uploads of `C_i`, written over `models[i]`, which must
/// have `average`'s tensors (the client's previous model, so that a round reuses its memory).
///
/// This is the server's heaviest step, K·|C|·P additions, so it runs over the parameters a
/// block at a time: each upload's block is widened to f64 once, w̄'s block is their weighted
/// sum, each distinct collaborator set sums its members' blocks (in registers, a few lanes at a
/// time), and each client blends the mean at its critical entries with w̄ elsewhere. Every sum
/// runs in f64 in the uploads' order, as [`crate::aggregate::weighted_average`] does, so both
/// results are the same to the bit as averaging first. Blocks are spread over the machine's
/// threads. Everything is checked before anything is written: on an error the outputs are as
/// they were.
pub fn customize(
    uploads: Uploads<'_>,
    average: &mut TensorSet,
    models: &mut [TensorSet],
    covered: &Selector,
) -> Result<(), FedCacError> {
    let Uploads { models: sets, weights, masks, collaborators } = uploads;
    let k = sets.len();
    if masks.len() != k || collaborators.len() != k {
        return Err(FedCacError::Counts { masks: masks.len(), sets: collaborators.len(), uploads: k });
    }
    if weights.len() != k || models.len() != k {
        return Err(FedCacError::Outputs { weights: weights.len(), models: models.len(), uploads: k });
    }
    for mask in masks {
        mask_covers(mask, average, covered)?;
    }
    if let Some(i) = collaborators.iter().position(|set| set.is_empty() || set.iter().any(|&j| j >= k)) {
        return Err(FedCacError::BadCollaborators { client: i, clients: k });
    }
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(FedCacError::NoWeight);
    }
    for model in models.iter() {
        same_tensors(model, average)?;
    }
    let mut values: Vec<Option<Vec<&[f32]>>> = Vec::with_capacity(average.len());
    for t in average.tensors() {
        values.push(match covered.matches(t.name()) {
            true => Some(sets.iter().map(|u| values_like(u, t)).collect::<Result<_, _>>()?),
            false => None,
        });
    }

    // Distinct sets, each with the clients that have it.
    let mut groups: Vec<(&[usize], Vec<usize>)> = Vec::new();
    for (i, set) in collaborators.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| *s == set.as_slice()) {
            Some((_, members)) => members.push(i),
            None => groups.push((set, vec![i])),
        }
    }
    let mut offset = 0;
    for (index, values) in values.iter().enumerate() {
        let avg = average.values_mut_at(index).expect("specs were taken from `average`");
        let mut outs: Vec<&mut [f32]> =
            models.iter_mut().map(|m| m.values_mut_at(index).expect("models were checked against the specs")).collect();
        let Some(values) = values else {
            // Not covered: w_i is w̄ there.
            for out in &mut outs {
                out.copy_from_slice(avg);
            }
            continue;
        };
        let n = avg.len();
        if n == 0 {
            continue;
        }
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.div_ceil(MIN_SHARE)).max(1);
        let share = n.div_ceil(threads);
        // Thread t gets positions t·share.. of w̄ and of every client's model.
        let mut shares: Vec<(&mut [f32], Vec<&mut [f32]>)> =
            avg.chunks_mut(share).map(|chunk| (chunk, Vec::with_capacity(k))).collect();
        for out in outs {
            for (t, chunk) in out.chunks_mut(share).enumerate() {
                shares[t].1.push(chunk);
            }
        }
        let block = Block { values, weights, total, groups: &groups, masks };
        std::thread::scope(|scope| {
            for (t, (avg, mut outs)) in shares.into_iter().enumerate() {
                let start = t * share;
                scope.spawn(move || block.run(start, offset + start, avg, &mut outs));
            }
        });
        offset += n;
    }
    Ok(())
}

/// Parameters per block: K blocks of f64 stay in cache (100 clients: 400 KB).
const BLOCK: usize = 512;
/// Lanes summed in registers at a time: a multiple of any vector width, and BLOCK's divisor.
const LANES: usize = 16;
/// No thread gets fewer parameters of a tensor than this (small tensors run on one).
const MIN_SHARE: usize = 16 * BLOCK;

/// What every block of one covered tensor needs (see [`customize`]).
#[derive(Clone, Copy)]
struct Block<'a> {
    /// Each upload's values of the tensor.
    values: &'a [&'a [f32]],
    weights: &'a [f64],
    total: f64,
    groups: &'a [(&'a [usize], Vec<usize>)],
    masks: &'a [&'a BitMask],
}

impl Block<'_> {
    /// Positions `start..start + avg.len()` of the tensor; `bit` is the mask position of `start`.
    ///
    /// On x86-64 this runs with AVX2 where the CPU has it (the default target knows only
    /// SSE2): the same operations in the same order, four lanes wide instead of two.
    fn run(&self, start: usize, bit: usize, avg: &mut [f32], outs: &mut [&mut [f32]]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; that is all `run_avx2` needs.
            #[allow(unsafe_code)]
            unsafe {
                return self.run_avx2(start, bit, avg, outs);
            }
        }
        self.run_here(start, bit, avg, outs);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&self, start: usize, bit: usize, avg: &mut [f32], outs: &mut [&mut [f32]]) {
        self.run_here(start, bit, avg, outs);
    }

    #[inline(always)]
    fn run_here(&self, start: usize, bit: usize, avg: &mut [f32], outs: &mut [&mut [f32]]) {
        let len = avg.len();
        let k = self.values.len();
        // Chunk-major: LANES positions of upload 0, the same of upload 1, ..., then the next
        // LANES positions, so that one chunk of every upload is a contiguous K · LANES run.
        let mut wide = vec![0f64; k * BLOCK];
        let mut sums = [0f64; BLOCK];
        let mut group_sums = vec![0f64; self.groups.len() * BLOCK];
        let mut means = [0f32; BLOCK];
        for block in (0..len).step_by(BLOCK) {
            let b = BLOCK.min(len - block);
            let chunks = b.div_ceil(LANES);
            for (j, v) in self.values.iter().enumerate() {
                for (c, from) in v[start + block..start + block + b].chunks(LANES).enumerate() {
                    let to = &mut wide[(c * k + j) * LANES..(c * k + j + 1) * LANES];
                    for (w, &x) in to.iter_mut().zip(from) {
                        *w = f64::from(x);
                    }
                    // A last chunk's missing positions are summed but never written out.
                    to[from.len()..].fill(0.0);
                }
            }
            let wide = &wide[..chunks * k * LANES];
            let avg = &mut avg[block..block + b];
            self.weighted_mean(wide, &mut sums[..chunks * LANES], avg);
            sum_groups(wide, k, self.groups, &mut group_sums);
            for ((set, members), sums) in self.groups.iter().zip(group_sums.chunks(BLOCK)) {
                let count = set.len() as f64;
                for (m, &s) in means[..b].iter_mut().zip(&sums[..b]) {
                    *m = (s / count) as f32;
                }
                for &i in members {
                    blend(self.masks[i], bit + block, &means[..b], avg, &mut outs[i][block..block + b]);
                }
            }
        }
    }

    /// w̄'s block: Σ_j v_j·w_j / Σ_j w_j, summed in the uploads' order.
    #[inline(always)]
    fn weighted_mean(&self, wide: &[f64], sums: &mut [f64], avg: &mut [f32]) {
        let k = self.weights.len();
        for (rows, sums) in wide.chunks_exact(k * LANES).zip(sums.chunks_exact_mut(LANES)) {
            let (rows, _) = rows.as_chunks::<LANES>();
            let mut acc = [0f64; LANES];
            for (j, (row, &weight)) in rows.iter().zip(self.weights).enumerate() {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a = if j == 0 { v * weight } else { *a + v * weight };
                }
            }
            sums.copy_from_slice(&acc);
        }
        for (a, &s) in avg.iter_mut().zip(sums.iter()) {
            *a = (s / self.total) as f32;
        }
    }
}

/// Each distinct collaborator set's sums over a block, `Σ_{j ∈ set} wide[j]` in the set's
/// order, into `sums` (BLOCK per set), a chunk of LANES positions at a time for every set
/// before the next chunk: that chunk of all K uploads (K · LANES · 8 bytes) stays in the L1
/// cache while every set reads it, and each set's LANES accumulators stay in registers, so an
/// addition costs one load. Most of FedCAC's server time is spent here.
#[inline(always)]
fn sum_groups(wide: &[f64], k: usize, groups: &[(&[usize], Vec<usize>)], sums: &mut [f64]) {
    for (c, rows) in wide.chunks_exact(k * LANES).enumerate() {
        let (rows, _) = rows.as_chunks::<LANES>();
        for ((set, _), sums) in groups.iter().zip(sums.chunks_exact_mut(BLOCK)) {
            let mut acc = rows[set[0]];
            for &j in &set[1..] {
                for (a, &v) in acc.iter_mut().zip(&rows[j]) {
                    *a += v;
                }
            }
            sums[c * LANES..(c + 1) * LANES].copy_from_slice(&acc);
        }
    }
}

/// One client's block of w_i: the collaborators' mean where its mask (from `bit` on) is set,
/// w̄ elsewhere (a select on the bits, which vectorizes where a branch would not).
#[inline(always)]
fn blend(mask: &BitMask, bit: usize, means: &[f32], avg: &[f32], out: &mut [f32]) {
    for (c, ((out, avg), means)) in out.chunks_mut(64).zip(avg.chunks(64)).zip(means.chunks(64)).enumerate() {
        let word = mask.word_at(bit + c * 64);
        for (p, ((o, &a), &m)) in out.iter_mut().zip(avg).zip(means).enumerate() {
            let take = 0u32.wrapping_sub((word >> p) as u32 & 1);
            *o = f32::from_bits(m.to_bits() & take | a.to_bits() & !take);
        }
    }
}

/// The entries of `model`'s covered tensors where `mask` is set, in mask order: a client's
/// customized part, all that distinguishes its model from w̄ (see [`with_critical_values`]).
pub fn critical_values(mask: &BitMask, model: &TensorSet, covered: &Selector) -> Result<Vec<f32>, FedCacError> {
    mask_covers(mask, model, covered)?;
    let mut out = Vec::with_capacity(mask.count_ones() as usize);
    let mut offset = 0;
    for t in model.tensors().iter().filter(|t| covered.matches(t.name())) {
        out.extend(mask.ones_in(offset..offset + t.numel()).map(|p| t.values()[p - offset]));
        offset += t.numel();
    }
    Ok(out)
}

/// `global` with the entries where `mask` is set replaced by `values`, in mask order: the
/// inverse of [`critical_values`] for a model that is w̄ outside its critical entries.
pub fn with_critical_values(
    mask: &BitMask,
    values: &[f32],
    global: &TensorSet,
    covered: &Selector,
) -> Result<TensorSet, FedCacError> {
    mask_covers(mask, global, covered)?;
    let ones = mask.count_ones() as usize;
    if values.len() != ones {
        return Err(FedCacError::CriticalCount { values: values.len(), ones });
    }
    let mut out = global.clone();
    let (mut offset, mut next) = (0, values.iter());
    for (_, t) in out.values_mut().filter(|(name, _)| covered.matches(name)) {
        for (p, &v) in mask.ones_in(offset..offset + t.len()).zip(&mut next) {
            t[p - offset] = v;
        }
        offset += t.len();
    }
    Ok(out)
}

/// How many values the covered tensors of `set` hold: the length of a mask over them.
pub fn covered_len(set: &TensorSet, covered: &Selector) -> usize {
    set.tensors().iter().filter(|t| covered.matches(t.name())).map(|t| t.numel()).sum()
}

/// A mask must have one bit per covered value of `set`.
fn mask_covers(mask: &BitMask, set: &TensorSet, covered: &Selector) -> Result<(), FedCacError> {
    let covered_len = covered_len(set, covered);
    if mask.len() != covered_len {
        return Err(FedCacError::MaskLength { mask: mask.len(), covered: covered_len });
    }
    Ok(())
}

/// The values of `set`'s tensor named like `like`, which must have as many.
fn values_like<'a>(set: &'a TensorSet, like: &NamedTensor) -> Result<&'a [f32], FedCacError> {
    let t = set.get(like.name()).ok_or_else(|| FedCacError::MissingTensor(like.name().to_string()))?;
    same_size(like, t)?;
    Ok(t.values())
}

/// `model` holds `like`'s tensors, in its order and of its sizes: a model a round can be written
/// over.
fn same_tensors(model: &TensorSet, like: &TensorSet) -> Result<(), FedCacError> {
    for (i, l) in like.tensors().iter().enumerate() {
        let t = model.tensors().get(i).filter(|t| t.name() == l.name());
        same_size(l, t.ok_or_else(|| FedCacError::MissingTensor(l.name().to_string()))?)?;
    }
    Ok(())
}

fn same_size(a: &NamedTensor, b: &NamedTensor) -> Result<(), FedCacError> {
    if a.numel() != b.numel() {
        return Err(FedCacError::SizeMismatch { name: a.name().to_string(), left: a.numel(), right: b.numel() });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(name: &str, values: &[f32]) -> NamedTensor {
        NamedTensor::new(name, vec![values.len()], values.to_vec()).unwrap()
    }

    fn set(tensors: &[(&str, &[f32])]) -> TensorSet {
        TensorSet::new(tensors.iter().map(|(n, v)| t(n, v)).collect()).unwrap()
    }

    fn bits(s: &str) -> BitMask {
        BitMask::from_bools(s.chars().map(|c| c == '1'))
    }

    fn mask_str(m: &[bool]) -> String {
        m.iter().map(|&b| if b { '1' } else { '0' }).collect()
    }

    #[test]
    fn sensitivity_is_update_times_trained_value() {
        let s = sensitivity(&[1.0, 2.0, -1.0, 0.5], &[3.0, 1.0, -2.0, 0.5]);
        // (3−1)·3 = 6, |(1−2)·1| = 1, (−2+1)·(−2) = 2, 0.
        assert_eq!(s, vec![6.0, 1.0, 2.0, 0.0]);
    }

    #[test]
    fn top_tau_per_tensor() {
        // n = 5, τ = 0.4 → k = 2: thr = 2nd largest = 4.
        assert_eq!(mask_str(&tensor_critical_mask(&[1.0, 5.0, 3.0, 4.0, 2.0], 0.4)), "01010");
        // τ = 1 → everything.
        assert_eq!(mask_str(&tensor_critical_mask(&[1.0, 5.0, 3.0], 1.0)), "111");
    }

    #[test]
    fn ties_make_more_than_tau_n_critical() {
        // k = floor(0.5·4) = 2, 2nd largest = 3, three entries ≥ 3.
        assert_eq!(mask_str(&tensor_critical_mask(&[3.0, 1.0, 3.0, 3.0], 0.5)), "1011");
    }

    #[test]
    fn k_zero_marks_nothing() {
        // floor(0.3·3) = 0.
        assert_eq!(mask_str(&tensor_critical_mask(&[9.0, 8.0, 7.0], 0.3)), "000");
        assert_eq!(tensor_threshold(&[9.0, 8.0, 7.0], 0.3), None);
        assert!(tensor_critical_mask(&[], 0.5).is_empty());
    }

    #[test]
    fn tiny_threshold_moves_to_the_smallest_nonzero_sensitivity() {
        // k = 2, 2nd largest = 1e-30 ≤ 1e-10 → thr = smallest s > 1e-20 = 5e-3 (1e-30 does not
        // count): fewer than k entries are critical.
        let s = [0.0, 5e-3, 0.0, 1e-30, 0.0];
        assert_eq!(tensor_threshold(&s, 0.4), Some(5e-3));
        assert_eq!(mask_str(&tensor_critical_mask(&s, 0.4)), "01000");
        // k = 3, 3rd largest = 1e-11 ≤ 1e-10 → thr = smallest s > 1e-20 = 1e-15: more entries.
        let s = [1e-11, 1e-15, 0.0, 2.0, 3.0, 1e-12];
        assert_eq!(tensor_threshold(&s, 0.5), Some(1e-15));
        assert_eq!(mask_str(&tensor_critical_mask(&s, 0.5)), "110111");
        // All zero: no s > 1e-20, thr stays 0 and the whole tensor is critical.
        assert_eq!(mask_str(&tensor_critical_mask(&[0.0; 4], 0.5)), "1111");
        // Only sub-1e-20 values: thr stays at the k-th largest.
        assert_eq!(mask_str(&tensor_critical_mask(&[1e-25, 0.0, 1e-30, 0.0], 0.25)), "1000");
    }

    #[test]
    fn critical_mask_concatenates_covered_tensors_in_order() {
        let before = set(&[("b.w", &[0.0, 0.0, 0.0, 0.0]), ("b.running_mean", &[0.0, 0.0]), ("h.w", &[1.0, 1.0])]);
        let after = set(&[("b.w", &[1.0, 3.0, 2.0, 0.5]), ("b.running_mean", &[5.0, 5.0]), ("h.w", &[2.0, 1.0])]);
        let covered = Selector::all().except(["*.running_mean"]);
        // b.w: s = [1, 9, 4, 0.25], k = 2 → thr 4 → 0110. h.w: s = [2, 0], k = 1 → 10.
        let mask = critical_mask(&before, &after, &covered, 0.5).unwrap();
        assert_eq!(mask, bits("011010"));
        let missing = set(&[("b.w", &[0.0; 4])]);
        assert_eq!(critical_mask(&missing, &after, &covered, 0.5), Err(FedCacError::MissingTensor("h.w".into())));
    }

    #[test]
    fn overlap_equals_shared_share_for_equal_counts() {
        let (a, b) = (bits("11110000"), bits("11001100"));
        // k = 4 each, |a ∧ b| = 2 → 0.5; hamming 4 → 1 − 4/8 = 0.5.
        assert_eq!(overlap(&a, &b).unwrap(), 0.5);
        assert_eq!(overlap(&b, &a).unwrap(), 0.5);
        assert_eq!(overlap(&a, &a).unwrap(), 1.0);
        assert_eq!(overlap(&a, &bits("00001111")).unwrap(), 0.0);
    }

    #[test]
    fn overlap_is_not_symmetric() {
        let (a, b) = (bits("1100"), bits("1111"));
        // hamming 2: o_ab = 1 − 2/(2·2) = 0.5, o_ba = 1 − 2/(2·4) = 0.75.
        assert_eq!(overlap(&a, &b).unwrap(), 0.5);
        assert_eq!(overlap(&b, &a).unwrap(), 0.75);
        // Negative when j has many more ones: 1 − 3/2.
        assert_eq!(overlap(&bits("1000"), &bits("0011")).unwrap(), -0.5);
        // Empty m_i: 1 with an empty m_j, else 0.
        assert_eq!(overlap(&bits("0000"), &bits("0000")).unwrap(), 1.0);
        assert_eq!(overlap(&bits("0000"), &bits("0100")).unwrap(), 0.0);
        assert!(overlap(&bits("0000"), &bits("000")).is_err());
    }

    #[test]
    fn threshold_rises_from_mean_to_max_and_past_it() {
        let o = [0.2, 0.4, 0.6, 0.8]; // mean 0.5, max 0.8
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(threshold(&o, 0, 10.0), 0.5 + 0.1 * 0.3));
        assert!(close(threshold(&o, 4, 10.0), 0.5 + 0.5 * 0.3));
        assert!(close(threshold(&o, 9, 10.0), 0.8));
        // t ≥ β: no clamping, θ > o_max.
        assert!(close(threshold(&o, 19, 10.0), 0.5 + 2.0 * 0.3));
        assert!(threshold(&o, 10, 10.0) > 0.8);
        assert_eq!(threshold(&[], 0, 10.0), f64::INFINITY);
    }

    #[test]
    fn collaboration_among_three_masks() {
        let (a, b, c) = (bits("11110000"), bits("11100001"), bits("00001111"));
        let col = collaboration(&[&a, &b, &c], 0, 2.0).unwrap();
        // o_ab = o_ba = 1 − 2/8 = 0.75, o_ac = o_ca = o_bc = o_cb = 1 − 8/8 = 0 (b, c: hamming 6 → 0.25).
        assert_eq!(col.overlaps.get(0, 1), 0.75);
        assert_eq!(col.overlaps.get(1, 0), 0.75);
        assert_eq!(col.overlaps.get(0, 2), 0.0);
        assert_eq!(col.overlaps.get(1, 2), 0.25);
        assert_eq!(col.overlaps.get(2, 1), 0.25);
        // mean (0.75·2 + 0 ·2 + 0.25·2)/6 = 1/3, max 0.75, θ = 1/3 + 0.5·(0.75 − 1/3) = 13/24.
        assert!((col.theta - 13.0 / 24.0).abs() < 1e-12);
        assert_eq!(col.collaborators, vec![vec![0, 1], vec![0, 1], vec![2]]);
        let single = collaboration(&[&a], 0, 2.0).unwrap();
        assert_eq!(single.collaborators, vec![vec![0]]);
        assert!(collaboration(&[&a, &bits("1")], 0, 2.0).is_err());
    }

    #[test]
    fn customize_averages_each_clients_collaborators_at_its_critical_entries() {
        let global = set(&[("w", &[1.0, 2.0, 3.0]), ("bn.running_var", &[9.0]), ("h", &[4.0, 5.0])]);
        let a = set(&[("w", &[10.0, 20.0, 30.0]), ("h", &[40.0, 50.0])]);
        let b = set(&[("w", &[20.0, 0.0, 0.0]), ("h", &[0.0, 0.25])]);
        let covered = Selector::all().except(["*.running_var"]);
        let (ma, mb) = (bits("10101"), bits("01011"));
        // a collaborates with b; b only with itself. w̄ = (3a + b) / 4.
        let sets = [vec![0, 1], vec![1]];
        let uploads = Uploads { models: &[&a, &b], weights: &[3.0, 1.0], masks: &[&ma, &mb], collaborators: &sets[..] };
        let (mut average, mut out) = (global.clone(), vec![global.clone(); 2]);
        customize(uploads, &mut average, &mut out, &covered).unwrap();
        assert_eq!(average.get("w").unwrap().values(), vec![12.5, 15.0, 22.5]);
        assert_eq!(average.get("bn.running_var").unwrap().values(), vec![9.0]);
        assert_eq!(average.get("h").unwrap().values(), vec![30.0, 37.5625]);
        assert_eq!(out[0].get("w").unwrap().values(), vec![15.0, 15.0, 15.0]);
        assert_eq!(out[0].get("bn.running_var").unwrap().values(), vec![9.0]);
        assert_eq!(out[0].get("h").unwrap().values(), vec![30.0, 25.125]);
        assert_eq!(out[1].get("w").unwrap().values(), vec![12.5, 0.0, 22.5]);
        assert_eq!(out[1].get("h").unwrap().values(), vec![0.0, 0.25]);

        // Refusals leave w̄ and the models as they were.
        let before = (average.clone(), out.clone());
        let mut refused = |uploads: Uploads<'_>, models: usize| {
            let mut outs = out[..models].to_vec();
            let result = customize(uploads, &mut average, &mut outs, &covered);
            assert_eq!((&average, &outs[..]), (&before.0, &before.1[..models]));
            result
        };
        let singles = [vec![0], vec![1]];
        let ok = Uploads { collaborators: &singles[..], ..uploads };
        assert_eq!(
            refused(Uploads { masks: &[&ma], ..ok }, 2),
            Err(FedCacError::Counts { masks: 1, sets: 2, uploads: 2 })
        );
        assert_eq!(refused(ok, 1), Err(FedCacError::Outputs { weights: 2, models: 1, uploads: 2 }));
        let short = bits("1010");
        assert_eq!(
            refused(Uploads { masks: &[&ma, &short], ..ok }, 2),
            Err(FedCacError::MaskLength { mask: 4, covered: 5 })
        );
        let beyond = [vec![0], vec![2]];
        assert_eq!(
            refused(Uploads { collaborators: &beyond[..], ..ok }, 2),
            Err(FedCacError::BadCollaborators { client: 1, clients: 2 })
        );
        assert_eq!(refused(Uploads { weights: &[0.0, 0.0], ..ok }, 2), Err(FedCacError::NoWeight));
        let small = set(&[("w", &[1.0, 2.0]), ("h", &[0.0, 0.0])]);
        assert!(matches!(refused(Uploads { models: &[&a, &small], ..ok }, 2), Err(FedCacError::SizeMismatch { .. })));
        let mut wrong = vec![global.clone(), a.clone()];
        assert_eq!(
            customize(ok, &mut average, &mut wrong, &covered),
            Err(FedCacError::MissingTensor("bn.running_var".into()))
        );
        assert_eq!(wrong[1], a);
    }

    #[test]
    fn critical_values_go_out_and_back_in_mask_order() {
        let global = set(&[("w", &[1.0, 2.0, 3.0]), ("bn.running_var", &[9.0]), ("h", &[4.0, 5.0])]);
        let model = set(&[("w", &[10.0, 2.0, 30.0]), ("bn.running_var", &[9.0]), ("h", &[4.0, 50.0])]);
        let covered = Selector::all().except(["*.running_var"]);
        let mask = bits("10101");
        let values = critical_values(&mask, &model, &covered).unwrap();
        assert_eq!(values, vec![10.0, 30.0, 50.0]);
        assert_eq!(with_critical_values(&mask, &values, &global, &covered).unwrap(), model);
        assert_eq!(
            with_critical_values(&mask, &values[..2], &global, &covered),
            Err(FedCacError::CriticalCount { values: 2, ones: 3 })
        );
        assert_eq!(
            critical_values(&bits("101"), &model, &covered),
            Err(FedCacError::MaskLength { mask: 3, covered: 5 })
        );
        let none = bits("00000");
        assert_eq!(with_critical_values(&none, &[], &global, &covered).unwrap(), global);
    }

    #[test]
    fn combine_takes_critical_entries_from_the_customized_model() {
        let global = set(&[("w", &[1.0, 2.0, 3.0]), ("bn.running_var", &[9.0]), ("h", &[4.0, 5.0])]);
        let customized = set(&[("w", &[10.0, 20.0, 30.0]), ("h", &[40.0, 50.0])]);
        let covered = Selector::all().except(["*.running_var"]);
        let out = combine(&bits("10101"), &customized, &global, &covered).unwrap();
        assert_eq!(out.get("w").unwrap().values(), vec![10.0, 2.0, 30.0]);
        assert_eq!(out.get("bn.running_var").unwrap().values(), vec![9.0]);
        assert_eq!(out.get("h").unwrap().values(), vec![4.0, 50.0]);
        assert_eq!(
            combine(&bits("1010"), &customized, &global, &covered),
            Err(FedCacError::MaskLength { mask: 4, covered: 5 })
        );
    }

    #[test]
    fn refresh_is_combine_in_place() {
        let global = set(&[("w", &[1.0, 2.0, 3.0]), ("bn.running_var", &[9.0]), ("h", &[4.0, 5.0])]);
        let mut model = set(&[("w", &[10.0, 20.0, 30.0]), ("bn.running_var", &[7.0]), ("h", &[40.0, 50.0])]);
        let covered = Selector::all().except(["*.running_var"]);
        let expected = combine(&bits("10101"), &model, &global, &covered).unwrap();
        refresh(&bits("10101"), &mut model, &global, &covered).unwrap();
        assert_eq!(model, expected);
        assert_eq!(model.get("w").unwrap().values(), vec![10.0, 2.0, 30.0]);
        let mut short = set(&[("w", &[1.0, 2.0, 3.0])]);
        assert_eq!(
            refresh(&bits("10101"), &mut short, &global, &covered),
            Err(FedCacError::MissingTensor("bn.running_var".into()))
        );
    }
}
