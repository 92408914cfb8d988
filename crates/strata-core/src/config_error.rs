//! What is wrong with a configuration, in a leaf module so that every part of the config can
//! say it without importing the whole.

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot parse config: {0}")]
    Parse(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// One value that is none of those accepted (a flag's or a config key's), with what is.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<InvalidValue> for ConfigError {
    fn from(e: InvalidValue) -> Self {
        ConfigError::Invalid(e.0)
    }
}
