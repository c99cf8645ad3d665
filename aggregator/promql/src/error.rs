//! Query errors. Each names what was wrong: the unsupported feature, the exceeded limit,
//! the bad parameter.

use crate::source::SourceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The query text does not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL this engine does not evaluate.
    #[error("unsupported function: {0}")]
    UnsupportedFunction(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A query or API parameter is out of range or malformed.
    #[error("invalid parameter {name:?}: {reason}")]
    BadParameter { name: String, reason: String },
    /// The query is valid but cannot be evaluated (duplicate series, bad argument values).
    #[error("{0}")]
    Execution(String),
    #[error("query processing would load too many samples into memory (limit max_samples = {0})")]
    TooManySamples(usize),
    #[error("query would touch too many series (limit max_series = {0})")]
    TooManySeries(usize),
    #[error("query canceled")]
    Canceled,
    #[error("storage: {0}")]
    Source(#[from] SourceError),
}

impl Error {
    /// The Prometheus HTTP API `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::Parse(_)
            | Error::UnsupportedFunction(_)
            | Error::Unsupported(_)
            | Error::BadParameter { .. } => "bad_data",
            Error::Execution(_)
            | Error::TooManySamples(_)
            | Error::TooManySeries(_)
            | Error::Source(_) => "execution",
            Error::Canceled => "canceled",
        }
    }

    pub(crate) fn bad_param(name: &str, reason: impl Into<String>) -> Error {
        Error::BadParameter {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
