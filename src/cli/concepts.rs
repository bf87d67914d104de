//! `neurodex concepts --db F`: which units detect which labelled concepts (AP,
//! AUROC, top-9 counts, class selectivity), per concept, per unit and per layer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use neurodex::concepts::{self, Hint, Options, Scores, DETECTOR_AP, DETECTOR_AUROC};
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "A unit counts as a detector of a concept when, its per-image peak \
taken as a score, AP >= 0.5 and AUROC >= 0.9 over a concept of at least 5 images (the \
per-layer counts are NetDissect's 'detectors' and 'distinct concepts').\n\n\
Examples:\n  \
  neurodex concepts --db demo.db                      best unit per concept, per-layer counts\n  \
  neurodex concepts --db demo.db --concept face       units ranked as face detectors\n  \
  neurodex concepts --db demo.db --layer head --unit 7   one unit's best concepts"
)]
pub struct Args {
    /// Index database (see `neurodex index`), with labels (see `neurodex labels`)
    #[arg(long)]
    pub db: PathBuf,
    /// Score only these layers (comma-separated; default: every indexed layer)
    #[arg(long, value_delimiter = ',')]
    pub layer: Option<Vec<String>>,
    /// Score only these concepts: NAME or SET/NAME (repeatable)
    #[arg(long)]
    pub concept: Vec<String>,
    /// One unit's best concepts (with --layer naming one layer)
    #[arg(long, requires = "layer")]
    pub unit: Option<usize>,
    /// How many units per concept (or concepts per unit) to list
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Memory for the peaks scored at once, in MB
    #[arg(long, default_value_t = concepts::DEFAULT_MEMORY >> 20, value_name = "MB")]
    pub memory_mb: usize,
    /// Weights the index was built with (for the classifier hint; default: the
    /// embedded ones)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    let progress = super::note_progress(&store)?;
    if let (Some(u), Some(layers)) = (args.unit, &args.layer) {
        if layers.len() != 1 {
            anyhow::bail!("--unit needs --layer to name one layer");
        }
        let l = neurodex::query::layer(&store, &layers[0])?;
        if u >= l.channels {
            anyhow::bail!(
                "{} has units 0..{}; there is no unit {u}",
                l.name,
                l.channels - 1
            );
        }
    }
    let opts = Options {
        layers: args.layer.clone(),
        concepts: (!args.concept.is_empty()).then(|| args.concept.clone()),
        memory: args.memory_mb.max(1) << 20,
    };
    let t = Instant::now();
    let s = concepts::score(&store, &opts)?;
    let seconds = t.elapsed().as_secs_f64();
    let hints = class_hints(&store, &s, args.weights.as_deref(), args.top);
    for k in &s.skipped {
        eprintln!("note: concept {} left out: {}", k.concept, k.reason);
    }
    if s.concepts.is_empty() {
        let msg = if store.concepts()?.is_empty() {
            format!(
                "{} has no labels: add some with `neurodex labels --db {} --csv FILE` \
                 (or --from-dirs, --concept NAME=DIR)",
                args.db.display(),
                args.db.display()
            )
        } else {
            "no concept is left to score".to_string()
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "error": msg, "skipped": s.skipped })
            );
        } else {
            eprintln!("{msg}");
        }
        if let Some(u) = args.unit {
            print_hints(&s, &hints, u, args.json);
        }
        return Ok(ExitCode::from(super::EXIT_PARTIAL));
    }
    if args.json {
        println!("{}", json(&s, &hints, &args, seconds, progress));
        return Ok(ExitCode::SUCCESS);
    }
    let units: usize = s.layers.iter().map(|l| l.units).sum();
    println!(
        "scored {} units of {} layers against {} concepts over {} images ({seconds:.2} s)",
        units,
        s.layers.len(),
        s.concepts.len(),
        s.images
    );
    if let Some(u) = args.unit {
        print_unit(&s, &hints, u, args.top);
        return Ok(ExitCode::SUCCESS);
    }
    if args.concept.is_empty() {
        print_best_per_concept(&s);
    } else {
        for c in 0..s.concepts.len() {
            print_concept(&s, c, args.top);
        }
    }
    print_summary(&s);
    Ok(ExitCode::SUCCESS)
}

