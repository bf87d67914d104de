//! Named preprocessing recipes (`--preprocess torchvision|tf-lite|caffe`) and explicit
//! overrides of their terms: the recipe a model was trained with, said by where it
//! comes from rather than by numbers, and stored with the index that used it.

use super::{Filter, Norm, Recipe};
use crate::{Error, Result};

/// The recipes `--preprocess` names.
pub const NAMES: &[&str] = &["torchvision", "tf-lite", "caffe"];

/// ImageNet's RGB mean and standard deviation on 0..1 pixels (torchvision's models).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Recipe `name` for a network input of `size` x `size`:
/// - `torchvision`: `Resize(size * 256 / 224)` (bilinear, PIL), `CenterCrop(size)`,
///   `ToTensor`, `Normalize(ImageNet mean, std)`: the tensor torchvision.transforms
///   makes from a PIL image (224 -> resize 256; 299 -> 342, as for Inception v3);
/// - `tf-lite`: the centre 87.5% of the short side resized to `size` (bicubic),
///   (pixel - 127) / 128: EfficientNet-Lite's evaluation preprocessing;
/// - `caffe`: as torchvision's geometry, then BGR and the per-channel means of the
///   Caffe ImageNet models (103.939, 116.779, 123.68) subtracted from 0..255 pixels.
pub fn preset(name: &str, size: u32) -> Result<Recipe> {
    let resize = Some(((size as f64) * 256.0 / 224.0).round() as u32);
    Ok(match name {
        "torchvision" => Recipe {
            size,
            crop_fraction: 224.0 / 256.0,
            resize,
            filter: Filter::Bilinear,
            norm: Norm::MeanStd {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
            bgr: false,
        },
        "tf-lite" => Recipe {
            size,
            crop_fraction: 0.875,
            resize: None,
            filter: Filter::Bicubic,
            norm: Norm::Affine {
                sub: 127.0,
                div: 128.0,
            },
            bgr: false,
        },
        "caffe" => Recipe {
            size,
            crop_fraction: 224.0 / 256.0,
            resize,
            filter: Filter::Bilinear,
            // x = p - mean in 0..255 is (p / 255 - mean / 255) / (1 / 255).
            norm: Norm::MeanStd {
                mean: [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0],
                std: [1.0 / 255.0; 3],
            },
            bgr: true,
        },
        other => {
            return Err(Error::Shape(format!(
                "unknown preprocessing recipe {other:?} (known: {})",
                NAMES.join(", ")
            )))
        }
    })
}

/// Terms set one by one over a recipe (`--input-size`, `--resize`, `--crop-fraction`,
/// `--mean`, `--std`, `--interpolation`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub size: Option<u32>,
    /// Short side before a centre crop of `size` (torchvision's order).
    pub resize: Option<u32>,
    /// Crop this fraction of the short side first, then resize (tf-lite's order).
    pub crop_fraction: Option<f64>,
    /// On 0..1 pixels, R, G, B (reordered for a BGR recipe, whose terms are stored
    /// per BGR channel).
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub filter: Option<Filter>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.size.is_none()
            && self.resize.is_none()
            && self.crop_fraction.is_none()
            && self.mean.is_none()
            && self.std.is_none()
            && self.filter.is_none()
    }

    /// `base` with these terms set, checked.
    pub fn apply(&self, base: &Recipe) -> Result<Recipe> {
        let bad = |why: String| Err(Error::Shape(format!("preprocessing: {why}")));
        let mut r = base.clone();
        if let Some(s) = self.size {
            if !(8..=4096).contains(&s) {
                return bad(format!("input size {s} (8 to 4096)"));
            }
            // A resize that followed the old size follows the new one.
            if let Some(old) = r.resize.filter(|_| self.resize.is_none()) {
                r.resize = Some(((old as f64) * s as f64 / r.size as f64).round() as u32);
            }
            r.size = s;
        }
        if self.resize.is_some() && self.crop_fraction.is_some() {
            return bad(
                "--resize (resize, then crop) and --crop-fraction (crop, then resize) \
                        are two orders; give one"
                    .into(),
            );
        }
        if let Some(s) = self.resize {
            if s < r.size || s > 16384 {
                return bad(format!("resize {s} is below the input size {}", r.size));
            }
            r.resize = Some(s);
        }
        if let Some(f) = self.crop_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return bad(format!("crop fraction {f} (above 0, at most 1)"));
            }
            r.crop_fraction = f;
            r.resize = None;
        }
        if self.mean.is_some() || self.std.is_some() {
            let (mut mean, mut std) = match r.norm {
                Norm::MeanStd { mean, std } => (mean, std),
                // (p - sub) / div is (p / 255 - sub / 255) / (div / 255).
                Norm::Affine { sub, div } => ([sub / 255.0; 3], [div / 255.0; 3]),
            };
            // Given as R, G, B; a BGR recipe's terms are per B, G, R.
            let order = |mut v: [f32; 3]| {
                if r.bgr {
                    v.reverse();
                }
                v
            };
            if let Some(m) = self.mean.map(order) {
                mean = m;
            }
            if let Some(s) = self.std.map(order) {
                if s.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
                    return bad(format!("std {s:?} (each above 0)"));
                }
                std = s;
            }
            if mean.iter().any(|v| !v.is_finite()) {
                return bad(format!("mean {mean:?}"));
            }
            r.norm = Norm::MeanStd { mean, std };
        }
        if let Some(f) = self.filter {
            r.filter = f;
        }
        Ok(r)
    }
}

