//! Pictures of what units see: contact-sheet grids with a built-in bitmap font,
//! receptive-field crops, box and heat-map views, feature-map grids and filters.
//! Everything draws on `image::RgbImage`; `save_image` writes the result in the format
//! its name asks for, `save_png` always as PNG.

pub mod colormap;
pub mod filters;
pub mod font;
pub mod gradient;
pub mod grid;
pub mod maps;
pub mod region;
pub mod tile;
pub mod top;

use std::path::Path;

use image::{codecs::jpeg::JpegEncoder, ImageFormat, RgbImage};

use crate::{Error, Result};

/// JPEG quality for written pictures: contact sheets carry small text, which the
/// encoder's default (75) smears.
const JPEG_QUALITY: u8 = 90;

/// The format `path`'s extension names (`.png`, `.jpg`, `.jpeg`, any case). Commands
/// call it before their work so a bad `-o` fails at once.
pub fn output_format(path: &Path) -> Result<ImageFormat> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        _ => {
            let what = ext.map_or("a name without an extension".into(), |e| format!(".{e}"));
            Err(Error::Output {
                path: path.to_path_buf(),
                reason: format!("cannot write pictures as {what}; name a .png, .jpg or .jpeg file"),
            })
        }
    }
}

/// Writes `img` as PNG or JPEG, as the extension says, creating the parent directory
/// if needed.
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    match output_format(path)? {
        ImageFormat::Jpeg => save_jpeg(img, path),
        _ => save_png(img, path),
    }
}

/// `img` as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
        .map_err(|cause| Error::Encode {
            path: "<memory>".into(),
            cause,
        })?;
    Ok(out)
}

/// Writes `img` as PNG whatever the name, creating the parent directory if needed;
/// whole or not at all (see `output`).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    crate::output::write_with(path, |w| {
        img.write_with_encoder(image::codecs::png::PngEncoder::new(w))
            .map_err(|cause| Error::Encode {
                path: path.to_path_buf(),
                cause,
            })
    })
}

fn save_jpeg(img: &RgbImage, path: &Path) -> Result<()> {
    crate::output::write_with(path, |w| {
        img.write_with_encoder(JpegEncoder::new_with_quality(w, JPEG_QUALITY))
            .map_err(|cause| Error::Encode {
                path: path.to_path_buf(),
                cause,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_format_in_any_case() {
        assert_eq!(output_format(Path::new("a.png")).unwrap(), ImageFormat::Png);
        assert_eq!(
            output_format(Path::new("a.JPG")).unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            output_format(Path::new("d/a.jpeg")).unwrap(),
            ImageFormat::Jpeg
        );
    }

    #[test]
    fn other_names_are_refused_with_the_supported_ones() {
        let e = output_format(Path::new("out/g.gif"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("out/g.gif: "), "{e}");
        assert!(
            e.contains(".gif") && e.contains(".png, .jpg or .jpeg"),
            "{e}"
        );
        let e = output_format(Path::new("grid")).unwrap_err().to_string();
        assert!(e.contains("without an extension"), "{e}");
    }
}
