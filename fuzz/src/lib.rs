//! What the fuzz targets share: the tasks a result is checked against, the server's receiving
//! path minus its network and round state (header first, then [`ResultReceiver`], then the
//! finiteness check a training update must pass), and what must hold of any result it accepts.
//!
//! - `result_bytes`: raw bytes, read as length-delimited `ResultPart` messages (prost), the way
//!   a hostile client can put anything on the wire.
//! - `result_edits`: a valid result stream with arbitrary values, cut in slices of an arbitrary
//!   size and then edited (parts dropped, repeated, swapped; header fields, slices and bytes
//!   changed), each part going through prost's encoding and decoding.

use std::sync::Arc;

use prost::Message;
use strata_methods::ccvr::{ClassStats, upper_len};
use strata_core::mask::BitMask;
use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};
use strata_proto::assemble::AssemblyLimits;
use strata_proto::receive::{Expected, Received, Refusal, ResultReceiver, finite};
use strata_proto::stats::StatsExpectation;
use strata_proto::{TensorSlices, pb, scalar, tensor_specs};

/// The largest tensor set the receiver may allocate here (the server's limit is its model's size).
pub const MAX_BYTES: u64 = 1 << 16;

/// What a task asks a client to send back.
#[derive(Clone, Debug)]
pub struct Task {
    pub upload: Vec<TensorSpec>,
    pub training: bool,
    pub train_samples: Option<u64>,
    pub mask_bits: Option<usize>,
    pub feature_stats: Option<StatsExpectation>,
}

impl Task {
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            upload: &self.upload,
            training: self.training,
            train_samples: self.train_samples,
            test_samples: None,
            mask_bits: self.mask_bits,
            feature_stats: self.feature_stats,
            secagg: None,
            limits: AssemblyLimits { max_total_bytes: MAX_BYTES },
            compression: Default::default(),
            sent: None,
        }
    }
}

fn spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec { name: name.into(), shape: shape.to_vec() }
}

/// A small model: several tensors, one of them empty, one spanning many small slices.
pub fn model_specs() -> Vec<TensorSpec> {
    vec![spec("body.w", &[4, 5]), spec("body.b", &[5]), spec("body.empty", &[0, 3]), spec("head.w", &[3, 5])]
}

/// Statistics of dimension 3 over 4 classes.
pub const STATS: StatsExpectation = StatsExpectation { dim: 3, num_classes: 4, max_samples: None };

/// The tasks results are checked against: training (sample count known or not), training
/// with a mask (FedCAC), feature statistics (CCVR), evaluation.
pub fn task(selector: u8) -> Task {
    let train =
        Task { upload: model_specs(), training: true, train_samples: Some(50), mask_bits: None, feature_stats: None };
    match selector % 5 {
        0 => train,
        1 => Task { train_samples: None, ..train },
        2 => Task { mask_bits: Some(20 + 5), ..train },
        3 => Task { upload: Vec::new(), training: false, feature_stats: Some(STATS), ..train },
        _ => Task { upload: Vec::new(), training: false, ..train },
    }
}

/// What the server does with one stream, minus its gate: the first part must be the header,
/// every later part goes to the receiver, and a training update must hold finite values.
/// `complete` is false when the stream broke (a part that did not decode): the server then
/// refuses after the parts it read, without finishing.
pub fn receive(task: &Task, parts: &[pb::ResultPart], complete: bool) -> Result<Received, Refusal> {
    let Some((first, rest)) = parts.split_first() else {
        return Err(Refusal::invalid("empty result stream"));
    };
    let Some(pb::result_part::Part::Header(header)) = &first.part else {
        return Err(Refusal::invalid("a result stream must start with its header"));
    };
    let mut receiver = ResultReceiver::new(header, task.expected())?;
    for part in rest {
        receiver.push(part)?;
    }
    if !complete {
        return Err(Refusal::invalid("the stream broke"));
    }
    let received = receiver.finish()?;
    if task.training {
        finite(&received.parameters)?;
    }
    Ok(received)
}

