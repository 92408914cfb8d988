//! Receiving one result stream, trusting nothing: the header is checked against what the task
//! expects (names, shapes, order, sizes, sample count, metrics, mask, statistics) before any
//! tensor byte is read, every later part as it arrives, and the whole once complete.
//!
//! Pure and synchronous, so that the server's gRPC handler and the fuzz targets (`fuzz/`)
//! drive the same code. The server adds what needs its state: the run, the round and the task
//! (its gate), and the final finiteness check that makes an update valid ([`finite`]).

use std::collections::HashMap;
use std::sync::Arc;

use strata_core::compression::Compression;

use strata_core::mask::BitMask;
use strata_core::records::metric;
use strata_core::tensor::{TensorSet, TensorSpec};
use strata_methods::ccvr::ClassStats;

use crate::assemble::{Assembler, AssemblyLimits, Decoding, spec_from_wire};
use crate::mask::MaskAssembler;
use crate::masked::MaskedAssembler;
use crate::secagg::{Answer, Expect, answer_from_wire};
use crate::stats::{StatsAssembler, StatsExpectation};
use crate::{pb, scalar};

/// Why a result was refused; `code` picks the gRPC status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The result does not match what the server expects (shapes, values, sizes).
    InvalidArgument,
    /// Right shape, wrong moment: another round, a task not given, a closed round.
    FailedPrecondition,
    /// The client already sent this result.
    AlreadyExists,
    /// The client is unknown or was not picked.
    PermissionDenied,
}

impl Refusal {
    /// A refusal of what the result says; the message is cut to [`MAX_MESSAGE_CHARS`] (it
    /// may quote what the client sent).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { code: RefusalCode::InvalidArgument, message: crate::text::clip(&message.into(), MAX_MESSAGE_CHARS) }
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self { code: RefusalCode::FailedPrecondition, message: crate::text::clip(&message.into(), MAX_MESSAGE_CHARS) }
    }
}

/// The longest refusal message: room for two quoted names and the reason.
pub const MAX_MESSAGE_CHARS: usize = 500;

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        match r.code {
            RefusalCode::InvalidArgument => tonic::Status::invalid_argument(r.message),
            RefusalCode::FailedPrecondition => tonic::Status::failed_precondition(r.message),
            RefusalCode::AlreadyExists => tonic::Status::already_exists(r.message),
            RefusalCode::PermissionDenied => tonic::Status::permission_denied(r.message),
        }
    }
}

/// What the server expects of one task's result.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The tensors the result must carry, in order (none for an evaluation).
    pub upload: &'a [TensorSpec],
    /// Whether the result is a training update: it must then declare its sample count.
    pub training: bool,
    /// The training samples the client reported about itself, if it did (0: not reported).
    pub train_samples: Option<u64>,
    /// The test samples the client reported about itself, if it did (0: not reported).
    pub test_samples: Option<u64>,
    /// The length of the mask the result must carry, if the task asks for one.
    pub mask_bits: Option<usize>,
    /// What the feature statistics must fit, if the task asks for them (`max_samples` is
    /// taken from `train_samples`).
    pub feature_stats: Option<StatsExpectation>,
    /// The secure-aggregation answer the task expects, if it is one of the protocol's stages
    /// (a TRAIN task that masks expects the masked vector and no tensors).
    pub secagg: Option<crate::secagg::Expect>,
    pub limits: AssemblyLimits,
    /// The run's compression of uploads, and what the task sent (what a change is taken from).
    pub compression: Compression,
    pub sent: Option<&'a Arc<TensorSet>>,
}

/// A complete result whose every part matched its header and the task.
#[derive(Debug)]
pub struct Received {
    pub num_samples: u64,
    pub parameters: TensorSet,
    pub mask: Option<BitMask>,
    pub stats: Option<Vec<ClassStats>>,
    pub metrics: HashMap<String, f64>,
    /// The secure-aggregation answer, its masked vector complete.
    pub secagg: Option<Answer>,
}

