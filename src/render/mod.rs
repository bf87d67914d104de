//! Pictures of what units see: contact-sheet grids with a built-in bitmap font,
//! receptive-field crops, box and heat-map views, feature-map grids and filters.
//! Everything draws on `image::RgbImage`; `save_png` writes the result.

pub mod colormap;
pub mod filters;
pub mod font;
pub mod grid;
pub mod maps;
pub mod region;
pub mod tile;
pub mod top;

use std::path::Path;

use image::RgbImage;

use crate::{Error, Result};

/// Writes `img` as PNG, creating the parent directory if needed.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Other(format!("{}: cannot write PNG: {e}", path.display())))
}
