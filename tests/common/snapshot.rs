//! Everything a query can see of an index, keyed by path (not by row id), to compare
//! two indexes of the same photos made in different ways (killed and resumed,
//! sharded and merged).

use std::collections::BTreeMap;
use std::path::Path;

use neurodex::store::Store;

/// A unit's statistics row: layer, unit, count, nan, sum bits, sum_sq bits, min, max,
/// positive, histogram.
pub type StatsRow = (
    i64,
    i64,
    i64,
    i64,
    u64,
    u64,
    Option<f64>,
    Option<f64>,
    i64,
    Vec<u8>,
);

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// path -> status
    pub images: BTreeMap<String, String>,
    /// (layer, unit, path, value bits, y, x), each unit's hits best first.
    pub top: Vec<(i64, i64, String, u32, i64, i64)>,
    pub stats: Vec<StatsRow>,
    /// (set, concept, path), sorted.
    pub labels: Vec<(String, String, String)>,
}

pub fn snapshot(db: &Path) -> Snapshot {
    let s = Store::open_readonly(db).unwrap();
    let c = &rusqlite::Connection::open(db).unwrap();
    let images = c
        .prepare("SELECT path, status FROM image")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let path_of = |id: i64| -> String {
        c.query_row("SELECT path FROM image WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    };
    let mut top = Vec::new();
    for l in s.layers().unwrap() {
        for u in 0..l.channels {
            for h in s.top_hits(l.id, u).unwrap() {
                // exact float bits
                top.push((
                    l.id,
                    u as i64,
                    path_of(h.image_id),
                    h.value.to_bits(),
                    h.y as i64,
                    h.x as i64,
                ));
            }
        }
    }
    let stats = c
        .prepare(
            "SELECT layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist
             FROM unit_stats ORDER BY layer_id, unit",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<_, f64>(4)?.to_bits(),
                r.get::<_, f64>(5)?.to_bits(),
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let labels = c
        .prepare(
            "SELECT s.name, k.name, i.path FROM image_label il
             JOIN concept k ON k.id = il.concept_id JOIN label_set s ON s.id = k.set_id
             JOIN image i ON i.id = il.image_id ORDER BY 1, 2, 3",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Snapshot {
        images,
        top,
        stats,
        labels,
    }
}

/// Whether `got` equals `want` but for the order in which the sums were added:
/// images, labels and every top-K list (images, order, values, locations) identical,
/// counts, extremes and histograms identical, sums within 1e-12 relative. Returns
/// the largest relative difference of a sum.
#[allow(dead_code)]
pub fn equal_but_summation(got: &Snapshot, want: &Snapshot) -> Result<f64, String> {
    if got.images != want.images {
        return Err(format!(
            "images differ: {:?} vs {:?}",
            got.images, want.images
        ));
    }
    if got.labels != want.labels {
        return Err(format!(
            "labels differ: {:?} vs {:?}",
            got.labels, want.labels
        ));
    }
    if got.top.len() != want.top.len() {
        return Err(format!(
            "{} top-K hits, not {}",
            got.top.len(),
            want.top.len()
        ));
    }
    if let Some((g, w)) = got.top.iter().zip(&want.top).find(|(g, w)| g != w) {
        return Err(format!("top-K differs: {g:?} where one index has {w:?}"));
    }
    let mut worst = 0f64;
    for (g, w) in got.stats.iter().zip(&want.stats) {
        let strip = |s: &StatsRow| (s.0, s.1, s.2, s.3, s.6, s.7, s.8, s.9.clone());
        if strip(g) != strip(w) {
            return Err(format!("unit statistics differ: {g:?} vs {w:?}"));
        }
        for (a, b) in [(g.4, w.4), (g.5, w.5)] {
            let (a, b) = (f64::from_bits(a), f64::from_bits(b));
            let rel = (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
            worst = worst.max(if a == b { 0.0 } else { rel });
        }
    }
    if got.stats.len() != want.stats.len() || worst > 1e-12 {
        return Err(format!("sums differ by {worst:e} relative"));
    }
    Ok(worst)
}

/// Indexed images in `db`, 0 while it does not exist or is being created (for tests
/// that watch an `index` run from outside).
#[allow(dead_code)]
pub fn count_ok(db: &Path) -> i64 {
    Store::open_readonly(db)
        .ok()
        .and_then(|s| s.count_images("ok").ok())
        .map(|n| n as i64)
        .unwrap_or(0)
}
