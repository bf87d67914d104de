//! Concept labels and unit scoring: a synthetic index with planted detectors whose
//! AP, AUROC, top-9 counts and class selectivity are worked out by hand here (and,
//! on a larger index with ties, by the metrics' definitions: every threshold, every
//! positive-negative pair), then labels through the command line with the bad
//! inputs a user meets.

mod common;
#[path = "common/synthetic.rs"]
mod synthetic;

use std::path::Path;

use neurodex::concepts::{self, Options};
use neurodex::store::Store;

/// Ten images; unit 0's peaks are these, "dog" is on images 1, 4 and 6, the class
/// set `kind` puts images 0-4 in `a` and 5-9 in `b`.
const UNIT0: [f32; 10] = [0.8, 0.9, 0.1, 0.3, 0.7, 0.2, 0.4, 0.05, 0.5, 0.0];
const DOGS: [usize; 3] = [1, 4, 6];

fn planted(dir: &Path) -> Store {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    // Unit 1: the same value on every image (one tie). Unit 2: a perfect dog unit.
    let value = |i: usize, _l: usize, u: usize| match u {
        0 => UNIT0[i],
        1 => 1.0,
        _ => DOGS.contains(&i) as u8 as f32 * 5.0 - 1.0,
    };
    let mut store = synthetic::build(&dir.join("p.db"), &root, &[("conv", 3)], 10, value);
    let id = |i: usize| {
        store
            .image_id(synthetic::path(i).as_bytes())
            .unwrap()
            .unwrap()
    };
    let dogs: Vec<(i64, String)> = DOGS.iter().map(|&i| (id(i), "dog".into())).collect();
    let kinds: Vec<(i64, String)> = (0..10)
        .map(|i| (id(i), if i < 5 { "a" } else { "b" }.into()))
        .collect();
    store.put_labels("animal", "test", &dogs, false).unwrap();
    store.put_labels("kind", "test", &kinds, false).unwrap();
    store
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() < 1e-5
}

#[test]
fn a_planted_unit_scores_the_ap_auroc_and_top9_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let store = planted(dir.path());
    let s = concepts::score(&store, &Options::default()).unwrap();
    assert_eq!(s.images, 10);
    let dog = s.find("dog")[0];
    let l = s.layer("conv").unwrap();
    // Unit 0 ranks the images 1 (dog), 0, 4 (dog), 8, 6 (dog), 3, 5, 2, 7, 9.
    // AP: precision at each dog, averaged: (1/1 + 2/3 + 3/5) / 3.
    // AUROC: of the 3 x 7 dog/other pairs, dog 1 is above all 7 others, dog 4 above
    // 6 (not image 0), dog 6 above 5 (not 0, 8): 18 / 21.
    let u0 = s.score(l, 0, dog);
    assert!(close(u0.ap, (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0), "{u0:?}");
    assert!(close(u0.auroc, 18.0 / 21.0), "{u0:?}");
    assert_eq!(u0.top9, 3, "the top 9 leave out only image 9");
    // Unit 1 ties every image: one threshold, AP = the base rate, AUROC = 1/2.
    let u1 = s.score(l, 1, dog);
    assert!(close(u1.ap, 0.3) && close(u1.auroc, 0.5), "{u1:?}");
    assert_eq!(u1.top9, 3);
    // Unit 2 puts the dogs first: a perfect detector, but of a concept under 5 images.
    let u2 = s.score(l, 2, dog);
    assert_eq!((u2.ap, u2.auroc, u2.top9), (1.0, 1.0, 3));
    assert!(
        !s.is_detector(dog, &u2),
        "3 images are too few to count a detector"
    );
    let ranked = s.ranked(dog);
    assert_eq!((ranked[0].unit, ranked[1].unit, ranked[2].unit), (2, 0, 1));
    // Selectivity over `kind` (unit 0): class means a = 2.8 / 5, b = 1.15 / 5.
    let k = s.class_sets.iter().position(|c| c == "kind").unwrap();
    let sel = l.selectivity[k][0];
    assert!(close(sel.index, (0.56 - 0.23) / (0.56 + 0.23)), "{sel:?}");
    assert_eq!(s.concepts[sel.class].name, "a");
    assert_eq!(
        s.class_sets,
        vec!["kind".to_string()],
        "a one-concept set is tags"
    );
    // The best concept of the perfect unit is the dog.
    assert_eq!(s.best(l, 2, 1)[0].0, dog);
}

