//! Which instruction set the kernels run on: what the CPU has, lowered by
//! `NEURODEX_ISA` (or by a test) to compare or test the lower paths on one machine.

use std::sync::atomic::{AtomicU8, Ordering};
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

/// 0, or 1 + the index in `Isa::ALL` of the ISA [`with_isa`] forces.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The instruction set kernels use now: the CPU's, or a lower one it also runs that
/// `NEURODEX_ISA` (or [`with_isa`]) asks for.
pub fn isa() -> Isa {
    if let Some(forced) = Isa::ALL.get((FORCED.load(Ordering::Relaxed) as usize).wrapping_sub(1)) {
        return *forced;
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

/// The instruction sets kernels are compiled for on this target, best first.
pub fn compiled() -> &'static [Isa] {
    if cfg!(target_arch = "x86_64") {
        &[Isa::Avx512, Isa::Avx2, Isa::Portable]
    } else if cfg!(target_arch = "aarch64") {
        &[Isa::Neon, Isa::Portable]
    } else {
        &[Isa::Portable]
    }
}

/// Runs `f` with the kernels on `isa`, for tests and benchmarks that compare the
/// paths in one process: one forced run at a time (a call inside another one on the
/// same thread just switches, and switches back after), and kernels other threads
/// run meanwhile use it too (every ISA computes the same function, to rounding). The
/// `gemm` crate, which the im2col, Winograd and batched linear paths call, picks its
/// own kernels from the CPU and is not lowered.
///
/// # Panics
/// If this CPU cannot run `isa`.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    thread_local! {
        static FORCING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    assert!(
        detected().runs(isa),
        "with_isa: this CPU ({}) cannot run {}",
        detected().name(),
        isa.name()
    );
    let nested = FORCING.with(|f| f.get());
    let _one = (!nested).then(|| ONE.lock().unwrap_or_else(|e| e.into_inner()));
    FORCING.with(|f| f.set(true));
    let index = Isa::ALL.iter().position(|&i| i == isa).unwrap();
    let before = FORCED.swap(index as u8 + 1, Ordering::Relaxed);
    struct Reset(u8, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            FORCED.store(self.0, Ordering::Relaxed);
            FORCING.with(|f| f.set(self.1));
        }
    }
    let _reset = Reset(before, nested);
    f()
}

/// Runs `f` once on each instruction set this CPU runs, forced in turn by
/// [`with_isa`], after a `SKIPPED` line for each one kernels exist for that it lacks
/// ([`testable`]): how tests cover every path.
pub fn on_every_isa(mut f: impl FnMut(Isa)) {
    for isa in testable() {
        with_isa(isa, || f(isa));
    }
}

/// The instruction sets tests can force on this CPU; for each one kernels exist for
/// but this CPU lacks, a `SKIPPED` line on stderr saying so (shown by `cargo test`
/// even when the test passes).
pub fn testable() -> Vec<Isa> {
    let cpu = detected();
    let mut out = Vec::new();
    for &i in compiled() {
        if cpu.runs(i) {
            out.push(i);
        } else {
            // Straight to the stream, not through `eprintln!`, which the test harness
            // captures (and shows only for failing tests).
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the {} kernels: this CPU has {} at best",
                i.name(),
                cpu.name()
            );
        }
    }
    out
}
