//! Decoding: every format users have, by content, upright, in 8-bit RGB; bad files
//! give an error naming the file and the cause.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use neurodex::preprocess::{open_image, DEFAULT_MAX_PIXELS};
use neurodex::Error;

/// 40 x 20: red left half, blue right half.
fn halves() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
}

fn write(dir: &Path, name: &str, img: &DynamicImage, format: ImageFormat) -> std::path::PathBuf {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn near(a: Rgb<u8>, b: [u8; 3], tol: i32) -> bool {
    a.0.iter()
        .zip(b)
        .all(|(&x, y)| (x as i32 - y as i32).abs() <= tol)
}

#[test]
fn every_common_format_decodes_to_the_same_picture() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = DynamicImage::ImageRgb8(halves());
    let cases = [
        ("a.png", rgb.clone(), ImageFormat::Png, 0),
        ("a.gif", rgb.clone(), ImageFormat::Gif, 8),
        ("a.bmp", rgb.clone(), ImageFormat::Bmp, 0),
        ("a.webp", rgb.clone(), ImageFormat::WebP, 0),
        ("a.jpg", rgb.clone(), ImageFormat::Jpeg, 40),
        ("a.ppm", rgb.clone(), ImageFormat::Pnm, 0),
        (
            "a16.png",
            DynamicImage::ImageRgb16(rgb.to_rgb16()),
            ImageFormat::Png,
            0,
        ),
        (
            "alpha.png",
            DynamicImage::ImageRgba8(rgb.to_rgba8()),
            ImageFormat::Png,
            0,
        ),
        // Named as a JPEG, but is a PNG: the content decides.
        ("lying.jpg", rgb.clone(), ImageFormat::Png, 0),
    ];
    for (name, img, format, tol) in cases {
        let path = write(dir.path(), name, &img, format);
        let got = open_image(&path, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.dimensions(), (40, 20), "{name}");
        assert!(
            near(*got.get_pixel(5, 10), [255, 0, 0], tol),
            "{name}: {:?}",
            got.get_pixel(5, 10)
        );
        assert!(
            near(*got.get_pixel(35, 10), [0, 0, 255], tol),
            "{name}: {:?}",
            got.get_pixel(35, 10)
        );
    }
}

#[test]
fn grayscale_becomes_three_equal_channels() {
    let dir = tempfile::tempdir().unwrap();
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(8, 8, |x, _| {
        image::Luma([x as u8 * 30])
    }));
    let path = write(dir.path(), "g.png", &gray, ImageFormat::Png);
    let got = open_image(&path, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(*got.get_pixel(3, 0), Rgb([90, 90, 90]));
}

#[test]
fn alpha_is_dropped_like_pil_convert_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 0])));
    let path = write(dir.path(), "t.png", &img, ImageFormat::Png);
    assert_eq!(
        *open_image(&path, DEFAULT_MAX_PIXELS)
            .unwrap()
            .get_pixel(0, 0),
        Rgb([10, 20, 30])
    );
}

/// A JPEG with an EXIF APP1 segment whose Orientation tag is `orientation`.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .unwrap();
    // TIFF header (little endian), one IFD with one entry: tag 0x0112 SHORT count 1.
    let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    // Orientation 6: the stored picture must be turned 90 degrees clockwise to be upright,
    // so the red left half ends up on top.
    let path = dir.path().join("rotated.jpg");
    std::fs::write(&path, jpeg_with_orientation(&halves(), 6)).unwrap();
    let got = open_image(&path, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(got.dimensions(), (20, 40));
    assert!(
        near(*got.get_pixel(10, 5), [255, 0, 0], 40),
        "{:?}",
        got.get_pixel(10, 5)
    );
    assert!(
        near(*got.get_pixel(10, 35), [0, 0, 255], 40),
        "{:?}",
        got.get_pixel(10, 35)
    );
    // Orientation 3: upside down -> turned 180, so red is on the right.
    std::fs::write(&path, jpeg_with_orientation(&halves(), 3)).unwrap();
    let got = open_image(&path, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(got.dimensions(), (40, 20));
    assert!(near(*got.get_pixel(35, 10), [255, 0, 0], 40));
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("text.png");
    std::fs::write(&text, b"hello, world").unwrap();
    let mut png = Vec::new();
    DynamicImage::ImageRgb8(halves())
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    for path in [&empty, &text, &truncated] {
        let err = open_image(path, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            matches!(err, Error::Decode { .. }),
            "{}: {err:?}",
            path.display()
        );
        assert!(
            err.to_string()
                .contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
    }
    let missing = dir.path().join("missing.jpg");
    let err = open_image(&missing, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("missing.jpg"),
        "{err}"
    );
}

#[test]
fn huge_images_are_refused_from_the_header() {
    // A 30000 x 30000 PNG header (900 MP) with no pixel data: refused before any decoding.
    let dir = tempfile::tempdir().unwrap();
    let mut png = Vec::new();
    DynamicImage::ImageRgb8(RgbImage::new(1, 1))
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    // Patch IHDR's width and height (bytes 16..24) and its CRC (bytes 29..33).
    png[16..20].copy_from_slice(&30000u32.to_be_bytes());
    png[20..24].copy_from_slice(&30000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let path = dir.path().join("huge.png");
    std::fs::write(&path, &png).unwrap();
    match open_image(&path, DEFAULT_MAX_PIXELS) {
        Err(Error::TooLarge {
            width: 30000,
            height: 30000,
            ..
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The limit applies to real images too.
    let ok = write(
        dir.path(),
        "small.png",
        &DynamicImage::ImageRgb8(halves()),
        ImageFormat::Png,
    );
    assert!(matches!(open_image(&ok, 100), Err(Error::TooLarge { .. })));
}

/// CRC-32 (IEEE), as PNG chunks use.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