/// A pseudo-random generator, so that the larger index is the same on every run.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// AP by its definition: precision at each distinct threshold, weighted by the
/// recall it adds (scikit-learn's `average_precision_score`).
fn ap_by_definition(v: &[f32], pos: &[bool]) -> f64 {
    let p = pos.iter().filter(|&&x| x).count() as f64;
    let mut thresholds: Vec<f32> = v.to_vec();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    for t in thresholds {
        let above: Vec<usize> = (0..v.len()).filter(|&i| v[i] >= t).collect();
        let tp = above.iter().filter(|&&i| pos[i]).count() as f64;
        let recall = tp / p;
        ap += (recall - prev_recall) * tp / above.len() as f64;
        prev_recall = recall;
    }
    ap
}

/// AUROC by its definition: the share of positive-negative pairs ordered right,
/// ties counted half.
fn auroc_by_definition(v: &[f32], pos: &[bool]) -> f64 {
    let (mut good, mut pairs) = (0.0, 0.0);
    for i in (0..v.len()).filter(|&i| pos[i]) {
        for j in (0..v.len()).filter(|&j| !pos[j]) {
            pairs += 1.0;
            good += if v[i] > v[j] {
                1.0
            } else if v[i] == v[j] {
                0.5
            } else {
                0.0
            };
        }
    }
    good / pairs
}

#[test]
fn every_unit_and_concept_of_a_larger_index_with_ties_matches_the_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let n = 300;
    // Concepts on random subsets; units a mix of noise, concept-driven and coarse
    // (few distinct values: many ties), some negative.
    let mut seed = 7u64;
    let member: Vec<[bool; 3]> = (0..n)
        .map(|_| {
            [
                lcg(&mut seed).is_multiple_of(5),
                lcg(&mut seed).is_multiple_of(3),
                lcg(&mut seed).is_multiple_of(2),
            ]
        })
        .collect();
    let noise: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..6)
                .map(|_| (lcg(&mut seed) % 1000) as f32 / 100.0 - 3.0)
                .collect()
        })
        .collect();
    let value = |i: usize, l: usize, u: usize| {
        let u = l * 3 + u;
        let c = member[i][u % 3] as u8 as f32;
        match u {
            0 | 1 => noise[i][u] + 4.0 * c,
            2 => (noise[i][u] / 2.0).round() + c,
            3 => (noise[i][u] > 0.0) as u8 as f32,
            _ => noise[i][u],
        }
    };
    let mut store = synthetic::build(
        &dir.path().join("big.db"),
        &root,
        &[("a", 3), ("b", 3)],
        n,
        value,
    );
    for (c, name) in ["x", "y", "z"].iter().enumerate() {
        let pairs: Vec<(i64, String)> = (0..n)
            .filter(|&i| member[i][c])
            .map(|i| {
                let id = store
                    .image_id(synthetic::path(i).as_bytes())
                    .unwrap()
                    .unwrap();
                (id, name.to_string())
            })
            .collect();
        store.put_labels("tags", "test", &pairs, false).unwrap();
    }
    // A small memory budget scores the layers in several groups.
    let opts = Options {
        memory: 2 * n * 4,
        ..Options::default()
    };
    let s = concepts::score(&store, &opts).unwrap();
    for l in &s.layers {
        let li = if l.layer == "a" { 0 } else { 1 };
        for u in 0..3 {
            let v: Vec<f32> = (0..n).map(|i| value(i, li, u)).collect();
            for (c, name) in ["x", "y", "z"].iter().enumerate() {
                let pos: Vec<bool> = (0..n).map(|i| member[i][c]).collect();
                let got = s.score(l, u, s.find(name)[0]);
                let (ap, auc) = (ap_by_definition(&v, &pos), auroc_by_definition(&v, &pos));
                assert!(
                    close(got.ap, ap) && close(got.auroc, auc),
                    "{} unit {u} concept {name}: got {got:?}, definitions give AP {ap} AUROC {auc}",
                    l.layer
                );
                // The top 9 as the rankings order them: highest first, ties by image.
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                let top9 = order[..9].iter().filter(|&&i| pos[i]).count();
                assert_eq!(
                    got.top9 as usize, top9,
                    "{} unit {u} concept {name}",
                    l.layer
                );
            }
        }
    }
}

#[test]
fn the_classifier_hint_reads_the_final_layer_weights_of_the_head() {
    use candle_core::safetensors;
    let net = neurodex::model::Network::open("efficientnet-lite0", None).unwrap();
    let head = net
        .arch
        .nodes
        .iter()
        .position(|n| n.name == "head")
        .unwrap();
    let cols = net
        .classifier_columns(head)
        .expect("head feeds the classifier");
    // The classifier's `[1000, 1280]` weights, read from the file independently.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet-lite0.safetensors");
    let tensors = safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let (name, w) = tensors
        .iter()
        .find(|(k, t)| k.ends_with(".weight") && t.dims() == [1000, 1280])
        .expect("a [1000, 1280] weight");
    let w: Vec<Vec<f32>> = w.to_vec2().unwrap();
    assert_eq!(cols.len(), 1000, "{name}");
    for (c, u) in [(0, 0), (1, 7), (999, 1279), (417, 640)] {
        assert_eq!(cols[c][u], w[c][u], "{name}[{c}][{u}]");
    }
    // Only the layer right before the pooling has a hint.
    let b14 = net
        .arch
        .nodes
        .iter()
        .position(|n| n.name == "blocks.14")
        .unwrap();
    assert!(net.classifier_columns(b14).is_none());
}

