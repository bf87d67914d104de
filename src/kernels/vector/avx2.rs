//! [`V16`] as two AVX2 registers (lanes 0-7, 8-15). Half the registers of AVX-512,
//! so a quarter of the accumulators: micro-tiles shrink through `ACC`.

use std::arch::x86_64::*;

use super::V16;

#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m256, __m256);

/// All ones in the lanes of `base..base + 8` that lie in `lo..hi`.
#[inline(always)]
fn lane_mask(base: i32, lo: usize, hi: usize) -> __m256i {
    // SAFETY: inlined into `on_avx2` only (see the impl).
    unsafe {
        let l = _mm256_add_epi32(
            _mm256_set1_epi32(base),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let ge = _mm256_cmpgt_epi32(l, _mm256_set1_epi32(lo as i32 - 1));
        let lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), l);
        _mm256_and_si256(ge, lt)
    }
}

/// Transposes the 8 x 8 block whose rows are `r`.
#[inline(always)]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: inlined into `on_avx2` only (see the impl).
    unsafe {
        let t: [__m256; 8] = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        // Within each 128-bit half, u[q] (rows 0-3) and u[4 + q] (rows 4-7) hold
        // column q of four rows.
        let u: [__m256; 8] = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xee>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xee>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xee>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xee>(t[5], t[7]),
        ];
        [
            _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
            _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
        ]
    }
}

// SAFETY (every method): compiled only into `on_avx2` and `apart_avx2`, which the CPU
// check guards.
impl V16 for F32x16 {
    const ACC: usize = 6;

    #[inline(always)]
    fn apart<K: super::Apart<Self>>(k: K) -> K::Out {
        // SAFETY: this type exists only where the CPU check passed (see `dispatch`).
        unsafe { super::apart_avx2(k) }
    }

    #[inline(always)]
    fn zero() -> Self {
        let z = unsafe { _mm256_setzero_ps() };
        F32x16(z, z)
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        let s = unsafe { _mm256_set1_ps(v) };
        F32x16(s, s)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { F32x16(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(8), self.1);
        }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        unsafe { F32x16(_mm256_add_ps(self.0, o.0), _mm256_add_ps(self.1, o.1)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        unsafe { F32x16(_mm256_sub_ps(self.0, o.0), _mm256_sub_ps(self.1, o.1)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe {
            F32x16(
                _mm256_fmadd_ps(self.0, b.0, c.0),
                _mm256_fmadd_ps(self.1, b.1, c.1),
            )
        }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe {
            F32x16(
                _mm256_fnmadd_ps(self.0, b.0, c.0),
                _mm256_fnmadd_ps(self.1, b.1, c.1),
            )
        }
    }
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        // max/min return the second operand when either is NaN: self goes second.
        unsafe {
            F32x16(
                _mm256_min_ps(hi.0, _mm256_max_ps(lo.0, self.0)),
                _mm256_min_ps(hi.1, _mm256_max_ps(lo.1, self.1)),
            )
        }
    }

    #[inline(always)]
    fn or_bits(self, o: Self) -> Self {
        unsafe { F32x16(_mm256_or_ps(self.0, o.0), _mm256_or_ps(self.1, o.1)) }
    }
    #[inline(always)]
    fn nonzero_lanes(self) -> u32 {
        unsafe {
            let z = _mm256_setzero_ps();
            let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(self.0, z)) as u32;
            let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(self.1, z)) as u32;
            lo | hi << 8
        }
    }

    #[inline(always)]
    fn transpose(r: &mut [Self; 16]) {
        // Four 8 x 8 blocks: [[A, B], [C, D]] -> [[At, Ct], [Bt, Dt]].
        let (mut a, mut b, mut c, mut d) = ([r[0].0; 8], [r[0].1; 8], [r[8].0; 8], [r[8].1; 8]);
        for i in 0..8 {
            (a[i], b[i], c[i], d[i]) = (r[i].0, r[i].1, r[8 + i].0, r[8 + i].1);
        }
        let (a, b, c, d) = (transpose8(a), transpose8(b), transpose8(c), transpose8(d));
        for i in 0..8 {
            r[i] = F32x16(a[i], c[i]);
            r[8 + i] = F32x16(b[i], d[i]);
        }
    }

    #[inline(always)]
    unsafe fn load_lanes(p: *const f32, lo: usize, hi: usize) -> Self {
        if lo == 0 && hi >= 16 {
            return unsafe { Self::load(p) };
        }
        // Masked loads do not fault on the lanes they leave out.
        unsafe {
            F32x16(
                _mm256_maskload_ps(p, lane_mask(0, lo, hi)),
                _mm256_maskload_ps(p.wrapping_add(8), lane_mask(8, lo, hi)),
            )
        }
    }
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        if lo == 0 && hi >= 16 {
            return unsafe { self.store(p) };
        }
        unsafe {
            _mm256_maskstore_ps(p, lane_mask(0, lo, hi), self.0);
            _mm256_maskstore_ps(p.wrapping_add(8), lane_mask(8, lo, hi), self.1);
        }
    }
}
