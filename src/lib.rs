//! neurodex: index what every unit of a convolutional network responds to, and show it.
//!
//! The pipeline, one module per stage, data flowing one way:
//! `crawl` (walk + decode) -> `preprocess` (invertible crop/resize) -> `model` (batched
//! forward with named taps, over `kernels`) -> `peaks` (per-channel max and location) ->
//! `stats` (per-unit statistics and top-K) -> `store` (SQLite) -> `query` -> `shots`
//! (top images decoded, maps recomputed) -> `render` / `gallery` / `serve`; beside
//! `query`, `labels` (where concept labels come from) and `concepts` (every unit
//! scored as a detector of each labelled concept).
//! Architectures are described as data in `arch`; `receptive` derives receptive fields
//! from that description.

pub mod arch;
pub mod concepts;
pub mod crawl;
pub mod error;
pub mod gallery;
pub mod import;
pub mod index;
pub mod kernels;
pub mod labels;
pub mod merge;
pub mod model;
pub mod output;
pub mod peaks;
pub mod preprocess;
pub mod query;
pub mod receptive;
pub mod render;
pub mod serve;
pub mod shard;
pub mod shots;
pub mod source;
pub mod stats;
pub mod store;
pub mod visualize;

pub use error::{Error, Result};
