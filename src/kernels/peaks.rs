//! Per-channel peak (value and flat position) of activation planes, the quantity
//! the index records for every unit and image.

use rayon::prelude::*;

use super::simd::multiversion;

/// Per (image, channel) peak over the `hw` cells of its plane: values `[n*c]` and
/// argmax `[n*c]` (flat index `y*w + x`). NaNs are ignored; a plane of only NaN
/// (or an empty plane) gives value NaN at index 0; ties go to the first index.
///
/// # Panics
/// If `x.len() != n * c * hw`.
pub fn channel_peaks(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<u32>) {
    assert_eq!(
        x.len(),
        n * c * hw,
        "channel_peaks: input length does not match {n}x{c}x{hw}"
    );
    let planes = n * c;
    if hw == 0 {
        return (vec![f32::NAN; planes], vec![0; planes]);
    }
    let mut vals = vec![0f32; planes];
    let mut idx = vec![0u32; planes];
    // Planes are small: hand rayon enough of them at once to amortise the task.
    let per_task = (16 * 1024 / hw).max(1);
    vals.par_chunks_mut(per_task)
        .zip(idx.par_chunks_mut(per_task))
        .zip(x.par_chunks(per_task * hw))
        .for_each(|((v, i), xs)| {
            for ((v, i), p) in v.iter_mut().zip(i.iter_mut()).zip(xs.chunks_exact(hw)) {
                (*v, *i) = plane_peak(p);
            }
        });
    (vals, idx)
}

multiversion! {
    /// Max ignoring NaN, with lane accumulators the compiler keeps in vector
    /// registers, then the first position holding it (the plane is still in cache).
    fn plane_peak(p: &[f32]) -> (f32, u32) {
        const LANES: usize = 32;
        let _ = FMA;
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = p.chunks_exact(LANES);
        let tail = chunks.remainder();
        for ch in chunks {
            for l in 0..LANES {
                // `>` is false for NaN, so NaN never replaces the accumulator.
                acc[l] = if ch[l] > acc[l] { ch[l] } else { acc[l] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for &v in acc.iter().chain(tail) {
            if v > m {
                m = v;
            }
        }
        // Not found only when every value is NaN (m stayed -inf and none equals it).
        match p.iter().position(|&v| v == m) {
            Some(i) => (m, i as u32),
            None => (f32::NAN, 0),
        }
    }
}
