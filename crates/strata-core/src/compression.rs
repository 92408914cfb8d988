//! How parameters are compressed on the wire, per direction, as the configuration and the CLI
//! write it (`[compression] up = "int8"`, `--compress up=int8,down=fp16`). Encoding and
//! decoding are `strata_proto`'s job; this is the setting both sides read from the run's
//! configuration, which the server sends at join (so a client compresses as the server says).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config_error::InvalidValue;

/// Every form [`Compression::from_str`] accepts, for error messages.
const FORMS: &str = "none, fp16, bf16, int8 or topk:RATIO (0 < RATIO <= 1, uploads only)";

/// How one direction's tensors travel.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    /// `none`: f32, bit for bit.
    #[default]
    None,
    /// `fp16`: IEEE half precision, rounded to nearest.
    F16,
    /// `bf16`: bfloat16 (f32's exponent, 8 bits of mantissa), rounded to nearest.
    Bf16,
    /// `int8`: one byte per value and one f32 scale per tensor (its largest magnitude / 127),
    /// rounded stochastically, so that the rounding is unbiased.
    Int8,
    /// `topk:RATIO`: the RATIO largest-magnitude entries of each tensor's change, as
    /// (index, f32) pairs; the client keeps what it did not send and adds it to its next
    /// update (error feedback). Uploads only: a download is a whole model, not a change.
    TopK { ratio: f64 },
}

impl Compression {
    /// Whether anything but plain f32 travels.
    pub fn is_on(&self) -> bool {
        *self != Compression::None
    }

    /// Checks the parameters of a value built in code, as parsing does.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        match *self {
            Compression::TopK { ratio } if !(ratio > 0.0 && ratio <= 1.0) => {
                Err(InvalidValue(format!("compression `{self}`: topk needs 0 < RATIO <= 1, e.g. topk:0.1")))
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for Compression {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || InvalidValue(format!("unknown compression `{s}`: expected {FORMS}"));
        let compression = match s.split_once(':') {
            None => match s {
                "none" => Compression::None,
                "fp16" => Compression::F16,
                "bf16" => Compression::Bf16,
                "int8" => Compression::Int8,
                _ => return Err(unknown()),
            },
            Some(("topk", ratio)) => {
                Compression::TopK { ratio: ratio.parse::<f64>().ok().filter(|r| r.is_finite()).ok_or_else(unknown)? }
            }
            Some(_) => return Err(unknown()),
        };
        compression.validate()?;
        Ok(compression)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::F16 => write!(f, "fp16"),
            Compression::Bf16 => write!(f, "bf16"),
            Compression::Int8 => write!(f, "int8"),
            Compression::TopK { ratio } => write!(f, "topk:{ratio}"),
        }
    }
}

impl TryFrom<String> for Compression {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> Self {
        c.to_string()
    }
}

/// `[compression]`: each direction's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Results from the clients: their tensors' change from what they downloaded (the
    /// tensors themselves where they downloaded none).
    pub up: Compression,
    /// Parameters to the clients.
    pub down: Compression,
}

impl CompressionConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.up.validate()?;
        self.down.validate()?;
        if let Compression::TopK { .. } = self.down {
            return Err(InvalidValue(format!(
                "compression.down `{}`: topk sends the largest entries of a change, and a download is a whole \
                 model; use fp16, bf16 or int8 for downloads",
                self.down
            )));
        }
        Ok(())
    }
}

/// `--compress`: `X` for both directions, or `up=X`, `down=Y`, `up=X,down=Y`.
impl FromStr for CompressionConfig {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = CompressionConfig::default();
        if !s.contains('=') {
            let both: Compression = s.parse()?;
            if let Compression::TopK { .. } = both {
                return Err(InvalidValue(format!(
                    "--compress {s}: topk applies to uploads only; write --compress up={s}"
                )));
            }
            return Ok(CompressionConfig { up: both, down: both });
        }
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("up", v)) => config.up = v.parse()?,
                Some(("down", v)) => config.down = v.parse()?,
                _ => {
                    return Err(InvalidValue(format!(
                        "--compress `{s}`: expected X for both directions, or up=X, down=Y, up=X,down=Y with X, Y \
                         one of {FORMS}"
                    )));
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_and_write_back() {
        for c in [
            Compression::None,
            Compression::F16,
            Compression::Bf16,
            Compression::Int8,
            Compression::TopK { ratio: 0.05 },
        ] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        for bad in ["int4", "topk", "topk:0", "topk:1.5", "topk:nan", "fp16:2", ""] {
            let err = bad.parse::<Compression>().unwrap_err().to_string();
            assert!(err.contains(bad) || bad.is_empty(), "{bad}: {err}");
        }
    }

    #[test]
    fn the_flag_sets_one_or_both_directions() {
        let both: CompressionConfig = "int8".parse().unwrap();
        assert_eq!((both.up, both.down), (Compression::Int8, Compression::Int8));
        let up: CompressionConfig = "up=topk:0.1".parse().unwrap();
        assert_eq!((up.up, up.down), (Compression::TopK { ratio: 0.1 }, Compression::None));
        let split: CompressionConfig = "up=int8,down=bf16".parse().unwrap();
        assert_eq!((split.up, split.down), (Compression::Int8, Compression::Bf16));
        assert!("topk:0.1".parse::<CompressionConfig>().unwrap_err().to_string().contains("uploads only"));
        assert!("down=topk:0.1".parse::<CompressionConfig>().unwrap_err().to_string().contains("whole model"));
        assert!("sideways=int8".parse::<CompressionConfig>().unwrap_err().to_string().contains("up=X"));
    }

    #[test]
    fn the_table_reads_as_toml() {
        #[derive(Deserialize)]
        struct Wrapper {
            compression: CompressionConfig,
        }
        let w: Wrapper = toml::from_str("[compression]\nup = \"topk:0.01\"\n").unwrap();
        assert_eq!(w.compression.up, Compression::TopK { ratio: 0.01 });
        assert_eq!(w.compression.down, Compression::None);
        assert!(toml::from_str::<Wrapper>("[compression]\nup = \"int3\"\n").is_err());
    }
}
