//! Which files of a folder one shard indexes. A file belongs to exactly one of N
//! shards, chosen by a hash of its path relative to the root, so every machine of a
//! cluster decides alike without talking to the others, in whatever order it walks
//! the folder. (Merging asks that they all name the folder by the same path.)

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

    /// `I/N`; `auto`, in a Slurm array job submitted as `--array=0-(N-1)`: shard
    /// SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT; or `auto/N`: shard
    /// JOB_COMPLETION_INDEX (a Kubernetes indexed job), else SLURM_ARRAY_TASK_ID, of N
    /// given, which also serves a rerun of some of the tasks (`--array=3,5`), whose
    /// array no longer says N. `env` reads the environment (a parameter for tests).
    pub fn parse(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let num = |what: &str, v: &str| -> Result<u32, String> {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} is {v:?}, not a whole number"))
        };
        let var = |name: &str| -> Result<Option<u32>, String> {
            env(name).map(|v| num(name, &v)).transpose()
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
            let index = match (var("JOB_COMPLETION_INDEX")?, var("SLURM_ARRAY_TASK_ID")?) {
                (Some(i), _) | (None, Some(i)) => i,
                (None, None) => {
                    return Err("--shard auto/N needs JOB_COMPLETION_INDEX (a Kubernetes \
                                indexed job) or SLURM_ARRAY_TASK_ID (a Slurm array task); \
                                neither is set"
                        .into())
                }
            };
            return Shard::new(index, n);
        }
        let Some(id) = var("SLURM_ARRAY_TASK_ID")? else {
            return Err(
                "--shard auto needs a Slurm array task (SLURM_ARRAY_TASK_ID is not \
                        set); elsewhere give --shard I/N, or auto/N under a Kubernetes \
                        indexed job"
                    .into(),
            );
        };
        let count = var("SLURM_ARRAY_TASK_COUNT")?.ok_or(
            "--shard auto: SLURM_ARRAY_TASK_COUNT is not set (Slurm before 17.11?); give the \
             count as --shard auto/N",
        )?;
        let (min, max) = (var("SLURM_ARRAY_TASK_MIN")?, var("SLURM_ARRAY_TASK_MAX")?);
        let step = var("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
        // Only an array of the numbers 0 to N-1 says what N is: a rerun of some tasks
        // (or an array from 1) would name other shards.
        if min.unwrap_or(0) != 0 || max.is_some_and(|m| m + 1 != count) || step != 1 {
            return Err(format!(
                "--shard auto takes its shard from an array submitted as --array=0-(N-1); \
                 this one is tasks {}-{} ({count} of them{}): give the count as --shard \
                 auto/N (the task's number is then its shard)",
                min.map_or("?".into(), |m| m.to_string()),
                max.map_or("?".into(), |m| m.to_string()),
                if step != 1 {
                    format!(", every {step}th")
                } else {
                    String::new()
                }
            ));
        }
        Shard::new(id, count)
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
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::parse("auto", &slurm),
            Ok(Shard { index: 1, count: 3 })
        );
        assert_eq!(
            Shard::parse("auto/3", &slurm),
            Ok(Shard { index: 1, count: 3 })
        );
        // A rerun of task 3 alone: an array of one that names shard 3 of 8 only with N.
        let rerun = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ]);
        assert!(Shard::parse("auto", &rerun).unwrap_err().contains("auto/N"));
        assert_eq!(
            Shard::parse("auto/8", &rerun),
            Ok(Shard { index: 3, count: 8 })
        );
        let from_one = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert!(Shard::parse("auto", &from_one)
            .unwrap_err()
            .contains("--array=0-(N-1)"));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "6")]);
        assert_eq!(
            Shard::parse("auto/7", &k8s),
            Ok(Shard { index: 6, count: 7 })
        );
        assert!(Shard::parse("auto/6", &k8s).unwrap_err().contains("0 to 5"));
        assert!(Shard::parse("auto", &k8s).is_err());
    }
}
