//! Shards and their merge: a folder indexed as N shards (`index --shard I/N`) and
//! merged (`merge`) is the index one `index` of the whole folder makes: every unit's
//! top-K identical (images, order, values, locations), statistics equal but for the
//! order of summation, the same images, failures and labels; for N = 1, 2, 3, 7,
//! shards merged in other orders and groupings, into an existing index, twice; and
//! what a cluster user gets wrong (other runs, a shard cut short, an interrupted
//! merge) refused or survived.

mod common;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snapshot::{count_ok, equal_but_summation, snapshot, Snapshot};

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

/// `neurodex ARGS` with extra environment: exit code and stderr.
fn run(args: &[&dyn AsRef<std::ffi::OsStr>], env: &[(&str, &str)]) -> (i32, String) {
    let out = neurodex()
        .args(args.iter().map(|a| a.as_ref()))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Small K, so that selecting the top-K matters on a few dozen photos.
const K: &str = "4";

fn index(root: &Path, db: &Path, extra: &[&str]) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"index", &root, &"--db", &db, &"--top-k", &K, &"--batch", &"3", &"-q",
    ];
    for e in extra {
        args.push(e);
    }
    let (code, err) = run(&args, &[]);
    // 1 where the broken file is among its files.
    assert!(code == 0 || code == 1, "index {}: {err}", db.display());
}

fn merge(out: &Path, inputs: &[&Path]) -> (i32, String) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"merge", &"--db", &out];
    for i in inputs {
        args.push(i);
    }
    run(&args, &[])
}

/// An ImageNet-style folder (labelled by `index` itself) with what makes merging
/// hard: a name that sorts before a folder's files by bytes but after them in the walk
/// (`n01440764/n02102040.jpg` against `n01440764/n02102040/...`), a file with the
/// content of another (kept out of the top images, wherever its shard), a broken
/// file and a file that is no image.
fn folder(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    let photos = common::demo_images(26);
    let put = |rel: &str, from: &Path| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(from, p).unwrap();
    };
    for (i, f) in photos.iter().enumerate() {
        let rel = match i {
            0..=7 => format!("n01440764/n02102040/p{i:02}.jpg"),
            8 => "n01440764/n02102040.jpg".to_string(),
            9..=15 => format!("n01440764/q{i:02}.jpg"),
            _ => format!("n03000134/r{i:02}.jpg"),
        };
        put(&rel, f);
    }
    // The same photo twice: the copy sorts first in the walk, so it is the one ranked.
    put("n01440764/a-copy.jpg", &photos[20]);
    std::fs::write(
        root.join("n03000134/broken.jpg"),
        b"\xff\xd8\xff not a jpeg",
    )
    .unwrap();
    std::fs::write(root.join("n03000134/readme.txt"), b"notes").unwrap();
    root
}

fn shards(root: &Path, dir: &Path, n: u32, extra: &[&str]) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let db = dir.join(format!("shard-{i}-of-{n}.db"));
            let spec = format!("{i}/{n}");
            let mut args = vec!["--shard", spec.as_str()];
            args.extend_from_slice(extra);
            index(root, &db, &args);
            db
        })
        .collect()
}

