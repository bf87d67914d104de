//! Finding and loading the images under a directory. The walk follows symbolic links
//! (loops are reported, not followed), visits names in sorted order, and turns every
//! problem into a `Failure` with a kind and a reason instead of stopping.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::arch::Recipe;
use crate::preprocess::{self, Transform};
use crate::Error;

/// File name extensions taken as images; other files are counted and ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "apng", "gif", "bmp", "dib", "ppm", "pgm", "pbm", "pnm",
    "pam", "webp", "tif", "tiff", "tga", "ico", "qoi", "hdr", "exr", "ff", "dds", "avif",
];

/// Why an input could not be indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// Zero bytes.
    Empty,
    /// Could not be opened or read (permissions, I/O error, vanished).
    Unreadable,
    /// Content is no image format we know, whatever its name says.
    NotImage,
    /// Corrupt or truncated image data.
    Decode,
    /// Above the pixel limit (refused from the header, before decoding).
    TooLarge,
    /// The walk could not enter or follow it (symbolic link loop, unreadable directory,
    /// dangling link).
    Walk,
}

impl FailKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailKind::Empty => "empty",
            FailKind::Unreadable => "unreadable",
            FailKind::NotImage => "not_image",
            FailKind::Decode => "decode",
            FailKind::TooLarge => "too_large",
            FailKind::Walk => "walk",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: FailKind,
    pub reason: String,
}

impl Failure {
    fn new(kind: FailKind, reason: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.into(),
        }
    }
}

/// Something met under the root: a candidate image file, or a problem.
#[derive(Clone, Debug)]
pub struct Entry {
    pub abs: PathBuf,
    /// Relative to the root.
    pub rel: PathBuf,
    pub what: Found,
}

#[derive(Clone, Debug)]
pub enum Found {
    File { size: u64, mtime_ns: i64 },
    Problem(Failure),
}

/// Sorted, link-following walk over `root` yielding image files and problems.
pub struct Walk {
    root: PathBuf,
    inner: walkdir::IntoIter,
    /// Files skipped because their names do not look like images.
    pub ignored: u64,
}

pub fn walk(root: &Path) -> Walk {
    Walk {
        root: root.to_path_buf(),
        inner: walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter(),
        ignored: 0,
    }
}

/// Whether the file name has an image extension (any case).
pub fn looks_like_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

/// A file's modification time as the index records it.
pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Walk {
    fn rel(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.root).unwrap_or(p).to_path_buf()
    }
}

impl Iterator for Walk {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            match self.inner.next()? {
                Ok(e) => {
                    let ft = e.file_type();
                    if ft.is_dir() {
                        continue;
                    }
                    if !ft.is_file() || !looks_like_image(e.path()) {
                        self.ignored += 1;
                        continue;
                    }
                    let abs = e.path().to_path_buf();
                    let rel = self.rel(&abs);
                    let what = match e.metadata() {
                        Ok(m) => Found::File {
                            size: m.len(),
                            mtime_ns: mtime_ns(&m),
                        },
                        Err(err) => {
                            Found::Problem(Failure::new(FailKind::Unreadable, err.to_string()))
                        }
                    };
                    return Some(Entry { abs, rel, what });
                }
                Err(err) => {
                    let Some(path) = err.path().map(Path::to_path_buf) else {
                        continue;
                    };
                    let reason = match (err.loop_ancestor(), err.io_error()) {
                        (Some(a), _) => match self.rel(a) {
                            r if r.as_os_str().is_empty() => {
                                "symbolic link loop (points back to the indexed directory)"
                                    .to_string()
                            }
                            r => format!("symbolic link loop (points back to {})", r.display()),
                        },
                        (None, Some(io)) if io.kind() == std::io::ErrorKind::NotFound => {
                            "dangling symbolic link".to_string()
                        }
                        (None, Some(io)) => format!("cannot read: {io}"),
                        (None, None) => err.to_string(),
                    };
                    let rel = self.rel(&path);
                    return Some(Entry {
                        abs: path,
                        rel,
                        what: Found::Problem(Failure::new(FailKind::Walk, reason)),
                    });
                }
            }
        }
    }
}

/// sha256 (hex) of a file's content, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// An image ready for the network.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// CHW f32 network input.
    pub input: Vec<f32>,
    pub transform: Transform,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
}

/// Hashes, decodes and prepares one file. Never panics on bad data: decoder panics
/// are caught and reported as decode failures.
pub fn load(abs: &Path, size: u64, recipe: &Recipe, max_pixels: u64) -> Result<Loaded, Failure> {
    if size == 0 {
        return Err(Failure::new(FailKind::Empty, "empty file (0 bytes)"));
    }
    let sha256 = sha256_file(abs).map_err(|e| Failure::new(FailKind::Unreadable, e.to_string()))?;
    // Held until the pixels are prepared and dropped, at the end of this function.
    let mut reserved = preprocess::budget::GLOBAL.reserve();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        preprocess::open_image_reserved(abs, max_pixels, &mut reserved)
    }));
    let img = match decoded {
        Ok(Ok(img)) => img,
        Ok(Err(e)) => return Err(failure_of(abs, e)),
        Err(_) => return Err(Failure::new(FailKind::Decode, "the image decoder crashed")),
    };
    let (width, height) = img.dimensions();
    let (input, transform) = preprocess::prepare(&img, recipe);
    Ok(Loaded {
        input,
        transform,
        width,
        height,
        sha256,
    })
}

fn failure_of(abs: &Path, e: Error) -> Failure {
    let kind = match &e {
        Error::Io { .. } => FailKind::Unreadable,
        Error::TooLarge { .. } => FailKind::TooLarge,
        Error::Decode { reason, .. } if reason.contains("decode memory budget") => {
            FailKind::TooLarge
        }
        Error::Decode { reason, .. } if reason.contains("not a recognised image format") => {
            FailKind::NotImage
        }
        _ => FailKind::Decode,
    };
    // The row names the file: keep only the cause.
    let text = e.to_string();
    let prefix = format!("{}: ", abs.display());
    let reason = text.strip_prefix(&prefix).unwrap_or(&text);
    let reason = reason
        .strip_prefix("cannot decode image: ")
        .unwrap_or(reason);
    Failure::new(kind, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_is_sorted_skips_non_images_and_reports_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("b.PNG"), b"x").unwrap();
        std::fs::write(root.join("a.jpg"), b"xy").unwrap();
        std::fs::write(root.join("notes.txt"), b"hi").unwrap();
        std::fs::write(root.join("sub/c.gif"), b"").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        let mut w = walk(root);
        let got: Vec<(String, String)> = w
            .by_ref()
            .map(|e| {
                let what = match e.what {
                    Found::File { size, .. } => format!("file {size}"),
                    Found::Problem(f) => format!("{}: {}", f.kind.as_str(), f.reason),
                };
                (e.rel.display().to_string(), what)
            })
            .collect();
        let mut want = vec![
            ("a.jpg".to_string(), "file 2".to_string()),
            ("b.PNG".to_string(), "file 1".to_string()),
            ("sub/c.gif".to_string(), "file 0".to_string()),
        ];
        #[cfg(unix)]
        want.push((
            "sub/loop".to_string(),
            "walk: symbolic link loop (points back to the indexed directory)".to_string(),
        ));
        assert_eq!(got, want);
        assert_eq!(w.ignored, 1);
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
