//! [`V16`] as four NEON registers (aarch64, where NEON is always present).

use std::arch::aarch64::*;

use super::V16;

#[derive(Clone, Copy)]
pub(crate) struct F32x16([float32x4_t; 4]);

impl F32x16 {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(float32x4_t, float32x4_t) -> float32x4_t) -> Self {
        F32x16(std::array::from_fn(|i| f(self.0[i], o.0[i])))
    }
}

// SAFETY (every method): NEON is part of the aarch64 baseline.
impl V16 for F32x16 {
    /// 32 registers of 4 lanes: 6 accumulators of 16 lanes (24 registers).
    const ACC: usize = 6;

    #[inline(always)]
    fn apart<K: super::Apart<Self>>(k: K) -> K::Out {
        super::apart_plain(k)
    }

    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        F32x16([unsafe { vdupq_n_f32(v) }; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x16(std::array::from_fn(|i| unsafe { vld1q_f32(p.add(4 * i)) }))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        for (i, v) in self.0.iter().enumerate() {
            unsafe { vst1q_f32(p.add(4 * i), *v) };
        }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, |a, b| unsafe { vaddq_f32(a, b) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.map2(o, |a, b| unsafe { vsubq_f32(a, b) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        F32x16(std::array::from_fn(|i| unsafe {
            vfmaq_f32(c.0[i], self.0[i], b.0[i])
        }))
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        F32x16(std::array::from_fn(|i| unsafe {
            vfmsq_f32(c.0[i], self.0[i], b.0[i])
        }))
    }
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        // vmaxq/vminq return NaN when either operand is: a NaN in self stays NaN.
        F32x16(std::array::from_fn(|i| unsafe {
            vminq_f32(hi.0[i], vmaxq_f32(lo.0[i], self.0[i]))
        }))
    }

    #[inline(always)]
    fn or_bits(self, o: Self) -> Self {
        F32x16(std::array::from_fn(|i| unsafe {
            vreinterpretq_f32_u32(vorrq_u32(
                vreinterpretq_u32_f32(self.0[i]),
                vreinterpretq_u32_f32(o.0[i]),
            ))
        }))
    }
    #[inline(always)]
    fn nonzero_lanes(self) -> u32 {
        // Lanes equal to zero (a NaN is not) as all ones, narrowed to one bit each.
        let mut m = 0;
        for i in 0..4 {
            let z = unsafe { vceqzq_f32(self.0[i]) };
            let bits = unsafe { vandq_u32(z, vld1q_u32([1u32, 2, 4, 8].as_ptr())) };
            m |= (15 & !unsafe { vaddvq_u32(bits) }) << (4 * i);
        }
        m
    }
}
