//! What the index keeps per unit, in memory while indexing and in the database after:
//! mergeable statistics of the per-image peaks (sums, extremes, a log-spaced
//! histogram) and the exact top-K list of images. Plain values: `store` reads and
//! writes them, `index` fills them, `query` and the gallery read them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::peaks::Peak;

/// Histogram bins: one for |v| < 2^-12 (zero), then 4 per octave from 2^-12 to 2^12
/// on each side (values beyond fall into the outermost bins).
pub const HIST_BINS: usize = 193;
const ZERO_BIN: usize = 96;
const STEPS: f64 = 4.0;
const MIN_EXP: i32 = -48;

/// The histogram bin of a finite value.
pub fn hist_bin(v: f32) -> usize {
    let a = (v as f64).abs();
    // (NaN compares false and lands here too.)
    if a.is_nan() || a < (2f64).powi(MIN_EXP / STEPS as i32) {
        return ZERO_BIN;
    }
    let e = ((a.log2() * STEPS).floor() as i32).clamp(MIN_EXP, -MIN_EXP - 1);
    let off = (e - MIN_EXP) as usize;
    if v > 0.0 {
        ZERO_BIN + 1 + off
    } else {
        ZERO_BIN - 1 - off
    }
}

/// Values of bin `b`: `[lo, hi)` by magnitude, signed.
pub fn hist_bin_range(b: usize) -> (f64, f64) {
    if b == ZERO_BIN {
        return (0.0, 0.0);
    }
    let (off, sign) = if b > ZERO_BIN {
        (b - ZERO_BIN - 1, 1.0)
    } else {
        (ZERO_BIN - 1 - b, -1.0)
    };
    let e = off as i32 + MIN_EXP;
    let lo = (2f64).powf(e as f64 / STEPS);
    let hi = (2f64).powf((e + 1) as f64 / STEPS);
    if sign > 0.0 {
        (lo, hi)
    } else {
        (-hi, -lo)
    }
}

/// Running statistics of one unit's per-image peaks. `add` in the same order gives
/// bit-identical sums, and `merge` combines disjoint sets of images.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitStats {
    /// Finite peaks seen.
    pub count: u64,
    /// NaN peaks seen (maps with no number at all).
    pub nan: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
    /// Peaks above zero: the images on which the unit fired at all.
    pub positive: u64,
    pub hist: Vec<u32>,
}

impl Default for UnitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl UnitStats {
    pub fn new() -> UnitStats {
        UnitStats {
            count: 0,
            nan: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            positive: 0,
            hist: vec![0; HIST_BINS],
        }
    }

    pub fn add(&mut self, v: f32) {
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        let x = v as f64;
        self.count += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.positive += (v > 0.0) as u64;
        self.hist[hist_bin(v)] += 1;
    }

    pub fn merge(&mut self, o: &UnitStats) {
        self.count += o.count;
        self.nan += o.nan;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.positive += o.positive;
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub fn std(&self) -> Option<f64> {
        let m = self.mean()?;
        Some((self.sum_sq / self.count as f64 - m * m).max(0.0).sqrt())
    }

    /// Fraction of images on which the unit never rose above zero.
    pub fn sparsity(&self) -> Option<f64> {
        (self.count > 0).then(|| 1.0 - self.positive as f64 / self.count as f64)
    }

    /// Approximate `q`-quantile of the peaks from the histogram (within a bin:
    /// about 19% relative), clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, &c) in self.hist.iter().enumerate() {
            seen += c as u64;
            if seen >= target {
                let (lo, hi) = hist_bin_range(b);
                let mid = if lo == 0.0 && hi == 0.0 {
                    0.0
                } else {
                    lo.signum() * (lo * hi).sqrt()
                };
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------
// Exact top-K per unit.

/// Empty statistics and top-K lists for layers of `channels` units each, keeping
/// `k` images per unit: `[layer][unit]`.
pub fn fresh(channels: &[usize], k: usize) -> (Vec<Vec<UnitStats>>, Vec<Vec<TopK>>) {
    (
        channels
            .iter()
            .map(|&c| vec![UnitStats::new(); c])
            .collect(),
        channels
            .iter()
            .map(|&c| (0..c).map(|_| TopK::new(k)).collect())
            .collect(),
    )
}

/// One image's peak for a unit, as kept in the top-K.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub value: f32,
    pub image_id: i64,
    pub y: u16,
    pub x: u16,
}

impl Hit {
    pub fn new(p: &Peak, image_id: i64) -> Hit {
        Hit {
            value: p.value,
            image_id,
            y: p.y,
            x: p.x,
        }
    }

    /// Rank order: higher value first, then the earlier image.
    pub fn rank_cmp(&self, o: &Hit) -> Ordering {
        o.value
            .total_cmp(&self.value)
            .then(self.image_id.cmp(&o.image_id))
    }
}

/// Heap order with the worst-ranked hit on top.
#[derive(Clone, Copy, Debug)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.rank_cmp(&o.0)
    }
}

