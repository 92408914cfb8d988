//! The robust-aggregation rule as the configuration and the CLI write it (`median`,
//! `krum:1`, `norm-bound:median*1.5`, ...). The rule is configuration; applying it to a round's
//! updates is `strata_methods::robust`'s job.
//!
//! The rules, their conditions and defaults are pinned in `shared/methods/robust-aggregation.md`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config_error::InvalidValue;

/// Every form [`Defense::from_str`] accepts, for error messages.
const FORMS: &str = "none, norm-bound:M, norm-bound:median, norm-bound:median*K, median, trimmed-mean, \
                     trimmed-mean:BETA, krum:F or multi-krum:F[:M][:samples|:uniform]";

/// How the server combines the round's updates of the shared tensors. Written as in the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Defense {
    /// `none`: the method's own sample-weighted mean.
    #[default]
    None,
    /// `norm-bound:M`, `norm-bound:median` or `norm-bound:median*K` (Sun et al. 2019; FLAME's
    /// median bound): each update is scaled down to the bound, then the sample-weighted mean.
    NormBound(NormBound),
    /// `median`: the coordinate-wise median, unweighted (Yin et al. 2018; Flower's FedMedian).
    Median,
    /// `trimmed-mean` (β = 0.2, Flower's default) or `trimmed-mean:BETA`, 0 < β < 0.5: per
    /// coordinate, ⌊β·n⌋ values cut from each end and the rest averaged, unweighted (Yin et al. 2018).
    TrimmedMean { beta: f64 },
    /// `krum:F`: the one update closest to its n − f − 2 nearest neighbours (Blanchard et al. 2017).
    Krum { malicious: u32 },
    /// `multi-krum:F[:M][:samples|:uniform]`: the mean of the M best-scored updates (default
    /// M = n − f), weighted by samples (Flower's, the default) or uniformly (the paper's).
    MultiKrum { malicious: u32, keep: Option<u32>, weighting: Weighting },
}

/// The norm bound of [`Defense::NormBound`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormBound {
    /// A fixed bound M > 0 on each update's L2 norm.
    Fixed(f64),
    /// κ > 0 times the median of the round's update norms: a minority cannot raise it.
    Median(f64),
}

/// How Multi-Krum averages the updates it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Weighting {
    /// By training samples, as Flower does.
    #[default]
    Samples,
    /// Each kept update counts once, as in the paper.
    Uniform,
}

impl Defense {
    /// Flower's `FedTrimmedAvg` default β.
    pub const DEFAULT_TRIM_BETA: f64 = 0.2;

    /// The rule's name without its parameters, for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Defense::None => "none",
            Defense::NormBound(_) => "norm-bound",
            Defense::Median => "median",
            Defense::TrimmedMean { .. } => "trimmed-mean",
            Defense::Krum { .. } => "krum",
            Defense::MultiKrum { .. } => "multi-krum",
        }
    }

    /// Whether the server must hold every update of the round before combining them, rather
    /// than fold each into a running mean as it arrives: true for every rule but `none`.
    pub fn keeps_updates(&self) -> bool {
        !matches!(self, Defense::None)
    }

    /// The fewest updates the rule is defined for by its paper: n > 2f + 2 for Krum and
    /// Multi-Krum, one otherwise. With fewer, Krum still runs, with a warning.
    pub fn min_updates(&self) -> usize {
        match self {
            Defense::Krum { malicious } | Defense::MultiKrum { malicious, .. } => {
                (*malicious as usize).saturating_mul(2).saturating_add(3)
            }
            _ => 1,
        }
    }

    /// Checks the parameters of a value built in code, as parsing does.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        match self.parameter_problem() {
            Some(problem) => Err(InvalidValue(format!("defense `{self}`: {problem}"))),
            None => Ok(()),
        }
    }

    /// What is wrong with the parameters, with the forms that are right.
    fn parameter_problem(&self) -> Option<&'static str> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        match *self {
            Defense::NormBound(NormBound::Fixed(bound)) if !positive(bound) => {
                Some("norm-bound needs a positive bound, e.g. norm-bound:5, norm-bound:median or norm-bound:median*1.5")
            }
            Defense::NormBound(NormBound::Median(kappa)) if !positive(kappa) => {
                Some("norm-bound:median*K needs a positive multiplier K, e.g. norm-bound:median*1.5")
            }
            Defense::TrimmedMean { beta } if !(beta > 0.0 && beta < 0.5) => {
                Some("trimmed-mean needs 0 < beta < 0.5, e.g. trimmed-mean or trimmed-mean:0.1")
            }
            Defense::MultiKrum { keep: Some(0), .. } => {
                Some("multi-krum:F:M keeps M >= 1 updates, e.g. multi-krum:1, multi-krum:1:3 or multi-krum:1:3:uniform")
            }
            _ => None,
        }
    }
}

