//! `neurodex index` end to end: the stored peaks against a naive per-image forward,
//! bad inputs, reruns (unchanged, changed, removed files) and a killed-and-resumed
//! run against an uninterrupted one.

mod common;
#[path = "common/snapshot.rs"]
mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use neurodex::model::Network;
use neurodex::query;
use neurodex::store::Store;

use common::demo_images;
use snapshot::{count_ok, snapshot};

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

fn copy_into(dir: &Path, files: &[PathBuf]) {
    for f in files {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
}

fn index(dir: &Path, db: &Path, extra: &[&str]) -> (i32, String) {
    let out = neurodex()
        .arg("index")
        .arg(dir)
        .arg("--db")
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Per image, per layer, per unit: (value, y, x).
type NaivePeaks = Vec<(String, Vec<Vec<(f32, usize, usize)>>)>;

/// The stored peak of every unit equals a plain maximum over the feature map computed
/// one image at a time, and `top` orders images by it with a box from the unit's
/// receptive field mapped through the crop.
#[test]
fn stored_peaks_and_top_lists_match_a_naive_per_image_forward() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    let files = demo_images(6);
    copy_into(&imgs, &files);
    let db = dir.path().join("i.db");
    let (code, err) = index(
        &imgs,
        &db,
        &["--batch", "4", "--layers", "stem,blocks.4,head"],
    );
    assert_eq!(code, 0, "{err}");

    let net = Network::embedded_default().unwrap();
    let stem = net.arch.find("stem").unwrap();
    let b4 = net.arch.find("blocks.4").unwrap();
    // Naive reference: per image, batch of one, argmax by a plain scan.
    let mut naive: NaivePeaks = Vec::new();
    for f in &files {
        let img = neurodex::preprocess::open_image(f, u64::MAX).unwrap();
        let (x, _) = neurodex::preprocess::prepare(&img, &net.arch.recipe);
        let acts = net.forward_raw(&x, 1, &[stem, b4]).unwrap();
        let per_layer = acts
            .iter()
            .map(|a| {
                (0..a.c)
                    .map(|c| {
                        let plane = &a.data[c * a.h * a.w..(c + 1) * a.h * a.w];
                        let mut best = (f32::NEG_INFINITY, 0, 0);
                        for (i, &v) in plane.iter().enumerate() {
                            if v > best.0 {
                                best = (v, i / a.w, i % a.w);
                            }
                        }
                        best
                    })
                    .collect()
            })
            .collect();
        naive.push((
            f.file_name().unwrap().to_string_lossy().into_owned(),
            per_layer,
        ));
    }

    let store = Store::open_readonly(&db).unwrap();
    for (li, layer) in ["stem", "blocks.4"].iter().enumerate() {
        for unit in [0usize, 5, 17] {
            let hits = query::top(&store, layer, unit, 9).unwrap();
            assert_eq!(hits.len(), files.len(), "one entry per image");
            let mut want: Vec<(f32, &str)> = naive
                .iter()
                .map(|(p, l)| (l[li][unit].0, p.as_str()))
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (h, (v, _)) in hits.iter().zip(&want) {
                assert!(
                    (h.value - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{layer}/{unit}: {} vs {v}",
                    h.value
                );
                let (_, layers) = naive.iter().find(|(p, _)| *p == h.path).unwrap();
                let (nv, ny, nx) = layers[li][unit];
                assert!((h.value - nv).abs() <= 1e-4 * nv.abs().max(1.0));
                // Position: equal unless the map has (near-)ties at the max.
                if (h.y, h.x) != (ny, nx) {
                    assert!(
                        (h.value - nv).abs() < 1e-3,
                        "{layer}/{unit} {}: position",
                        h.path
                    );
                }
                assert!(h.abs_path.is_file());
            }
        }
    }

    // Stem unit (y, x): field 3x3, jump 2, offset 0 -> input [2x, 2y, 2x+3, 2y+3],
    // then through the centre crop: orig = crop0 + v * side / 224.
    for h in query::top(&store, "stem", 3, 3).unwrap() {
        let t = &h.transform;
        let s = t.crop[2] / 224.0;
        let x0 = t.crop[0] + (2 * h.x) as f64 * s;
        let y0 = t.crop[1] + (2 * h.y) as f64 * s;
        let x1 = t.crop[0] + (2 * h.x + 3) as f64 * s;
        let y1 = t.crop[1] + (2 * h.y + 3) as f64 * s;
        let want = [
            x0.floor().max(0.0) as u32,
            y0.floor().max(0.0) as u32,
            (x1.ceil() as u32).min(t.orig_w),
            (y1.ceil() as u32).min(t.orig_h),
        ];
        assert_eq!(h.box_orig, want, "{}", h.path);
    }

    // The CLI's JSON shape.
    let out = neurodex()
        .args(["top", "--db"])
        .arg(&db)
        .args(["--layer", "head", "--unit", "11", "-k", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layer"], "head");
    assert_eq!(v["unit"], 11);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for im in images {
        assert!(im["path"].as_str().unwrap().ends_with(".jpg"));
        assert!(im["value"].is_number() && im["y"].is_number() && im["x"].is_number());
        assert_eq!(im["box"].as_array().unwrap().len(), 4);
    }
    assert!(images[0]["value"].as_f64() >= images[1]["value"].as_f64());
}

/// A minimal BMP header claiming `w` x `h` 24-bit pixels, with no pixel data.
fn bmp_header(w: u32, h: u32) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row as u64 * h as u64;
    let mut b = Vec::new();
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&(size.min(u32::MAX as u64) as u32).to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b
}

#[test]
fn bad_inputs_are_recorded_with_a_reason_and_do_not_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let good = demo_images(2);
    copy_into(&root, &good);
    std::fs::write(root.join("empty.jpg"), b"").unwrap();
    std::fs::write(root.join("text.jpg"), b"this is not a picture\n").unwrap();
    std::fs::write(
        root.join("notes.txt"),
        b"ignored: not named like an image\n",
    )
    .unwrap();
    // A real PNG, cut in half.
    let noise = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8])
    });
    let png = root.join("whole.png");
    noise.save(&png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(root.join("truncated.png"), &bytes[..bytes.len() / 2]).unwrap();
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[40..] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(root.join("corrupt.png"), &corrupt).unwrap();
    // 12000 x 12000 = 144 MP, over the 100 MP default: refused from the header (54 bytes).
    std::fs::write(root.join("huge.bmp"), bmp_header(12000, 12000)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::os::unix::fs::symlink("..", root.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink("nowhere.jpg", root.join("dangling.jpg")).unwrap();
        // A good image of its own (a copy would be a duplicate, kept out of the top
        // images) under a name that is not UTF-8.
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
        let flipped = image::imageops::flip_horizontal(&image::open(&good[0]).unwrap().to_rgb8());
        flipped
            .save_with_format(root.join(name), image::ImageFormat::Jpeg)
            .unwrap();
    }
    let db = dir.path().join("bad.db");
    let (code, err) = index(&root, &db, &["--batch", "2"]);
    assert_eq!(code, 1, "some inputs failed: {err}");
    assert!(err.contains("failed:"), "{err}");

    let store = Store::open_readonly(&db).unwrap();
    let rows: BTreeMap<String, (String, Option<String>, Option<String>)> = common::raw_db(&db)
        .prepare("SELECT path, status, error_kind, error FROM image")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let kind = |p: &str| -> (String, Option<String>) {
        let (s, k, e) = rows
            .get(p)
            .unwrap_or_else(|| panic!("{p} not recorded: {rows:?}"));
        assert!(
            s == "ok" || e.as_deref().is_some_and(|e| !e.is_empty()),
            "{p}: no reason"
        );
        (s.clone(), k.clone())
    };
    let failed = |k: &str| ("failed".to_string(), Some(k.to_string()));
    assert_eq!(kind("empty.jpg"), failed("empty"));
    assert_eq!(kind("text.jpg"), failed("not_image"));
    assert_eq!(kind("truncated.png"), failed("decode"));
    assert_eq!(kind("corrupt.png"), failed("decode"));
    assert_eq!(kind("huge.bmp"), failed("too_large"));
    assert_eq!(kind("whole.png").0, "ok");
    for g in &good {
        assert_eq!(kind(&g.file_name().unwrap().to_string_lossy()).0, "ok");
    }
    assert!(!rows.contains_key("notes.txt"));
    #[cfg(unix)]
    {
        assert_eq!(kind("sub/loop"), failed("walk"));
        assert_eq!(kind("dangling.jpg"), failed("walk"));
        assert_eq!(kind("caf\u{fffd}.jpg").0, "ok");
        let hit = query::top(&store, "stem", 0, 100)
            .unwrap()
            .into_iter()
            .find(|h| h.path == "caf\u{fffd}.jpg")
            .expect("non-UTF-8 name indexed");
        assert!(hit.abs_path.is_file(), "the exact name is kept");
    }

    // `stats` lists the failures; a rerun retries nothing and still reports them.
    let o = query::overview(&store, 100).unwrap();
    assert_eq!(o.images_failed as usize, o.failures.len());
    let (code, err) = index(&root, &db, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("indexed 0 images"), "{err}");
}

#[test]
fn reruns_index_only_new_and_changed_files_and_mark_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir(&root).unwrap();
    let files = demo_images(6);
    copy_into(&root, &files[..4]);
    let db = dir.path().join("r.db");
    let args = ["--batch", "3", "--layers", "stem,blocks.7"];
    assert_eq!(index(&root, &db, &args).0, 0);

    let (code, err) = index(&root, &db, &[]);
    assert_eq!(code, 0);
    assert!(
        err.contains("indexed 0 images") && err.contains("4 unchanged"),
        "{err}"
    );

    // New time, same bytes: the hash says unchanged.
    let f0 = root.join(files[0].file_name().unwrap());
    let t = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&f0)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let (_, err) = index(&root, &db, &[]);
    assert!(
        err.contains("indexed 0 images") && err.contains("4 unchanged"),
        "{err}"
    );

    // Replace one file's content, delete another, add a new one.
    let f1 = root.join(files[1].file_name().unwrap());
    std::fs::copy(&files[5], &f1).unwrap();
    std::fs::remove_file(root.join(files[2].file_name().unwrap())).unwrap();
    copy_into(&root, &files[4..5]);
    let (code, err) = index(&root, &db, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("indexed 2 images") && err.contains("1 changed") && err.contains("1 removed"),
        "{err}"
    );
    let s = snapshot(&db);
    let removed = files[2].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(s.images[&removed], "removed");

    // The result equals indexing the directory as it is now from scratch.
    let fresh = dir.path().join("fresh.db");
    assert_eq!(index(&root, &fresh, &args).0, 0);
    let f = snapshot(&fresh);
    assert_eq!(s.top, f.top);
    assert_eq!(s.stats, f.stats);

    // A database made for other layers or another directory is refused.
    let (code, err) = index(&root, &db, &["--layers", "head"]);
    assert_eq!(code, 2);
    assert!(err.contains("layers"), "{err}");
    let (code, err) = index(dir.path(), &db, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("directory"), "{err}");
}

