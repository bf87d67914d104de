//! Helpers shared by integration tests.

use std::path::{Path, PathBuf};

/// The browser-test folder (`tests/browser`, with playwright-core installed) and the
/// Chromium binary when
/// Debian's Chromium and the node modules are there. Otherwise `None` after a notice,
/// except under CI, where their absence fails the test: `.ci/run` installs both.
#[allow(dead_code)]
pub fn browser() -> Option<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").is_dir() {
        return Some((dir, chromium));
    }
    assert!(
        !ci,
        "CI is set but {chromium} or tests/browser/node_modules is missing \
         (apt-get install -y chromium; npm ci --prefix tests/browser)"
    );
    eprintln!("notice: skipping the browser test: needs {chromium} and `npm ci` in tests/browser");
    None
}

/// The `n` smallest committed demo photos (fast to decode), by name (or of
/// NEURODEX_DEMO_IMAGES where the checkout lacks them).
#[allow(dead_code)]
pub fn demo_images(n: usize) -> Vec<PathBuf> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images");
    if !dir.is_dir() {
        if let Ok(d) = std::env::var("NEURODEX_DEMO_IMAGES") {
            dir = PathBuf::from(d);
        }
    }
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort();
    let mut out: Vec<PathBuf> = files.into_iter().take(n).map(|(_, p)| p).collect();
    out.sort();
    out
}

/// A folder holding copies of the `n` smallest demo photos.
#[allow(dead_code)]
pub fn photo_folder(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in demo_images(n) {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// `neurodex ARGS`: exit code, stdout, stderr.
#[allow(dead_code)]
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neurodex"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The database file itself, for tests that check or damage what is stored the way
/// another program would (neurodex's own SQL stays in `store`).
#[allow(dead_code)]
pub fn raw_db(db: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap()
}

/// The ONNX zoo `scripts/make-onnx-zoo.py` writes (`NEURODEX_ONNX_ZOO`, default
/// `~/.cache/neurodex/onnx-zoo-2`), or `None` after a SKIPPED line; under CI, which
/// makes it, its absence fails the test.
#[allow(dead_code)]
pub fn onnx_zoo() -> Option<PathBuf> {
    generated(
        "NEURODEX_ONNX_ZOO",
        "onnx-zoo-2",
        "the ONNX zoo",
        "make-onnx-zoo.py",
    )
}

/// PyTorch's input gradients `scripts/make-grad-refs.py` writes (`NEURODEX_GRAD_REFS`,
/// default `~/.cache/neurodex/grad-refs-1`), as [`onnx_zoo`].
#[allow(dead_code)]
pub fn grad_refs() -> Option<PathBuf> {
    generated(
        "NEURODEX_GRAD_REFS",
        "grad-refs-1",
        "PyTorch gradients",
        "make-grad-refs.py",
    )
}

/// A folder of references a script makes with Python and CI keeps in its cache: `var`,
/// else `~/.cache/neurodex/<default>`; `None` after a SKIPPED line where it is missing,
/// except under CI, whose `.ci/run` makes it.
fn generated(var: &str, default: &str, what: &str, script: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/neurodex").join(default))
    });
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "CI is set but {what} are missing (.ci/run makes them)");
    eprintln!("SKIPPED: no {what} (run `/usr/bin/python3 scripts/{script}`, or set {var})");
    None
}