/// One result stream being received: built from its header, fed every later part in order.
#[derive(Debug)]
pub struct ResultReceiver {
    num_samples: u64,
    metrics: HashMap<String, f64>,
    tensors: Assembler,
    mask: Option<MaskAssembler>,
    stats: Option<StatsAssembler>,
    secagg: Option<Answer>,
    masked: Option<MaskedAssembler>,
}

impl ResultReceiver {
    /// Checks the header against the task before anything is allocated for its tensors.
    pub fn new(header: &pb::ResultHeader, expected: Expected<'_>) -> Result<Self, Refusal> {
        let declared: Vec<TensorSpec> = header
            .tensors
            .iter()
            .map(spec_from_wire)
            .collect::<Result<_, _>>()
            .map_err(|e| Refusal::invalid(e.to_string()))?;
        header_specs(expected.upload, &declared)?;
        if expected.training {
            num_samples(header.num_samples, expected.train_samples)?;
        }
        metrics(&header.metrics, &expected)?;
        let mask = match (expected.mask_bits, header.mask.as_ref()) {
            (Some(bits), Some(spec)) if spec.num_bits == bits as u64 => Some(MaskAssembler::new(bits)),
            (Some(bits), Some(spec)) => {
                return Err(Refusal::invalid(format!(
                    "the mask has {} bits, but this task's upload has {bits} masked entries",
                    spec.num_bits
                )));
            }
            (Some(bits), None) => {
                return Err(Refusal::invalid(format!(
                    "this task needs a mask of {bits} bits, and the result has none"
                )));
            }
            (None, Some(_)) => return Err(Refusal::invalid("this task takes no mask")),
            (None, None) => None,
        };
        let stats = match (expected.feature_stats, header.feature_stats.as_ref()) {
            (Some(expect), Some(spec)) => {
                let expect = StatsExpectation { max_samples: expected.train_samples.filter(|&n| n > 0), ..expect };
                Some(
                    StatsAssembler::new(spec, expect)
                        .map_err(|e| Refusal::invalid(format!("feature statistics: {e}")))?,
                )
            }
            (Some(_), None) => {
                return Err(Refusal::invalid("this task needs feature statistics, and the result has none"));
            }
            (None, Some(_)) => return Err(Refusal::invalid("this task takes no feature statistics")),
            (None, None) => None,
        };
        let decoding = Decoding { compression: expected.compression, reference: expected.sent.cloned() };
        let tensors = Assembler::reusing(&header.tensors, header.total_bytes, expected.limits, None, decoding)
            .map_err(|e| Refusal::invalid(e.to_string()))?;
        let secagg =
            answer_from_wire(expected.secagg, header.secagg.as_ref()).map_err(|e| Refusal::invalid(e.to_string()))?;
        let masked = match expected.secagg {
            Some(Expect::Masked { values, modulus }) => Some(MaskedAssembler::new(values, modulus)),
            _ => None,
        };
        Ok(Self {
            num_samples: header.num_samples,
            metrics: scalar::metrics_map(&header.metrics),
            tensors,
            mask,
            stats,
            secagg,
            masked,
        })
    }

    /// Bytes the result's tensors take once assembled (f32, however compressed they travel).
    pub fn assembled_bytes(&self) -> u64 {
        self.tensors.assembled_bytes()
    }

    /// Takes the next part of the stream (every part after the header).
    pub fn push(&mut self, part: &pb::ResultPart) -> Result<(), Refusal> {
        match &part.part {
            Some(pb::result_part::Part::Tensor(slice)) => {
                self.tensors.push(slice).map_err(|e| Refusal::invalid(e.to_string()))
            }
            Some(pb::result_part::Part::Header(_)) => {
                Err(Refusal::invalid("a result stream carries exactly one header, first"))
            }
            Some(pb::result_part::Part::Mask(slice)) => match self.mask.as_mut() {
                Some(m) => m.push(slice).map_err(|e| Refusal::invalid(e.to_string())),
                None => Err(Refusal::invalid("this task takes no mask")),
            },
            Some(pb::result_part::Part::Stats(slice)) => match self.stats.as_mut() {
                Some(s) => s.push(slice).map_err(|e| Refusal::invalid(format!("feature statistics: {e}"))),
                None => Err(Refusal::invalid("this task takes no feature statistics")),
            },
            Some(pb::result_part::Part::Masked(slice)) => match self.masked.as_mut() {
                Some(m) => m.push(slice).map_err(|e| Refusal::invalid(e.to_string())),
                None => Err(Refusal::invalid("this task takes no masked vector")),
            },
            None => Err(Refusal::invalid("empty result part")),
        }
    }