/// `kill -9` twice during a run, then a rerun: the index equals an uninterrupted
/// run's, unit by unit, to the bit.
#[test]
fn a_killed_run_resumes_to_the_same_index_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir(&root).unwrap();
    let files = demo_images(24);
    copy_into(&root, &files);
    let args = ["--batch", "2", "--quiet"];

    let whole = dir.path().join("whole.db");
    assert_eq!(index(&root, &whole, &args).0, 0);
    let want = snapshot(&whole);
    assert_eq!(want.images.len(), files.len());

    let db = dir.path().join("killed.db");
    for stop_at in [2, 10] {
        let mut child = neurodex()
            .arg("index")
            .arg(&root)
            .arg("--db")
            .arg(&db)
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read (WAL) while it writes; kill as soon as enough batches are in.
        let deadline = Instant::now() + Duration::from_secs(300);
        while count_ok(&db) < stop_at {
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before the kill"
            );
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let done = count_ok(&db);
        assert!(
            done < files.len() as i64,
            "the run was not interrupted ({done} indexed)"
        );
    }
    let (code, err) = index(&root, &db, &args);
    assert_eq!(code, 0, "{err}");
    let got = snapshot(&db);
    assert_eq!(got.images, want.images);
    assert_eq!(got.top, want.top);
    assert_eq!(got.stats, want.stats);
    let o = query::overview(&Store::open_readonly(&db).unwrap(), 0).unwrap();
    assert_eq!((o.sessions, o.sessions_unfinished), (3, 2));
}

