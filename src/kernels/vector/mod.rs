//! Sixteen `f32` lanes as one value on every instruction set, and the run-time
//! dispatch that compiles a kernel once per instruction set.
//!
//! The channel-blocked layout keeps 16 channels per pixel, and the kernels that run on
//! it (and Winograd's transforms, the direct stems, the linear kernel) are written
//! once, generic over [`V16`]: one AVX-512 register, two AVX2 registers, four NEON
//! registers, or a plain array that the compiler vectorises as it can (SSE2 on
//! baseline x86-64). A kernel is a [`Kernel`]; [`dispatch`] runs it through a
//! function compiled with the target features of the instruction set in use, so
//! that every `#[inline(always)]` method of the vector type becomes the ISA's
//! instructions. `V16::ACC` tells a kernel how many 16-lane accumulators fit in that
//! ISA's registers, which is how micro-tiles are sized per ISA from the same source.
//!
//! Soundness: the vector types' methods use intrinsics of their ISA. They are
//! reached only through `dispatch`, which checks the CPU first ([`super::isa`]);
//! the types are private to `kernels`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use super::isa::{isa, Isa};

/// Sixteen `f32` lanes. Pointers need no alignment.
pub(crate) trait V16: Copy {
    /// Accumulators of 16 lanes a micro-tile may keep in registers on this ISA
    /// (the rest of the register file holds the operands).
    const ACC: usize;

    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// # Safety
    /// `p` valid for 16 reads.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` valid for 16 writes.
    unsafe fn store(self, p: *mut f32);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    /// `self * b + c`, fused where the ISA has FMA.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `c - self * b`.
    fn neg_mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise `min(hi, max(lo, self))`, a NaN in `self` kept (as `super::clamp`).
    fn clamp(self, lo: Self, hi: Self) -> Self;

    /// Runs `k` on this vector type in a function of its own, compiled with the
    /// ISA's features. For micro-kernels: inlined whole into the loops around them,
    /// their accumulator arrays stayed in memory (a store after every FMA); optimised
    /// apart, as small functions, they are kept in registers (LLVM may then inline
    /// the optimised function back into its caller, which keeps that).
    fn apart<K: Apart<Self>>(k: K) -> K::Out;

    /// Bitwise OR of the lanes' bit patterns: a lane is +-0.0 only if it is in both.
    #[inline(always)]
    fn or_bits(self, o: Self) -> Self {
        let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
        // SAFETY: local arrays of 16.
        unsafe {
            self.store(a.as_mut_ptr());
            o.store(b.as_mut_ptr());
        }
        for (a, b) in a.iter_mut().zip(b) {
            *a = f32::from_bits(a.to_bits() | b.to_bits());
        }
        // SAFETY: a local array of 16.
        unsafe { Self::load(a.as_ptr()) }
    }

    /// Bit `l` set where lane `l` is not +-0.0 (a NaN is not zero).
    #[inline(always)]
    fn nonzero_lanes(self) -> u32 {
        let mut a = [0f32; 16];
        // SAFETY: a local array of 16.
        unsafe { self.store(a.as_mut_ptr()) };
        let mut m = 0;
        for (l, v) in a.iter().enumerate() {
            if *v != 0.0 {
                m |= 1 << l;
            }
        }
        m
    }

    /// In-register transpose of 16 x 16: row i becomes column i.
    #[inline(always)]
    fn transpose(r: &mut [Self; 16]) {
        let mut m = [0f32; 256];
        for (i, v) in r.iter().enumerate() {
            // SAFETY: row i of the 256 floats.
            unsafe { v.store(m.as_mut_ptr().add(16 * i)) };
        }
        let mut t = [0f32; 256];
        for i in 0..16 {
            for j in 0..16 {
                t[j * 16 + i] = m[i * 16 + j];
            }
        }
        for (i, v) in r.iter_mut().enumerate() {
            // SAFETY: row i of the 256 floats.
            *v = unsafe { Self::load(t.as_ptr().add(16 * i)) };
        }
    }

    /// Lanes `lo..hi` from `p + lane` (only those are read), the others zero.
    ///
    /// # Safety
    /// `p + lo .. p + hi` valid for reads (`p` itself may lie outside the slice).
    #[inline(always)]
    unsafe fn load_lanes(p: *const f32, lo: usize, hi: usize) -> Self {
        if lo == 0 && hi == 16 {
            // SAFETY: all 16 lanes are valid.
            return unsafe { Self::load(p) };
        }
        let mut b = [0f32; 16];
        for (l, b) in b.iter_mut().enumerate().take(hi.min(16)).skip(lo) {
            // SAFETY: lanes lo..hi are valid, by the contract.
            *b = unsafe { *p.wrapping_add(l) };
        }
        // SAFETY: a local array of 16.
        unsafe { Self::load(b.as_ptr()) }
    }