impl FromStr for Defense {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || InvalidValue(format!("unknown defense `{s}`: expected {FORMS}"));
        let (kind, arg) = match s.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => (s, None),
        };
        let defense = match (kind, arg) {
            ("none", None) => Defense::None,
            ("median", None) => Defense::Median,
            ("norm-bound", Some(arg)) => Defense::NormBound(parse_norm_bound(arg).ok_or_else(unknown)?),
            ("trimmed-mean", None) => Defense::TrimmedMean { beta: Defense::DEFAULT_TRIM_BETA },
            ("trimmed-mean", Some(arg)) => Defense::TrimmedMean { beta: parse_float(arg).ok_or_else(unknown)? },
            ("krum", Some(arg)) => Defense::Krum { malicious: arg.parse().map_err(|_| unknown())? },
            ("multi-krum", Some(arg)) => parse_multi_krum(arg).ok_or_else(unknown)?,
            _ => return Err(unknown()),
        };
        match defense.parameter_problem() {
            Some(problem) => Err(InvalidValue(format!("defense `{s}`: {problem}"))),
            None => Ok(defense),
        }
    }
}

/// `M`, `median` or `median*K`.
fn parse_norm_bound(arg: &str) -> Option<NormBound> {
    match arg.strip_prefix("median") {
        Some("") => Some(NormBound::Median(1.0)),
        Some(rest) => rest.strip_prefix('*').and_then(parse_float).map(NormBound::Median),
        None => parse_float(arg).map(NormBound::Fixed),
    }
}

/// `F`, `F:M`, `F:WEIGHTING` or `F:M:WEIGHTING`.
fn parse_multi_krum(arg: &str) -> Option<Defense> {
    let parse_weighting = |w: &str| match w {
        "samples" => Some(Weighting::Samples),
        "uniform" => Some(Weighting::Uniform),
        _ => None,
    };
    let parts: Vec<&str> = arg.split(':').collect();
    let (malicious, keep, weighting) = match parts.as_slice() {
        [f] => (f, None, Weighting::Samples),
        [f, m] => match parse_weighting(m) {
            Some(weighting) => (f, None, weighting),
            None => (f, Some(m.parse().ok()?), Weighting::Samples),
        },
        [f, m, w] => (f, Some(m.parse().ok()?), parse_weighting(w)?),
        _ => return None,
    };
    Some(Defense::MultiKrum { malicious: malicious.parse().ok()?, keep, weighting })
}

/// A finite float; the range is checked with the rule.
fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl fmt::Display for Defense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defense::None => write!(f, "none"),
            Defense::NormBound(NormBound::Fixed(bound)) => write!(f, "norm-bound:{bound}"),
            Defense::NormBound(NormBound::Median(kappa)) if *kappa == 1.0 => write!(f, "norm-bound:median"),
            Defense::NormBound(NormBound::Median(kappa)) => write!(f, "norm-bound:median*{kappa}"),
            Defense::Median => write!(f, "median"),
            Defense::TrimmedMean { beta } => write!(f, "trimmed-mean:{beta}"),
            Defense::Krum { malicious } => write!(f, "krum:{malicious}"),
            Defense::MultiKrum { malicious, keep, weighting } => {
                write!(f, "multi-krum:{malicious}")?;
                if let Some(keep) = keep {
                    write!(f, ":{keep}")?;
                }
                match weighting {
                    Weighting::Samples => Ok(()),
                    Weighting::Uniform => write!(f, ":uniform"),
                }
            }
        }
    }
}

