//! The one error type of the libtorch side, with messages that say what to fix.

/// Everything that can go wrong while building, moving or training a model.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error("unknown model `{name}`: expected one of {known}")]
    UnknownModel { name: String, known: String },
    #[error("model `{model}` cannot take samples of shape {shape:?} with {classes} classes: {reason}")]
    UnsupportedShape { model: String, shape: Vec<usize>, classes: usize, reason: String },
    #[error("device `{spec}`: {reason}")]
    Device { spec: String, reason: String },
    #[error("no tensor named `{name}` in this model (its tensors are listed by LocalModel::spec)")]
    UnknownTensor { name: String },
    #[error("tensor `{name}` has shape {got:?} but the model's is {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("client data: {0}")]
    Data(String),
    #[error("invalid training settings: {0}")]
    Train(String),
    #[error("TorchScript module `{path}`: {reason}")]
    Script { path: String, reason: String },
    #[error("model: {0}")]
    Model(String),
    #[error("libtorch: {0}")]
    Tch(#[from] tch::TchError),
}
