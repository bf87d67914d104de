//! `neurodex saliency`: the input gradient the command writes is the one a hand
//! computation gives, and its picture and numbers agree with the index's view.

use std::path::Path;
use std::process::Command;

use neurodex::model::Network;

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

/// Runs `neurodex saliency` with `args` and asserts it succeeded; its stdout.
fn saliency(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = neurodex().arg("saliency").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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
        let at = format!("{y},{xc}");
        let stdout = saliency(&[
            input.as_os_str(),
            "--layer".as_ref(),
            "stem".as_ref(),
            "--unit".as_ref(),
            "3".as_ref(),
            "--at".as_ref(),
            at.as_ref(),
            "--mode".as_ref(),
            mode.as_ref(),
            "--json".as_ref(),
            "--raw".as_ref(),
            raw.as_os_str(),
        ]);
        let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
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
    let args = [
        "--layer",
        "blocks.14",
        "--unit",
        "64",
        "--mode",
        "guided",
        "-o",
    ];
    let mut all: Vec<&std::ffi::OsStr> = vec![photo.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    all.push(png.as_os_str());
    saliency(&all);
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

/// The effective receptive field (`top --mode erf`) lies inside the theoretical one
/// (no pixel outside a unit's field reaches it, so its gradient is zero there), and
/// at a deep layer it is much smaller.
#[test]
fn the_effective_field_lies_inside_the_theoretical_one_and_is_smaller() {
    use neurodex::model::{Objective, Pick, Rule, Tap};
    let net = Network::embedded_default().unwrap();
    let node = net.arch.resolve("blocks.7").unwrap();
    let field = neurodex::receptive::fields(&net.arch)[node];
    let s = net.arch.recipe.size as usize;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images");
    for name in [
        "animals__Cat.jpg",
        "people__astronaut.jpg",
        "objects__coffee.jpg",
    ] {
        let img = neurodex::preprocess::open_image(&demo.join(name), u64::MAX).unwrap();
        let (x, _) = neurodex::preprocess::prepare(&img, &net.arch.recipe);
        let obj = [Objective {
            unit: 10,
            pick: Pick::Max,
        }];
        let g = net
            .input_gradient(&x, (1, s, s), Tap::post(node), &obj, Rule::Gradient)
            .unwrap();
        let (y, xc) = g.at[0];
        let b = field.unit_box(y, xc);
        let clip = |v: f64| v.clamp(0.0, s as f64);
        let theory = [clip(b[0]), clip(b[1]), clip(b[2]), clip(b[3])];
        let erf = neurodex::render::gradient::mass_box(&g.data, s, s, 0.9).unwrap();
        assert!(
            erf[0] >= theory[0]
                && erf[1] >= theory[1]
                && erf[2] <= theory[2]
                && erf[3] <= theory[3],
            "{name}: effective field {erf:?} outside the theoretical {theory:?}"
        );
        let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
        assert!(
            area(erf) < 0.5 * area(theory),
            "{name}: effective field {erf:?} not much smaller than {theory:?}"
        );
    }
}
