//! The command line: one file per subcommand, each with its own `Args` and `run`.
//!
//! Exit codes: 0 success, 1 the work ran but some inputs failed (e.g. images that
//! could not be decoded), 2 usage or fatal errors (bad model file, unreadable database).

use std::process::ExitCode;

pub mod classify;
pub mod concepts;
pub mod filters;
pub mod forward;
pub mod gallery;
pub mod image;
pub mod import;
pub mod index;
pub mod labels;
pub mod layers;
pub mod maps;
pub mod merge;
pub mod models;
pub mod saliency;
pub mod serve;
pub mod stats;
pub mod top;
pub mod units;
pub mod visualize;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "neurodex",
    version,
    about = "See what every unit of a convolutional network has learned",
    long_about = "neurodex pushes an image collection through a pretrained CNN, records every \
channel's peak activation and where it occurs, and shows which images excite each unit most, \
cropped at the unit's receptive field."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The built-in architectures
    Models(models::Args),
    /// A model's layers: output shape and receptive field
    Layers(layers::Args),
    /// Top ImageNet classes for images
    Classify(classify::Args),
    /// Convert a PyTorch checkpoint to safetensors
    Import(import::Args),
    /// Index the images under a directory: every unit's peak on every image
    Index(index::Args),
    /// Join the databases of several shards (or any indexes of the same run) into one,
    /// exactly
    Merge(merge::Args),
    /// The images that excite a unit most
    Top(top::Args),
    /// A layer's units by statistic
    Units(units::Args),
    /// Add, replace, remove or list the concept labels of indexed images
    Labels(labels::Args),
    /// Which units detect which labelled concepts (AP, AUROC, top-9, selectivity)
    Concepts(concepts::Args),
    /// The units an image excites most
    Image(image::Args),
    /// What an index holds and what failed
    Stats(stats::Args),
    /// Every channel of a layer on one image, as a picture
    Maps(maps::Args),
    /// The outputs of named layers for one exact input, as safetensors (to compare with
    /// another framework)
    Forward(forward::Args),
    /// What in an image a unit responds to: the gradient of its peak on the input
    /// (plain, guided backprop or deconvnet), as a picture and as numbers
    Saliency(saliency::Args),
    /// Images optimised to excite units (feature visualisation, as Lucid makes them)
    Visualize(visualize::Args),
    /// A convolution layer's filters, as a picture
    Filters(filters::Args),
    /// A static HTML gallery of every indexed unit's top images
    Gallery(gallery::Args),
    /// Live explorer in the browser (webcam, video, images)
    Serve(serve::Args),
}

/// Exit status for "ran, but some inputs failed".
pub const EXIT_PARTIAL: u8 = 1;
/// Exit status for usage and fatal errors.
pub const EXIT_FATAL: u8 = 2;
/// Exit status for "another process is writing this database; try again later".
pub const EXIT_BUSY: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        die_quietly_on_closed_stdout();
    }
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Models(a) => models::run(a),
        Command::Layers(a) => layers::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Import(a) => import::run(a),
        Command::Index(a) => index::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Top(a) => top::run(a),
        Command::Units(a) => units::run(a),
        Command::Labels(a) => labels::run(a),
        Command::Concepts(a) => concepts::run(a),
        Command::Image(a) => image::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Maps(a) => maps::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Saliency(a) => saliency::run(a),
        Command::Visualize(a) => visualize::run(a),
        Command::Filters(a) => filters::run(a),
        Command::Gallery(a) => gallery::run(a),
        Command::Serve(a) => serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<neurodex::Error>() {
                Some(neurodex::Error::Locked { .. }) => ExitCode::from(EXIT_BUSY),
                _ => ExitCode::from(EXIT_FATAL),
            }
        }
    }
}

/// Rust ignores SIGPIPE, so every write to a closed pipe (`neurodex layers | head -1`)
/// fails and `println!` panics. Printing commands get the Unix default back: the
/// process ends silently when its reader leaves, as `cat` and `grep` do. `serve`
/// keeps ignoring it, where a browser closing a socket must not end the server.
fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: runs before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Says on stderr when the database is still being built or its last `index` did
/// not finish, since answers then cover only part of the collection; returns the
/// state for `--json` output.
pub fn note_progress(store: &neurodex::store::Store) -> anyhow::Result<serde_json::Value> {
    use neurodex::store::Progress;
    let progress = store.progress()?;
    let db = store.path().display();
    let pending = |n: u64| {
        if n > 0 {
            format!(
                "; {n} images are not in the saved top images yet and were ranked from \
                 their stored peaks"
            )
        } else {
            String::new()
        }
    };
    Ok(match progress {
        Progress::Complete => serde_json::json!({ "state": "complete" }),
        Progress::Building { holder, pending: n } => {
            eprintln!(
                "note: {db} is still being indexed ({holder}): answers cover the images \
                 indexed so far{}",
                pending(n)
            );
            serde_json::json!({ "state": "building", "pending": n })
        }
        Progress::CutShort {
            pending: n,
            needs_rebuild,
        } => {
            eprintln!(
                "note: the last `neurodex index` into {db} stopped before its end: answers \
                 cover the images it reached{}{}; run it again to complete the index",
                pending(n),
                if needs_rebuild {
                    "; files that changed or vanished may still be listed"
                } else {
                    ""
                }
            );
            serde_json::json!({ "state": "cut-short", "pending": n })
        }
    })
}