/// Runs a stream through [`receive`] and, if it is accepted, checks [`accepted`].
pub fn run(task: &Task, parts: &[pb::ResultPart], complete: bool) -> Option<Received> {
    let received = receive(task, parts, complete).ok()?;
    accepted(task, &received);
    Some(received)
}

/// What must hold of every result the server accepts, whatever the client sent.
pub fn accepted(task: &Task, r: &Received) {
    assert_eq!(r.parameters.specs(), task.upload, "accepted tensors differ from the task's upload");
    if task.training {
        assert!(r.num_samples > 0, "a training result without samples was accepted");
        if let Some(n) = task.train_samples {
            assert_eq!(r.num_samples, n, "a sample count other than the client's was accepted");
        }
        for t in r.parameters.tensors() {
            assert!(t.values().iter().all(|v| v.is_finite()), "a non-finite value in `{}` was accepted", t.name());
        }
    }
    assert!(r.metrics.values().all(|v| v.is_finite()), "a non-finite metric was accepted");
    match (task.mask_bits, &r.mask) {
        (Some(bits), Some(mask)) => assert_eq!(mask.len(), bits, "a mask of the wrong length was accepted"),
        (None, None) => {}
        (want, got) => panic!("mask expected {want:?}, accepted {:?}", got.as_ref().map(BitMask::len)),
    }
    match (task.feature_stats, &r.stats) {
        (Some(expect), Some(stats)) => accepted_stats(expect, task.train_samples, stats),
        (None, None) => {}
        (want, got) => panic!("statistics expected: {}, accepted: {}", want.is_some(), got.is_some()),
    }
    // What was accepted, sent again in any slicing, is accepted again bit for bit.
    let again = resend(task, r);
    assert!(same_bits(&again.parameters, &r.parameters), "a re-sent result differs");
}

fn accepted_stats(expect: StatsExpectation, train_samples: Option<u64>, stats: &[ClassStats]) {
    assert!(!stats.is_empty(), "statistics for no class were accepted");
    assert!(stats.windows(2).all(|w| w[0].class < w[1].class), "classes not ascending were accepted");
    let mut total = 0u64;
    for s in stats {
        assert!(s.class < expect.num_classes, "class {} was accepted", s.class);
        assert!(s.count > 0, "a count of 0 was accepted");
        total = total.saturating_add(s.count);
        assert_eq!((s.mean.len(), s.cov_upper.len()), (expect.dim, upper_len(expect.dim)));
        assert!(s.mean.iter().chain(&s.cov_upper).all(|v| v.is_finite()), "a non-finite statistic was accepted");
    }
    if let Some(max) = train_samples.filter(|&n| n > 0) {
        assert!(total <= max, "counts adding up to {total} > {max} samples were accepted");
    }
}

fn resend(task: &Task, r: &Received) -> Received {
    let stats = r.stats.as_ref().map(|s| strata_proto::stats::encode(s, task.feature_stats.map_or(0, |e| e.dim)));
    let metrics: Vec<_> = r.metrics.iter().map(|(k, &v)| scalar::metric(k, v)).collect();
    let parts = stream(&r.parameters, r.num_samples, metrics, r.mask.as_ref(), stats, 12);
    receive(task, &parts, true).expect("an accepted result, sent again, is accepted")
}

/// Bit-for-bit equality of two tensor sets (NaN-safe, sign-of-zero-aware).
pub fn same_bits(a: &TensorSet, b: &TensorSet) -> bool {
    a.len() == b.len()
        && a.tensors().iter().zip(b.tensors()).all(|(x, y)| {
            x.spec() == y.spec() && x.values().iter().map(|v| v.to_bits()).eq(y.values().iter().map(|v| v.to_bits()))
        })
}

