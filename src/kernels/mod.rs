//! Hand-written CPU kernels for the forward pass, on plain `f32` slices (NCHW, or
//! channel-blocked in `blocked`).
//!
//! candle's conv2d is slow for the layers these networks use (depthwise above all),
//! so convolutions are done here: depthwise layers by a direct kernel (vectorised
//! across 16 channels on AVX-512, along each plane's rows elsewhere), 1x1 layers by
//! plain GEMM, and the rest by tiled im2col + GEMM (the `gemm` crate, which picks
//! AVX-512/AVX2 at run time), except on AVX-512 where 3x3 stride-1 layers go through
//! Winograd F(4x4, 3x3) / F(2x2, 3x3) and stems on at most 4 input channels are
//! convolved directly. Also on AVX-512, `blocked` runs 1x1, depthwise and stem layers on
//! activations with 16 channels interleaved per pixel, which `Network` keeps between such
//! layers. Bias and activation are fused into each kernel's last pass.
//! Fully connected layers stream weights packed in blocks of outputs. Work is
//! spread over rayon's global pool: over images for batches, inside the image for a
//! single one.

pub mod blocked;
mod conv;
mod depthwise;
mod depthwise16;
mod direct;
mod linear;
mod peaks;
mod pool;
mod simd;
#[cfg(test)]
mod tests;
mod winograd;

mod terms;
pub use terms::{Act, Pad};

pub use conv::{Conv2d, ConvGeom};
pub use linear::Linear;
pub use peaks::channel_peaks;
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use rayon::prelude::*;

thread_local! {
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the GEMM-based kernels called from this thread single-threaded
/// (they otherwise split one image's GEMM over all threads). For callers that already
/// keep every thread busy with an image of its own.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let r = f();
    SERIAL.with(|s| s.set(before));
    r
}

/// Threads a kernel called from here may split its work over.
pub(crate) fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Elements per parallel task in the elementwise passes.
const ELEMENTWISE_CHUNK: usize = 64 * 1024;

/// `dst = lhs * rhs` for row-major operands (`m x k` times `k x n`) whose rows lie
/// `*_rs` floats apart: the usual way the kernels call the `gemm` crate.
///
/// # Safety
/// Each pointer must be valid for its matrix: `m` rows of `n` (dst, writable),
/// `m` rows of `k` (lhs) and `k` rows of `n` (rhs), at the given row strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    par: gemm::Parallelism,
) {
    // SAFETY: passed on from the caller.
    unsafe {
        gemm_strided(
            (m, n, k),
            (dst, dst_rs, 1),
            (lhs, lhs_rs, 1),
            (rhs, rhs_rs, 1),
            par,
        )
    }
}

/// `dst = lhs * rhs` with any element strides: each operand is `(pointer, row
/// stride, column stride)`.
///
/// # Safety
/// Each pointer must be valid for its matrix (`m x n`, `m x k`, `k x n`) at its
/// strides; dst is overwritten, not read.
pub(crate) unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (*mut f32, usize, usize),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller vouches for the three matrices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Applies `act` to every element in place.
pub fn apply_act(x: &mut [f32], act: Act) {
    if act != Act::None {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .for_each(|c| bias_act(c, 0.0, act));
    }
}

/// Residual connection: `acc += other`, then `act`, in one pass.
///
/// # Panics
/// If the slices differ in length.
pub fn add_act(acc: &mut [f32], other: &[f32], act: Act) {
    assert_eq!(acc.len(), other.len(), "add_act: operands differ in length");
    acc.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(other.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(a, b)| add_act_chunk(a, b, act));
}

simd::multiversion! {
    pub(crate) fn add_act_chunk(acc: &mut [f32], other: &[f32], act: Act) {
        let _ = FMA;
        let (lo, hi) = act_bounds(act);
        acc.iter_mut().zip(other).for_each(|(a, b)| *a = clamp(*a + b, lo, hi));
    }
}

/// Every activation here is a clamp: (lower, upper) bound.
#[inline(always)]
pub(crate) fn act_bounds(act: Act) -> (f32, f32) {
    match act {
        Act::None => (f32::NEG_INFINITY, f32::INFINITY),
        Act::Relu => (0.0, f32::INFINITY),
        Act::Relu6 => (0.0, 6.0),
    }
}

/// Clamp written as two compare-and-selects: NaN passes through unchanged (like
/// torch) and each select is one vector max/min instruction.
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

simd::multiversion! {
    /// `v + bias` then `act` over a slice: the epilogue every kernel ends with.
    pub(crate) fn bias_act(x: &mut [f32], bias: f32, act: Act) {
        let _ = FMA;
        let (lo, hi) = act_bounds(act);
        x.iter_mut().for_each(|v| *v = clamp(*v + bias, lo, hi));
    }
}

simd::multiversion! {
    /// `v + bias + y` then `act`: the epilogue of a conv whose output a residual
    /// connection adds `y` to.
    pub(crate) fn bias_add_act(x: &mut [f32], y: &[f32], bias: f32, act: Act) {
        let _ = FMA;
        let (lo, hi) = act_bounds(act);
        x.iter_mut().zip(y).for_each(|(v, y)| *v = clamp(*v + bias + y, lo, hi));
    }
}

/// A zeroed buffer for a kernel's output. Large outputs are fresh memory from the
/// OS, and faulting it in 4 KiB pages cost as much as the layer itself (51 MB for
/// ResNet's stem at batch 16: 15 ms of page faults); on Linux, asking for
/// transparent huge pages first makes that a few milliseconds.
pub(crate) fn alloc_output(len: usize) -> Vec<f32> {
    const HUGE: usize = 2 << 20;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    if len * 4 >= 2 * HUGE {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_HUGEPAGE: i32 = 14;
        // Whole huge pages inside the allocation only; failure just means small pages.
        let start = (v.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_mut_ptr() as usize + len * 4) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside memory this Vec owns; madvise only
            // changes how the kernel backs it, not its contents.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
            }
        }
    }
    v.resize(len, 0.0);
    v
}
