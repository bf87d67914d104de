//! Hand-written CPU kernels for the forward pass, on plain `f32` slices (NCHW, or
//! channel-blocked in `blocked`). They know nothing of models: a layer is a
//! [`Conv2d`], [`Linear`] or pooling call with its geometry.
//!
//! The façade over these rooms:
//! - `isa` decides the instruction set (the CPU's, or a lower one `NEURODEX_ISA`
//!   asks for); `vector` is the 16-lane type the fast kernels are written in once
//!   and compiled per ISA (AVX-512, AVX2, NEON, portable); `simd` compiles plain
//!   loops per ISA for the compiler to vectorise.
//! - `conv` chooses each layer's [`ConvPath`] and runs it: `blocked` (1x1, depthwise
//!   and stem layers on activations with 16 channels interleaved per pixel, which
//!   `Network` keeps between such layers), `winograd` (3x3 stride 1), `direct` (NCHW
//!   stems on at most 4 channels), `depthwise` and `depthwise16` (NCHW depthwise),
//!   and im2col + GEMM (`matmul`, the `gemm` crate) for the rest.
//! - `linear` streams fully connected weights in blocks of outputs; `pool`,
//!   `peaks` (per-channel maxima, what the index records); `epilogue` is the bias,
//!   residual and activation pass every kernel fuses into its last step.
//! - Backward: `transpose` runs a convolution's input gradient as a convolution
//!   (through the paths above); `linear` and `pool` have their layers' gradients.
//!
//! Work is spread over rayon's global pool: over images for batches, inside the
//! image for a single one.

pub mod blocked;
mod conv;
mod depthwise;
mod depthwise16;
mod direct;
mod epilogue;
pub mod isa;
mod linear;
mod matmul;
mod peaks;
mod pool;
mod simd;
mod terms;
#[cfg(test)]
mod tests;
mod transpose;
mod vector;
mod winograd;

pub use conv::{Conv2d, ConvGeom, ConvPath};
pub(crate) use epilogue::{act_bounds, add_act_chunk, bias_act, bias_add_act, clamp};
pub use epilogue::{add_act, apply_act};
pub use isa::Isa;
pub use linear::Linear;
pub(crate) use matmul::{gemm_rows, gemm_strided};
pub use peaks::{blocked_channel_peaks, channel_peaks};
pub use pool::{
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
    max_pool2d_backward,
};
pub use terms::{Act, Pad};
pub use transpose::ConvTranspose;

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

/// Runs `f` (which splits its kernels over the pool, as a single image's pass does)
/// with the pool's other threads kept awake: each spins, taking the jobs `f`'s
/// parallel loops leave (`rayon::yield_now`), until `f` returns. Otherwise an idle
/// rayon worker falls asleep after some 20 microseconds, and waking it again for the
/// next layer took 30-60 microseconds on a 2-core VM (measured: a parallel step of
/// two halves cost 11-75 us more than its work, called from outside the pool; 2-6 us
/// this way), more than some late layers take. `f` runs on a worker of the pool; a
/// call inside `f` just runs its own closure ([`pool_kept_awake`] says so).
pub fn keep_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    // `f` with this thread marked as running inside such a call, however it ends.
    let marked = || {
        struct Unmark(bool);
        impl Drop for Unmark {
            fn drop(&mut self) {
                AWAKE.with(|a| a.set(self.0));
            }
        }
        let _unmark = Unmark(AWAKE.with(|a| a.replace(true)));
        f()
    };
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || SERIAL.with(|s| s.get()) || pool_kept_awake() {
        return marked();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| {
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Helpers end when this does, however it ends.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        marked()
    })
}

thread_local! {
    static AWAKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs inside [`keep_pool_awake`].
pub fn pool_kept_awake() -> bool {
    AWAKE.with(|a| a.get())
}

/// Threads a kernel called from here may split its work over.
pub(crate) fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
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
