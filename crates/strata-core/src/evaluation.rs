//! Which clients evaluate, how often, and at which moment (`[evaluation]` in the config).
//!
//! A sampled federation should not pay for evaluating clients that do no work: by default the
//! round's cohort evaluates the model it receives, before training (what Flower and PFLlib
//! measure). PFLlib's protocol for a small federation (every client, every round, as merged
//! and after training) is `clients = "all"`, `moment = "both"`. The last row of a run (the
//! final evaluation) is always measured.

use std::fmt;
use std::str::FromStr;

use crate::config_error::{ConfigError, InvalidValue};
use serde::{Deserialize, Serialize};

/// Who evaluates in a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EvalClients {
    /// The clients that train this round; the final evaluation takes a sample of the cohort's size.
    #[default]
    Cohort,
    /// Every available client, whether it trains or not.
    All,
    /// This share of the available clients, sampled each round; those that also train
    /// evaluate within their training task.
    Fraction(f64),
}

impl FromStr for EvalClients {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cohort" => Ok(Self::Cohort),
            "all" => Ok(Self::All),
            number => match number.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 1.0 => Ok(Self::Fraction(f)),
                _ => Err(InvalidValue(format!(
                    "evaluation clients `{s}` is not cohort, all or a fraction in (0, 1] (such as 0.1)"
                ))),
            },
        }
    }
}

impl fmt::Display for EvalClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cohort => f.write_str("cohort"),
            Self::All => f.write_str("all"),
            Self::Fraction(x) => write!(f, "{x}"),
        }
    }
}

impl TryFrom<String> for EvalClients {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<EvalClients> for String {
    fn from(c: EvalClients) -> Self {
        c.to_string()
    }
}

/// When a client that evaluates measures its personal model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalMoment {
    /// As received and merged, before training (PFLlib's and Flower's measurement).
    #[default]
    Merged,
    /// Right after local training (clients that only evaluate measure the merged model).
    Trained,
    /// Both.
    Both,
}

impl EvalMoment {
    pub fn merged(self) -> bool {
        matches!(self, Self::Merged | Self::Both)
    }

    pub fn trained(self) -> bool {
        matches!(self, Self::Trained | Self::Both)
    }
}

impl FromStr for EvalMoment {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "merged" => Ok(Self::Merged),
            "trained" => Ok(Self::Trained),
            "both" => Ok(Self::Both),
            other => {
                Err(InvalidValue(format!("unknown evaluation moment `{other}`: expected merged, trained or both")))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    pub clients: EvalClients,
    /// Evaluate in every N-th round (rounds 0, N, 2N, ...); the final evaluation always runs.
    pub every: u64,
    pub moment: EvalMoment,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self { clients: EvalClients::Cohort, every: 1, moment: EvalMoment::Merged }
    }
}

impl EvaluationConfig {
    /// PFLlib's protocol: every client, every round, as merged and after training.
    pub fn every_client() -> Self {
        Self { clients: EvalClients::All, every: 1, moment: EvalMoment::Both }
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether round `round` of a run of `rounds` rounds evaluates (the last row always does).
    pub fn evaluates_in(&self, round: u64, rounds: u64) -> bool {
        round >= rounds || round.is_multiple_of(self.every)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.every == 0 {
            return Err(ConfigError::Invalid("evaluation.every must be at least 1".into()));
        }
        if let EvalClients::Fraction(f) = self.clients
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(ConfigError::Invalid(format!(
                "evaluation.clients must be cohort, all or a fraction in (0, 1], got {f}"
            )));
        }
        Ok(())
    }

    /// In words, for the report.
    pub fn describe(&self) -> String {
        let who = match self.clients {
            EvalClients::Cohort => "the round's training cohort".to_string(),
            EvalClients::All => "every available client".to_string(),
            EvalClients::Fraction(f) => format!("a sample of {f} of the available clients"),
        };
        let when = match self.moment {
            EvalMoment::Merged => "the model as received, before training",
            EvalMoment::Trained => "the model after training",
            EvalMoment::Both => "the model as received and after training",
        };
        let often = if self.every == 1 { "every round".to_string() } else { format!("every {} rounds", self.every) };
        format!("{who} evaluates {when}, {often}, and at the end")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clients_parse_from_words_and_fractions() {
        assert_eq!("cohort".parse::<EvalClients>(), Ok(EvalClients::Cohort));
        assert_eq!("all".parse::<EvalClients>(), Ok(EvalClients::All));
        assert_eq!("0.1".parse::<EvalClients>(), Ok(EvalClients::Fraction(0.1)));
        for bad in ["0", "1.5", "some", "-0.2"] {
            assert!(bad.parse::<EvalClients>().unwrap_err().to_string().contains("cohort, all"), "{bad}");
        }
    }

    #[test]
    fn every_n_rounds_and_always_the_last() {
        let c = EvaluationConfig { every: 3, ..Default::default() };
        let evaluated: Vec<u64> = (0..=7).filter(|&r| c.evaluates_in(r, 7)).collect();
        assert_eq!(evaluated, vec![0, 3, 6, 7]);
        assert!(
            EvaluationConfig { every: 0, ..Default::default() }.validate().unwrap_err().to_string().contains("every")
        );
    }

    #[test]
    fn round_trips_through_toml() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Wrapper {
            evaluation: EvaluationConfig,
        }
        for c in [
            EvaluationConfig::default(),
            EvaluationConfig::every_client(),
            EvaluationConfig { clients: EvalClients::Fraction(0.25), every: 5, moment: EvalMoment::Trained },
        ] {
            let text = toml::to_string(&Wrapper { evaluation: c.clone() }).unwrap();
            assert_eq!(toml::from_str::<Wrapper>(&text).unwrap().evaluation, c, "{text}");
        }
        assert!(toml::from_str::<Wrapper>("[evaluation]\nclients = \"most\"\n").is_err());
    }
}