/// A well-formed result stream: header, tensor slices of `chunk` bytes, mask and statistics slices.
pub fn stream(
    parameters: &TensorSet,
    num_samples: u64,
    metrics: Vec<pb::Metric>,
    mask: Option<&BitMask>,
    stats: Option<(pb::FeatureStatsSpec, Vec<u8>)>,
    chunk: usize,
) -> Vec<pb::ResultPart> {
    let header = pb::ResultHeader {
        run_id: "run".into(),
        round: 3,
        task_id: "r3-train-c0".into(),
        client_id: "00000000-0000-0000-0000-000000000000".into(),
        session: String::new(),
        num_samples,
        metrics,
        tensors: tensor_specs(parameters),
        total_bytes: parameters.byte_len() as u64,
        mask: mask.map(|m| pb::MaskSpec { num_bits: m.len() as u64 }),
        feature_stats: stats.as_ref().map(|(spec, _)| spec.clone()),
        secagg: None,
        resume_from_part: 0,
    };
    let part = |p| pb::ResultPart { part: Some(p) };
    let mut parts = vec![part(pb::result_part::Part::Header(header))];
    parts
        .extend(TensorSlices::new(Arc::new(parameters.clone()), chunk).map(|s| part(pb::result_part::Part::Tensor(s))));
    if let Some(mask) = mask {
        let slices = strata_proto::mask::mask_slices(mask, chunk);
        parts.extend(slices.into_iter().map(|s| part(pb::result_part::Part::Mask(s))));
    }
    if let Some((_, bytes)) = stats {
        let slices = strata_proto::stats::stats_slices(&bytes, chunk);
        parts.extend(slices.into_iter().map(|s| part(pb::result_part::Part::Stats(s))));
    }
    parts
}

/// A valid result for `task` whose values come from `values` (any f32 bits, cycled).
pub fn valid_stream(task: &Task, values: &[u32], chunk: usize) -> Vec<pb::ResultPart> {
    let mut next = values.iter().copied().cycle();
    let mut value = move || f32::from_bits(next.next().unwrap_or(0));
    let tensors = task
        .upload
        .iter()
        .map(|s| NamedTensor::new(s.name.clone(), s.shape.clone(), (0..s.numel()).map(|_| value()).collect()))
        .collect::<Result<Vec<_>, _>>()
        .expect("values fill their shapes");
    let parameters = TensorSet::new(tensors).expect("distinct names");
    let mask = task.mask_bits.map(|n| BitMask::from_bools((0..n).map(|i| value().to_bits() >> (i % 32) & 1 == 1)));
    let stats = task.feature_stats.map(|e| {
        let classes = [0u32, 2];
        let stats: Vec<ClassStats> = classes
            .iter()
            .map(|&class| ClassStats {
                class,
                count: u64::from(class) + 1,
                mean: (0..e.dim).map(|_| f64::from(value())).collect(),
                cov_upper: (0..upper_len(e.dim)).map(|_| f64::from(value())).collect(),
            })
            .collect();
        strata_proto::stats::encode(&stats, e.dim)
    });
    let num_samples = if task.training { task.train_samples.unwrap_or(7) } else { 0 };
    let metrics = vec![scalar::metric("accuracy", 0.5)];
    stream(&parameters, num_samples, metrics, mask.as_ref(), stats, chunk)
}

/// Reads length-delimited `ResultPart` messages; the flag is false when the bytes ended inside
/// one that does not decode (the stream broke).
pub fn decode_parts(mut bytes: &[u8]) -> (Vec<pb::ResultPart>, bool) {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        match pb::ResultPart::decode_length_delimited(&mut bytes) {
            Ok(part) => parts.push(part),
            Err(_) => return (parts, false),
        }
    }
    (parts, true)
}

/// The inverse of [`decode_parts`] (for seeds).
pub fn encode_parts(parts: &[pb::ResultPart]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for p in parts {
        p.encode_length_delimited(&mut bytes).expect("a Vec grows");
    }
    bytes
}