    /// Lanes `lo..hi` to `p + lane`, nothing else written.
    ///
    /// # Safety
    /// `p + lo .. p + hi` valid for writes.
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        if lo == 0 && hi == 16 {
            // SAFETY: all 16 lanes are valid.
            return unsafe { self.store(p) };
        }
        let mut b = [0f32; 16];
        // SAFETY: a local array of 16.
        unsafe { self.store(b.as_mut_ptr()) };
        for (l, &b) in b.iter().enumerate().take(hi.min(16)).skip(lo) {
            // SAFETY: lanes lo..hi are valid, by the contract.
            unsafe { *p.wrapping_add(l) = b };
        }
    }

    /// Lane `l < n` from `p + l * stride`, the others zero.
    ///
    /// # Safety
    /// Those `n` addresses valid for reads.
    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize, n: usize) -> Self {
        let mut b = [0f32; 16];
        for (l, b) in b.iter_mut().enumerate().take(n) {
            // SAFETY: by the contract.
            *b = unsafe { *p.add(l * stride) };
        }
        // SAFETY: a local array of 16.
        unsafe { Self::load(b.as_ptr()) }
    }

    /// Lane `l < n` to `p + l * stride`.
    ///
    /// # Safety
    /// Those `n` addresses valid for writes.
    #[inline(always)]
    unsafe fn scatter(self, p: *mut f32, stride: usize, n: usize) {
        let mut b = [0f32; 16];
        // SAFETY: a local array of 16.
        unsafe { self.store(b.as_mut_ptr()) };
        for (l, &b) in b.iter().enumerate().take(n) {
            // SAFETY: by the contract.
            unsafe { *p.add(l * stride) = b };
        }
    }
}

/// `N` vectors from `p`, `stride` floats apart. (A loop, not `array::from_fn`: a
/// closure is a function of its own, compiled without the ISA's target features,
/// so the intrinsics in it would stay calls.)
///
/// # Safety
/// Each of the `N` vectors readable.
#[inline(always)]
pub(crate) unsafe fn load_each<V: V16, const N: usize>(p: *const f32, stride: usize) -> [V; N] {
    let mut a = [V::zero(); N];
    for (j, a) in a.iter_mut().enumerate() {
        // SAFETY: by the contract.
        *a = unsafe { V::load(p.add(j * stride)) };
    }
    a
}

/// A kernel written once over [`V16`]; [`dispatch`] runs it for the ISA in use.
/// `run` and every function it calls with vectors must be `#[inline(always)]`, so
/// that they are compiled inside the ISA's target-feature function, and must not
/// use vectors inside closures (see [`load_each`]).
pub(crate) trait Kernel {
    type Out;
    fn run<V: V16>(self) -> Self::Out;
}

