//! `neurodex classify` gives the known predictions on real photos and a clear error on bad input.

use std::process::Command;

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

/// onnxruntime with PIL bicubic on this JPEG gives espresso 0.949.
#[test]
fn coffee_is_espresso() {
    let out = neurodex()
        .args([
            "classify",
            "--json",
            "datasets/demo/images/objects__coffee.jpg",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &v["top"][0];
    assert_eq!(first["class"], 967);
    assert_eq!(first["label"], "espresso");
    let p = first["prob"].as_f64().unwrap();
    assert!((p - 0.95).abs() <= 0.02, "espresso p = {p}");
    assert_eq!(v["top"].as_array().unwrap().len(), 5);
}

/// FACTS: skimage chelsea -> tiger cat 0.385 / Egyptian cat 0.363 / tabby 0.167 (from the PNG;
/// the demo copy is a JPEG, so the first two may swap): the three cat classes lead.
#[test]
fn chelsea_is_a_cat() {
    let out = neurodex()
        .args([
            "classify",
            "--json",
            "--top",
            "3",
            "datasets/demo/images/animals__chelsea.jpg",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut classes: Vec<u64> = v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["class"].as_u64().unwrap())
        .collect();
    classes.sort();
    assert_eq!(classes, [281, 282, 285]);
}

#[test]
fn a_non_image_is_reported_by_name_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.jpg");
    std::fs::write(&bad, b"this is not a picture").unwrap();
    let out = neurodex()
        .args(["classify", "--json"])
        .arg(&bad)
        .arg("datasets/demo/images/objects__coffee.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "partial failure exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.jpg") && err.contains("not a recognised image format"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn an_architecture_without_weights_asks_for_them() {
    let out = neurodex()
        .args([
            "classify",
            "--model",
            "resnet18",
            "datasets/demo/images/objects__coffee.jpg",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--weights"));
}

#[test]
fn a_wrong_weights_file_is_a_clear_error() {
    // A photo, then a real checkpoint of another shape (a tiny state dict from the import fixtures).
    let tiny = std::fs::read_dir("tests/fixtures/import")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("a safetensors fixture");
    for (weights, expect) in [
        (
            std::path::PathBuf::from("datasets/demo/images/objects__coffee.jpg"),
            "JPEG",
        ),
        (tiny.clone(), "missing"),
    ] {
        let out = neurodex()
            .args(["classify", "--weights"])
            .arg(&weights)
            .arg("datasets/demo/images/objects__coffee.jpg")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", weights.display());
        let err = String::from_utf8_lossy(&out.stderr);
        let name = weights.file_name().unwrap().to_string_lossy();
        assert!(err.contains(&*name) && err.contains(expect), "{err}");
    }
}
