//! What is wrong with a tensor set on the wire: its header, an encoding, or a slice.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("tensor `{name}` has dtype {dtype}, which Strata never sends (f32, fp16, bf16, int8)")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor `{name}` is int8 with scale {scale}: a scale is finite and not negative")]
    BadScale { name: String, scale: f32 },
    #[error(
        "tensor `{name}` travels as {encoding}, but this run's compression here is {compression} (plain f32 is always taken)"
    )]
    NotAccepted { name: String, encoding: String, compression: String },
    #[error("tensor `{name}` is sent as a change, but the task sent no tensor `{name}` of its shape to change")]
    NoReference { name: String },
    #[error("tensor `{name}` declares {entries} sparse entries, more than its {numel} values")]
    TooManyEntries { name: String, entries: u64, numel: usize },
    #[error(
        "sparse entry of tensor `{name}` at index {index}: indices are below {numel} and strictly increasing{after}"
    )]
    SparseIndex { name: String, index: u32, numel: usize, after: String },
    #[error("tensor `{name}` has shape {shape:?}, whose size overflows")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor name `{0}` appears twice in the header")]
    DuplicateName(String),
    #[error("the header declares {declared} bytes, but its tensors need {actual}")]
    DeclaredSizeMismatch { declared: u64, actual: u64 },
    #[error("the tensors need {bytes} bytes, over the limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("slice for tensor index {index}, but the header declares {count} tensors")]
    UnknownTensor { index: u32, count: usize },
    #[error("slice of {len} bytes exceeds the chunk limit of {limit} bytes")]
    SliceTooLarge { len: usize, limit: usize },
    #[error("slice for tensor `{name}` out of order: expected {expected}")]
    OutOfOrder { name: String, expected: String },
    #[error("slice for tensor `{name}` at byte {offset} with {len} bytes runs past its {size} bytes")]
    Overflow { name: String, offset: u64, len: usize, size: usize },
    #[error("slice for tensor `{name}` is not a whole number of its {unit}-byte values ({len} bytes)")]
    Misaligned { name: String, len: usize, unit: usize },
    #[error("the stream ended with tensor `{name}` incomplete: {received} of {size} bytes")]
    Incomplete { name: String, received: usize, size: usize },
}
