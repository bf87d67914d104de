//! `--preprocess torchvision` makes the network input torchvision.transforms makes.
//!
//! The reference is `Resize(256)` then `CenterCrop(224)` of each demo photo opened by PIL
//! (libjpeg-turbo decoding, PIL's antialiased bilinear resampler), written by
//! `scripts/make-onnx-zoo.py` as u8 pixels; ToTensor's /255 and Normalize are exact
//! arithmetic on them, so the comparison is in grey levels. neurodex decodes JPEGs with
//! libjpeg-turbo too (mozjpeg's build: the same islow IDCT and fancy chroma upsampling)
//! and resamples with PIL's fixed-point taps, so the two agree exactly today; the bounds
//! leave room for another libjpeg-turbo release's rounding, not for a misplaced crop (a
//! resize to 255 instead of 256 gives p99 46 levels).

mod common;

use std::path::Path;

use neurodex::arch::recipes;
use neurodex::arch::Norm;
use neurodex::preprocess::{open_image, prepare, DEFAULT_MAX_PIXELS};

/// The reference pixels ([N, 224, 224, 3] u8) and the photo each row is.
fn reference(path: &Path) -> (Vec<u8>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let files: Vec<String> =
        serde_json::from_str(header["__metadata__"]["files"].as_str().unwrap()).unwrap();
    let entry = &header["pixels"];
    assert_eq!(entry["dtype"], "U8");
    let [a, b] = [0, 1].map(|k| entry["data_offsets"][k].as_u64().unwrap() as usize);
    (bytes[8 + n + a..8 + n + b].to_vec(), files)
}

#[test]
fn the_torchvision_recipe_matches_torchvision_transforms_on_pil() {
    let Some(dir) = common::onnx_zoo() else {
        return;
    };
    let path = dir.join("torchvision-demo.safetensors");
    assert!(
        path.exists(),
        "{} is missing (scripts/make-onnx-zoo.py writes it)",
        path.display()
    );
    let (pixels, files) = reference(&path);
    let side = 224usize;
    let plane = side * side;
    assert_eq!(pixels.len(), files.len() * 3 * plane);
    let recipe = recipes::preset("torchvision", side as u32).unwrap();
    let Norm::MeanStd { mean, std } = recipe.norm else {
        panic!("torchvision normalises by mean and std: {:?}", recipe.norm)
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images");
    let mut hist = [0u64; 256];
    let mut worst = (0u32, String::new());
    for (i, file) in files.iter().enumerate() {
        let img = open_image(&root.join(file), DEFAULT_MAX_PIXELS).unwrap();
        let (x, _) = prepare(&img, &recipe);
        let want = &pixels[i * 3 * plane..(i + 1) * 3 * plane];
        let mut photo_max = 0;
        for c in 0..3 {
            let (mean, std) = (mean[c], std[c]);
            for p in 0..plane {
                // Back to grey levels: ToTensor's /255 then Normalize, undone.
                let got = (x[c * plane + p] * std + mean) * 255.0;
                let d = (got - want[p * 3 + c] as f32).abs().round() as usize;
                hist[d.min(255)] += 1;
                photo_max = photo_max.max(d as u32);
            }
        }
        if photo_max > worst.0 {
            worst = (photo_max, file.clone());
        }
    }
    let total: u64 = hist.iter().sum();
    let quantile = |q: f64| {
        let mut seen = 0;
        hist.iter()
            .position(|&h| {
                seen += h;
                seen as f64 >= q * total as f64
            })
            .unwrap()
    };
    let (p50, p99, p999) = (quantile(0.5), quantile(0.99), quantile(0.999));
    let exact = hist[0] as f64 / total as f64;
    eprintln!(
        "{} photos: {:.1}% of values equal, p50 {p50}, p99 {p99}, p99.9 {p999}, max {} grey \
         levels ({})",
        files.len(),
        100.0 * exact,
        worst.0,
        worst.1
    );
    assert!(p99 <= 1, "p99 {p99} grey levels");
    // A misplaced crop or a wrong filter moves edges by whole pixels: tens of levels at
    // the p99.9 and beyond.
    assert!(p999 <= 3, "p99.9 {p999} grey levels");
}