/// `neurodex CMD --db DB ARGS...`: exit code, stdout, stderr.
fn on_db(cmd: &str, db: &Path, args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec![cmd.as_ref(), "--db".as_ref(), db.as_os_str()];
    all.extend_from_slice(args);
    common::run(&all)
}

/// The planted index with its labels given through `neurodex labels`.
fn cli_index(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let value = |i: usize, _l: usize, u: usize| match u {
        0 => UNIT0[i],
        _ => (i % 3) as f32,
    };
    let db = dir.join("c.db");
    drop(synthetic::build(&db, &root, &[("conv", 2)], 10, value));
    db
}

#[test]
fn label_files_naming_paths_outside_the_index_are_counted_listed_and_the_rest_go_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = cli_index(dir.path());
    let csv = dir.path().join("tags.csv");
    let mut text = String::from("path,label\n");
    for i in DOGS {
        text += &format!("{},dog\n", synthetic::path(i));
    }
    text += "img/not-there.jpg,dog\nelsewhere/x.png,cat\n";
    for i in 0..10 {
        text += &format!("{},everything\n", synthetic::path(i));
    }
    std::fs::write(&csv, text).unwrap();
    let (code, out, err) = on_db("labels", &db, &["--csv".as_ref(), csv.as_os_str()]);
    assert_eq!(code, 1, "partial: some paths are missing\n{out}{err}");
    assert!(err.contains("2 paths are not in the index"), "{err}");
    assert!(
        err.contains("img/not-there.jpg") && err.contains("elsewhere/x.png"),
        "{err}"
    );
    assert!(out.contains("tags: 13 labels added to 13 images"), "{out}");

    // A concept on every image says nothing and is left out, saying why; the dog is
    // scored.
    let (code, out, err) = on_db("concepts", &db, &["--json".as_ref()]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["skipped"][0]["concept"], "tags/everything", "{j}");
    assert!(err.contains("all 10 indexed images show it"), "{err}");
    let dog = &j["concepts"][0];
    assert_eq!(dog["concept"]["name"], "dog");
    assert_eq!(dog["units"][0]["unit"], 0);
    assert!((dog["units"][0]["score"]["auroc"].as_f64().unwrap() - 18.0 / 21.0).abs() < 1e-5);

    // An unknown concept is an error naming it; an empty folder labels nothing and
    // says so.
    let (code, _, err) = on_db("concepts", &db, &["--concept".as_ref(), "unicorn".as_ref()]);
    assert_eq!(code, 2);
    assert!(err.contains("no concept \"unicorn\""), "{err}");
    let empty = format!("void={}", dir.path().join("root/empty").display());
    let (code, out, err) = on_db("labels", &db, &["--concept".as_ref(), empty.as_ref()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no indexed image"), "{err}");

    // A folder outside the indexed root is refused, naming both.
    let outside = format!("far={}", dir.path().display());
    let (code, _, err) = on_db("labels", &db, &["--concept".as_ref(), outside.as_ref()]);
    assert_eq!(code, 2);
    assert!(err.contains("not under the indexed root"), "{err}");

    // Removing a concept, then the set.
    let (code, out, _) = on_db(
        "labels",
        &db,
        &["--remove".as_ref(), "tags/everything".as_ref()],
    );
    assert_eq!(code, 0);
    assert!(out.contains("removed tags/everything (10 labels)"), "{out}");
    let store = Store::open_readonly(&db).unwrap();
    let names: Vec<String> = store
        .concepts()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["dog"]);
}

#[test]
fn replace_swaps_a_sets_labels_and_drops_concepts_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = cli_index(dir.path());
    let csv = dir.path().join("s.tsv");
    let put = |text: &str, replace: bool| {
        std::fs::write(&csv, text).unwrap();
        let mut args = vec![
            "labels".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--csv".as_ref(),
            csv.as_os_str(),
        ];
        if replace {
            args.push("--replace".as_ref());
        }
        common::run(&args)
    };
    let (code, _, err) = put("img/000001.jpg\tcat\nimg/000002.jpg\tdog\n", false);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = put("img/000003.jpg\tcat\n", true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 earlier ones replaced"), "{out}");
    let store = Store::open_readonly(&db).unwrap();
    let c = store.concepts().unwrap();
    assert_eq!(c.len(), 1, "dog had no image left: {c:?}");
    assert_eq!((c[0].name.as_str(), c[0].images), ("cat", 1));
}