impl TryFrom<String> for Defense {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Defense> for String {
    fn from(defense: Defense) -> String {
        defense.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Defense {
        s.parse().unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    #[test]
    fn every_form_parses_to_its_value() {
        let cases = [
            ("none", Defense::None),
            ("norm-bound:5", Defense::NormBound(NormBound::Fixed(5.0))),
            ("norm-bound:median", Defense::NormBound(NormBound::Median(1.0))),
            ("norm-bound:median*1.5", Defense::NormBound(NormBound::Median(1.5))),
            ("median", Defense::Median),
            ("trimmed-mean", Defense::TrimmedMean { beta: 0.2 }),
            ("trimmed-mean:0.1", Defense::TrimmedMean { beta: 0.1 }),
            ("krum:0", Defense::Krum { malicious: 0 }),
            ("krum:2", Defense::Krum { malicious: 2 }),
            ("multi-krum:1", Defense::MultiKrum { malicious: 1, keep: None, weighting: Weighting::Samples }),
            ("multi-krum:1:3", Defense::MultiKrum { malicious: 1, keep: Some(3), weighting: Weighting::Samples }),
            (
                "multi-krum:1:3:uniform",
                Defense::MultiKrum { malicious: 1, keep: Some(3), weighting: Weighting::Uniform },
            ),
            (
                "multi-krum:1:3:samples",
                Defense::MultiKrum { malicious: 1, keep: Some(3), weighting: Weighting::Samples },
            ),
            ("multi-krum:2:uniform", Defense::MultiKrum { malicious: 2, keep: None, weighting: Weighting::Uniform }),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "{text}");
        }
    }

    #[test]
    fn display_round_trips_for_every_variant() {
        let values = [
            Defense::None,
            Defense::NormBound(NormBound::Fixed(5.0)),
            Defense::NormBound(NormBound::Fixed(0.17)),
            Defense::NormBound(NormBound::Median(1.0)),
            Defense::NormBound(NormBound::Median(1.5)),
            Defense::Median,
            Defense::TrimmedMean { beta: 0.2 },
            Defense::TrimmedMean { beta: 0.1 },
            Defense::Krum { malicious: 3 },
            Defense::MultiKrum { malicious: 1, keep: None, weighting: Weighting::Samples },
            Defense::MultiKrum { malicious: 1, keep: None, weighting: Weighting::Uniform },
            Defense::MultiKrum { malicious: 1, keep: Some(4), weighting: Weighting::Samples },
            Defense::MultiKrum { malicious: 0, keep: Some(4), weighting: Weighting::Uniform },
        ];
        for value in values {
            let text = value.to_string();
            assert_eq!(parse(&text), value, "{text}");
            assert_eq!(value.validate(), Ok(()));
        }
        assert_eq!(Defense::NormBound(NormBound::Median(1.0)).to_string(), "norm-bound:median");
        assert_eq!(Defense::NormBound(NormBound::Median(1.5)).to_string(), "norm-bound:median*1.5");
        assert_eq!(parse("trimmed-mean").to_string(), "trimmed-mean:0.2");
        assert_eq!(parse("multi-krum:1:3:samples").to_string(), "multi-krum:1:3");
    }

    #[test]
    fn bad_strings_name_the_string_and_the_accepted_forms() {
        for bad in [
            "",
            "krum",
            "krum:-1",
            "krum:1.5",
            "median:3",
            "none:1",
            "bulyan:1",
            "norm-bound",
            "norm-bound:",
            "norm-bound:median*",
            "norm-bound:mediann",
            "norm-bound:inf",
            "trimmed-mean:x",
            "multi-krum",
            "multi-krum:1:x",
            "multi-krum:1:2:3",
            "multi-krum:1:2:uniform:4",
        ] {
            let err = bad.parse::<Defense>().expect_err(bad);
            assert!(err.0.contains(&format!("`{bad}`")), "{bad}: {err}");
            assert!(err.0.contains("multi-krum:F"), "{bad}: {err}");
        }
    }

    #[test]
    fn out_of_range_parameters_are_refused_with_the_rules_forms() {
        for (bad, expected) in [
            ("norm-bound:0", "norm-bound:5"),
            ("norm-bound:-1", "norm-bound:5"),
            ("norm-bound:median*0", "norm-bound:median*1.5"),
            ("norm-bound:median*-2", "norm-bound:median*1.5"),
            ("trimmed-mean:0", "trimmed-mean:0.1"),
            ("trimmed-mean:0.5", "0 < beta < 0.5"),
            ("trimmed-mean:-0.1", "0 < beta < 0.5"),
            ("multi-krum:1:0", "M >= 1"),
        ] {
            let err = bad.parse::<Defense>().expect_err(bad);
            assert!(err.0.contains(&format!("`{bad}`")) && err.0.contains(expected), "{bad}: {err}");
        }
        let built = Defense::TrimmedMean { beta: 0.7 };
        assert!(built.validate().expect_err("β = 0.7").0.contains("`trimmed-mean:0.7`"));
    }

    #[test]
    fn names_kept_updates_and_minimum_counts() {
        assert_eq!(Defense::default(), Defense::None);
        assert_eq!(
            ["none", "norm-bound:3", "median", "trimmed-mean", "krum:1", "multi-krum:1"].map(|s| parse(s).name()),
            ["none", "norm-bound", "median", "trimmed-mean", "krum", "multi-krum"]
        );
        assert!(!Defense::None.keeps_updates());
        assert!(Defense::Median.keeps_updates() && parse("norm-bound:median").keeps_updates());
        assert_eq!(parse("krum:1").min_updates(), 5);
        assert_eq!(parse("multi-krum:2:3").min_updates(), 7);
        assert_eq!(parse("krum:0").min_updates(), 3);
        assert_eq!(parse("median").min_updates(), 1);
        assert_eq!(Defense::Krum { malicious: u32::MAX }.min_updates(), 2 * u32::MAX as usize + 3);
    }

    #[test]
    fn serde_goes_through_the_cli_form() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Config {
            defense: Defense,
        }
        let config: Config = toml::from_str("defense = \"multi-krum:1:3:uniform\"").unwrap();
        assert_eq!(config.defense, Defense::MultiKrum { malicious: 1, keep: Some(3), weighting: Weighting::Uniform });
        assert_eq!(toml::to_string(&config).unwrap().trim(), "defense = \"multi-krum:1:3:uniform\"");
        let err = toml::from_str::<Config>("defense = \"krum\"").unwrap_err();
        assert!(err.to_string().contains("unknown defense `krum`"), "{err}");
    }
}
