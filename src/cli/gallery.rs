//! `neurodex gallery --db F -o DIR`: a static HTML gallery of an index.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use neurodex::gallery::{self, Options};
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database
    #[arg(long)]
    pub db: PathBuf,
    /// Output directory (created; files of an earlier gallery there are overwritten)
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Top images per unit
    #[arg(short, default_value_t = 9)]
    pub k: usize,
    /// Tile side in pixels
    #[arg(long, default_value_t = 112)]
    pub tile: u32,
    /// Only these layers, comma-separated (default: every indexed layer)
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// No activation heat maps (skips re-running the top images through the network)
    #[arg(long)]
    pub no_heat: bool,
    /// Weights, when the index was built with a weights file
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Unit pages also show each top image's gradient projection: backprop, guided or
    /// deconv; or erf, the photo cut at the unit's effective receptive field (one
    /// backward pass per top image: about 9 / 20 s per unit on 2 cores)
    #[arg(long, value_name = "MODE", value_parser = ["backprop", "guided", "deconv", "erf"])]
    pub projections: Option<String>,
    /// First compute, and keep in the index, a feature visualisation of every firing
    /// unit of these layers that has none (about 30 s per unit on 2 cores, 512 steps;
    /// `neurodex visualize --db` makes single ones). Unit pages show every kept one.
    #[arg(long, value_name = "LAYERS", value_delimiter = ',')]
    pub visualize: Option<Vec<String>>,
    /// Optimisation steps for --visualize
    #[arg(long, default_value_t = 512)]
    pub visualize_steps: usize,
    /// No summary on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    if let Some(layers) = &args.visualize {
        let settings = neurodex::visualize::Settings {
            steps: args.visualize_steps,
            ..Default::default()
        };
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} units visualised (eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let made = gallery::visualise_missing(
            &args.db,
            layers,
            &settings,
            16,
            args.weights.as_deref(),
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        if !args.quiet {
            eprintln!("visualised {made} units (kept in {})", args.db.display());
        }
    }
    let store = Store::open_readonly(&args.db)?;
    super::note_progress(&store)?;
    let opts = Options {
        out: args.output.clone(),
        k: args.k,
        tile: args.tile.clamp(32, 512),
        heat: !args.no_heat,
        weights: args.weights.clone(),
        layers: args.layers.clone(),
        projections: args
            .projections
            .as_deref()
            .map(|m| m.parse().expect("clap checked it")),
    };
    let s = gallery::build(&store, &opts)?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if !args.quiet {
        eprintln!(
            "wrote {}/index.html: {} layers, {} units ({} never fire), {} pages, {} pictures from {} images in {:.1} s",
            args.output.display(),
            s.layers,
            s.units,
            s.dead,
            s.pages,
            s.tiles,
            s.images,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(if s.missing_images > 0 {
        ExitCode::from(crate::cli::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}
