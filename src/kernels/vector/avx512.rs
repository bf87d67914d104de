//! [`V16`] as one AVX-512 register; masked loads and stores, gathers and scatters
//! are single instructions here.

use std::arch::x86_64::*;

use super::V16;

#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

fn mask(lo: usize, hi: usize) -> __mmask16 {
    if hi <= lo {
        return 0;
    }
    let upto = |n: usize| if n >= 16 { u32::MAX } else { (1u32 << n) - 1 };
    (upto(hi) & !upto(lo)) as __mmask16
}

// SAFETY (every method): compiled only into `on_avx512`, which the CPU check guards.
impl V16 for F32x16 {
    const ACC: usize = 24;

    #[inline(always)]
    fn apart<K: super::Apart<Self>>(k: K) -> K::Out {
        // SAFETY: this type exists only where the CPU check passed (see `dispatch`).
        unsafe { super::apart_avx512(k) }
    }

    #[inline(always)]
    fn zero() -> Self {
        F32x16(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        F32x16(unsafe { _mm512_set1_ps(v) })
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x16(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        F32x16(unsafe { _mm512_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        F32x16(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        F32x16(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        F32x16(unsafe { _mm512_fnmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        // max/min return the second operand when either is NaN: self goes second.
        F32x16(unsafe { _mm512_min_ps(hi.0, _mm512_max_ps(lo.0, self.0)) })
    }

    #[inline(always)]
    fn or_bits(self, o: Self) -> Self {
        // The float OR is AVX512DQ; the integer one is in AVX512F.
        unsafe {
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(self.0),
                _mm512_castps_si512(o.0),
            )))
        }
    }
    #[inline(always)]
    fn nonzero_lanes(self) -> u32 {
        unsafe { _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(self.0, _mm512_setzero_ps()) as u32 }
    }

    #[inline(always)]
    fn transpose(r: &mut [Self; 16]) {
        unsafe {
            // 32-bit, then 64-bit interleaves within each 128-bit lane: u[4b + q]
            // holds, in lane L, column 4L + q of rows 4b..4b+4.
            let mut u = [_mm512_setzero_ps(); 16];
            for b in 0..4 {
                let t: [__m512; 4] = [
                    _mm512_unpacklo_ps(r[4 * b].0, r[4 * b + 1].0),
                    _mm512_unpackhi_ps(r[4 * b].0, r[4 * b + 1].0),
                    _mm512_unpacklo_ps(r[4 * b + 2].0, r[4 * b + 3].0),
                    _mm512_unpackhi_ps(r[4 * b + 2].0, r[4 * b + 3].0),
                ];
                let t: [__m512d; 4] = [
                    _mm512_castps_pd(t[0]),
                    _mm512_castps_pd(t[1]),
                    _mm512_castps_pd(t[2]),
                    _mm512_castps_pd(t[3]),
                ];
                u[4 * b] = _mm512_castpd_ps(_mm512_unpacklo_pd(t[0], t[2]));
                u[4 * b + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t[0], t[2]));
                u[4 * b + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t[1], t[3]));
                u[4 * b + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t[1], t[3]));
            }
            // Then gather lane L of the four row groups into column 4L + q.
            for q in 0..4 {
                let a = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
                let b = _mm512_shuffle_f32x4::<0xdd>(u[q], u[4 + q]);
                let c = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
                let d = _mm512_shuffle_f32x4::<0xdd>(u[8 + q], u[12 + q]);
                r[q] = F32x16(_mm512_shuffle_f32x4::<0x88>(a, c));
                r[8 + q] = F32x16(_mm512_shuffle_f32x4::<0xdd>(a, c));
                r[4 + q] = F32x16(_mm512_shuffle_f32x4::<0x88>(b, d));
                r[12 + q] = F32x16(_mm512_shuffle_f32x4::<0xdd>(b, d));
            }
        }
    }

    #[inline(always)]
    unsafe fn load_lanes(p: *const f32, lo: usize, hi: usize) -> Self {
        // SAFETY: only lanes in the mask are read (the caller vouches for them).
        F32x16(unsafe { _mm512_maskz_loadu_ps(mask(lo, hi), p) })
    }
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        // SAFETY: only lanes in the mask are written.
        unsafe { _mm512_mask_storeu_ps(p, mask(lo, hi), self.0) }
    }
    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize, n: usize) -> Self {
        unsafe {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            );
            F32x16(_mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask(0, n),
                idx,
                p,
            ))
        }
    }
    #[inline(always)]
    unsafe fn scatter(self, p: *mut f32, stride: usize, n: usize) {
        unsafe {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            );
            _mm512_mask_i32scatter_ps::<4>(p, mask(0, n), idx, self.0)
        }
    }
}
