//! Loops left to the compiler's vectoriser, compiled per instruction set.
//!
//! The release binary targets plain x86-64, so plain loops meant to vectorise (the
//! NCHW depthwise planes, pooling, peaks, the elementwise epilogues) are compiled
//! three times (AVX-512, AVX2+FMA, baseline) by `multiversion!` and picked per call
//! by [`super::isa::isa`]. Kernels written with explicit vectors use
//! [`super::vector`] instead.

/// `a * b + c`, fused where the compiled-for ISA has FMA (without it `mul_add`
/// would call a slow libm routine).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines `fn name(args) -> ret` whose body is compiled for AVX-512, AVX2+FMA and
/// baseline x86-64, dispatched at run time. Inside the body the const `FMA` says
/// whether fused multiply-add is available (use it through `madd::<FMA>`). One
/// `const N: usize` generic parameter may be given.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<const $cg:ident : usize>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<const $cg: usize>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<const FMA: bool $(, const $cg: usize)?>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4 $(<const $cg: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                    body::<true $(, $cg)?>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3 $(<const $cg: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                    body::<true $(, $cg)?>($($arg),*)
                }
                match $crate::kernels::isa::isa() {
                    // SAFETY: isa() checked that the CPU has these features.
                    $crate::kernels::isa::Isa::Avx512 => return unsafe { v4::<$($cg)?>($($arg),*) },
                    $crate::kernels::isa::Isa::Avx2 => return unsafe { v3::<$($cg)?>($($arg),*) },
                    _ => {}
                }
            }
            body::<false $(, $cg)?>($($arg),*)
        }
    };
}
pub(crate) use multiversion;
