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
        // The value is the one stored there (of two zeros, the first one's sign).
        match p.iter().position(|&v| v == m) {
            Some(i) => (p[i], i as u32),
            None => (f32::NAN, 0),
        }
    }
}

/// `channel_peaks` of `n` channel-blocked images (`[c/16][hw][16]` each, see
/// `blocked`) without unblocking them: the same values and positions, found 16
/// channels at a time as the pixels stream by. Runs on the calling thread (it is
/// called per image from the threads that computed them).
///
/// # Panics
/// If `x.len() != n * blocked::image_len(c, hw)`.
pub fn blocked_channel_peaks(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<u32>) {
    use super::blocked::{image_len, LANES};
    assert_eq!(
        x.len(),
        n * image_len(c, hw),
        "blocked_channel_peaks: input length does not match {n}x{c}x{hw}"
    );
    let mut vals = vec![f32::NAN; n * c];
    let mut idx = vec![0u32; n * c];
    if hw == 0 {
        return (vals, idx);
    }
    let blocks = x.chunks_exact(LANES * hw);
    for (b, block) in blocks.enumerate() {
        let (img, first) = (b / c.div_ceil(LANES), b % c.div_ceil(LANES) * LANES);
        let (m, at) = block_peak(block);
        for l in 0..LANES.min(c - first) {
            let o = img * c + first + l;
            if m[l] == f32::NEG_INFINITY {
                // Only -inf or NaN in this plane: the rare case, as plane_peak has it.
                let plane = block.iter().skip(l).step_by(LANES);
                match plane.clone().position(|&v| v == f32::NEG_INFINITY) {
                    Some(i) => (vals[o], idx[o]) = (f32::NEG_INFINITY, i as u32),
                    None => (vals[o], idx[o]) = (f32::NAN, 0),
                }
            } else {
                (vals[o], idx[o]) = (m[l], at[l]);
            }
        }
    }
    (vals, idx)
}

multiversion! {
    /// The first maximum of each of a block's 16 planes (pixel-major): `>` keeps the
    /// earliest of equal values and never takes a NaN.
    fn block_peak(block: &[f32]) -> ([f32; 16], [u32; 16]) {
        let _ = FMA;
        let mut m = [f32::NEG_INFINITY; 16];
        let mut at = [0u32; 16];
        for (p, px) in block.chunks_exact(16).enumerate() {
            for l in 0..16 {
                let take = px[l] > m[l];
                m[l] = if take { px[l] } else { m[l] };
                at[l] = if take { p as u32 } else { at[l] };
            }
        }
        (m, at)
    }
}
