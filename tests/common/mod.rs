//! Helpers shared by integration tests.

use std::path::{Path, PathBuf};

/// The browser-test folder (`tests/browser`, with playwright-core installed) and the
/// Chromium binary when
/// Debian's Chromium and the node modules are there. Otherwise `None` after a notice,
/// except under CI, where their absence fails the test: `.ci/run` installs both.
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
