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
    /// A picture could not be encoded to its file; `cause` is the encoder's error.
    #[error("{path}: cannot write the picture: {cause}")]
    Encode {
        path: PathBuf,
        cause: image::ImageError,
    },
    /// neurodex refuses to write there (a name it cannot write pictures as, a link
    /// inside an output folder).
    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A stored record does not have the layout this build reads.
    #[error("corrupt {record} record: {len} bytes is not a multiple of {unit}")]
    Corrupt {
        record: &'static str,
        len: usize,
        unit: usize,
    },
    /// A tap before an activation the kernel applies itself.
    #[error("{layer}: its activation is fused into the layer; split it to tap before it")]
    FusedActivation { layer: String },
    /// Weights could not be written.
    #[error("{path}: cannot write weights: {cause}")]
    SaveWeights {
        path: PathBuf,
        cause: candle_core::Error,
    },
    /// The server could not start (`what`: listening on an address, its runtime).
    #[error("{what}: {cause}")]
    Serve { what: String, cause: std::io::Error },
    /// What a database holds does not allow the request (no such layer, unit or
    /// image; not a neurodex database; a newer schema).
    #[error("{path}: {reason}")]
    Store { path: PathBuf, reason: String },
    /// A label file or label source that cannot be used (not text, a bad line).
    #[error("{path}: {reason}")]
    Labels { path: PathBuf, reason: String },
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
