//! Hand-written CPU kernels for the forward pass, on plain NCHW `f32` slices.
//!
//! candle's conv2d is slow for the layers these networks use (depthwise above all),
//! so convolutions are done here: a direct kernel for depthwise layers, plain GEMM for
//! 1x1 layers, and tiled im2col + GEMM (the `gemm` crate, which picks AVX-512/AVX2 at
//! run time) for the rest. Bias and activation are fused into each kernel's last pass.
//! Work is spread over rayon's global pool: over images for batches, inside the image
//! for a single one.

mod conv;
mod depthwise;
mod linear;
mod peaks;
mod pool;
mod simd;
#[cfg(test)]
mod tests;

pub use crate::arch::spec::{Act, Pad};
pub use conv::{Conv2d, ConvGeom};
pub use linear::Linear;
pub use peaks::channel_peaks;
pub use pool::{adaptive_avg_pool2d, max_pool2d};

/// Applies `act` to every element in place.
pub fn apply_act(x: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Relu => x.iter_mut().for_each(|v| *v = relu(*v)),
        Act::Relu6 => x.iter_mut().for_each(|v| *v = relu6(*v)),
    }
}

/// Residual connection: `acc += other`, then `act`, in one pass.
///
/// # Panics
/// If the slices differ in length.
pub fn add_act(acc: &mut [f32], other: &[f32], act: Act) {
    assert_eq!(acc.len(), other.len(), "add_act: operands differ in length");
    let zipped = acc.iter_mut().zip(other);
    match act {
        Act::None => zipped.for_each(|(a, b)| *a += b),
        Act::Relu => zipped.for_each(|(a, b)| *a = relu(*a + b)),
        Act::Relu6 => zipped.for_each(|(a, b)| *a = relu6(*a + b)),
    }
}

// Written as compare-and-select so that NaN passes through unchanged (like torch)
// and the compiler turns the loops into vector min/max.
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

#[inline(always)]
pub(crate) fn relu6(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else if v > 6.0 {
        6.0
    } else {
        v
    }
}

simd::multiversion! {
    /// `v + bias` then `act` over a slice: the epilogue every kernel ends with.
    pub(crate) fn bias_act(x: &mut [f32], bias: f32, act: Act) {
        let _ = FMA;
        match act {
            Act::None => x.iter_mut().for_each(|v| *v += bias),
            Act::Relu => x.iter_mut().for_each(|v| *v = relu(*v + bias)),
            Act::Relu6 => x.iter_mut().for_each(|v| *v = relu6(*v + bias)),
        }
    }
}
