//! Error types shared by the pipeline stages. Each names the file or thing it concerns.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Says the OS's reason itself and so is not also its `source`: an error chain
    /// printed in full (`{:#}`) would repeat the reason.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a usable checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: image is {width}x{height} = {mp:.1} MP, above the limit of {limit_mp:.0} MP")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        mp: f64,
        limit_mp: f64,
    },
    #[error("unknown model {0:?} (see `neurodex models`)")]
    UnknownModel(String),
    #[error("model {model}: unknown layer {layer:?} (see `neurodex layers --model {model}`)")]
    UnknownLayer { model: String, layer: String },
    #[error("weights for {model}: {reason}")]
    Weights { model: String, reason: String },
    #[error("{0}")]
    Shape(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
    /// What a database holds does not allow the request (no such layer, unit or
    /// image; not a neurodex database; a newer schema).
    #[error("{path}: {reason}")]
    Store { path: PathBuf, reason: String },
    /// SQLite failed; `cause` is its error, kept whole (its text is in the message,
    /// so it is not also a `source`, as for `Io`).
    #[error("{path}: {cause}")]
    Sql {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    /// Another process holds the database's writer lock.
    #[error(
        "{path}: another neurodex is writing to this database ({holder}); wait for it to \
         finish or stop it, then run again"
    )]
    Locked { path: PathBuf, holder: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}
