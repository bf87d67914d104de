//! The decode budget: bytes that the image decoders of this process may hold at
//! once, shared by every worker. The pixel limit alone does not bound memory: a
//! 99-megapixel 16-bit RGBA PNG decodes to 792 MB before its conversion to 8-bit
//! RGB, and each decoding thread can hold one, so memory grew with `--threads`.
//! Each decode reserves its estimate from the image header before allocating,
//! waits while others hold the budget, and releases it when its pixels are gone.
//! An image whose estimate alone exceeds the budget is refused, naming the sizes.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use crate::{Error, Result};

struct State {
    limit: u64,
    used: u64,
}

/// A pool of bytes that reservations draw from.
pub struct Budget {
    state: Mutex<State>,
    freed: Condvar,
}

/// The budget every decode of this process draws from.
pub static GLOBAL: Budget = Budget::new(DEFAULT_BYTES);

/// What the largest image the default pixel limit admits needs: 100 megapixels of
/// 16-bit RGBA (8 bytes each) plus its 8-bit RGB copy (3 bytes each).
pub const DEFAULT_BYTES: u64 = super::DEFAULT_MAX_PIXELS * 11;

impl Budget {
    pub const fn new(limit: u64) -> Budget {
        Budget {
            state: Mutex::new(State { limit, used: 0 }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the limit (`index --decode-memory-mb`).
    pub fn set_limit(&self, bytes: u64) {
        self.lock().limit = bytes.max(1);
        self.freed.notify_all();
    }

    pub fn limit(&self) -> u64 {
        self.lock().limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// An empty reservation on this budget.
    pub fn reserve(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            bytes: 0,
        }
    }
}

/// Bytes held against a budget; given back on drop.
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Reservation<'_> {
    /// Holds `bytes` in all for the decoding of `path`, waiting for others to give
    /// back what they hold. Growing first gives back what this one held, so two
    /// decoders that each hold a part never wait on each other.
    pub fn grow_to(&mut self, path: &Path, bytes: u64) -> Result<()> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let b = self.budget;
        let mut s = b.lock();
        if bytes > s.limit {
            return Err(Error::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "decoding needs about {} MB, more than the decode memory budget of {} MB \
                     (raise it with --decode-memory-mb)",
                    bytes.div_ceil(1_000_000),
                    s.limit / 1_000_000
                ),
            });
        }
        s.used -= self.bytes;
        self.bytes = 0;
        b.freed.notify_all();
        while s.used + bytes > s.limit {
            s = b.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.used += bytes;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.lock().used -= self.bytes;
            self.budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn decoders_share_the_budget_and_one_above_it_is_refused() {
        static B: Budget = Budget::new(100);
        let p = Path::new("big.png");
        let e = B.reserve().grow_to(p, 101).unwrap_err().to_string();
        assert!(e.starts_with("big.png: ") && e.contains("budget"), "{e}");

        // Eight threads asking for 40 each (in two steps): never more than 100 held.
        let held = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (held, most) = (held.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mut r = B.reserve();
                        r.grow_to(Path::new("x"), 20).unwrap();
                        r.grow_to(Path::new("x"), 40).unwrap();
                        let now = held.fetch_add(40, Ordering::SeqCst) + 40;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        held.fetch_sub(40, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 100, "{most} held at once");
        assert_eq!(B.used(), 0, "everything given back");
    }
}
