//! Strata's wire protocol, and the only crate that sees prost types' insides.
//!
//! # Layout
//! - [`pb`]: the code generated from `proto/strata/v1/federation.proto`.
//! - [`chunk`]: cutting a [`TensorSet`](strata_core::tensor::TensorSet) into slices of at most
//!   [`MAX_CHUNK_BYTES`](chunk::MAX_CHUNK_BYTES), lazily, one slice in memory at a time.
//! - [`encoding`]: how one tensor's values travel (f32, fp16, bf16, int8; dense or sparse;
//!   values or their change), and which encodings a run's compression lets a receiver take.
//! - [`encode`]: a tensor set as it will travel under a compression (int8's scales, top-k's
//!   entries and the error feedback that keeps what they leave out).
//! - [`assemble`]: putting slices back together into one preallocated copy, checking every
//!   index, offset and size against the header.
//! - [`codec`]: prost's gRPC codec, with malformed messages refused as `INVALID_ARGUMENT`.
//! - [`mask`]: bit-packed masks in slices.
//! - [`masked`]: secure aggregation's masked vectors in slices, checked against the ring.
//! - [`secagg`]: secure aggregation's stage messages, to and from the protocol's types.
//! - [`stats`]: CCVR's per-class feature statistics in slices, checked on arrival.
//! - [`receive`]: one result stream checked against its task, header first, part by part.
//! - [`reason`]: refusals whose reason a program acts on, carried in the status details.
//! - [`scalar`]: metrics and parameter selections on the wire.
//! - [`wire_error`]: what is wrong with a tensor set on the wire.
//! - [`text`]: client-sent text cut and escaped for messages and logs.

pub mod assemble;
pub mod chunk;
pub mod codec;
pub mod encode;
pub mod encoding;
pub mod mask;
pub mod masked;
pub mod reason;
pub mod receive;
pub mod scalar;
pub mod secagg;
pub mod stats;
pub mod text;
pub mod wire_error;

/// Generated protocol types and tonic client/server stubs.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("strata.v1");
}

pub use assemble::{Assembler, Decoding, WireError};
pub use chunk::{
    CONNECTION_WINDOW_BYTES, DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, STREAM_WINDOW_BYTES, TensorSlices, tensor_specs,
};
pub use encode::Encoded;