fn same(got: &Path, want: &Snapshot, what: &str) -> f64 {
    equal_but_summation(&snapshot(got), want).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn merged(out: &Path, inputs: &[&Path]) {
    let (code, err) = merge(out, inputs);
    // 1 where the merged index holds the broken file's failure.
    assert!(
        code == 0 || code == 1,
        "merge into {}: {err}",
        out.display()
    );
}

#[test]
fn merged_shards_equal_one_index_of_the_whole_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = folder(dir.path());
    let whole = dir.path().join("whole.db");
    index(&root, &whole, &[]);
    let want = snapshot(&whole);
    assert_eq!(want.images.len(), 28, "{:?}", want.images);
    assert!(
        want.labels.len() >= 27,
        "imagenet labels: {}",
        want.labels.len()
    );
    let mut worst = 0f64;
    for n in [1, 2, 3, 7] {
        let parts = shards(&root, dir.path(), n, &[]);
        let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
        // Every file in exactly one shard.
        let sizes: Vec<usize> = parts.iter().map(|s| snapshot(s).images.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 28, "{sizes:?}");
        let out = dir.path().join(format!("merged-{n}.db"));
        merged(&out, &p);
        worst = worst.max(same(&out, &want, &format!("{n} shards")));

        let mut rev = p.clone();
        rev.reverse();
        let out = dir.path().join(format!("reversed-{n}.db"));
        merged(&out, &rev);
        worst = worst.max(same(&out, &want, &format!("{n} shards, reversed")));
    }

    // Groupings: the last shards first, then the first ones merged into that.
    let parts = shards(&root, dir.path(), 7, &[]);
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let late = dir.path().join("late.db");
    merged(&late, &p[4..]);
    let early = dir.path().join("early.db");
    merged(&early, &[p[2], p[0], p[1]]);
    let all = dir.path().join("grouped.db");
    merged(&all, &[late.as_path(), early.as_path(), p[3]]);
    worst = worst.max(same(&all, &want, "7 shards in groups"));

    // Into an existing index, one shard at a time, one of them twice.
    let grown = dir.path().join("grown.db");
    merged(&grown, &[p[5]]);
    for s in [p[0], p[6], p[0], p[1], p[2], p[3], p[4]] {
        merged(&grown, &[s]);
    }
    worst = worst.max(same(&grown, &want, "7 shards added one by one"));
    let stats = neurodex()
        .args(["stats", "--db"])
        .arg(&grown)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("covering all 7 of 7 shards"), "{stats}");

    // The same shard twice in one merge, and the whole index with a shard.
    let twice = dir.path().join("twice.db");
    let mut with_twice = p.clone();
    with_twice.push(p[3]);
    merged(&twice, &with_twice);
    worst = worst.max(same(&twice, &want, "a shard given twice"));
    let over = dir.path().join("over.db");
    merged(&over, &[whole.as_path(), p[2]]);
    worst = worst.max(same(&over, &want, "the whole index and one of its shards"));
    eprintln!("largest relative difference of a sum: {worst:e}");
}

/// With every copy of a content ranked, two copies in different shards tie exactly;
/// the merged lists break the tie as one index does: the copy met first in the walk.
#[test]
fn ties_between_shards_break_in_walk_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = folder(dir.path());
    // Copies of one photo under names that spread over the shards.
    let src = common::demo_images(1)[0].clone();
    // One of them n01440764/n02102040.jpg, which a walk meets after the folder
    // n01440764/n02102040/ holding the original (bytes would sort it before).
    for name in [
        "n03000134/t0.jpg",
        "n03000134/t1.jpg",
        "n01440764/t2.jpg",
        "n03000134/t3.jpg",
        "n01440764/n02102040.jpg",
    ] {
        std::fs::copy(&src, root.join(name)).unwrap();
    }
    let whole = dir.path().join("whole.db");
    index(&root, &whole, &["--keep-duplicates"]);
    let want = snapshot(&whole);
    // The copies fill some unit's list with ties, or the test shows nothing.
    let tied = want
        .top
        .windows(2)
        .filter(|w| (w[0].0, w[0].1, w[0].3) == (w[1].0, w[1].1, w[1].3))
        .count();
    assert!(tied > 100, "only {tied} tied neighbours in the top-K lists");
    for n in [3, 7] {
        let parts = shards(&root, dir.path(), n, &["--keep-duplicates"]);
        let mut p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
        p.reverse();
        let out = dir.path().join(format!("merged-{n}.db"));
        merged(&out, &p);
        same(&out, &want, &format!("{n} shards with ties"));
    }
}

