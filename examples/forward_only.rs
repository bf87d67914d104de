//! The forward pass alone, for `scripts/bench-index.sh` to set `neurodex index` against:
//! decodes up to N images of DIR first (failures named, left out of the timing), then
//! times only the forward passes over them, in batches, with the same layers tapped
//! as `index` would.
//!
//!   forward_only DIR N [BATCH=16] [LAYERS=default|all|a,b,...] [THREADS]
//!
//! PASS=peaks times what `index` runs: the taps before their activations and each
//! unit's peak (`forward_peaks`); PASS=maps the same numbers through the maps
//! (`forward_taps`, then the peaks of each); unset, the maps after the activations.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;

use neurodex::crawl::{self, Found};
use neurodex::model::{Network, Tap, DEFAULT_MODEL};
use neurodex::peaks;
use neurodex::preprocess::DEFAULT_MAX_PIXELS;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: forward_only DIR N [BATCH] [LAYERS] [THREADS]";
    let dir = PathBuf::from(args.first().context(usage)?);
    let limit: usize = args.get(1).context(usage)?.parse().context("N")?;
    let batch: usize = args.get(2).map_or(Ok(16), |b| b.parse()).context("BATCH")?;
    let layers: Option<Vec<String>> = args
        .get(3)
        .filter(|l| *l != "default")
        .map(|l| l.split(',').map(str::to_string).collect());
    if let Some(t) = args.get(4) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.parse().context("THREADS")?)
            .build_global()?;
    }
    let mut net = Network::open(DEFAULT_MODEL, None)?;
    let taps = net.arch.layer_nodes(layers.as_deref())?;
    let pass = std::env::var("PASS").unwrap_or_default();
    if !pass.is_empty() {
        net.split_activations(&taps);
    }
    let pre: Vec<Tap> = taps.iter().map(|&t| Tap::new(t, true)).collect();
    let files: Vec<(PathBuf, u64)> = crawl::walk(&dir)
        .filter_map(|e| match e.what {
            Found::File { size, .. } => Some((e.abs, size)),
            _ => None,
        })
        .take(limit)
        .collect();
    let t = Instant::now();
    let loaded: Vec<_> = files
        .par_iter()
        .map(|(p, size)| {
            (
                p,
                crawl::load(p, *size, &net.arch.recipe, DEFAULT_MAX_PIXELS),
            )
        })
        .collect();
    let mut inputs: Vec<Vec<f32>> = Vec::with_capacity(loaded.len());
    for (p, r) in loaded {
        match r {
            Ok(l) => inputs.push(l.input),
            // Left out of the timing, but said: a benchmark must not hide its input.
            Err(f) => eprintln!(
                "{}: {}: {} (not timed)",
                p.display(),
                f.kind.as_str(),
                f.reason
            ),
        }
    }
    println!(
        "decode+prepare alone: {} images in {:.2} s = {:.2} images/s ({} failed)",
        inputs.len(),
        t.elapsed().as_secs_f64(),
        inputs.len() as f64 / t.elapsed().as_secs_f64(),
        files.len() - inputs.len()
    );
    let batch = batch.max(1);
    let start = Instant::now();
    for chunk in inputs.chunks(batch) {
        let x: Vec<f32> = chunk.concat();
        match pass.as_str() {
            "peaks" => {
                let found = net.forward_peaks(&x, chunk.len(), &pre)?;
                let p: Vec<_> = found.iter().map(peaks::of_tap).collect::<Result<_, _>>()?;
                std::hint::black_box(p);
            }
            "maps" => {
                let maps = net.forward_taps(&x, chunk.len(), &pre)?;
                let p: Vec<_> = maps
                    .iter()
                    .map(peaks::of_activation)
                    .collect::<Result<_, _>>()?;
                std::hint::black_box(p);
            }
            _ => {
                std::hint::black_box(net.forward_raw(&x, chunk.len(), &taps)?);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "forward-only{}: {} images in {secs:.2} s = {:.2} images/s (batch {batch}, {} threads)",
        if pass.is_empty() {
            String::new()
        } else {
            format!(" PASS={pass}")
        },
        inputs.len(),
        inputs.len() as f64 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
