//! Which instruction set the kernels run on: what the CPU has, lowered by
//! `NEURODEX_ISA` (or by a test) to compare or test the lower paths on one machine.

use std::sync::OnceLock;

/// An instruction set a kernel is compiled for. `Portable` is plain Rust that the
/// compiler vectorises for the target's baseline (SSE2 on x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable];

    /// The name `NEURODEX_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    fn from_name(s: &str) -> Option<Isa> {
        match s {
            "scalar" | "portable" => Some(Isa::Portable),
            _ => Isa::ALL.into_iter().find(|i| i.name() == s),
        }
    }

    /// Whether a CPU that runs `self` also runs `other`.
    pub fn runs(self, other: Isa) -> bool {
        match (self, other) {
            (_, Isa::Portable) => true,
            (Isa::Avx512, Isa::Avx2) => true,
            (a, b) => a == b,
        }
    }
}

#[cfg(test)]
static FORCE: std::sync::Mutex<Option<Isa>> = std::sync::Mutex::new(None);

/// The instruction set kernels use now: the CPU's, or a lower one it also runs that
/// `NEURODEX_ISA` (or a test) asks for.
pub fn isa() -> Isa {
    #[cfg(test)]
    if let Some(forced) = *FORCE.lock().unwrap_or_else(|e| e.into_inner()) {
        return forced;
    }
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cpu = detected();
        match std::env::var("NEURODEX_ISA") {
            Ok(v) => match Isa::from_name(v.trim()) {
                Some(want) if cpu.runs(want) => want,
                Some(want) => {
                    eprintln!(
                        "warning: NEURODEX_ISA={v}: this CPU has no {}; using {}",
                        want.name(),
                        cpu.name()
                    );
                    cpu
                }
                None => {
                    eprintln!(
                        "warning: NEURODEX_ISA={v} is none of avx512, avx2, neon, portable \
                         (or scalar); using {}",
                        cpu.name()
                    );
                    cpu
                }
            },
            Err(_) => cpu,
        }
    })
}

/// The best instruction set this CPU has, whatever is asked for.
pub fn detected() -> Isa {
    static CPU: OnceLock<Isa> = OnceLock::new();
    *CPU.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is part of the aarch64 baseline.
            return Isa::Neon;
        }
        #[allow(unreachable_code)]
        Isa::Portable
    })
}

/// The instruction sets tests can force on this CPU; for each one kernels exist for
/// but this CPU lacks, a `SKIPPED` line saying so.
#[cfg(test)]
pub(crate) fn testable() -> Vec<Isa> {
    let cpu = detected();
    let compiled: &[Isa] = if cfg!(target_arch = "x86_64") {
        &[Isa::Avx512, Isa::Avx2, Isa::Portable]
    } else if cfg!(target_arch = "aarch64") {
        &[Isa::Neon, Isa::Portable]
    } else {
        &[Isa::Portable]
    };
    let mut out = Vec::new();
    for &i in compiled {
        if cpu.runs(i) {
            out.push(i);
        } else {
            eprintln!(
                "SKIPPED: the {} kernels: this CPU ({}) lacks {}",
                i.name(),
                cpu.name(),
                i.name()
            );
        }
    }
    out
}

/// Runs `f` with the kernels on `isa` (one forced run at a time; other tests that run
/// meanwhile use it too, and must be just as correct there).
#[cfg(test)]
pub(crate) fn forced<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    assert!(detected().runs(isa), "forcing {isa:?} on a CPU without it");
    *FORCE.lock().unwrap_or_else(|e| e.into_inner()) = Some(isa);
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            *FORCE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    let _reset = Reset;
    f()
}