/// Per layer with a classifier behind it, per unit, the classes it pushes most.
type Hints = Vec<(String, Vec<Vec<Hint>>)>;

fn class_hints(store: &Store, s: &Scores, weights: Option<&std::path::Path>, k: usize) -> Hints {
    let Ok(run) = store.run_info() else {
        return Vec::new();
    };
    // The hint needs the classifier's weights: the built-in ones load offline; a
    // network that cannot be loaded again just gets no hint.
    let Ok(net) = neurodex::model::Network::open(&run.model, weights) else {
        return Vec::new();
    };
    if net.weights_id() != run.weights_id {
        return Vec::new();
    }
    let Ok(layers) = store.layers() else {
        return Vec::new();
    };
    s.layers
        .iter()
        .filter_map(|ls| {
            let l = layers.iter().find(|l| l.id == ls.layer_id)?;
            Some((
                ls.layer.clone(),
                concepts::hints(&net, l, &ls.mean_value, k)?,
            ))
        })
        .collect()
}

fn unit_hints<'a>(hints: &'a Hints, layer: &str, u: usize) -> Option<&'a [Hint]> {
    hints
        .iter()
        .find(|(l, _)| l == layer)
        .map(|(_, v)| v[u].as_slice())
}

fn print_hints(s: &Scores, hints: &Hints, u: usize, json: bool) {
    let Some(l) = s.layers.first() else { return };
    let Some(h) = unit_hints(hints, &l.layer, u) else {
        return;
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "layer": l.layer, "unit": u, "pushes": h })
        );
    } else {
        print_push_line(h);
    }
}

fn print_push_line(h: &[Hint]) {
    let v: Vec<String> = h
        .iter()
        .map(|h| format!("{} ({:+.3})", h.name, h.push))
        .collect();
    println!(
        "pushes most, through the classifier (weight x typical activation; needs no labels): {}",
        v.join(", ")
    );
}

fn detector_mark(s: &Scores, c: usize, sc: &concepts::Score) -> &'static str {
    if s.is_detector(c, sc) {
        "detector"
    } else {
        ""
    }
}

/// A score's columns: AP, AUROC, the count in the top 9, and "detector" when it is one.
fn score_cols(s: &Scores, c: usize, sc: &concepts::Score) -> String {
    format!(
        "{:>6.3} {:>6.3} {:>4}/{}  {}",
        sc.ap,
        sc.auroc,
        sc.top9,
        concepts::TOP.min(s.images),
        detector_mark(s, c, sc)
    )
}

fn print_best_per_concept(s: &Scores) {
    println!();
    println!("best unit per concept (--concept NAME ranks them all):");
    println!(
        "  {:<28} {:>6}  {:<14} {:>5}  {:>6} {:>6} {:>6}",
        "concept", "images", "layer", "unit", "AP", "AUROC", "top-9"
    );
    let mut rows: Vec<(usize, concepts::Ranked)> = (0..s.concepts.len())
        .filter_map(|c| s.ranked(c).into_iter().next().map(|r| (c, r)))
        .collect();
    rows.sort_by(|a, b| b.1.score.ap.total_cmp(&a.1.score.ap));
    for (c, r) in rows {
        let k = &s.concepts[c];
        println!(
            "  {:<28} {:>6}  {:<14} {:>5}  {}",
            k.qualified(),
            k.images,
            r.layer.layer,
            r.unit,
            score_cols(s, c, &r.score)
        );
    }
}

fn print_concept(s: &Scores, c: usize, top: usize) {
    let k = &s.concepts[c];
    println!();
    println!(
        "{}: {} of {} images (AP of a unit that knows nothing: about {:.3})",
        k.qualified(),
        k.images,
        s.images,
        k.images as f64 / s.images as f64
    );
    println!(
        "  {:>4}  {:<14} {:>5}  {:>6} {:>6} {:>6}",
        "rank", "layer", "unit", "AP", "AUROC", "top-9"
    );
    for (i, r) in s.ranked(c).iter().take(top).enumerate() {
        println!(
            "  {:>4}  {:<14} {:>5}  {}",
            i + 1,
            r.layer.layer,
            r.unit,
            score_cols(s, c, &r.score)
        );
    }
}

