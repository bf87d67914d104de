//! What every kernel ends with: bias, residual sum and activation, fused into the
//! last pass over an output (each activation here is a clamp).

use rayon::prelude::*;

use super::simd;
use super::Act;

/// Elements per parallel task in the elementwise passes.
const ELEMENTWISE_CHUNK: usize = 64 * 1024;

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