#[test]
fn indexes_of_other_runs_are_refused_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    for f in common::demo_images(4) {
        std::fs::copy(&f, root.join(f.file_name().unwrap())).unwrap();
    }
    let db = |name: &str, extra: &[&str]| {
        let p = dir.path().join(name);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"index", &root, &"--db", &p, &"-q"];
        for e in extra {
            args.push(e);
        }
        let (code, err) = run(&args, &[]);
        assert_eq!(code, 0, "{err}");
        p
    };
    let a = db("a.db", &["--shard", "0/2"]);
    let cases = [
        (
            db("k.db", &["--shard", "1/2", "--top-k", "7"]),
            "top-K of 7 (against 100)",
        ),
        (
            db("l.db", &["--shard", "1/2", "--layers", "stem,head"]),
            "layers stem,head",
        ),
        (
            db("d.db", &["--shard", "1/2", "--keep-duplicates"]),
            "duplicates kept",
        ),
        (
            db("p.db", &["--shard", "1/2", "--resize", "300"]),
            "preprocessing",
        ),
    ];
    let out = dir.path().join("out.db");
    for (other, why) in &cases {
        let (code, err) = merge(&out, &[a.as_path(), other.as_path()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(why) && err.contains(&*other.to_string_lossy()),
            "{why}: {err}"
        );
        assert!(!out.exists(), "a refused merge left {}", out.display());
    }
    // Not a database at all, and a database with nothing in it.
    std::fs::write(dir.path().join("junk.db"), b"not sqlite").unwrap();
    let (code, err) = merge(&out, &[a.as_path(), &dir.path().join("junk.db")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.db"), "{err}");
    assert!(!out.exists());

    // A resumed shard must be the same shard.
    let (code, err) = run(&[&"index", &root, &"--db", &a, &"--shard", &"1/2"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard 0/2 (asked: shard 1/2)"), "{err}");
    let (code, err) = run(&[&"index", &root, &"--db", &a], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("asked: every file"), "{err}");
    let (code, err) = run(&[&"index", &root, &"--db", &out, &"--shard", &"2/2"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0 to 1"), "{err}");
}

/// `--shard auto` takes the task's number and the array's size from Slurm, `auto/N`
/// the index of a Kubernetes indexed job (or the Slurm task's number, for a rerun).
#[test]
fn auto_shards_come_from_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    for f in common::demo_images(6) {
        std::fs::copy(&f, root.join(f.file_name().unwrap())).unwrap();
    }
    let whole = dir.path().join("whole.db");
    let (code, err) = run(&[&"index", &root, &"--db", &whole, &"-q"], &[]);
    assert_eq!(code, 0, "{err}");
    let mut parts = Vec::new();
    for task in 0..3 {
        let db = dir.path().join(format!("s{task}.db"));
        let t = task.to_string();
        let (code, err) = run(
            &[&"index", &root, &"--db", &db, &"--shard", &"auto"],
            &[
                ("SLURM_ARRAY_TASK_ID", t.as_str()),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_MAX", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(&format!("shard {task}/3")), "{err}");
        parts.push(db);
    }
    // A rerun of task 2 alone is an array of one: `auto` refuses to guess N.
    let rerun = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_MIN", "2"),
        ("SLURM_ARRAY_TASK_MAX", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "1"),
    ];
    let (code, err) = run(
        &[&"index", &root, &"--db", &parts[2], &"--shard", &"auto"],
        &rerun,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auto/N"), "{err}");
    let (code, err) = run(
        &[&"index", &root, &"--db", &parts[2], &"--shard", &"auto/3"],
        &rerun,
    );
    assert_eq!(code, 0, "{err}");
    let out = dir.path().join("out.db");
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let (code, err) = merge(&out, &p);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("all 3 of 3 shards"), "{err}");
    same(&out, &snapshot(&whole), "Slurm-numbered shards");

    let k8s = dir.path().join("k.db");
    let (code, err) = run(
        &[&"index", &root, &"--db", &k8s, &"--shard", &"auto/2"],
        &[("JOB_COMPLETION_INDEX", "1")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("shard 1/2"), "{err}");
    let (code, err) = run(&[&"index", &root, &"--db", &k8s, &"--shard", &"auto"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
}

/// A file added to the folder between two runs of a shard's `index` is numbered after
/// files a walk meets later; its shard's lists broke ties (here: which copy of a
/// content is ranked) by that numbering, so the merge recomputes them from the peaks.
#[test]
fn files_added_between_runs_of_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    let photos = common::demo_images(8);
    for (i, f) in photos.iter().enumerate() {
        std::fs::copy(f, root.join(format!("p{i}.jpg"))).unwrap();
    }
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("s{i}.db")))
        .collect();
    let index_shards = || {
        for (i, db) in parts.iter().enumerate() {
            let spec = format!("{i}/2");
            let (code, err) = run(
                &[&"index", &root, &"--db", db, &"--shard", &spec, &"-q"],
                &[],
            );
            assert_eq!(code, 0, "{err}");
        }
    };
    index_shards();
    // Copies of every photo under names a walk meets first ("a..." < "p..."), each
    // in the shard its name hashes to: there they are numbered after the photos.
    for (i, f) in photos.iter().enumerate() {
        std::fs::copy(f, root.join(format!("a{i}.jpg"))).unwrap();
    }
    index_shards();
    let whole = dir.path().join("whole.db");
    let (code, err) = run(&[&"index", &root, &"--db", &whole, &"-q"], &[]);
    assert_eq!(code, 0, "{err}");
    let out = dir.path().join("out.db");
    let (code, err) = merge(&out, &[parts[0].as_path(), parts[1].as_path()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("out of walk order"), "{err}");
    same(
        &out,
        &snapshot(&whole),
        "shards with files added between runs",
    );
}

/// Shards indexed again after the folder changed (a file deleted, one replaced by
/// another photo with an older time, one added) and merged into the index their
/// first run made: the newer shards' rows win, as a rerun of one index has them.
#[test]
fn a_merge_into_an_older_index_takes_what_the_newer_shards_saw() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    let photos = common::demo_images(14);
    for (i, f) in photos[..12].iter().enumerate() {
        std::fs::copy(f, root.join(format!("p{i:02}.jpg"))).unwrap();
    }
    let whole = dir.path().join("whole.db");
    let parts: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("s{i}.db")))
        .collect();
    let index_all = || {
        let (code, err) = run(&[&"index", &root, &"--db", &whole, &"-q"], &[]);
        assert_eq!(code, 0, "{err}");
        for (i, db) in parts.iter().enumerate() {
            let spec = format!("{i}/3");
            let (code, err) = run(
                &[&"index", &root, &"--db", db, &"--shard", &spec, &"-q"],
                &[],
            );
            assert_eq!(code, 0, "{err}");
        }
    };
    index_all();
    let out = dir.path().join("out.db");
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    assert_eq!(merge(&out, &p).0, 0);
    std::thread::sleep(Duration::from_millis(1100)); // a later second for the reruns
    std::fs::remove_file(root.join("p03.jpg")).unwrap();
    // Another photo under an old name, with a time older than the first run's file.
    let replaced = root.join("p05.jpg");
    let old = std::fs::metadata(&replaced).unwrap().modified().unwrap();
    std::fs::copy(&photos[12], &replaced).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&replaced)
        .unwrap()
        .set_modified(old - Duration::from_secs(3600))
        .unwrap();
    std::fs::copy(&photos[13], root.join("p12.jpg")).unwrap();
    index_all();
    let (code, err) = merge(&out, &p);
    assert_eq!(code, 0, "{err}");
    let want = snapshot(&whole);
    assert_eq!(want.images["p03.jpg"], "removed");
    same(
        &out,
        &want,
        "shards run again, merged into their first merge",
    );
}

/// Random weights for a built-in architecture, in torchvision's names (BatchNorm
/// scales and variances positive), written as safetensors.
fn random_weights(model: &str, path: &Path) {
    use candle_core::{Device, Tensor};
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in neurodex::arch::by_name(model).unwrap().parameters() {
        let n: usize = shape.iter().product();
        let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
        let positive =
            name.ends_with("running_var") || (name.contains("bn") && name.ends_with("weight"));
        let data: Vec<f32> = (0..n)
            .map(|_| match () {
                _ if positive => 0.5 + next().abs() * 2.0,
                _ if shape.len() > 1 => next() * (12.0 / fan_in).sqrt(),
                _ => next() * 0.2,
            })
            .collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// ResNet-18 computes its late layers on the whole batch (Winograd, the fully
/// connected layer), where an image's values depend on the batch's size: an index
/// fixes its batch size when it is made and pads short batches to it, so shards of
/// a few images each give the values one index of the folder gives.
#[test]
fn a_network_computed_on_whole_batches_merges_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    for f in common::demo_images(20) {
        std::fs::copy(&f, root.join(f.file_name().unwrap())).unwrap();
    }
    let weights = dir.path().join("resnet18.safetensors");
    random_weights("resnet18", &weights);
    let index = |db: &Path, extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"index",
            &root,
            &"--db",
            &db,
            &"--model",
            &"resnet18",
            &"--weights",
            &weights,
            &"--layers",
            &"layer2,layer3,layer4,fc",
            &"-q",
        ];
        for e in extra {
            args.push(e);
        }
        let (code, err) = run(&args, &[]);
        assert_eq!(code, 0, "{err}");
    };
    let whole = dir.path().join("whole.db");
    index(&whole, &[]);
    let run_of = |db: &Path| {
        neurodex::store::Store::open_readonly(db)
            .unwrap()
            .run_info()
            .unwrap()
    };
    assert_eq!(run_of(&whole).batch, Some(16));
    // The values do depend on the batch: one image at a time gives others.
    let single = dir.path().join("single.db");
    index(&single, &["--batch", "1"]);
    assert_ne!(snapshot(&single).top, snapshot(&whole).top);
    let parts: Vec<PathBuf> = (0..7)
        .map(|i| dir.path().join(format!("s{i}.db")))
        .collect();
    for (i, db) in parts.iter().enumerate() {
        index(db, &["--shard", &format!("{i}/7")]);
    }
    let out = dir.path().join("out.db");
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let (code, err) = merge(&out, &p);
    assert_eq!(code, 0, "{err}");
    same(&out, &snapshot(&whole), "ResNet-18 in 7 shards");
    // Shards computed in batches of another size are refused.
    let (code, err) = merge(
        &dir.path().join("no.db"),
        &[whole.as_path(), single.as_path()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("batches of 1 (against 16)"), "{err}");
}

/// `index` labels a folder of ImageNet class folders by their names only when every
/// image sits in one: a shard may see only such images where the folder as a whole
/// has others; the merge decides for all of them, as one index does.
#[test]
fn imagenet_labels_are_decided_for_the_whole_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let photos = common::demo_images(15);
    for (i, f) in photos.iter().enumerate() {
        let sub = match i {
            0..=6 => "n01440764",
            7..=13 => "n02102040",
            _ => "misc",
        };
        std::fs::create_dir_all(root.join(sub)).unwrap();
        std::fs::copy(f, root.join(sub).join(format!("p{i:02}.jpg"))).unwrap();
    }
    let whole = dir.path().join("whole.db");
    index(&root, &whole, &[]);
    assert!(snapshot(&whole).labels.is_empty());
    let parts = shards(&root, dir.path(), 4, &[]);
    assert!(
        parts.iter().any(|p| !snapshot(p).labels.is_empty()),
        "no shard was labelled on its own: the test shows nothing"
    );
    let out = dir.path().join("out.db");
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let (code, err) = merge(&out, &p);
    assert_eq!(code, 0, "{err}");
    same(&out, &snapshot(&whole), "shards labelled on their own");
    // Without the odd one out the folder is ImageNet-like, and the merge labels it.
    std::fs::remove_dir_all(root.join("misc")).unwrap();
    for db in [&whole, &out] {
        let _ = std::fs::remove_file(db);
    }
    index(&root, &whole, &[]);
    assert_eq!(snapshot(&whole).labels.len(), 14);
    std::fs::create_dir(dir.path().join("again")).unwrap();
    let parts = shards(&root, &dir.path().join("again"), 4, &[]);
    let p: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let (code, err) = merge(&out, &p);
    assert_eq!(code, 0, "{err}");
    same(&out, &snapshot(&whole), "ImageNet-like shards");
}

/// Shards computed on different instruction sets are merged, with a note: their
/// values may differ in the last bits.
#[test]
fn shards_of_different_instruction_sets_are_noted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    for f in common::demo_images(4) {
        std::fs::copy(&f, root.join(f.file_name().unwrap())).unwrap();
    }
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (code, err) = run(
        &[&"index", &root, &"--db", &a, &"--shard", &"0/2", &"-q"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(
        &[&"index", &root, &"--db", &b, &"--shard", &"1/2", &"-q"],
        &[("NEURODEX_ISA", "portable")],
    );
    assert_eq!(code, 0, "{err}");
    let out = dir.path().join("out.db");
    let (code, err) = merge(&out, &[a.as_path(), b.as_path()]);
    assert_eq!(code, 0, "{err}");
    let native = neurodex::kernels::isa::isa().name();
    if native == "portable" {
        eprintln!(
            "SKIPPED: the note on mixed instruction sets: this CPU runs the portable kernels only"
        );
        return;
    }
    assert!(
        err.contains("different instruction sets")
            && err.contains(native)
            && err.contains("portable"),
        "{err}"
    );
}

/// A shard killed mid-run is refused by merge until its `index` is run again, which
/// resumes it; a merge that fails leaves the output as it was, and one interrupted
/// (its work file left behind) starts afresh.
#[test]
fn killed_shards_and_interrupted_merges() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    for f in common::demo_images(30) {
        std::fs::copy(&f, root.join(f.file_name().unwrap())).unwrap();
    }
    let whole = dir.path().join("whole.db");
    let (code, err) = run(&[&"index", &root, &"--db", &whole, &"-q"], &[]);
    assert_eq!(code, 0, "{err}");
    let want = snapshot(&whole);

    let s0 = dir.path().join("s0.db");
    let s1 = dir.path().join("s1.db");
    let (code, err) = run(
        &[&"index", &root, &"--db", &s1, &"--shard", &"1/2", &"-q"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let mut child = neurodex()
        .args(["index", "--shard", "0/2", "--batch", "1", "-q", "--db"])
        .arg(&s0)
        .arg(&root)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while count_ok(&s0) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = dir.path().join("out.db");
    let (code, err) = merge(&out, &[s1.as_path(), s0.as_path()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("s0.db") && err.contains("stopped before the end"),
        "{err}"
    );
    assert!(!out.exists());

    // Resumed, it merges into the whole index.
    let (code, err) = run(
        &[&"index", &root, &"--db", &s0, &"--shard", &"0/2", &"-q"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = merge(&out, &[s1.as_path()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("missing 0/2"), "{err}");

    // A merge that fails half-way (an input without its peaks table) leaves it as it
    // was (its log folded in, if it had one).
    let before = snapshot(&out);
    let bad = dir.path().join("bad.db");
    let c = rusqlite::Connection::open(&s0).unwrap();
    c.execute("VACUUM INTO ?1", [bad.to_str().unwrap()])
        .unwrap();
    drop(c);
    rusqlite::Connection::open(&bad)
        .unwrap()
        .execute_batch("DROP TABLE peaks")
        .unwrap();
    let (code, err) = merge(&out, &[bad.as_path()]);
    assert_eq!(code, 2, "an input without peaks merged: {err}");
    assert!(err.contains("bad.db") && err.contains("peaks"), "{err}");
    assert_eq!(snapshot(&out), before);
    assert!(!neurodex::merge::work_path(&out).exists());

    // A log left by a killed writer of a database since deleted is not replayed into
    // the merged one of that name.
    let fresh = dir.path().join("fresh.db");
    let stale = dir.path().join("stale.db");
    let holder = rusqlite::Connection::open(&stale).unwrap();
    holder
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));",
        )
        .unwrap();
    let mut wal = stale.into_os_string();
    wal.push("-wal");
    std::fs::copy(&wal, dir.path().join("fresh.db-wal")).unwrap();
    drop(holder);
    let (code, err) = merge(&fresh, &[s0.as_path(), s1.as_path()]);
    assert_eq!(code, 0, "{err}");
    let check: String = rusqlite::Connection::open(&fresh)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    same(&fresh, &want, "a merge beside a stale log");

    // What an interrupted merge leaves (its work file, half written) is replaced.
    let work = neurodex::merge::work_path(&out);
    std::fs::write(&work, b"half a database").unwrap();
    let (code, err) = merge(&out, &[s0.as_path()]);
    assert_eq!(code, 0, "{err}");
    assert!(!work.exists());
    same(&out, &want, "a merge after an interrupted one");
}
