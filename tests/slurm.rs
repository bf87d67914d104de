//! A real Slurm: `scripts/slurm/submit.sh` sends the demo set to a running cluster as a
//! three-task index array and a merge after it; the merged index must equal one
//! `neurodex index` of the folder. `.ci/run` starts a one-node cluster on the CI
//! machine (`scripts/slurm/cluster.sh`); elsewhere, without `sbatch` and a cluster
//! that answers, the test prints SKIPPED (and fails under CI).

mod common;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether a cluster answers: `sinfo` lists a node that can take jobs.
fn cluster() -> Result<(), String> {
    let out = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .map_err(|e| format!("no sinfo ({e}): Slurm is not installed"))?;
    let states = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "sinfo failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if !states
        .lines()
        .any(|s| s.starts_with("idle") || s.starts_with("mix"))
    {
        return Err(format!("no node is idle (sinfo: {})", states.trim()));
    }
    Ok(())
}

fn in_queue(job: &str) -> Option<String> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%T %r", "-j", job])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

#[test]
fn a_slurm_array_and_its_merge_equal_one_index() {
    if let Err(why) = cluster() {
        assert!(
            !ci(),
            "CI is set but no Slurm cluster answers: {why} (.ci/run starts one with \
             scripts/slurm/cluster.sh)"
        );
        eprintln!("SKIPPED: the Slurm test: {why}");
        return;
    }
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo");
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.db");
    let (code, _, err) = common::run(&[
        "index".as_ref(),
        demo.as_os_str(),
        "--db".as_ref(),
        whole.as_os_str(),
        "-q".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");

    let out = dir.path().join("merged.db");
    let shards = dir.path().join("merged.db.shards");
    // Shard 1 fails (its database path is taken by a folder), so the merge never runs.
    std::fs::create_dir_all(shards.join("shard-1-of-3.db")).unwrap();
    let started = Instant::now();
    let said = submit(&demo, &out, &[]);
    let queue = wait(&shards, &said);
    assert!(
        !out.exists(),
        "merged although a shard failed\n{said}\n{}",
        logs(&shards)
    );
    assert!(
        logs(&shards).contains("unable to open database file"),
        "{queue}\n{}",
        logs(&shards)
    );
    // Rerun as the README says: that shard alone, and the merge after it.
    std::fs::remove_dir(shards.join("shard-1-of-3.db")).unwrap();
    let said = submit(&demo, &out, &["--rerun", "1"]);
    wait(&shards, &said);
    let wall = started.elapsed().as_secs_f64();
    assert!(out.exists(), "no merged index\n{said}\n{}", logs(&shards));
    let merge_log = std::fs::read_to_string(shards.join("logs/merge.out")).unwrap_or_default();
    assert!(merge_log.contains("all 3 of 3 shards"), "{}", logs(&shards));
    let worst =
        snapshot::equal_but_summation(&snapshot::snapshot(&out), &snapshot::snapshot(&whole))
            .unwrap_or_else(|e| panic!("merged != whole: {e}\n{}", logs(&shards)));
    eprintln!(
        "Slurm: 3 index tasks (one failing), the merge cancelled, the failed task rerun and the \
         merge after it, over {}: {wall:.1} s from the first submission; largest relative \
         difference of a sum {worst:e}",
        demo.display()
    );
}

/// `submit.sh DEMO OUT --shards 3 EXTRA...`: what it printed.
fn submit(demo: &Path, out: &Path, extra: &[&str]) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let submit = Command::new(repo.join("scripts/slurm/submit.sh"))
        .arg(demo)
        .arg(out)
        .args([
            "--shards",
            "3",
            "--neurodex",
            env!("CARGO_BIN_EXE_neurodex"),
        ])
        .args(["--sbatch", "--cpus-per-task=1"])
        .args(extra)
        // Arguments for every `index`, passed through word for word.
        .args(["--", "--decode-memory-mb", "900"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&submit.stdout).into_owned();
    assert!(
        submit.status.success(),
        "submit.sh: {said}{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    said
}

/// Every task's log.
fn logs(shards: &Path) -> String {
    let mut all = String::new();
    for name in ["index-0.out", "index-1.out", "index-2.out", "merge.out"] {
        let p = shards.join("logs").join(name);
        all += &format!(
            "--- {name}\n{}\n",
            std::fs::read_to_string(p).unwrap_or_default()
        );
    }
    all
}

/// Waits until the jobs submit.sh recorded have left the queue; returns what the queue
/// said of them last.
fn wait(shards: &Path, said: &str) -> String {
    let jobs = std::fs::read_to_string(shards.join("jobs")).unwrap();
    let ids: Vec<&str> = jobs.split_whitespace().collect();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last = String::new();
    loop {
        let queued: Vec<String> = ids.iter().filter_map(|j| in_queue(j)).collect();
        if queued.is_empty() {
            return last;
        }
        last = queued.join("; ");
        if Instant::now() > deadline {
            let _ = Command::new("scancel").args(&ids).status();
            panic!("the jobs did not finish: {last}\n{said}\n{}", logs(shards));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