#[test]
fn labels_with_odd_characters_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = cli_index(dir.path());
    let csv = dir.path().join("odd.csv");
    let odd = "<script>alert(\"x\")</script> & 'q' ✓";
    let quoted = odd.replace('"', "\"\"");
    std::fs::write(
        &csv,
        format!("img/000001.jpg,\"{quoted}\"\nimg/000002.jpg,\"{quoted}\"\n"),
    )
    .unwrap();
    let (code, _, err) = on_db("labels", &db, &["--csv".as_ref(), csv.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let store = Store::open_readonly(&db).unwrap();
    assert_eq!(store.concepts().unwrap()[0].name, odd);
    // A control character is refused, naming the line.
    std::fs::write(&csv, "img/000001.jpg,ok\nimg/000002.jpg,bad\u{7}bell\n").unwrap();
    let (code, _, err) = on_db("labels", &db, &["--csv".as_ref(), csv.as_os_str()]);
    assert_eq!(code, 2);
    assert!(err.contains("odd.csv") && err.contains("line 2"), "{err}");
}

#[test]
fn a_concept_folder_not_yet_indexed_is_indexed_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir_all(root.join("old")).unwrap();
    std::fs::create_dir_all(root.join("new")).unwrap();
    let imgs = common::demo_images(5);
    for f in &imgs[..3] {
        std::fs::copy(f, root.join("old").join(f.file_name().unwrap())).unwrap();
    }
    let db = dir.path().join("i.db");
    let (code, _, err) = common::run(&[
        "index".as_ref(),
        root.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
        "--layers".as_ref(),
        "stem,head".as_ref(),
        "-q".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    for f in &imgs[3..] {
        std::fs::copy(f, root.join("new").join(f.file_name().unwrap())).unwrap();
    }
    let arg = format!("fresh={}", root.join("new").display());
    let (code, out, err) = on_db("labels", &db, &["--concept".as_ref(), arg.as_ref()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("2 files under") && err.contains("indexing them first"),
        "{err}"
    );
    assert!(
        out.contains("concepts: 2 labels added to 2 images"),
        "{out}"
    );
    let store = Store::open_readonly(&db).unwrap();
    assert_eq!(store.ok_images(0, 100).unwrap().len(), 5);
    assert_eq!(
        store.run_info().unwrap().layers,
        vec!["stem", "head"],
        "same layers"
    );
}

#[test]
fn imagenet_style_folders_are_labelled_by_index_itself() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("val");
    let imgs = common::demo_images(3);
    for (wnid, f) in ["n01440764", "n01443537", "n01440764"].iter().zip(&imgs) {
        std::fs::create_dir_all(root.join(wnid)).unwrap();
        std::fs::copy(f, root.join(wnid).join(f.file_name().unwrap())).unwrap();
    }
    let db = dir.path().join("in.db");
    let (code, _, err) = common::run(&[
        "index".as_ref(),
        root.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
        "--layers".as_ref(),
        "stem".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("labelled 3 images with 2 ImageNet classes"),
        "{err}"
    );
    let store = Store::open_readonly(&db).unwrap();
    let mut c: Vec<(String, String, u64)> = store
        .concepts()
        .unwrap()
        .into_iter()
        .map(|c| (c.set, c.name, c.images))
        .collect();
    c.sort();
    assert_eq!(
        c,
        vec![
            ("imagenet".into(), "goldfish".into(), 1),
            ("imagenet".into(), "tench".into(), 2)
        ]
    );
}

#[test]
fn the_demo_label_files_agree_with_the_manifest() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo");
    let manifest = std::fs::read_to_string(demo.join("MANIFEST.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = manifest
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let faces = neurodex::labels::read_table(&demo.join("labels/face.csv")).unwrap();
    let want: Vec<&str> = rows.iter().filter(|r| r[3] == "1").map(|r| r[0]).collect();
    let got: Vec<String> = faces
        .rows
        .iter()
        .map(|r| r.0.display().to_string())
        .collect();
    assert_eq!(got, want);
    assert!(faces.rows.iter().all(|r| r.1 == ["face"]));
    let cats = neurodex::labels::read_table(&demo.join("labels/category.csv")).unwrap();
    assert_eq!(cats.rows.len(), rows.len());
    for (r, m) in cats.rows.iter().zip(&rows) {
        assert_eq!(
            (r.0.display().to_string().as_str(), r.1[0].as_str()),
            (m[0], m[1])
        );
    }
}
