//! A valid result stream, edited: whatever the edits, the server accepts nothing that breaks
//! what an accepted result must be; with no edit, it accepts exactly the streams whose values
//! are all finite.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_proto::pb;
use strata_proto::pb::result_part::Part;

#[derive(Debug, Arbitrary)]
struct Input {
    task: u8,
    chunk: u16,
    values: Vec<u32>,
    edits: Vec<Edit>,
}

#[derive(Debug, Arbitrary)]
enum Edit {
    DropPart(u8),
    RepeatPart(u8),
    SwapParts(u8, u8),
    InsertEmptyPart(u8),
    InsertHeader(u8),
    SliceIndex(u8, u32),
    SliceOffset(u8, u64),
    SliceTruncate(u8, u16),
    SliceExtend(u8, Vec<u8>),
    FlipByte(u8, u16, u8),
    NumSamples(u64),
    TotalBytes(u64),
    Dtype(u8, i32),
    Shape(u8, Vec<u64>),
    Name(u8, String),
    DropSpec(u8),
    AddSpec(String, Vec<u64>),
    MaskBits(Option<u64>),
    Stats(Option<(u32, Vec<u32>, Vec<u64>)>),
    Metric(String, f64),
}

fn at(parts: &[pb::ResultPart], i: u8) -> usize {
    usize::from(i) % parts.len().max(1)
}

fn header(parts: &mut [pb::ResultPart]) -> Option<&mut pb::ResultHeader> {
    match parts.first_mut()?.part.as_mut()? {
        Part::Header(h) => Some(h),
        _ => None,
    }
}

/// The offset and data of a slice part of any kind.
fn slice(part: &mut pb::ResultPart) -> Option<(&mut u64, &mut Vec<u8>)> {
    match part.part.as_mut()? {
        Part::Tensor(s) => Some((&mut s.byte_offset, &mut s.data)),
        Part::Mask(s) => Some((&mut s.byte_offset, &mut s.data)),
        Part::Stats(s) => Some((&mut s.byte_offset, &mut s.data)),
        Part::Masked(s) => Some((&mut s.byte_offset, &mut s.data)),
        Part::Header(_) => None,
    }
}

fn apply(parts: &mut Vec<pb::ResultPart>, edit: Edit) {
    if parts.is_empty() {
        return;
    }
    match edit {
        Edit::DropPart(i) => {
            parts.remove(at(parts, i));
        }
        Edit::RepeatPart(i) => {
            let i = at(parts, i);
            parts.insert(i, parts[i].clone());
        }
        Edit::SwapParts(i, j) => {
            let (i, j) = (at(parts, i), at(parts, j));
            parts.swap(i, j);
        }
        Edit::InsertEmptyPart(i) => parts.insert(at(parts, i), pb::ResultPart { part: None }),
        Edit::InsertHeader(i) => {
            let first = parts[0].clone();
            parts.insert(at(parts, i), first);
        }
        Edit::SliceIndex(i, index) => {
            let i = at(parts, i);
            if let Some(Part::Tensor(s)) = parts[i].part.as_mut() {
                s.tensor_index = index;
            }
        }
        Edit::SliceOffset(i, offset) => {
            let i = at(parts, i);
            if let Some((o, _)) = slice(&mut parts[i]) {
                *o = offset;
            }
        }
        Edit::SliceTruncate(i, len) => {
            let i = at(parts, i);
            if let Some((_, data)) = slice(&mut parts[i]) {
                data.truncate(usize::from(len));
            }
        }
        Edit::SliceExtend(i, bytes) => {
            let i = at(parts, i);
            if let Some((_, data)) = slice(&mut parts[i]) {
                data.extend_from_slice(&bytes);
            }
        }
        Edit::FlipByte(i, pos, bits) => {
            let i = at(parts, i);
            if let Some((_, data)) = slice(&mut parts[i])
                && !data.is_empty()
            {
                let pos = usize::from(pos) % data.len();
                data[pos] ^= bits;
            }
        }
        Edit::NumSamples(n) => {
            if let Some(h) = header(parts) {
                h.num_samples = n;
            }
        }
        Edit::TotalBytes(n) => {
            if let Some(h) = header(parts) {
                h.total_bytes = n;
            }
        }
        Edit::Dtype(i, dtype) => {
            if let Some(h) = header(parts) {
                let i = usize::from(i) % h.tensors.len().max(1);
                if let Some(t) = h.tensors.get_mut(i) {
                    t.dtype = dtype;
                }
            }
        }
        Edit::Shape(i, shape) => {
            if let Some(h) = header(parts) {
                let i = usize::from(i) % h.tensors.len().max(1);
                if let Some(t) = h.tensors.get_mut(i) {
                    t.shape = shape;
                }
            }
        }
        Edit::Name(i, name) => {
            if let Some(h) = header(parts) {
                let i = usize::from(i) % h.tensors.len().max(1);
                if let Some(t) = h.tensors.get_mut(i) {
                    t.name = name;
                }
            }
        }
        Edit::DropSpec(i) => {
            if let Some(h) = header(parts)
                && !h.tensors.is_empty()
            {
                let i = usize::from(i) % h.tensors.len();
                h.tensors.remove(i);
            }
        }
        Edit::AddSpec(name, shape) => {
            if let Some(h) = header(parts) {
                h.tensors.push(pb::TensorSpec { name, dtype: pb::Dtype::F32 as i32, shape, ..Default::default() });
            }
        }
        Edit::MaskBits(bits) => {
            if let Some(h) = header(parts) {
                h.mask = bits.map(|num_bits| pb::MaskSpec { num_bits });
            }
        }
        Edit::Stats(spec) => {
            if let Some(h) = header(parts) {
                h.feature_stats = spec.map(|(dim, classes, counts)| pb::FeatureStatsSpec { dim, classes, counts });
            }
        }
        Edit::Metric(name, value) => {
            if let Some(h) = header(parts) {
                h.metrics.push(pb::Metric { name, value });
            }
        }
    }
}

/// Whether every f32 the stream carries in tensor and statistics slices is finite (slices cut
/// anywhere: statistics slices need not hold whole values).
fn all_finite(parts: &[pb::ResultPart]) -> bool {
    let (mut tensors, mut stats) = (Vec::new(), Vec::new());
    for p in parts {
        match &p.part {
            Some(Part::Tensor(s)) => tensors.extend_from_slice(&s.data),
            Some(Part::Stats(s)) => stats.extend_from_slice(&s.data),
            _ => {}
        }
    }
    [tensors, stats]
        .iter()
        .all(|bytes| bytes.chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()))
}

fuzz_target!(|input: Input| {
    let task = strata_fuzz::task(input.task);
    let values = if input.values.is_empty() { vec![0x3F80_0000] } else { input.values };
    let mut parts = strata_fuzz::valid_stream(&task, &values, usize::from(input.chunk).max(1));
    let unedited = input.edits.is_empty();
    for edit in input.edits.into_iter().take(16) {
        apply(&mut parts, edit);
    }
    // Every part crosses the wire: encoded and decoded by prost.
    let parts: Vec<pb::ResultPart> = parts
        .iter()
        .map(|p| pb::ResultPart::decode(p.encode_to_vec().as_slice()).expect("prost decodes what it encodes"))
        .collect();
    let accepted = strata_fuzz::run(&task, &parts, true).is_some();
    if unedited {
        assert_eq!(accepted, all_finite(&parts), "a valid stream was refused, or a non-finite one accepted");
    }
});
