//! The federated methods Strata runs, as one type: what the config names, what the server's
//! strategy and the client's half dispatch on, and the properties both sides must agree on.
//!
//! Adding a method starts here: a variant makes every exhaustive `match` on [`Method`] (the
//! server's `strategy::build`, the client's `method::build`, the properties below) fail to
//! compile until it is handled.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::parts::ModelParts;
use crate::selection::Selector;

/// A method: its server strategy and its client half together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    /// Every client trains alone; nothing is shared.
    Local,
    /// McMahan et al.: the sample-weighted average of the whole model.
    FedAvg,
    /// Li et al.: FedAvg with a proximal term in local training.
    FedProx,
    /// Arivazhagan et al.: the body is averaged, each client keeps its head.
    FedPer,
    /// Collins et al.: like FedPer, training the head first with the body frozen.
    FedRep,
    /// Li et al.: everything but the normalization layers is averaged.
    FedBn,
    /// Li et al.: a FedAvg global model plus a personal model pulled towards it.
    Ditto,
    /// Wu et al.: customized models from clients with overlapping critical parameters.
    FedCac,
}

impl Method {
    /// Every method, in the order the CLI's help lists them.
    pub const ALL: [Method; 8] = [
        Method::Local,
        Method::FedAvg,
        Method::FedProx,
        Method::FedPer,
        Method::FedRep,
        Method::FedBn,
        Method::Ditto,
        Method::FedCac,
    ];

    /// The name in configs, on the command line and in the records.
    pub fn name(self) -> &'static str {
        match self {
            Method::Local => "local",
            Method::FedAvg => "fedavg",
            Method::FedProx => "fedprox",
            Method::FedPer => "fedper",
            Method::FedRep => "fedrep",
            Method::FedBn => "fedbn",
            Method::Ditto => "ditto",
            Method::FedCac => "fedcac",
        }
    }

    /// Whether the method's global model is the whole model and is what clients evaluate as
    /// the global one: the methods a post-hoc calibration of the global classifier (CCVR)
    /// composes with.
    pub fn has_global_model(self) -> bool {
        match self {
            Method::FedAvg | Method::FedProx | Method::Ditto => true,
            Method::Local | Method::FedPer | Method::FedRep | Method::FedBn | Method::FedCac => false,
        }
    }

    /// The parameters that travel between server and clients, both ways, in a model whose
    /// head and normalization layers are `parts`.
    pub fn shares(self, parts: &ModelParts) -> Selector {
        match self {
            Method::FedAvg | Method::FedProx | Method::Ditto | Method::FedCac => Selector::all(),
            Method::FedPer | Method::FedRep => parts.body(),
            Method::FedBn => Selector::all().except(parts.norm.patterns().iter().cloned()),
            Method::Local => Selector::none(),
        }
    }

    /// The names of every method, comma-separated (for help texts and errors).
    pub fn names() -> String {
        Method::ALL.map(Method::name).join(", ")
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method name that is not one of [`Method::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown method `{0}`: the methods are {names}", names = Method::names())]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMethod(s.to_string()))
    }
}

impl TryFrom<String> for Method {
    type Error = UnknownMethod;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Method> for String {
    fn from(method: Method) -> String {
        method.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
        }
        let mut names: Vec<_> = Method::ALL.map(Method::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len());
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_list() {
        let e = "fedavgg".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("`fedavgg`") && e.contains("fedavg, fedprox"), "{e}");
    }

    #[test]
    fn serde_uses_the_name() {
        #[derive(Deserialize, Serialize)]
        struct C {
            method: Method,
        }
        let c: C = toml::from_str("method = \"fedcac\"").expect("parses");
        assert_eq!(c.method, Method::FedCac);
        assert_eq!(toml::to_string(&c).expect("writes").trim(), "method = \"fedcac\"");
        let e = toml::from_str::<C>("method = \"fedx\"").err().expect("refused").to_string();
        assert!(e.contains("unknown method `fedx`"), "{e}");
    }

    #[test]
    fn what_each_method_shares() {
        let parts = ModelParts::registered();
        assert!(Method::FedPer.shares(&parts).matches("body.conv1.weight"));
        assert!(!Method::FedPer.shares(&parts).matches("head.weight"));
        assert!(!Method::FedBn.shares(&parts).matches("body.bn1.weight"));
        assert!(Method::FedBn.shares(&parts).matches("body.conv1.weight"));
        assert!(!Method::Local.shares(&parts).matches("body.conv1.weight"));
        assert!(Method::ALL.iter().filter(|m| m.has_global_model()).count() == 3);
    }
}