/// What `TopK::offer` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Offer {
    Rejected,
    Added,
    /// Added, pushing out this hit.
    Replaced(Hit),
}

/// The K best hits of one unit, at most one per image (callers offer each image once).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// K: how many hits it keeps at most.
    pub fn capacity_k(&self) -> usize {
        self.k
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps `h` if it ranks among the K best; NaN never does.
    pub fn offer(&mut self, h: Hit) -> Offer {
        if h.value.is_nan() || self.k == 0 {
            return Offer::Rejected;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(h));
            return Offer::Added;
        }
        let worst = self.heap.peek().expect("k > 0").0;
        if h.rank_cmp(&worst) == Ordering::Less {
            self.heap.pop();
            self.heap.push(Worst(h));
            Offer::Replaced(worst)
        } else {
            Offer::Rejected
        }
    }

    /// Hits best first.
    pub fn sorted(&self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.iter().map(|w| w.0).collect();
        v.sort_by(|a, b| a.rank_cmp(b));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_full_sort() {
        // Values with ties and a NaN; the reference sorts everything and cuts.
        let values = [
            3.0,
            1.0,
            4.0,
            1.0,
            5.0,
            9.0,
            2.0,
            6.0,
            5.0,
            3.0,
            5.0,
            f32::NAN,
            8.0,
            9.0,
            7.0,
        ];
        let mut t = TopK::new(5);
        for (i, &v) in values.iter().enumerate() {
            t.offer(Hit {
                value: v,
                image_id: i as i64,
                y: 0,
                x: 0,
            });
        }
        let got: Vec<(f32, i64)> = t.sorted().iter().map(|h| (h.value, h.image_id)).collect();
        // 9 (ids 5, 13), 8 (12), 7 (14), 6 (7).
        assert_eq!(
            got,
            vec![(9.0, 5), (9.0, 13), (8.0, 12), (7.0, 14), (6.0, 7)]
        );
    }

    #[test]
    fn a_tie_with_the_worst_keeps_the_earlier_image() {
        let mut t = TopK::new(1);
        let h = |v, id| Hit {
            value: v,
            image_id: id,
            y: 0,
            x: 0,
        };
        assert_eq!(t.offer(h(2.0, 7)), Offer::Added);
        assert_eq!(t.offer(h(2.0, 9)), Offer::Rejected);
        assert_eq!(t.offer(h(2.0, 3)), Offer::Replaced(h(2.0, 7)));
    }

    #[test]
    fn histogram_bins_are_quarter_octaves() {
        assert_eq!(hist_bin(0.0), ZERO_BIN);
        assert_eq!(hist_bin(-0.0), ZERO_BIN);
        assert_eq!(hist_bin(1e-9), ZERO_BIN);
        // 1.0 = 2^0: e = 0, off 48 -> bin 96 + 1 + 48.
        assert_eq!(hist_bin(1.0), 145);
        // 2^(1/4) starts the next bin; just below it stays.
        assert_eq!(hist_bin(1.1892), 145);
        assert_eq!(hist_bin(1.1893), 146);
        assert_eq!(hist_bin(-1.0), 47);
        assert_eq!(hist_bin(1e30), HIST_BINS - 1);
        assert_eq!(hist_bin(-1e30), 0);
        let (lo, hi) = hist_bin_range(145);
        assert_eq!(lo, 1.0);
        assert!((hi - 2f64.powf(0.25)).abs() < 1e-12);
        assert_eq!(hist_bin_range(47), (-hi, -1.0));
    }

    #[test]
    fn quantiles_come_within_a_bin() {
        let mut s = UnitStats::new();
        for i in 1..=1000 {
            s.add(i as f32 / 100.0);
        }
        let median = s.quantile(0.5).unwrap();
        assert!((median / 5.0 - 1.0).abs() < 0.2, "{median}");
        assert_eq!(s.quantile(1.0), Some(10.0));
        let low = s.quantile(0.0).unwrap();
        assert!((low / 0.01 - 1.0).abs() < 0.2, "{low}");
    }
}
