//! How one tensor's values travel: as f32, f16, bf16 or int8 with a scale; dense or as sparse
//! (index, value) entries; as themselves or as the change from the tensor the task sent.
//! Which of these a receiver takes follows the run's [`Compression`] for that direction; plain
//! f32 is always taken.

use half::{bf16, f16};
use strata_core::compression::Compression;
use strata_core::tensor::TensorSpec;

use crate::pb;
use crate::wire_error::WireError;

/// Bytes of a sparse entry's index (u32, little-endian).
pub const INDEX_BYTES: usize = 4;

/// One value's wire type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueCoding {
    F32,
    F16,
    Bf16,
    /// A signed byte q standing for `q * scale`.
    I8 {
        scale: f32,
    },
}

impl ValueCoding {
    pub fn bytes(self) -> usize {
        match self {
            ValueCoding::F32 => 4,
            ValueCoding::F16 | ValueCoding::Bf16 => 2,
            ValueCoding::I8 { .. } => 1,
        }
    }

    /// The value in `b`, exactly [`ValueCoding::bytes`] long.
    #[inline]
    pub fn decode(self, b: &[u8]) -> f32 {
        match self {
            ValueCoding::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            ValueCoding::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            ValueCoding::Bf16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            ValueCoding::I8 { scale } => f32::from(b[0] as i8) * scale,
        }
    }