/// The preprocessing options of every command that prepares images for a model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecipeArgs {
    /// Preprocessing recipe: torchvision (resize the short side to 256, centre crop
    /// 224, ImageNet mean/std: torchvision.transforms on a PIL image), tf-lite (centre
    /// 87.5% resized bicubic, (x - 127) / 128) or caffe (torchvision's geometry, BGR,
    /// mean subtraction). Default: the model's own (ONNX files: torchvision)
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(neurodex::arch::recipes::NAMES))]
    pub preprocess: Option<String>,
    /// Network input side, in pixels (the recipe's resize follows it)
    #[arg(long, value_name = "PIXELS")]
    pub input_size: Option<u32>,
    /// Resize the short side to this, then cut the centre input-size square
    #[arg(long, value_name = "PIXELS")]
    pub resize: Option<u32>,
    /// Cut the centre square of this fraction of the short side, then resize it
    #[arg(long, value_name = "F")]
    pub crop_fraction: Option<f64>,
    /// Per-channel mean on 0..1 pixels, subtracted: R,G,B
    #[arg(long, value_name = "R,G,B", value_parser = parse_triple)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation on 0..1 pixels, divided by: R,G,B
    #[arg(long, value_name = "R,G,B", value_parser = parse_triple)]
    pub std: Option<[f32; 3]>,
    /// Resampling filter (PIL's): bilinear or bicubic
    #[arg(long, value_name = "FILTER", value_parser = ["bilinear", "bicubic"])]
    pub interpolation: Option<String>,
}

/// An exact input tensor, from a `.npy` file or an image prepared by the network's
/// recipe.
pub struct Input {
    pub x: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

/// Reads `path`: a .npy array [N, 3, H, W] or [3, H, W] (f32 or f64, used as it is),
/// or an image.
pub fn read_input(path: &std::path::Path, net: &neurodex::model::Network) -> anyhow::Result<Input> {
    use neurodex::preprocess::{self, DEFAULT_MAX_PIXELS};
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        let img = preprocess::open_image(path, DEFAULT_MAX_PIXELS)?;
        let s = net.arch.recipe.size as usize;
        let x = preprocess::prepare(&img, &net.arch.recipe).0;
        return Ok(Input {
            x,
            n: 1,
            h: s,
            w: s,
        });
    }
    let (dims, x) = neurodex::import::npy::read(path)?;
    let (n, c, h, w) = match dims[..] {
        [n, c, h, w] => (n, c, h, w),
        [c, h, w] => (1, c, h, w),
        _ => anyhow::bail!(
            "{}: shape {dims:?}; an input is [N, 3, H, W]",
            path.display()
        ),
    };
    if c != 3 {
        anyhow::bail!("{}: {c} channels; the network takes 3", path.display());
    }
    Ok(Input { x, n, h, w })
}

impl RecipeArgs {
    pub fn given(&self) -> bool {
        self.preprocess.is_some() || !self.overrides().is_empty()
    }

    fn overrides(&self) -> neurodex::arch::recipes::Overrides {
        use neurodex::arch::Filter;
        neurodex::arch::recipes::Overrides {
            size: self.input_size,
            resize: self.resize,
            crop_fraction: self.crop_fraction,
            mean: self.mean,
            std: self.std,
            filter: self.interpolation.as_deref().map(|f| match f {
                "bicubic" => Filter::Bicubic,
                _ => Filter::Bilinear,
            }),
        }
    }

    /// `base` (the model's recipe, or the one an index was built with) as these options
    /// change it.
    pub fn recipe(&self, base: &neurodex::arch::Recipe) -> anyhow::Result<neurodex::arch::Recipe> {
        let start = match &self.preprocess {
            Some(name) => neurodex::arch::recipes::preset(name, base.size)?,
            None => base.clone(),
        };
        Ok(self.overrides().apply(&start)?)
    }
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|v: Vec<f32>| format!("three numbers (R,G,B), not {}", v.len()))
}

/// `--labels FILE` over the network's default class names.
pub fn set_labels(
    net: &mut neurodex::model::Network,
    labels: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = labels {
        let n = net.arch.classes;
        if n == 0 {
            anyhow::bail!("{}: the model has no class outputs to name", path.display());
        }
        net.labels = neurodex::model::Labels::read(path, n)?;
    }
    Ok(())
}