    /// The result, once the stream has ended with every declared byte received.
    pub fn finish(self) -> Result<Received, Refusal> {
        let parameters = self.tensors.finish().map_err(|e| Refusal::invalid(e.to_string()))?;
        let mask = self.mask.map(|m| m.finish()).transpose().map_err(|e| Refusal::invalid(format!("mask: {e}")))?;
        let stats = self
            .stats
            .map(|s| s.finish())
            .transpose()
            .map_err(|e| Refusal::invalid(format!("feature statistics: {e}")))?;
        let secagg = match (self.secagg, self.masked) {
            (Some(Answer::Masked(_)), Some(m)) => {
                Some(Answer::Masked(m.finish().map_err(|e| Refusal::invalid(e.to_string()))?))
            }
            (answer, _) => answer,
        };
        Ok(Received { num_samples: self.num_samples, parameters, mask, stats, metrics: self.metrics, secagg })
    }
}

/// Checks the declared tensors against what the server expects from this client, in order.
pub fn header_specs(expected: &[TensorSpec], declared: &[TensorSpec]) -> Result<(), Refusal> {
    for (i, spec) in declared.iter().enumerate() {
        match expected.get(i) {
            Some(e) if e.name != spec.name => {
                return Err(match expected.iter().position(|x| x.name == spec.name) {
                    Some(_) => Refusal::invalid(format!(
                        "tensor `{}` is at position {i}, but the server expects `{}` there (tensors must follow the model's order)",
                        crate::text::shown(&spec.name),
                        e.name
                    )),
                    None => Refusal::invalid(format!(
                        "tensor `{}` is not part of this task's upload (expected `{}`)",
                        crate::text::shown(&spec.name),
                        e.name
                    )),
                });
            }
            Some(e) if e.shape != spec.shape => {
                return Err(Refusal::invalid(format!(
                    "tensor `{}` has shape {:?}, but the model expects {:?}",
                    spec.name, spec.shape, e.shape
                )));
            }
            Some(_) => {}
            None => {
                return Err(Refusal::invalid(format!(
                    "tensor `{}` is one more than the {} tensors this task uploads",
                    crate::text::shown(&spec.name),
                    expected.len()
                )));
            }
        }
    }
    if declared.len() < expected.len() {
        return Err(Refusal::invalid(format!(
            "the result has {} tensors but this task uploads {}: `{}` is missing",
            declared.len(),
            expected.len(),
            expected[declared.len()].name
        )));
    }
    Ok(())
}

/// Checks the sample count a training result declares.
pub fn num_samples(declared: u64, known_train_samples: Option<u64>) -> Result<(), Refusal> {
    if declared == 0 {
        return Err(Refusal::invalid("num_samples is 0: a training result must say how many samples it trained on"));
    }
    match known_train_samples {
        // Its weight in an average is what it said about itself (checked by the server against
        // its bounds), so a client that said nothing cannot choose one with its result.
        None | Some(0) => Err(Refusal::invalid(
            "this client has not reported its training samples (ClientCapabilities.train_samples, at join or in a poll): \
             a training result's weight must match them",
        )),
        Some(known) if declared != known => Err(Refusal::invalid(format!(
            "num_samples is {declared}, but this client reported {known} training samples about itself"
        ))),
        Some(_) => Ok(()),
    }
}

