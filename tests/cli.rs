//! The command line's manners: closed pipes, error messages, output formats, argument
//! limits and hints, run against the binary on a small demo index.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn neurodex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurodex"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The three smallest demo photos indexed once per test run with the default layers.
fn demo_db() -> &'static Path {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-demo");
        let _ = std::fs::remove_dir_all(&base);
        let images = base.join("images");
        std::fs::create_dir_all(&images).unwrap();
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images");
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(demo)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
            .collect();
        files.sort();
        for (_, f) in files.iter().take(3) {
            std::fs::copy(f, images.join(f.file_name().unwrap())).unwrap();
        }
        let db = base.join("demo.db");
        let out = neurodex()
            .arg("index")
            .arg(&images)
            .arg("--db")
            .arg(&db)
            .arg("-q")
            .output()
            .unwrap();
        assert!(out.status.success(), "index: {}", stderr(&out));
        db
    })
}

/// Runs `args` with stdout a pipe whose reader is already gone (as after `| head -1`).
fn with_closed_stdout(args: &[&str]) -> Output {
    let mut child = neurodex()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_printing_command_without_a_panic() {
    let db = demo_db().to_str().unwrap();
    let image = std::fs::read_dir(Path::new(db).parent().unwrap().join("images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let image = image.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["layers"],
        &["layers", "--json"],
        &["models"],
        &["units", "--db", db, "--layer", "head"],
        &["top", "--db", db, "--layer", "head", "--unit", "0"],
        &["image", "--db", db, image],
        &["stats", "--db", db],
        &["classify", "--json", image],
        &[
            "saliency", "--json", image, "--layer", "stem", "--unit", "3",
        ],
    ];
    for args in commands {
        let out = with_closed_stdout(args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
}

/// A reader that takes the header and leaves, like `head -1`, while 1280 rows (more
/// than a pipe buffer) are still to come.
#[test]
fn reading_one_line_and_leaving_is_no_error() {
    let mut child = neurodex()
        .args(["units", "--layer", "head", "--db"])
        .arg(demo_db())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b" unit"));
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// Runs `args` expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = neurodex().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

fn assert_once(haystack: &str, needle: &str) {
    assert_eq!(
        haystack.matches(needle).count(),
        1,
        "{needle:?} in {haystack:?}"
    );
}

#[test]
fn a_missing_file_is_named_with_the_os_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let png = dir.path().join("x.png");
    let (db, png) = (db.to_str().unwrap(), png.to_str().unwrap());
    let photo = "datasets/demo/images/objects__coffee.jpg";
    let missing = "No such file or directory";
    let cases: &[(&[&str], &str)] = &[
        (
            &["maps", "/tmp/nope.jpg", "--layer", "stem", "-o", png],
            "/tmp/nope.jpg",
        ),
        (&["index", "/nonexist", "--db", db], "/nonexist"),
        (&["classify", "--weights", "/nope.pth", photo], "/nope.pth"),
    ];
    for (args, path) in cases {
        let err = fails(args);
        assert_once(&err, path);
        assert_once(&err, missing);
    }
}

#[test]
fn an_unwritable_output_gives_the_os_reason_once() {
    let photo = "datasets/demo/images/objects__coffee.jpg";
    // A regular file where a directory should be: create_dir_all fails.
    let err = fails(&[
        "maps",
        photo,
        "--layer",
        "stem",
        "-o",
        "Cargo.toml/sub/x.png",
    ]);
    assert!(err.contains("Cargo.toml/sub"), "{err}");
    assert_once(&err, "Not a directory");
}

/// `-o` for each picture-writing command, with `name` as the file name.
fn picture_commands(dir: &Path, name: &str) -> Vec<Vec<String>> {
    let out = dir.join(name).to_str().unwrap().to_string();
    let db = demo_db().to_str().unwrap().to_string();
    let photo = "datasets/demo/images/objects__coffee.jpg".to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        [
            s(&["maps", &photo, "--layer", "stem", "-o"]),
            vec![out.clone()],
        ]
        .concat(),
        [s(&["filters", "--layer", "stem", "-o"]), vec![out.clone()]].concat(),
        [
            s(&[
                "top", "--db", &db, "--layer", "stem", "--unit", "0", "-k", "2", "-o",
            ]),
            vec![out.clone()],
        ]
        .concat(),
        [
            s(&[
                "top", "--db", &db, "--layer", "head", "--unit", "0", "-k", "2", "--mode",
                "guided", "-o",
            ]),
            vec![out.clone()],
        ]
        .concat(),
        [
            s(&[
                "saliency", &photo, "--layer", "blocks.4", "--unit", "1", "-o",
            ]),
            vec![out],
        ]
        .concat(),
    ]
}

#[test]
fn the_output_name_chooses_png_or_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let png_magic: &[u8] = b"\x89PNG\r\n\x1a\n";
    for (name, magic) in [
        ("x.png", png_magic),
        ("x.jpg", b"\xff\xd8"),
        ("x.JPEG", b"\xff\xd8"),
    ] {
        for args in picture_commands(dir.path(), name) {
            let out = neurodex().args(&args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            let bytes = std::fs::read(dir.path().join(name)).unwrap();
            assert!(
                bytes.starts_with(magic),
                "{args:?} wrote {:02x?}",
                &bytes[..8]
            );
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
}

#[test]
fn an_unknown_picture_extension_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for args in picture_commands(dir.path(), "x.gif") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(
            err.contains("x.gif") && err.contains(".png, .jpg or .jpeg"),
            "{err}"
        );
        assert!(!dir.path().join("x.gif").exists(), "{args:?}");
    }
}

#[test]
fn asking_top_for_more_than_the_index_keeps_says_so() {
    let db = demo_db().to_str().unwrap();
    let out = neurodex()
        .args([
            "top", "--db", db, "--layer", "stem", "--unit", "0", "-k", "500", "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the index keeps the top 100 per unit; showing 100 at most"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
}

#[test]
fn top_refuses_zero_images_as_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let db = demo_db().to_str().unwrap();
    let err = fails(&[
        "top",
        "--db",
        db,
        "--layer",
        "stem",
        "--unit",
        "0",
        "-k",
        "0",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(err.contains("'-k <K>': must be at least 1"), "{err}");
    assert!(!png.exists());
}

#[test]
fn units_marks_the_histogram_quantiles_approximate() {
    let db = demo_db().to_str().unwrap();
    let out = neurodex()
        .args(["units", "--db", db, "--layer", "blocks.14", "-n", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for row in text.lines().skip(1) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let (mean, p50, p99) = (cols[2], cols[3], cols[4]);
        assert!(mean.contains('.') && !mean.starts_with('~'), "{row}");
        for q in [p50, p99] {
            let digits = q.trim_start_matches("~").replace(['.', '-'], "");
            let significant = digits.trim_start_matches('0').len();
            assert!(q.starts_with('~') && significant <= 3, "{row}");
        }
    }
    let out = neurodex()
        .args([
            "units",
            "--db",
            db,
            "--layer",
            "blocks.14",
            "-n",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["note"].as_str().unwrap().contains("approximate"), "{v}");
    assert!(v["units"][0]["p50"].is_f64(), "{v}");
}

#[test]
fn a_misspelt_layer_is_unknown_and_gets_the_nearest_name() {
    let db = demo_db().to_str().unwrap();
    let err = fails(&["top", "--db", db, "--layer", "blocks.99", "--unit", "0"]);
    assert!(
        err.contains(
            "unknown layer \"blocks.99\" for efficientnet-lite0 \
             (see `neurodex layers --model efficientnet-lite0`); did you mean blocks.9?"
        ),
        "{err}"
    );
}

#[test]
fn a_real_layer_the_index_skipped_is_told_apart_from_a_misspelling() {
    let db = demo_db().to_str().unwrap();
    let err = fails(&["top", "--db", db, "--layer", "blocks.13", "--unit", "0"]);
    assert!(err.contains(db), "{err}");
    assert!(
        err.contains(
            "layer blocks.13 exists in efficientnet-lite0 but this index does not hold it; \
             indexed layers: stem, blocks.2, blocks.4, blocks.7, blocks.10, blocks.14, head; \
             index into a new --db with --layers blocks.13 to see it"
        ),
        "{err}"
    );
    assert!(!err.contains("unknown"), "{err}");
}
