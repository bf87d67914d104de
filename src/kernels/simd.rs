//! Run-time instruction-set dispatch for the hand-written loops.
//!
//! The release binary targets plain x86-64, so loops meant to vectorise are compiled
//! three times (AVX-512, AVX2+FMA, baseline) by `multiversion!` and picked once per call.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    Base,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

/// Tests force a lower ISA to exercise every compiled variant on one machine.
#[cfg(test)]
pub(crate) static FORCE: std::sync::Mutex<Option<Isa>> = std::sync::Mutex::new(None);

pub(crate) fn isa() -> Isa {
    #[cfg(test)]
    if let Some(forced) = *FORCE.lock().unwrap() {
        return forced.min(detected());
    }
    detected()
}

/// What the CPU runs, whatever a test forces: the guard of code that would fault
/// without it (choosing a path follows `isa`).
pub(crate) fn detected() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    })
}

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
                match $crate::kernels::simd::isa() {
                    // SAFETY: isa() checked that the CPU has these features.
                    $crate::kernels::simd::Isa::Avx512 => return unsafe { v4::<$($cg)?>($($arg),*) },
                    $crate::kernels::simd::Isa::Avx2 => return unsafe { v3::<$($cg)?>($($arg),*) },
                    $crate::kernels::simd::Isa::Base => {}
                }
            }
            body::<false $(, $cg)?>($($arg),*)
        }
    };
}
pub(crate) use multiversion;