/// Runs `k` compiled for the instruction set in use ([`isa`]).
#[inline]
pub(crate) fn dispatch<K: Kernel>(k: K) -> K::Out {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa() returns Avx512 only where the CPU has these features.
        Isa::Avx512 => unsafe { on_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: likewise for AVX2 and FMA.
        Isa::Avx2 => unsafe { on_avx2(k) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => k.run::<neon::F32x16>(),
        _ => k.run::<portable::F32x16>(),
    }
}

/// A micro-kernel for one vector type, run by [`V16::apart`]; `run` must be
/// `#[inline(always)]`.
pub(crate) trait Apart<V> {
    type Out;
    fn run(self) -> Self::Out;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn on_avx512<K: Kernel>(k: K) -> K::Out {
    k.run::<avx512::F32x16>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<K: Kernel>(k: K) -> K::Out {
    k.run::<avx2::F32x16>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn apart_avx512<K: Apart<avx512::F32x16>>(k: K) -> K::Out {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apart_avx2<K: Apart<avx2::F32x16>>(k: K) -> K::Out {
    k.run()
}

/// A micro-kernel on a type whose ISA needs no features enabled.
#[inline(never)]
fn apart_plain<V, K: Apart<V>>(k: K) -> K::Out {
    k.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lane operation of the ISA's type against scalar arithmetic.
    struct Ops;
    impl Kernel for Ops {
        type Out = ();
        #[inline(always)]
        fn run<V: V16>(self) {
            let a: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
            let b: Vec<f32> = (0..16).map(|i| (i * i) as f32 * 0.25).collect();
            let mut c: Vec<f32> = (0..16).map(|i| 3.0 - i as f32).collect();
            c[3] = f32::NAN;
            // SAFETY: every slice holds 16 floats.
            let (va, vb, vc) = unsafe {
                (
                    V::load(a.as_ptr()),
                    V::load(b.as_ptr()),
                    V::load(c.as_ptr()),
                )
            };
            let get = |v: V| {
                let mut o = [0f32; 16];
                // SAFETY: 16 floats.
                unsafe { v.store(o.as_mut_ptr()) };
                o
            };
            let same = |got: [f32; 16], want: &dyn Fn(usize) -> f32, what: &str| {
                for (l, g) in got.iter().enumerate() {
                    let w = want(l);
                    assert!(
                        (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                        "{what} lane {l}: {g} vs {w}"
                    );
                }
            };
            same(get(va.add(vb)), &|l| a[l] + b[l], "add");
            same(get(va.sub(vb)), &|l| a[l] - b[l], "sub");
            same(get(va.mul_add(vb, vc)), &|l| a[l] * b[l] + c[l], "mul_add");
            same(
                get(va.neg_mul_add(vb, vc)),
                &|l| c[l] - a[l] * b[l],
                "neg_mul_add",
            );
            same(get(V::splat(2.5)), &|_| 2.5, "splat");
            same(get(V::zero()), &|_| 0.0, "zero");
            same(
                get(vc.clamp(V::splat(-1.0), V::splat(2.0))),
                &|l| crate::kernels::clamp(c[l], -1.0, 2.0),
                "clamp",
            );
            let mut z = [0f32; 16];
            (z[2], z[9], z[11], z[15]) = (-0.0, 1e-40, f32::NAN, -3.0);
            // SAFETY: 16 floats.
            let vz = unsafe { V::load(z.as_ptr()) };
            assert_eq!(
                vz.nonzero_lanes(),
                (1 << 9) | (1 << 11) | (1 << 15),
                "nonzero_lanes"
            );
            assert_eq!(V::zero().nonzero_lanes(), 0, "nonzero_lanes of zeros");
            let mut y = [0f32; 16];
            (y[2], y[4]) = (0.0, 2.0);
            // SAFETY: 16 floats.
            let vy = unsafe { V::load(y.as_ptr()) };
            let or = get(vz.or_bits(vy));
            for l in 0..16 {
                assert_eq!(
                    or[l].to_bits(),
                    z[l].to_bits() | y[l].to_bits(),
                    "or_bits lane {l}"
                );
            }
            for (lo, hi) in [(0, 16), (0, 5), (3, 16), (4, 9), (6, 6)] {
                // SAFETY: lanes lo..hi of a lie inside it.
                let v = unsafe { V::load_lanes(a.as_ptr(), lo, hi) };
                same(
                    get(v),
                    &|l| if (lo..hi).contains(&l) { a[l] } else { 0.0 },
                    "load_lanes",
                );
                let mut o = [9f32; 16];
                // SAFETY: 16 floats.
                unsafe { va.store_lanes(o.as_mut_ptr(), lo, hi) };
                same(
                    o,
                    &|l| if (lo..hi).contains(&l) { a[l] } else { 9.0 },
                    "store_lanes",
                );
            }
            let big: Vec<f32> = (0..16 * 7).map(|i| i as f32).collect();
            // SAFETY: 11 lanes at stride 7 lie inside `big`.
            let g = unsafe { V::gather(big.as_ptr().add(2), 7, 11) };
            same(
                get(g),
                &|l| if l < 11 { big[2 + 7 * l] } else { 0.0 },
                "gather",
            );
            let mut s = vec![-1f32; 16 * 7];
            // SAFETY: likewise for writes.
            unsafe { va.scatter(s.as_mut_ptr().add(1), 7, 13) };
            for (i, v) in s.iter().enumerate() {
                let want = if i >= 1 && (i - 1) % 7 == 0 && (i - 1) / 7 < 13 {
                    a[(i - 1) / 7]
                } else {
                    -1.0
                };
                assert_eq!(*v, want, "scatter {i}");
            }
            let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
            // SAFETY: row i of 256.
            let mut r: [V; 16] =
                std::array::from_fn(|i| unsafe { V::load(m.as_ptr().add(16 * i)) });
            V::transpose(&mut r);
            for (i, v) in r.iter().enumerate() {
                same(get(*v), &|j| m[j * 16 + i], "transpose");
            }
        }
    }

    #[test]
    fn every_vector_type_the_cpu_runs_computes_each_lane_like_scalar_code() {
        crate::kernels::isa::on_every_isa(|_| dispatch(Ops));
    }
}