/// `units`, `image` and `stats` agree with the stored peaks and top lists.
#[test]
fn unit_and_image_queries_agree_with_the_peaks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir(&root).unwrap();
    let files = demo_images(5);
    copy_into(&root, &files);
    let db = dir.path().join("q.db");
    assert_eq!(index(&root, &db, &["--layers", "blocks.2,head"]).0, 0);
    let store = Store::open_readonly(&db).unwrap();
    let layer = query::layer(&store, "blocks.2").unwrap();

    // Per unit, the peaks of all images, read back from the per-image records.
    let mut per_unit: Vec<Vec<f32>> = vec![Vec::new(); layer.channels];
    for f in &files {
        let id = query::find_image(&store, Path::new(f.file_name().unwrap())).unwrap();
        let peaks = store.peaks(id, layer.id).unwrap().unwrap();
        for (u, p) in peaks.iter().enumerate() {
            per_unit[u].push(p.value);
        }
    }
    let (_, units) = query::units(&store, "blocks.2", query::SortBy::Max).unwrap();
    assert_eq!(units.len(), layer.channels);
    for w in units.windows(2) {
        assert!(w[0].max >= w[1].max);
    }
    for u in &units {
        let v = &per_unit[u.unit];
        let max = v.iter().copied().fold(f32::MIN, f32::max) as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let silent = v.iter().filter(|&&x| x <= 0.0).count() as f64 / v.len() as f64;
        assert_eq!(u.count, 5);
        assert_eq!(u.max, Some(max));
        assert!((u.mean.unwrap() - mean).abs() < 1e-9);
        assert_eq!(u.sparsity, Some(silent));
        // The top list's first value is the unit's max.
        let top = query::top(&store, "blocks.2", u.unit, 1).unwrap();
        assert_eq!(top[0].value as f64, max);
    }

    // `image`: relative = value / unit max, sorted; top_rank = position in `top`.
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let r = query::image(&store, Path::new(&name), Some("blocks.2"), 4).unwrap();
    assert_eq!(r.units.len(), 4);
    for w in r.units.windows(2) {
        assert!(w[0].relative >= w[1].relative);
    }
    for iu in &r.units {
        let max = per_unit[iu.unit].iter().copied().fold(f32::MIN, f32::max) as f64;
        assert!((iu.relative - iu.value as f64 / max).abs() < 1e-12);
        let top = query::top(&store, "blocks.2", iu.unit, 100).unwrap();
        let pos = top.iter().position(|h| h.path == name).map(|p| p + 1);
        assert_eq!(iu.top_rank, pos);
    }

    // The CLI prints one JSON document for each.
    for args in [
        vec!["units", "--layer", "head", "--sort", "sparsity", "--json"],
        vec!["image", &name, "--json"],
        vec!["stats", "--json"],
    ] {
        let out = neurodex()
            .args(&args[..1])
            .arg("--db")
            .arg(&db)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.is_object(), "{args:?}");
    }
    // Unknown layers and units are explained, not panicked on.
    let e = query::top(&store, "blocks.99", 0, 9)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown layer \"blocks.99\""), "{e}");
    let e = query::top(&store, "blocks.13", 0, 9)
        .unwrap_err()
        .to_string();
    assert!(e.contains("indexed layers: blocks.2, head"), "{e}");
    let e = query::top(&store, "head", 5000, 9).unwrap_err().to_string();
    assert!(e.contains("1280 units"), "{e}");
}

