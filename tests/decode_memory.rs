//! The decode budget bounds `index`'s memory whatever the thread count: large
//! 16-bit images wait for each other instead of all being decoded at once, and one
//! that needs more than the whole budget is refused by name. On its own in this
//! test binary, so that the largest child measured is the `index` under test.

use std::path::Path;

use image::{ImageBuffer, Rgba};

/// The largest resident set of any child reaped so far, in bytes (Linux: KiB).
#[cfg(target_os = "linux")]
fn children_peak_rss() -> u64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage for getrusage to fill.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss as u64 * 1024
}

fn index(dir: &Path, db: &Path, extra: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neurodex"))
        .arg("index")
        .arg(dir)
        .arg("--db")
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn large_images_are_decoded_within_the_budget_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    // Four 10-megapixel 16-bit RGBA PNGs: 80 MB decoded, 30 MB as RGB, each.
    let big = tmp.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let side = 3200u32;
    let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(side, side, |x, y| {
        Rgba([(x * 20) as u16, (y * 20) as u16, 9000, 65535])
    });
    img.save(big.join("a.png")).unwrap();
    drop(img);
    for n in ["b", "c", "d"] {
        std::fs::copy(big.join("a.png"), big.join(format!("{n}.png"))).unwrap();
    }
    let need = side as u64 * side as u64 * (8 + 3);

    // The baseline: the same run on one small image.
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    ImageBuffer::from_pixel(64, 64, image::Rgb([10u8, 20, 30]))
        .save(small.join("s.png"))
        .unwrap();
    let (code, err) = index(&small, &tmp.path().join("s.db"), &["-q", "--threads", "4"]);
    assert_eq!(code, 0, "{err}");
    let base = children_peak_rss();

    // A budget of one image and a half, four threads: one decode at a time.
    let budget_mb = (need * 3 / 2 / 1_000_000).to_string();
    let (code, err) = index(
        &big,
        &tmp.path().join("b.db"),
        &[
            "-q",
            "--threads",
            "4",
            "--batch",
            "4",
            "--decode-memory-mb",
            &budget_mb,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let peak = children_peak_rss().max(base);
    let over = peak.saturating_sub(base);
    eprintln!(
        "baseline {} MB, with four large images {} MB (one decode needs {} MB)",
        base / 1_000_000,
        peak / 1_000_000,
        need / 1_000_000
    );
    // Four at once would add about 4 x 110 MB; within the budget it is one at a time.
    assert!(
        over < need * 2,
        "index grew by {} MB over its baseline: more than one decode at a time",
        over / 1_000_000
    );

    // A budget smaller than one image: refused, named, the run goes on.
    let (code, err) = index(
        &big,
        &tmp.path().join("c.db"),
        &["--threads", "4", "--decode-memory-mb", "50"],
    );
    assert_eq!(code, 1, "the run ends with failures named: {err}");
    assert!(
        err.contains("a.png") && err.contains("decode memory budget of 50 MB"),
        "{err}"
    );
}

#[cfg(not(target_os = "linux"))]
#[test]
fn large_images_are_decoded_within_the_budget_whatever_the_thread_count() {
    eprintln!("SKIPPED: the peak memory of a child is read with Linux's getrusage units");
}