fn print_unit(s: &Scores, hints: &Hints, u: usize, top: usize) {
    let l = &s.layers[0];
    println!();
    println!(
        "unit {u} of {}: best concepts (by AP above the concept's base rate)",
        l.layer
    );
    println!(
        "  {:<28} {:>6}  {:>6} {:>6} {:>6}",
        "concept", "images", "AP", "AUROC", "top-9"
    );
    for (c, sc) in s.best(l, u, top) {
        let k = &s.concepts[c];
        println!(
            "  {:<28} {:>6}  {}",
            k.qualified(),
            k.images,
            score_cols(s, c, &sc)
        );
    }
    for (i, set) in s.class_sets.iter().enumerate() {
        let sel = l.selectivity[i][u];
        println!(
            "class selectivity over {set}: {:.3} (highest mean: {})",
            sel.index, s.concepts[sel.class].name
        );
    }
    if let Some(h) = unit_hints(hints, &l.layer, u) {
        print_push_line(h);
    }
}

fn print_summary(s: &Scores) {
    println!();
    println!(
        "detectors per layer (AP >= {DETECTOR_AP}, AUROC >= {DETECTOR_AUROC}, concepts of >= {} images):",
        concepts::DETECTOR_MIN_IMAGES
    );
    println!(
        "  {:<16} {:>6} {:>10} {:>18}",
        "layer", "units", "detectors", "distinct concepts"
    );
    for l in s.summary() {
        println!(
            "  {:<16} {:>6} {:>10} {:>18}",
            l.layer, l.units, l.detectors, l.concepts
        );
    }
}

fn json(
    s: &Scores,
    hints: &Hints,
    args: &Args,
    seconds: f64,
    progress: serde_json::Value,
) -> serde_json::Value {
    use serde_json::json;
    let score = |c: usize, sc: &concepts::Score| {
        json!({
            "ap": sc.ap, "auroc": sc.auroc, "top9": sc.top9,
            "p9": sc.p9(s.images), "detector": s.is_detector(c, sc),
        })
    };
    let per_concept: Vec<serde_json::Value> = (0..s.concepts.len())
        .map(|c| {
            let units: Vec<serde_json::Value> = s
                .ranked(c)
                .iter()
                .take(args.top)
                .map(|r| json!({ "layer": r.layer.layer, "unit": r.unit, "score": score(c, &r.score) }))
                .collect();
            json!({ "concept": s.concepts[c], "units": units })
        })
        .collect();
    let unit_json = |l: &concepts::LayerScores, u: usize| {
        let best: Vec<serde_json::Value> = s
            .best(l, u, args.top)
            .iter()
            .map(|(c, sc)| json!({ "concept": s.concepts[*c].qualified(), "score": score(*c, sc) }))
            .collect();
        let sel: Vec<serde_json::Value> = s
            .class_sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let x = l.selectivity[i][u];
                json!({ "set": set, "index": x.index, "class": s.concepts[x.class].name })
            })
            .collect();
        json!({
            "layer": l.layer, "unit": u, "best": best, "selectivity": sel,
            "mean_value": l.mean_value[u], "pushes": unit_hints(hints, &l.layer, u),
        })
    };
    let units: Vec<serde_json::Value> = match args.unit {
        Some(u) => vec![unit_json(&s.layers[0], u)],
        None => s
            .layers
            .iter()
            .flat_map(|l| (0..l.units).map(move |u| (l, u)))
            .map(|(l, u)| unit_json(l, u))
            .collect(),
    };
    json!({
        "images": s.images,
        "seconds": seconds,
        "thresholds": {
            "ap": DETECTOR_AP, "auroc": DETECTOR_AUROC,
            "min_images": concepts::DETECTOR_MIN_IMAGES,
        },
        "concepts": per_concept,
        "units": units,
        "layers": s.summary(),
        "skipped": s.skipped,
        "index": progress,
    })
}
