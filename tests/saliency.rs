//! `neurodex saliency`: the input gradient the command writes is the one a hand
//! computation gives, and its picture and numbers agree with the index's view.

use std::path::Path;
use std::process::Command;

use neurodex::model::Network;

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

/// A stem unit's value before its ReLU6 at cell (y, x) is a 3x3 window of the input
/// times the unit's (BatchNorm-folded) filter, plus a bias: its gradient is that
/// filter, placed at rows 2y..2y+3 and columns 2x..2x+3 (stride 2, no padding at the
/// top and left), and zero everywhere else; so in every mode (no rectifier lies on
/// the way).
#[test]
fn a_stem_units_gradient_is_its_filter_at_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let s = 224;
    let x: Vec<f32> = (0..3 * s * s)
        .map(|k| ((k * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let input = dir.path().join("x.npy");
    neurodex::import::npy::write(&input, &[1, 3, s, s], &x).unwrap();
    let net = Network::embedded_default().unwrap();
    let stem = net.arch.resolve("stem").unwrap();
    let (_, w) = net.conv_weights(stem).unwrap();
    let (unit, y, xc) = (3, 40, 17);
    for mode in ["backprop", "guided", "deconv"] {
        let raw = dir.path().join(format!("{mode}.npy"));
        let out = neurodex()
            .args([
                "saliency",
                input.to_str().unwrap(),
                "--layer",
                "stem",
                "--unit",
                "3",
            ])
            .args([
                "--at",
                &format!("{y},{xc}"),
                "--mode",
                mode,
                "--json",
                "--raw",
            ])
            .arg(&raw)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["images"][0]["y"], y);
        assert_eq!(json["stage"], "pre");
        let (shape, g) = neurodex::import::npy::read(&raw).unwrap();
        assert_eq!(shape, [1, 3, s, s]);
        for c in 0..3 {
            for r in 0..s {
                for col in 0..s {
                    let (a, b) = (r as isize - 2 * y as isize, col as isize - 2 * xc as isize);
                    let want = if (0..3).contains(&a) && (0..3).contains(&b) {
                        w[((unit * 3 + c) * 3 + a as usize) * 3 + b as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(g[(c * s + r) * s + col], want, "{mode} ({c}, {r}, {col})");
                }
            }
        }
    }
}

/// The picture: input, projection and magnitude side by side, and a usage error
/// when nothing is asked for.
#[test]
fn the_picture_has_three_panels_and_nothing_asked_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let photo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images/people__astronaut.jpg");
    let png = dir.path().join("s.png");
    let out = neurodex()
        .arg("saliency")
        .arg(&photo)
        .args([
            "--layer",
            "blocks.14",
            "--unit",
            "64",
            "--mode",
            "guided",
            "-o",
        ])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    // Three 224-px panels in a row, and the projection is not all grey.
    assert!(
        img.width() >= 3 * 224 && img.width() < 4 * 224,
        "{}",
        img.width()
    );
    let grey = img.pixels().filter(|p| p.0 == [128, 128, 128]).count();
    assert!(grey < (img.width() * img.height()) as usize / 2);
    let out = neurodex()
        .arg("saliency")
        .arg(&photo)
        .args(["--layer", "stem", "--unit", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to write"));
}
