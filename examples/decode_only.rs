//! The input side of `neurodex index` alone, on one core: how many images a second
//! `preprocess::open_image` decodes (file to upright RGB) and `preprocess::prepare` resizes
//! (crop, resample, normalise to the network input), for `scripts/bench.sh --index`.
//!
//!   decode_only DIR N [MODEL=efficientnet-lite0] [REPEAT=3]
//!
//! Takes the first N image files of DIR in the order `index` walks them, reads them once
//! (so that the page cache holds them), then REPEAT times decodes every one and resizes
//! every decoded image, timing the two apart on the calling thread, and prints the best
//! round of each:
//!   decode: N images, D images/s per core (mean W x H px, M MP/s)
//!   resize: N images, R images/s per core (MODEL's recipe)
//!   decode+resize: N images, B images/s per core
//! Files that fail to decode are named and left out.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use neurodex::crawl::{self, Found};
use neurodex::preprocess::{open_image, prepare, DEFAULT_MAX_PIXELS};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: decode_only DIR N [MODEL] [REPEAT]";
    let dir = PathBuf::from(args.first().context(usage)?);
    let limit: usize = args.get(1).context(usage)?.parse().context("N")?;
    let model = args.get(2).map_or("efficientnet-lite0", |s| s.as_str());
    let repeat: usize = args.get(3).map_or(Ok(3), |r| r.parse()).context("REPEAT")?;
    let recipe = neurodex::arch::by_name(model)?.recipe;
    let files: Vec<PathBuf> = crawl::walk(&dir)
        .filter_map(|e| match e.what {
            Found::File { .. } => Some(e.abs),
            _ => None,
        })
        .take(limit)
        .collect();
    let mut ok = Vec::new();
    for f in &files {
        std::fs::read(f).with_context(|| f.display().to_string())?;
        match open_image(f, DEFAULT_MAX_PIXELS) {
            Ok(_) => ok.push(f.clone()),
            Err(e) => eprintln!("{}: {e} (left out)", f.display()),
        }
    }
    anyhow::ensure!(
        !ok.is_empty(),
        "no decodable image among {} files",
        files.len()
    );
    let (mut decode, mut resize) = (f64::INFINITY, f64::INFINITY);
    let mut pixels = 0u64;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let images: Vec<_> = ok
            .iter()
            .map(|f| open_image(f, DEFAULT_MAX_PIXELS).expect("decoded before"))
            .collect();
        decode = decode.min(t.elapsed().as_secs_f64());
        pixels = images
            .iter()
            .map(|i| i.width() as u64 * i.height() as u64)
            .sum();
        let t = Instant::now();
        for img in &images {
            std::hint::black_box(prepare(img, &recipe));
        }
        resize = resize.min(t.elapsed().as_secs_f64());
    }
    let n = ok.len() as f64;
    println!(
        "decode: {} images, {:.1} images/s per core (mean {:.0} kpx, {:.1} MP/s)",
        ok.len(),
        n / decode,
        pixels as f64 / n / 1e3,
        pixels as f64 / decode / 1e6
    );
    println!(
        "resize: {} images, {:.1} images/s per core ({model}'s recipe, {} px)",
        ok.len(),
        n / resize,
        recipe.size
    );
    println!(
        "decode+resize: {} images, {:.1} images/s per core",
        ok.len(),
        n / (decode + resize)
    );
    Ok(())
}