    /// Decodes `bytes` (whole values) into `target`, adding each to `base`'s value when given.
    /// The coding is chosen once for the run, not per value, so that each case is a plain loop
    /// the compiler vectorizes (plain f32 becomes a copy); the values are those of
    /// [`ValueCoding::decode`].
    pub fn decode_into(self, bytes: &[u8], base: Option<&[f32]>, target: &mut [f32]) {
        fn each(target: &mut [f32], bytes: &[u8], width: usize, base: Option<&[f32]>, f: impl Fn(&[u8]) -> f32) {
            let units = bytes.chunks_exact(width);
            match base {
                Some(base) => target.iter_mut().zip(units).zip(base).for_each(|((v, b), r)| *v = r + f(b)),
                None => target.iter_mut().zip(units).for_each(|(v, b)| *v = f(b)),
            }
        }
        match self {
            ValueCoding::F32 => each(target, bytes, 4, base, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ValueCoding::F16 => each(target, bytes, 2, base, |b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ValueCoding::Bf16 => each(target, bytes, 2, base, |b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ValueCoding::I8 { scale } => each(target, bytes, 1, base, |b| f32::from(b[0] as i8) * scale),
        }
    }

    /// Writes `v` into `out` ([`ValueCoding::bytes`] long). `dither`, uniform in [0, 1), makes
    /// int8's rounding stochastic: ⌊v/scale + dither⌋ is v/scale on average.
    #[inline]
    pub fn encode(self, v: f32, dither: f32, out: &mut [u8]) {
        match self {
            ValueCoding::F32 => out.copy_from_slice(&v.to_le_bytes()),
            ValueCoding::F16 => out.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
            ValueCoding::Bf16 => out.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
            ValueCoding::I8 { scale } => {
                let q = if scale > 0.0 { (v / scale + dither).floor().clamp(-127.0, 127.0) } else { 0.0 };
                out[0] = (q as i8) as u8;
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            ValueCoding::F32 => "f32",
            ValueCoding::F16 => "fp16",
            ValueCoding::Bf16 => "bf16",
            ValueCoding::I8 { .. } => "int8",
        }
    }
}

/// How one tensor travels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    pub values: ValueCoding,
    /// Sparse: this many (index, value) entries instead of every value.
    pub sparse: Option<u64>,
    /// The values are the change from the tensor of the same name the task sent.
    pub delta: bool,
}

impl Encoding {
    /// Dense f32, the values themselves.
    pub const PLAIN: Encoding = Encoding { values: ValueCoding::F32, sparse: None, delta: false };

    /// Bytes of one dense value or one sparse entry.
    pub fn unit_bytes(&self) -> usize {
        self.values.bytes() + if self.sparse.is_some() { INDEX_BYTES } else { 0 }
    }

    /// Values (dense) or entries (sparse) of a tensor of `numel` values.
    pub fn units(&self, numel: usize) -> u64 {
        self.sparse.unwrap_or(numel as u64)
    }

    /// Reads a wire spec's encoding, refusing dtypes Strata never sends and bad scales.
    pub fn from_wire(spec: &pb::TensorSpec) -> Result<Self, WireError> {
        let name = || crate::text::shown(&spec.name);
        let values = match pb::Dtype::try_from(spec.dtype) {
            Ok(pb::Dtype::F32) => ValueCoding::F32,
            Ok(pb::Dtype::F16) => ValueCoding::F16,
            Ok(pb::Dtype::Bf16) => ValueCoding::Bf16,
            Ok(pb::Dtype::I8) if spec.scale.is_finite() && spec.scale >= 0.0 => ValueCoding::I8 { scale: spec.scale },
            Ok(pb::Dtype::I8) => return Err(WireError::BadScale { name: name(), scale: spec.scale }),
            // A number the protocol does not know is named as the number it is.
            other => {
                let dtype = other.map_or_else(|_| format!("{} (not a dtype)", spec.dtype), |d| d.as_str_name().into());
                return Err(WireError::UnsupportedDtype { name: name(), dtype });
            }
        };
        Ok(Encoding { values, sparse: spec.sparse_entries, delta: spec.delta })
    }

    /// Writes this encoding into `spec` (whose name and shape are set).
    pub fn to_wire(&self, spec: &mut pb::TensorSpec) {
        let (dtype, scale) = match self.values {
            ValueCoding::F32 => (pb::Dtype::F32, 0.0),
            ValueCoding::F16 => (pb::Dtype::F16, 0.0),
            ValueCoding::Bf16 => (pb::Dtype::Bf16, 0.0),
            ValueCoding::I8 { scale } => (pb::Dtype::I8, scale),
        };
        spec.dtype = dtype as i32;
        spec.scale = scale;
        spec.sparse_entries = self.sparse;
        spec.delta = self.delta;
    }

    /// Whether a receiver that takes `compression` takes this: plain f32 always, otherwise the
    /// compression's own form (a change only where the receiver has what it changes).
    pub fn accepted_under(&self, compression: Compression) -> bool {
        if *self == Encoding::PLAIN {
            return true;
        }
        matches!(
            (compression, self.values, self.sparse),
            (Compression::F16, ValueCoding::F16, None)
                | (Compression::Bf16, ValueCoding::Bf16, None)
                | (Compression::Int8, ValueCoding::I8 { .. }, None)
                | (Compression::TopK { .. }, ValueCoding::F32, Some(_))
        )
    }

    /// E.g. `int8 change`, `f32 sparse`, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.values.name().to_string();
        if self.sparse.is_some() {
            s.push_str(" sparse");
        }
        if self.delta {
            s.push_str(" change");
        }
        s
    }
}

/// A tensor's name and shape as a wire spec, as f32 (an [`Encoding`] writes itself over it).
pub fn spec_to_wire(spec: &TensorSpec) -> pb::TensorSpec {
    pb::TensorSpec {
        name: spec.name.clone(),
        dtype: pb::Dtype::F32 as i32,
        shape: spec.shape.iter().map(|&d| d as u64).collect(),
        ..Default::default()
    }
}

/// The encoding a sender uses for a tensor under `compression`, before its scale or entry
/// count is known; `has_reference`: the receiver holds the tensor this one changes.
pub fn encoding_for(compression: Compression, has_reference: bool) -> Encoding {
    let values = match compression {
        Compression::None | Compression::TopK { .. } => ValueCoding::F32,
        Compression::F16 => ValueCoding::F16,
        Compression::Bf16 => ValueCoding::Bf16,
        Compression::Int8 => ValueCoding::I8 { scale: 0.0 },
    };
    match compression {
        Compression::None => Encoding::PLAIN,
        // A sparse tensor without a reference would zero what it leaves out: send it whole.
        Compression::TopK { .. } if !has_reference => Encoding::PLAIN,
        Compression::TopK { .. } => Encoding { values, sparse: Some(0), delta: true },
        _ => Encoding { values, sparse: None, delta: has_reference },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_coding_round_trips_within_its_precision() {
        let mut out = [0u8; 4];
        for v in [0.0f32, 1.0, -2.5, 1e-3, 1.2345, -65000.0] {
            ValueCoding::F32.encode(v, 0.0, &mut out);
            assert_eq!(ValueCoding::F32.decode(&out).to_bits(), v.to_bits());
            ValueCoding::F16.encode(v, 0.0, &mut out[..2]);
            assert!((ValueCoding::F16.decode(&out[..2]) - v).abs() <= v.abs() * 1e-3, "{v}");
            ValueCoding::Bf16.encode(v, 0.0, &mut out[..2]);
            assert!((ValueCoding::Bf16.decode(&out[..2]) - v).abs() <= v.abs() * 8e-3, "{v}");
        }
        let int8 = ValueCoding::I8 { scale: 0.5 };
        int8.encode(1.2, 0.0, &mut out[..1]);
        assert_eq!(int8.decode(&out[..1]), 1.0, "rounded down without dither");
        int8.encode(1.2, 0.99, &mut out[..1]);
        assert_eq!(int8.decode(&out[..1]), 1.5, "and up with");
        int8.encode(1e9, 0.5, &mut out[..1]);
        assert_eq!(int8.decode(&out[..1]), 63.5, "clamped to ±127 steps");
        int8.encode(-1e9, 0.5, &mut out[..1]);
        assert_eq!(int8.decode(&out[..1]), -63.5);
        ValueCoding::I8 { scale: 0.0 }.encode(3.0, 0.5, &mut out[..1]);
        assert_eq!(ValueCoding::I8 { scale: 0.0 }.decode(&out[..1]), 0.0, "an all-zero tensor");
    }

    #[test]
    fn specs_carry_the_encoding_and_bad_ones_are_named() {
        let mut spec = pb::TensorSpec { name: "w".into(), shape: vec![4], ..Default::default() };
        let e = Encoding { values: ValueCoding::I8 { scale: 0.25 }, sparse: None, delta: true };
        e.to_wire(&mut spec);
        assert_eq!(Encoding::from_wire(&spec).unwrap(), e);
        spec.scale = f32::NAN;
        assert!(matches!(Encoding::from_wire(&spec), Err(WireError::BadScale { .. })));
        spec.scale = -1.0;
        assert!(matches!(Encoding::from_wire(&spec), Err(WireError::BadScale { .. })));
        spec.dtype = 99;
        let err = Encoding::from_wire(&spec).unwrap_err().to_string();
        assert!(err.contains("99 (not a dtype)"), "{err}");
        spec.dtype = pb::Dtype::I64 as i32;
        assert!(Encoding::from_wire(&spec).unwrap_err().to_string().contains("DTYPE_I64"));
    }

    #[test]
    fn a_receiver_takes_plain_f32_and_its_own_compression_only() {
        let int8 = encoding_for(Compression::Int8, true);
        assert!(int8.accepted_under(Compression::Int8));
        assert!(!int8.accepted_under(Compression::F16) && !int8.accepted_under(Compression::None));
        assert!(Encoding::PLAIN.accepted_under(Compression::Int8));
        let topk = encoding_for(Compression::TopK { ratio: 0.1 }, true);
        assert!(topk.accepted_under(Compression::TopK { ratio: 0.5 }));
        assert!(!topk.accepted_under(Compression::Int8));
        assert_eq!(encoding_for(Compression::TopK { ratio: 0.1 }, false), Encoding::PLAIN);
        assert!(!encoding_for(Compression::F16, false).delta);
        assert_eq!(topk.describe(), "f32 sparse change");
    }
}
