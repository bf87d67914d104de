//! Writes a folder of hostile and unlucky image files, for `scripts/rss-bad-images.sh`:
//! `cargo run --release --example make_bad_images -- DIR [--big N]`.
//!
//! - `big/`: N (default 16) 99-megapixel 16-bit RGBA PNGs (9950 x 9950, compressing to
//!   under 1 MB each): each decodes to 792 MB before its RGB copy, the memory test.
//! - `bombs/`: headers claiming 65535 x 65535 (PNG, GIF, BMP) over a few bytes of data.
//! - `broken/`: truncated JPEG and PNG, random bytes under image names, a zero-byte
//!   file, a text file named .jpg, a directory named .png.
//! - `good/`: a few small valid images, so a run has something to index.

use std::fs;
use std::io::Write;
use std::path::Path;

use image::{ImageBuffer, Rgb, RgbImage, Rgba};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(args.first().ok_or("usage: make_bad_images DIR [--big N]")?);
    let big: u32 = match args.iter().position(|a| a == "--big") {
        Some(i) => args.get(i + 1).ok_or("--big N")?.parse()?,
        None => 16,
    };
    for sub in ["big", "bombs", "broken", "good"] {
        fs::create_dir_all(dir.join(sub))?;
    }

    // A smooth 16-bit picture: compresses well, decodes to its full size.
    let side = 9950u32;
    if big > 0 {
        let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(side, side, |x, y| {
            Rgba([(x * 6) as u16, (y * 6) as u16, 30000, 65535])
        });
        let first = dir.join("big/big-00.png");
        img.save(&first)?;
        drop(img);
        for i in 1..big {
            fs::copy(&first, dir.join(format!("big/big-{i:02}.png")))?;
        }
    }

    // Headers that promise 65535 x 65535 pixels.
    let mut png = Vec::new();
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR");
    png.extend_from_slice(&65535u32.to_be_bytes());
    png.extend_from_slice(&65535u32.to_be_bytes());
    png.extend_from_slice(&[16, 6, 0, 0, 0, 0, 0, 0, 0]);
    fs::write(dir.join("bombs/claims-4g-pixels.png"), &png)?;
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
    fs::write(dir.join("bombs/claims-4g-pixels.gif"), &gif)?;
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 12]);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&65535i32.to_le_bytes());
    bmp.extend_from_slice(&65535i32.to_le_bytes());
    bmp.extend_from_slice(&[1, 0, 24, 0]);
    bmp.extend_from_slice(&[0; 24]);
    fs::write(dir.join("bombs/claims-4g-pixels.bmp"), &bmp)?;

    // Truncated and garbage files.
    let small: RgbImage = ImageBuffer::from_fn(640, 480, |x, y| Rgb([x as u8, y as u8, 99]));
    let mut jpeg = Vec::new();
    small.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )?;
    fs::write(dir.join("broken/truncated.jpg"), &jpeg[..jpeg.len() / 2])?;
    let mut pngb = Vec::new();
    small.write_to(
        &mut std::io::Cursor::new(&mut pngb),
        image::ImageFormat::Png,
    )?;
    fs::write(dir.join("broken/truncated.png"), &pngb[..pngb.len() / 2])?;
    let mut x = 0x2545_f491u32;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    fs::write(dir.join("broken/noise.jpg"), &noise)?;
    fs::write(dir.join("broken/noise.png"), &noise)?;
    fs::write(dir.join("broken/empty.jpg"), b"")?;
    fs::File::create(dir.join("broken/text.jpg"))?.write_all(b"not a picture\n")?;
    fs::create_dir_all(dir.join("broken/folder.png"))?;

    for i in 0..4u32 {
        let img: RgbImage =
            ImageBuffer::from_fn(320, 240, |x, y| Rgb([(x + i * 40) as u8, y as u8, 128]));
        img.save(dir.join(format!("good/good-{i}.jpg")))?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}
