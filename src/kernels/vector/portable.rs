//! [`V16`] as a plain array: the baseline on any target (the compiler vectorises
//! the lane loops for SSE2 on x86-64), and what tests force to check the kernels'
//! logic apart from any ISA's intrinsics.

use super::V16;

#[derive(Clone, Copy)]
pub(crate) struct F32x16([f32; 16]);

impl F32x16 {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        F32x16(std::array::from_fn(|l| f(self.0[l], o.0[l])))
    }
}

impl V16 for F32x16 {
    /// 16 SSE registers of 4 lanes: 3 accumulators of 16 lanes leave room for the
    /// operands.
    const ACC: usize = 3;

    #[inline(always)]
    fn apart<K: super::Apart<Self>>(k: K) -> K::Out {
        super::apart_plain(k)
    }

    #[inline(always)]
    fn zero() -> Self {
        F32x16([0.0; 16])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        F32x16([v; 16])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller vouches for 16 floats at p.
        F32x16(unsafe { p.cast::<[f32; 16]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: as for `load`.
        unsafe { p.cast::<[f32; 16]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.map2(o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // Unfused: without FMA hardware `mul_add` is a slow library call.
        F32x16(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        F32x16(std::array::from_fn(|l| c.0[l] - self.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        F32x16(std::array::from_fn(|l| {
            crate::kernels::clamp(self.0[l], lo.0[l], hi.0[l])
        }))
    }
}
