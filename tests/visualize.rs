//! `neurodex visualize`: the ascent raises each unit's mean activation, and a seed
//! fixes the picture.

use std::path::Path;
use std::process::Command;

fn visualize(dir: &Path, name: &str, extra: &[&str]) -> Vec<f64> {
    let out = Command::new(env!("CARGO_BIN_EXE_neurodex"))
        .args([
            "visualize",
            "--layer",
            "blocks.4.expand",
            "--unit",
            "3,7",
            "--size",
            "64",
        ])
        .args(["--json", "-o"])
        .arg(dir.join(name))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["stage"], "pre");
    j["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["mean"].as_f64().unwrap())
        .collect()
}

#[test]
fn the_ascent_raises_each_units_mean_and_a_seed_fixes_the_picture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let start = visualize(d, "start.png", &["--steps", "0"]);
    let after = visualize(d, "a.png", &["--steps", "24"]);
    for (u, (s, a)) in start.iter().zip(&after).enumerate() {
        // From noise (a mean near 0) to a clearly excited unit.
        assert!(*a > s + 1.0, "unit {u}: mean {s} -> {a} after 24 steps");
    }
    visualize(d, "again.png", &["--steps", "24"]);
    visualize(d, "other.png", &["--steps", "24", "--seed", "1"]);
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();
    assert_eq!(
        read("a.png"),
        read("again.png"),
        "the same seed gave another picture"
    );
    assert_ne!(
        read("a.png"),
        read("other.png"),
        "another seed gave the same picture"
    );
}
