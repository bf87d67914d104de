//! Which files of a folder one shard indexes. A file belongs to exactly one of N
//! shards, chosen by a hash of its path relative to the root, so every machine of a
//! cluster decides alike without talking to the others, whatever it mounts the
//! folder as and in whatever order it walks it.

use sha2::{Digest, Sha256};

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// More shards than this is surely a typo (a job array of a million tasks).
pub const MAX_SHARDS: u32 = 1_000_000;

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "the shard count must be 1 to {MAX_SHARDS}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, `auto` (a Slurm array task: SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN of
    /// SLURM_ARRAY_TASK_COUNT) or `auto/N` (Kubernetes' JOB_COMPLETION_INDEX, or the Slurm
    /// task, of N given). `env` reads the environment (a parameter for tests).
    pub fn parse(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let num = |what: &str, v: &str| -> Result<u32, String> {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} is {v:?}, not a whole number"))
        };
        let (head, n) = match s.split_once('/') {
            Some((h, n)) => (h, Some(num("the shard count", n)?)),
            None => (s, None),
        };
        if head != "auto" {
            let n = n.ok_or_else(|| {
                format!("--shard takes I/N (e.g. 0/8), auto or auto/N, not {s:?}")
            })?;
            return Shard::new(num("the shard number", head)?, n);
        }
        if let Some(n) = n {
            if let Some(i) = env("JOB_COMPLETION_INDEX") {
                return Shard::new(num("JOB_COMPLETION_INDEX", &i)?, n);
            }
        }
        let Some(id) = env("SLURM_ARRAY_TASK_ID") else {
            return Err(match n {
                None => "--shard auto needs a Slurm array task (SLURM_ARRAY_TASK_ID is not set); \
                         elsewhere give --shard I/N, or auto/N under a Kubernetes indexed job"
                    .into(),
                Some(_) => "--shard auto/N needs JOB_COMPLETION_INDEX (a Kubernetes indexed job) \
                            or SLURM_ARRAY_TASK_ID (a Slurm array task); neither is set"
                    .into(),
            });
        };
        let id = num("SLURM_ARRAY_TASK_ID", &id)?;
        let min = match env("SLURM_ARRAY_TASK_MIN") {
            Some(v) => num("SLURM_ARRAY_TASK_MIN", &v)?,
            None => 0,
        };
        if let Some(step) = env("SLURM_ARRAY_TASK_STEP") {
            if num("SLURM_ARRAY_TASK_STEP", &step)? != 1 {
                return Err(format!(
                    "the Slurm array steps by {step}: submit it as --array=0-{} so that \
                     every shard number is a task",
                    n.map_or("N-1".into(), |n| (n - 1).to_string())
                ));
            }
        }
        let count = match env("SLURM_ARRAY_TASK_COUNT") {
            Some(c) => Some(num("SLURM_ARRAY_TASK_COUNT", &c)?),
            None => None,
        };
        if let (Some(c), Some(max)) = (count, env("SLURM_ARRAY_TASK_MAX")) {
            let max = num("SLURM_ARRAY_TASK_MAX", &max)?;
            if max.checked_sub(min).map(|d| d + 1) != Some(c) {
                return Err(format!(
                    "the Slurm array's {c} tasks are not the numbers {min} to {max} one by one; \
                     submit it as --array=0-{}",
                    c.saturating_sub(1)
                ));
            }
        }
        let count = match (count, n) {
            (Some(c), Some(n)) if c != n => {
                return Err(format!(
                    "--shard auto/{n}, but the Slurm array has {c} tasks"
                ))
            }
            (Some(c), _) => c,
            (None, Some(n)) => n,
            (None, None) => {
                return Err(
                    "--shard auto: SLURM_ARRAY_TASK_COUNT is not set (Slurm before \
                            17.11?); give the count as --shard auto/N"
                        .into(),
                )
            }
        };
        let index = id.checked_sub(min).ok_or_else(|| {
            format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
        })?;
        Shard::new(index, count)
    }

    /// Whether the file at `rel` (its path relative to the root, as the index stores it)
    /// belongs to this shard.
    pub fn owns(&self, rel: &[u8]) -> bool {
        shard_of(rel, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of `count` that the relative path `rel` belongs to: the first 8 bytes of
/// its SHA-256, big-endian, modulo `count` (well spread whatever the names look like;
/// the same on every machine and every neurodex version).
pub fn shard_of(rel: &[u8], count: u32) -> u32 {
    let h = Sha256::digest(rel);
    let mut head = [0u8; 8];
    head.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(head) % count as u64) as u32
}

/// Which part of the folder a set of indexes covers, in words, and whether that is
/// all of it: `None` stands for a whole index (every file); shards are grouped by
/// their count.
pub fn coverage(parts: &[Option<Shard>]) -> (String, bool) {
    if parts.iter().any(|p| p.is_none()) {
        return ("the whole folder".into(), true);
    }
    let mut counts: Vec<u32> = parts.iter().flatten().map(|s| s.count).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut words = Vec::new();
    let mut complete = false;
    for n in counts {
        let mut have: Vec<u32> = parts
            .iter()
            .flatten()
            .filter(|s| s.count == n)
            .map(|s| s.index)
            .collect();
        have.sort_unstable();
        have.dedup();
        let missing: Vec<String> = (0..n)
            .filter(|i| have.binary_search(i).is_err())
            .map(|i| format!("{i}/{n}"))
            .collect();
        if missing.is_empty() {
            complete = true;
            words.push(format!("all {n} of {n} shards"));
        } else {
            let list: Vec<String> = have.iter().map(|i| format!("{i}/{n}")).collect();
            words.push(format!(
                "shards {} (missing {})",
                list.join(", "),
                missing.join(", ")
            ));
        }
    }
    (words.join("; "), complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn every_file_belongs_to_exactly_one_shard() {
        for n in [1, 2, 3, 7] {
            for i in 0..500 {
                let p = format!("n0{i}/img_{i}.JPEG");
                let owners = (0..n)
                    .filter(|&k| Shard::new(k, n).unwrap().owns(p.as_bytes()))
                    .count();
                assert_eq!(owners, 1, "{p} of {n}");
            }
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // Worked out apart from neurodex: Python's
        // int(hashlib.sha256(path).hexdigest()[:16], 16) % n for n = 2, 3, 7, 1000.
        let golden: [(&[u8], [u32; 4]); 3] = [
            (b"a/b.jpg", [0, 0, 4, 368]),
            (b"n01440764/ILSVRC2012_val_00000293.JPEG", [0, 2, 0, 742]),
            (b"images/0001.jpg", [0, 2, 3, 460]),
        ];
        for (path, want) in golden {
            let got = [2, 3, 7, 1000].map(|n| shard_of(path, n));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn shards_are_spread_evenly() {
        let n = 8;
        let mut counts = vec![0u32; n as usize];
        for i in 0..8000 {
            counts[shard_of(format!("photos/{i:05}.jpg").as_bytes(), n) as usize] += 1;
        }
        // 1000 expected each; a binomial's sd is about 30.
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn coverage_says_what_is_missing() {
        let s = |i, n| Some(Shard::new(i, n).unwrap());
        assert_eq!(
            coverage(&[s(0, 3), s(2, 3), s(1, 3)]),
            ("all 3 of 3 shards".to_string(), true)
        );
        assert_eq!(
            coverage(&[s(0, 3), s(2, 3), s(2, 3)]),
            ("shards 0/3, 2/3 (missing 1/3)".to_string(), false)
        );
        assert!(coverage(&[s(0, 3), None]).1);
    }

    #[test]
    fn parsing_names_the_problem() {
        let none = env(&[]);
        assert_eq!(Shard::parse("2/3", &none), Ok(Shard { index: 2, count: 3 }));
        assert!(Shard::parse("3/3", &none).unwrap_err().contains("0 to 2"));
        assert!(Shard::parse("0/0", &none).unwrap_err().contains("1 to"));
        assert!(Shard::parse("x/3", &none)
            .unwrap_err()
            .contains("not a whole number"));
        assert!(Shard::parse("2", &none).unwrap_err().contains("I/N"));
        assert!(Shard::parse("auto", &none)
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID"));
    }

    #[test]
    fn auto_reads_slurm_and_kubernetes() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::parse("auto", &slurm),
            Ok(Shard { index: 1, count: 3 })
        );
        assert!(Shard::parse("auto/4", &slurm)
            .unwrap_err()
            .contains("3 tasks"));
        let gaps = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert!(Shard::parse("auto", &gaps)
            .unwrap_err()
            .contains("one by one"));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "6")]);
        assert_eq!(
            Shard::parse("auto/7", &k8s),
            Ok(Shard { index: 6, count: 7 })
        );
        assert!(Shard::parse("auto/6", &k8s).unwrap_err().contains("0 to 5"));
        assert!(Shard::parse("auto", &k8s).is_err());
    }
}