/// Paths of a unit's top images, best first.
fn top_paths(db: &Path, layer: &str, unit: usize) -> Vec<String> {
    let store = Store::open_readonly(db).unwrap();
    query::top(&store, layer, unit, 100)
        .unwrap()
        .into_iter()
        .map(|h| h.path)
        .collect()
}

/// Identical files take one place in a unit's top images (the first indexed of
/// them), unless `--keep-duplicates`; `stats` counts them; when the first copy goes,
/// the next one takes its place.
#[test]
fn duplicates_take_one_place_in_the_top_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    let photos = demo_images(3);
    copy_into(&root, &photos);
    let first = photos[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for copy in ["copy1.jpg", "copy2.jpg"] {
        std::fs::copy(&photos[0], root.join(copy)).unwrap();
    }
    let (deduped, kept) = (dir.path().join("d.db"), dir.path().join("k.db"));
    assert_eq!(index(&root, &deduped, &["--batch", "2"]).0, 0);
    assert_eq!(index(&root, &kept, &["--keep-duplicates"]).0, 0);
    let copies = [first.clone(), "copy1.jpg".into(), "copy2.jpg".into()];
    // Which of the copies a list holds.
    let held = |d: &[String]| -> Vec<String> {
        copies.iter().filter(|c| d.contains(c)).cloned().collect()
    };
    let mut chosen = None;
    for unit in [0, 5, 17] {
        let d = top_paths(&deduped, "stem", unit);
        assert_eq!(d.len(), 3, "unit {unit}: {d:?}");
        let h = held(&d);
        assert_eq!(h.len(), 1, "unit {unit}: one of the copies: {d:?}");
        assert!(
            chosen.is_none() || chosen.as_ref() == Some(&h[0]),
            "the same copy throughout"
        );
        chosen = Some(h[0].clone());
        assert_eq!(top_paths(&kept, "stem", unit).len(), 5);
    }
    let store = Store::open_readonly(&deduped).unwrap();
    let o = query::overview(&store, 10).unwrap();
    assert_eq!((o.duplicates, o.keep_duplicates), (2, false));
    drop(store);
    // A database keeps its choice.
    let (code, err) = index(&root, &deduped, &["--keep-duplicates"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one file per content"), "{err}");

    let chosen = chosen.unwrap();
    std::fs::remove_file(root.join(&chosen)).unwrap();
    assert_eq!(index(&root, &deduped, &[]).0, 0);
    let d = top_paths(&deduped, "stem", 5);
    assert_eq!(d.len(), 3, "{d:?}");
    let h = held(&d);
    assert!(
        h.len() == 1 && h[0] != chosen,
        "another copy takes the place: {d:?}"
    );
}

/// A database made before rankings moved ahead of the activation (schema 2) stays
/// readable without an upgrade and says it was ranked after the activation; `index`
/// upgrades it and goes on ranking as it began.
#[test]
fn databases_ranked_after_the_activation_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    copy_into(&root, &demo_images(3));
    let db = dir.path().join("old.db");
    assert_eq!(index(&root, &db, &["--layers", "stem"]).0, 0);
    // Back to schema 2: what 0003_pre_activation and the later migrations added goes.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "ALTER TABLE layer DROP COLUMN stage; ALTER TABLE layer DROP COLUMN activation;
             ALTER TABLE run DROP COLUMN keep_duplicates; DROP INDEX image_sha256;
             DROP TABLE image_label; DROP TABLE concept; DROP TABLE label_set;
             ALTER TABLE run DROP COLUMN shard_index; ALTER TABLE run DROP COLUMN shard_count;
             ALTER TABLE run DROP COLUMN batch_images; ALTER TABLE session DROP COLUMN isa;
             DROP TABLE merged_input; DROP TABLE visualisation;
             DELETE FROM schema_migrations WHERE version >= 3;",
        )
        .unwrap();
    let top = |extra: &[&str]| {
        let out = neurodex()
            .args(["top", "--layer", "stem", "--unit", "3", "--db"])
            .arg(&db)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (json, _) = top(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ranked"], "post", "{json}");
    assert!(v["images"][0]["pre"].is_null(), "{json}");
    let (_, err) = top(&[]);
    assert!(err.contains("ranked after the activation"), "{err}");
    // `index` upgrades it and keeps its ranking.
    assert_eq!(index(&root, &db, &[]).0, 0);
    let store = Store::open_readonly(&db).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        neurodex::store::SCHEMA_VERSION
    );
    assert!(!store.layers().unwrap()[0].pre);
    assert!(store.run_info().unwrap().keep_duplicates);
}

/// A unit that fires on none of the images says so instead of listing them; one
/// that does lists both values, the one after ReLU6 being the clamp of the other.
#[test]
fn top_says_when_a_unit_never_fires_and_gives_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    copy_into(&root, &demo_images(4));
    let db = dir.path().join("t.db");
    assert_eq!(index(&root, &db, &["--layers", "stem"]).0, 0);
    let top = |unit: &str| -> serde_json::Value {
        let out = neurodex()
            .args(["top", "--layer", "stem", "--json", "--unit", unit, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let store = Store::open_readonly(&db).unwrap();
    let layer = query::layer(&store, "stem").unwrap();
    let (mut dead, mut live) = (None, None);
    for u in 0..32 {
        let s = query::unit_stats(&store, &layer, u).unwrap();
        if s.max <= 0.0 {
            dead.get_or_insert(u);
        } else if s.max > 6.0 {
            live.get_or_insert(u);
        }
    }
    let (dead, live) = (
        dead.expect("a dead stem unit"),
        live.expect("a saturating one"),
    );
    let d = top(&dead.to_string());
    assert_eq!(d["dead"], true, "{d}");
    assert!(d["reason"].as_str().unwrap().contains("never fires"), "{d}");
    assert_eq!(d["images"].as_array().unwrap().len(), 0);
    let l = top(&live.to_string());
    assert_eq!(
        (l["dead"].clone(), l["ranked"].clone()),
        (false.into(), "pre".into())
    );
    let first = &l["images"][0];
    let (value, pre) = (
        first["value"].as_f64().unwrap(),
        first["pre"].as_f64().unwrap(),
    );
    assert!(pre > 6.0 && value == 6.0, "{first}");
}
