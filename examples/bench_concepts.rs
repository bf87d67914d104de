//! Scoring speed of `neurodex concepts` on a synthetic index the size of a large
//! collection: N images (default 50,000) with EfficientNet-Lite0's default layers
//! (1,760 units), one concept on 5% of them planted in one unit. Times one concept
//! scored over every unit (the peaks read once), three runs, and reports the
//! database size. The index is written once to target/bench/ and reused.
//!
//!   cargo run --release --example bench_concepts [-- IMAGES]

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use std::time::Instant;

use neurodex::concepts::{self, Options};
use neurodex::store::Store;

const LAYERS: [(&str, usize); 7] = [
    ("stem", 32),
    ("blocks.2", 24),
    ("blocks.4", 40),
    ("blocks.7", 80),
    ("blocks.10", 112),
    ("blocks.14", 192),
    ("head", 1280),
];

/// A cheap hash of (image, unit) to a value in [-2, 8): ties are rare, as with real
/// peaks.
fn noise(i: usize, u: usize) -> f32 {
    let mut x = (i as u64) << 20 ^ u as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 40) as f32 / (1u64 << 24) as f32 * 10.0 - 2.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("IMAGES is a number"))
        .unwrap_or(50_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("concepts-{n}.db"));
    let has_concept = |i: usize| i % 20 == 7;
    if !db.exists() {
        let t = Instant::now();
        let tmp = dir.join(format!("concepts-{n}.db.part"));
        let _ = std::fs::remove_file(&tmp);
        let units: Vec<usize> = LAYERS
            .iter()
            .scan(0, |acc, l| {
                *acc += l.1;
                Some(*acc - l.1)
            })
            .collect();
        let mut store = synthetic::build(&tmp, &dir, &LAYERS, n, |i, l, u| {
            let v = noise(i, units[l] + u);
            // head unit 7 detects the concept: +4 on its images.
            if l == 6 && u == 7 && has_concept(i) {
                v + 4.0
            } else {
                v
            }
        });
        let pairs: Vec<(i64, String)> = (0..n)
            .filter(|&i| has_concept(i))
            .map(|i| {
                let id = store
                    .image_id(synthetic::path(i).as_bytes())
                    .unwrap()
                    .unwrap();
                (id, "planted".to_string())
            })
            .collect();
        store
            .put_labels("bench", "synthetic", &pairs, false)
            .unwrap();
        drop(store);
        std::fs::rename(&tmp, &db).unwrap();
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::rename(
                dir.join(format!("concepts-{n}.db.part{ext}")),
                dir.join(format!("concepts-{n}.db{ext}")),
            );
        }
        let _ = std::fs::remove_file(dir.join(format!("concepts-{n}.db.part.lock")));
        eprintln!(
            "wrote {} in {:.1} s",
            db.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let store = Store::open_readonly(&db).unwrap();
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|e| std::fs::metadata(format!("{}{e}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let units: usize = LAYERS.iter().map(|l| l.1).sum();
    let opts = Options {
        concepts: Some(vec!["planted".into()]),
        ..Options::default()
    };
    let mut times = Vec::new();
    let mut best = None;
    for _ in 0..3 {
        let t = Instant::now();
        let s = concepts::score(&store, &opts).unwrap();
        times.push(t.elapsed().as_secs_f64());
        let r = &s.ranked(0)[0];
        best = Some((r.layer.layer.clone(), r.unit, r.score));
    }
    times.sort_by(f64::total_cmp);
    let (layer, unit, sc) = best.unwrap();
    println!(
        "CONCEPTS images={n} units={units} threads={} db_mb={:.0} score_s_median={:.2} best={:.2} worst={:.2} | best unit {layer} {unit}: AP {:.3} AUROC {:.3} top9 {}",
        rayon::current_num_threads(),
        size as f64 / 1e6,
        times[1],
        times[0],
        times[2],
        sc.ap,
        sc.auroc,
        sc.top9
    );
}