/// Checks the metrics a result reports against what they can be, before any is recorded:
/// finite; accuracies in [0, 1]; losses and seconds not negative; sample counts whole and at
/// most what the client reported about itself (none, if it reported nothing: a count is an
/// accuracy's weight in a round's). Unknown names are let through (and unused).
pub fn metrics(metrics: &[pb::Metric], expected: &Expected<'_>) -> Result<(), Refusal> {
    for m in metrics {
        let (name, v) = (crate::text::shown(&m.name), m.value);
        let refuse = |why: String| Err(Refusal::invalid(format!("metric `{name}` is {v}: {why}")));
        if !v.is_finite() {
            return Err(Refusal::invalid(format!("metric `{name}` is not finite ({v})")));
        }
        let (reported, which) = match m.name.as_str() {
            metric::TRAIN_SAMPLES => (expected.train_samples, "training"),
            metric::TEST_SAMPLES => (expected.test_samples, "test"),
            _ => (None, ""),
        };
        match m.name.as_str() {
            metric::ACCURACY | metric::ACCURACY_TRAINED | metric::GLOBAL_ACCURACY if !(0.0..=1.0).contains(&v) => {
                return refuse("an accuracy is in [0, 1]".into());
            }
            metric::TRAIN_LOSS | metric::TRAIN_SECONDS | metric::DP_SGD_EPSILON | metric::SECAGG_SECONDS if v < 0.0 => {
                return refuse("it cannot be negative".into());
            }
            metric::DP_UNCLIPPED if v != 0.0 && v != 1.0 => return refuse("it is a bit: 0 or 1".into()),
            metric::TRAIN_SAMPLES | metric::TEST_SAMPLES if v < 0.0 || v.fract() != 0.0 => {
                return refuse("a sample count is a whole number".into());
            }
            metric::TRAIN_SAMPLES | metric::TEST_SAMPLES => match reported.unwrap_or(0) {
                0 if v > 0.0 => {
                    return refuse(format!(
                        "this client has not reported its {which} samples (ClientCapabilities), so it may count none"
                    ));
                }
                known if v > known as f64 => return refuse(format!("this client reported {known} about itself")),
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

/// Checks that every value of an assembled set is finite.
pub fn finite(parameters: &TensorSet) -> Result<(), Refusal> {
    for t in parameters.tensors() {
        if let Some(i) = t.first_non_finite() {
            return Err(Refusal::invalid(format!(
                "tensor `{}` holds a non-finite value ({}) at flat index {i}",
                t.name(),
                t.values()[i]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use strata_core::tensor::NamedTensor;

    use super::*;
    use crate::chunk::{TensorSlices, tensor_specs};

    fn spec(name: &str, shape: &[usize]) -> TensorSpec {
        TensorSpec { name: name.into(), shape: shape.to_vec() }
    }

    #[test]
    fn header_must_match_names_shapes_and_order() {
        let expected = [spec("body.w", &[2, 3]), spec("head.w", &[3])];
        assert!(header_specs(&expected, &expected).is_ok());
        let err = header_specs(&expected, &[spec("body.w", &[3, 2]), spec("head.w", &[3])]).unwrap_err();
        assert!(err.message.contains("shape [3, 2]") && err.message.contains("[2, 3]"), "{err}");
        let err = header_specs(&expected, &[spec("body.w", &[2, 3])]).unwrap_err();
        assert!(err.message.contains("`head.w` is missing"), "{err}");
        let err = header_specs(&expected, &[spec("head.w", &[3]), spec("body.w", &[2, 3])]).unwrap_err();
        assert!(err.message.contains("order"), "{err}");
        let err = header_specs(&expected, &[spec("body.w", &[2, 3]), spec("evil", &[3])]).unwrap_err();
        assert!(err.message.contains("`evil`"), "{err}");
        let mut more = expected.to_vec();
        more.push(spec("extra", &[1]));
        assert!(header_specs(&expected, &more).is_err());
    }

    #[test]
    fn non_finite_values_are_refused() {
        let bad = TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![1.0, f32::INFINITY]).unwrap()]).unwrap();
        let err = finite(&bad).unwrap_err();
        assert_eq!(err.code, RefusalCode::InvalidArgument);
        assert!(err.message.contains("`w`") && err.message.contains("index 1"), "{err}");
        let good = TensorSet::new(vec![NamedTensor::new("w", vec![1], vec![1.0]).unwrap()]).unwrap();
        assert!(finite(&good).is_ok());
    }

    #[test]
    fn sample_counts_must_be_positive_and_match_what_the_client_declared() {
        assert!(num_samples(0, None).is_err());
        assert!(num_samples(10, Some(10)).is_ok());
        // A client that said nothing about itself cannot pick its weight (issue 14, item 3).
        assert!(num_samples(u64::MAX, None).unwrap_err().message.contains("has not reported its training samples"));
        assert!(num_samples(10, Some(0)).is_err(), "0 means the client did not say");
        assert!(num_samples(1_000_000, Some(10)).unwrap_err().message.contains("10 training samples"));
    }

    fn model() -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("body.w", vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, 3.5, -0.25]).unwrap(),
            NamedTensor::new("head.b", vec![2], vec![1.0, -2.0]).unwrap(),
        ])
        .unwrap()
    }

    fn expected(upload: &[TensorSpec]) -> Expected<'_> {
        Expected {
            upload,
            training: true,
            train_samples: Some(7),
            test_samples: Some(3),
            mask_bits: None,
            feature_stats: None,
            secagg: None,
            limits: AssemblyLimits::default(),
            compression: Default::default(),
            sent: None,
        }
    }

    #[test]
    fn a_masked_vector_comes_whole_in_the_ring_or_is_refused() {
        use crate::secagg::{Answer, Expect, answer_to_wire};
        let masked = Expected { upload: &[], secagg: Some(Expect::Masked { values: 5, modulus: 16 }), ..expected(&[]) };
        let header = |n: u64| pb::ResultHeader {
            num_samples: 7,
            secagg: Some(answer_to_wire(&Answer::Masked(vec![0; n as usize]))),
            ..Default::default()
        };
        let parts = |values: &[u32]| -> Vec<pb::ResultPart> {
            crate::masked::masked_slices(values, 8)
                .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Masked(s)) })
                .collect()
        };
        let receive = |h: &pb::ResultHeader, values: &[u32]| -> Result<Received, Refusal> {
            let mut r = ResultReceiver::new(h, masked)?;
            parts(values).iter().try_for_each(|p| r.push(p))?;
            r.finish()
        };
        let got = receive(&header(5), &[1, 2, 3, 15, 0]).unwrap();
        assert_eq!(got.secagg, Some(Answer::Masked(vec![1, 2, 3, 15, 0])));
        assert!(receive(&header(4), &[1, 2, 3, 4]).unwrap_err().message.contains("5"), "length checked in the header");
        assert!(receive(&header(5), &[1, 2, 3, 16, 0]).unwrap_err().message.contains("outside the ring"));
        assert!(receive(&header(5), &[1, 2, 3]).unwrap_err().message.contains("3 of 5"));
        let plain = pb::ResultHeader { secagg: None, ..header(5) };
        assert!(receive(&plain, &[]).unwrap_err().message.contains("none"), "a masking task needs its answer");
        // A task that takes no answer refuses one.
        let err = ResultReceiver::new(&header(5), expected(&[])).unwrap_err();
        assert!(err.message.contains("no secure-aggregation answer"), "{err}");
    }

    fn header(set: &TensorSet) -> pb::ResultHeader {
        pb::ResultHeader {
            num_samples: 7,
            tensors: tensor_specs(set),
            total_bytes: set.byte_len() as u64,
            metrics: vec![scalar::metric("accuracy", 0.5)],
            ..Default::default()
        }
    }

    fn tensor_parts(set: &TensorSet, chunk: usize) -> Vec<pb::ResultPart> {
        TensorSlices::new(Arc::new(set.clone()), chunk)
            .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(s)) })
            .collect()
    }

    fn receive(
        header: &pb::ResultHeader,
        parts: &[pb::ResultPart],
        expected: Expected<'_>,
    ) -> Result<Received, Refusal> {
        let mut receiver = ResultReceiver::new(header, expected)?;
        for part in parts {
            receiver.push(part)?;
        }
        receiver.finish()
    }

    #[test]
    fn a_whole_result_is_received_bit_for_bit() {
        let set = model();
        let specs = set.specs();
        let got = receive(&header(&set), &tensor_parts(&set, 8), expected(&specs)).unwrap();
        assert_eq!(got.parameters, set);
        assert_eq!((got.num_samples, got.metrics.get("accuracy")), (7, Some(&0.5)));
    }

    #[test]
    fn each_part_is_checked_against_the_header_and_the_task() {
        let set = model();
        let specs = set.specs();
        let parts = tensor_parts(&set, 8);
        let refused = |header: &pb::ResultHeader, parts: &[pb::ResultPart], expected: Expected<'_>| {
            receive(header, parts, expected).unwrap_err().message
        };
        let mut nan_metric = header(&set);
        nan_metric.metrics.push(scalar::metric("loss", f64::NAN));
        assert!(refused(&nan_metric, &parts, expected(&specs)).contains("metric `loss` is not finite"));
        let wrong_count = pb::ResultHeader { num_samples: 8, ..header(&set) };
        assert!(refused(&wrong_count, &parts, expected(&specs)).contains("reported 7"));
        let eval = Expected { training: false, ..expected(&specs) };
        assert!(receive(&wrong_count, &parts, eval).is_ok(), "an evaluation's sample count is not a weight");
        let with_mask = pb::ResultHeader { mask: Some(pb::MaskSpec { num_bits: 8 }), ..header(&set) };
        assert!(refused(&with_mask, &parts, expected(&specs)).contains("takes no mask"));
        assert!(
            refused(&header(&set), &parts, Expected { mask_bits: Some(8), ..expected(&specs) })
                .contains("needs a mask")
        );
        let mut swapped = parts.clone();
        swapped.swap(0, 1);
        assert!(refused(&header(&set), &swapped, expected(&specs)).contains("out of order"));
        let mut second_header = parts.clone();
        second_header.insert(1, pb::ResultPart { part: Some(pb::result_part::Part::Header(header(&set))) });
        assert!(refused(&header(&set), &second_header, expected(&specs)).contains("exactly one header"));
        let empty = [pb::ResultPart { part: None }];
        assert!(refused(&header(&set), &empty, expected(&specs)).contains("empty result part"));
        let stats = [pb::ResultPart { part: Some(pb::result_part::Part::Stats(pb::StatsSlice::default())) }];
        assert!(refused(&header(&set), &stats, expected(&specs)).contains("no feature statistics"));
        assert!(refused(&header(&set), &parts[..parts.len() - 1], expected(&specs)).contains("incomplete"));
        let short = pb::ResultHeader { total_bytes: 4, ..header(&set) };
        assert!(refused(&short, &parts, expected(&specs)).contains("declares 4 bytes"));
    }

    #[test]
    fn metrics_out_of_their_range_are_refused_by_name() {
        let specs = model().specs();
        let check = |name: &str, value: f64| metrics(&[scalar::metric(name, value)], &expected(&specs));
        assert!(
            check("accuracy", 0.75).is_ok() && check("train_samples", 7.0).is_ok() && check("custom", -1e9).is_ok()
        );
        for (name, value, why) in [
            ("accuracy", 1.5, "[0, 1]"),
            ("global_accuracy", -0.1, "[0, 1]"),
            ("train_loss", -2.0, "negative"),
            ("accuracy_trained", f64::NAN, "not finite"),
            ("test_samples", 2.5, "whole number"),
            ("test_samples", 1.8e19, "reported 3"),
            ("train_samples", 8.0, "reported 7"),
        ] {
            let refusal = check(name, value).expect_err(name);
            let status = tonic::Status::from(refusal);
            assert!(status.message().contains(name) && status.message().contains(why), "{}", status.message());
        }
        // A client that said nothing about itself counts no samples, whatever it reports.
        let silent = Expected { train_samples: Some(0), test_samples: None, ..expected(&specs) };
        for name in ["test_samples", "train_samples"] {
            let status = tonic::Status::from(metrics(&[scalar::metric(name, 1.8e19)], &silent).expect_err(name));
            assert!(status.message().contains("has not reported its"), "{}", status.message());
            assert!(metrics(&[scalar::metric(name, 0.0)], &silent).is_ok(), "none is what it said");
        }
        let long = "m".repeat(100_000);
        let status = tonic::Status::from(check(&format!("{long}\n"), f64::INFINITY).unwrap_err());
        assert!(!status.message().contains('\n'));
        assert!(status.message().len() < 200, "a client's name is cut: {} bytes", status.message().len());
    }
}