/// A short line saying what a recipe does (`resize 256, crop 224, bilinear, ...`).
pub fn describe(r: &Recipe) -> String {
    let geometry = match r.resize {
        Some(s) => format!("resize short side to {s}, centre crop {}", r.size),
        None => format!(
            "centre crop {:.1}% of the short side, resize to {}",
            r.crop_fraction * 100.0,
            r.size
        ),
    };
    let filter = match r.filter {
        Filter::Bilinear => "bilinear",
        Filter::Bicubic => "bicubic",
    };
    let norm = match r.norm {
        Norm::Affine { sub, div } => format!("(pixel - {sub}) / {div}"),
        Norm::MeanStd { mean, std } => format!("(pixel/255 - {mean:?}) / {std:?}"),
    };
    let order = if r.bgr { ", BGR" } else { "" };
    format!("{geometry}, {filter}{order}, {norm}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resizes_to_256_for_224_and_342_for_299() {
        assert_eq!(preset("torchvision", 224).unwrap().resize, Some(256));
        assert_eq!(preset("torchvision", 299).unwrap().resize, Some(342));
        assert!(preset("caffe", 224).unwrap().bgr);
        assert!(preset("keras", 224).is_err());
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let base = preset("torchvision", 224).unwrap();
        let o = Overrides {
            size: Some(256),
            ..Default::default()
        };
        let r = o.apply(&base).unwrap();
        assert_eq!((r.size, r.resize), (256, Some(293)));
        assert_eq!(r.norm, base.norm);
        let o = Overrides {
            crop_fraction: Some(1.0),
            mean: Some([0.5; 3]),
            ..Default::default()
        };
        let r = o.apply(&base).unwrap();
        assert_eq!((r.resize, r.crop_fraction), (None, 1.0));
        assert_eq!(
            r.norm,
            Norm::MeanStd {
                mean: [0.5; 3],
                std: IMAGENET_STD
            }
        );
        let both = Overrides {
            resize: Some(256),
            crop_fraction: Some(0.9),
            ..Default::default()
        };
        assert!(both.apply(&base).is_err());
        let small = Overrides {
            resize: Some(100),
            ..Default::default()
        };
        assert!(small.apply(&base).is_err());
    }

    #[test]
    fn a_bgr_recipe_takes_its_overrides_as_rgb() {
        let caffe = preset("caffe", 224).unwrap();
        let o = Overrides {
            mean: Some([0.1, 0.2, 0.3]),
            ..Default::default()
        };
        let Norm::MeanStd { mean, .. } = o.apply(&caffe).unwrap().norm else {
            panic!("mean and std")
        };
        assert_eq!(mean, [0.3, 0.2, 0.1]);
    }
}
