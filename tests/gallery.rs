//! The static gallery and the picture-writing commands, end to end through the
//! `neurodex` binary on a small synthetic collection: every page's links and images
//! resolve, pictures decode with the expected layout, missing images degrade to a
//! placeholder, and (when Chromium is present, always under CI) a real browser loads it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};

const BIN: &str = env!("CARGO_BIN_EXE_neurodex");

/// Small deterministic pictures: coloured rectangles and stripes on gradients.
fn make_images(dir: &Path, n: u32) {
    let mut seed = 12345u32;
    let mut rnd = move |m: u32| {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) % m
    };
    for i in 0..n {
        let (w, h) = (160 + rnd(120), 120 + rnd(100));
        let (rx, ry, rw, rh) = (rnd(w / 2), rnd(h / 2), 20 + rnd(w / 2), 20 + rnd(h / 2));
        let col = [rnd(256) as u8, rnd(256) as u8, rnd(256) as u8];
        let stripes = 3 + rnd(10);
        let img = RgbImage::from_fn(w, h, |x, y| {
            if (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y) {
                Rgb(col)
            } else if (x / stripes) % 2 == 0 && i % 2 == 0 {
                Rgb([240, 240, 240])
            } else {
                Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
            }
        });
        let ext = if i % 3 == 0 { "jpg" } else { "png" };
        img.save(dir.join(format!("img{i:02}.{ext}"))).unwrap();
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("run neurodex");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    images: PathBuf,
    db: PathBuf,
    root: PathBuf,
}

/// Indexes `n` synthetic images on two layers.
fn fixture(n: u32) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("photos");
    std::fs::create_dir(&images).unwrap();
    make_images(&images, n);
    let db = tmp.path().join("ix.db");
    let (code, text) = run(&[
        "index",
        images.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--layers",
        "stem,blocks.4",
        "-q",
    ]);
    assert_eq!(code, 0, "{text}");
    Fixture {
        root: tmp.path().to_path_buf(),
        _tmp: tmp,
        images,
        db,
    }
}

/// Values of `attr="..."` in `html`.
fn attrs<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    html.match_indices(&key)
        .map(|(i, _)| {
            let rest = &html[i + key.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn html_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "html") {
            out.push(e.path().to_path_buf());
        }
    }
    out
}

/// Whether a picture has any variation (a blank tile is one flat colour).
fn varied(img: &RgbImage) -> bool {
    let first = img.get_pixel(0, 0);
    img.pixels().any(|p| p != first)
}

fn build_gallery(f: &Fixture) -> (PathBuf, i32, String) {
    let out = f.root.join("gallery");
    let (code, text) = run(&[
        "gallery",
        "--db",
        f.db.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    (out, code, text)
}

#[test]
fn every_link_and_image_of_the_gallery_resolves() {
    let f = fixture(7);
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 0, "{text}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gallery.json")).unwrap()).unwrap();
    let layers = index["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["name"], "stem");
    // One index page, one page per layer, one per unit (stem 32 + blocks.4 40).
    let pages = html_files(&out);
    assert_eq!(pages.len(), 1 + 2 + 32 + 40);
    let mut images = 0;
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        for link in attrs(&html, "href").into_iter().chain(attrs(&html, "src")) {
            assert!(!link.contains("://") && !link.starts_with('/'), "{link}");
            if let Some(id) = link.strip_prefix('#') {
                // An anchor on the page itself (a top image's row in the table).
                assert!(
                    html.contains(&format!("id=\"{id}\"")),
                    "{}: no #{id}",
                    page.display()
                );
                continue;
            }
            let file = percent_decode(link.split('#').next().unwrap());
            let target = dir.join(&file);
            assert!(target.is_file(), "{}: broken link {link}", page.display());
        }
        for src in attrs(&html, "src")
            .into_iter()
            .filter(|s| !s.ends_with(".js"))
        {
            let img = image::open(dir.join(percent_decode(src)))
                .unwrap()
                .to_rgb8();
            assert!(img.width() > 0 && img.height() > 0);
            images += 1;
        }
    }
    assert!(images > 72 * 4, "{images}");
    let layer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("layers/blocks.4.json")).unwrap())
            .unwrap();
    let u0 = &layer["units"][0];
    assert_eq!(
        u0["never_fires"], false,
        "blocks.4 has no activation: its units rank"
    );
    // A unit page: 7 images -> one contact sheet of the 7 crops and the 7 shared
    // thumbnails under the heat maps; the neighbours linked, for the arrow keys too.
    let unit = std::fs::read_to_string(out.join("units/blocks.4/0.html")).unwrap();
    let srcs = attrs(&unit, "src");
    assert_eq!(
        srcs.iter().filter(|s| s.contains("/s/blocks.4/")).count(),
        1,
        "{srcs:?}"
    );
    assert_eq!(
        srcs.iter().filter(|s| s.contains("/img/")).count(),
        7,
        "{srcs:?}"
    );
    assert!(unit.contains("rel=\"next\" href=\"1.html\""));
    assert!(!unit.contains("href=\"-1.html\""));
    // Every image on it is lazy and sized, so the page lays out before they arrive.
    for tag in unit.split("<img ").skip(1) {
        assert!(
            tag.contains("loading=\"lazy\"") || tag.contains("class=\"filter\""),
            "{tag}"
        );
        assert!(
            tag.contains(" width=\"") && tag.contains(" height=\""),
            "{tag}"
        );
    }
    let last = std::fs::read_to_string(out.join("units/blocks.4/39.html")).unwrap();
    assert!(last.contains("href=\"38.html\"") && !last.contains("40.html"));
    // The layer's JSON holds each unit's top list, ranked.
    let top = u0["top"].as_array().unwrap();
    assert_eq!(top.len(), 7);
    let values: Vec<f64> = top.iter().map(|t| t["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    // Thumbnails are pictures, not flat fills; the stem's filters are drawn in colour.
    let thumb = image::open(out.join(top[0]["thumb"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    assert!(varied(&thumb));
    assert!(out.join("f/stem/0.png").is_file());
    assert!(
        !out.join("f/blocks.4").exists(),
        "blocks.4 is a residual sum: no filter"
    );
}

#[test]
fn a_vanished_image_becomes_a_placeholder_and_exit_status_1() {
    let f = fixture(5);
    std::fs::remove_file(f.images.join("img01.png")).unwrap();
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("could not be read"), "{text}");
    // No page refers to a tile that was not written.
    for page in html_files(&out) {
        let html = std::fs::read_to_string(&page).unwrap();
        for src in attrs(&html, "src") {
            assert!(page.parent().unwrap().join(percent_decode(src)).is_file());
        }
    }
    let j = std::fs::read_to_string(out.join("layers/stem.json")).unwrap();
    assert!(j.contains("\"thumb\":null"));
}

#[test]
fn top_grid_maps_and_filters_pngs_have_the_expected_layout() {
    let f = fixture(9);
    let db = f.db.to_str().unwrap();
    for mode in ["crop", "box", "heat"] {
        let png = f.root.join(format!("top_{mode}.png"));
        let (code, text) = run(&[
            "top",
            "--db",
            db,
            "--layer",
            "blocks.4",
            "--unit",
            "5",
            "-o",
            png.to_str().unwrap(),
            "--mode",
            mode,
            "--tile",
            "140",
        ]);
        assert_eq!(code, 0, "{text}");
        let img = image::open(&png).unwrap().to_rgb8();
        // 9 tiles of 140 px in 3 x 3: 2*6 margin + 3*140 + 2*4 gaps = 440 wide, or
        // wider when the title (model, layer, unit) needs it;
        // 12 + title 22 + 3*(140 + 11 label) + 2*4 = 495 high.
        // blocks.4 has no activation: one value per tile. Heat sheets add a colour
        // bar under a 4 px gap.
        let title = format!("efficientnet-lite0 blocks.4 unit 5 - top 9 ({mode}); value");
        let title_w =
            12 + neurodex::render::font::text_width(&title, neurodex::render::grid::TITLE_SCALE);
        let bar = if mode == "heat" { 4 + bar_height() } else { 0 };
        assert_eq!(img.dimensions(), (440.max(title_w), 495 + bar), "{mode}");
        for i in 0..9 {
            // The centre of every cell is drawn: not the sheet's background.
            let (x, y) = (6 + (i % 3) * 144 + 70, 28 + (i / 3) * 155 + 70);
            assert_ne!(
                img.get_pixel(x, y).0,
                [24, 24, 24],
                "{mode}: tile {i} is blank"
            );
        }
    }

    // Feature maps of the stem (32 x 112 x 112) with unit 3 beside the input.
    let any = f.images.join("img00.jpg");
    let png = f.root.join("maps.png");
    let (code, text) = run(&[
        "maps",
        any.to_str().unwrap(),
        "--layer",
        "stem",
        "--unit",
        "3",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let img = image::open(&png).unwrap().to_rgb8();
    // Head: two 224 px cells side by side with labels: 12 + 224 + 11 = 247 high.
    // Grid: 6 x 6 cells of 112 px: 12 + 6*112 + 5*4 = 704 wide,
    // 12 + 22 title + 6*(112 + 11) + 5*4 = 792 high; 4 px between the two; the grey
    // colour bar 4 px under it.
    assert_eq!(img.dimensions(), (704, 247 + 4 + 792 + 4 + bar_height()));
    // Every channel is drawn (a dead one is black, not the background); most vary.
    let mut varied_cells = 0;
    for c in 0..32u32 {
        let (x, y) = (6 + (c % 6) * 116, 251 + 28 + (c / 6) * 127);
        let cell = image::imageops::crop_imm(&img, x, y, 112, 112).to_image();
        assert_ne!(
            cell.get_pixel(56, 56).0,
            [24, 24, 24],
            "channel {c} not drawn"
        );
        varied_cells += varied(&cell) as usize;
    }
    assert!(varied_cells >= 24, "{varied_cells}");

    // The stem's 32 RGB 3x3 filters, 16x enlarged, 6 x 6.
    let png = f.root.join("filters.png");
    let (code, text) = run(&["filters", "--layer", "stem", "-o", png.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let img = image::open(&png).unwrap().to_rgb8();
    // Width from the title "efficientnet-lite0 stem: 32 filters 3x3x3" (41 chars at
    // 12 px, less 2) + margins = 502; height 12 + 22 + 6*(48 + 11) + 5*4 = 408.
    assert_eq!(img.dimensions(), (502, 408));
    let (code, text) = run(&[
        "filters",
        "--layer",
        "blocks.4",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(text.contains("not a convolution"), "{text}");
}

/// Bytes and files under `dir`.
fn tree_size(dir: &Path) -> (u64, usize) {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .fold((0, 0), |(b, n), e| (b + e.metadata().unwrap().len(), n + 1))
}

#[test]
fn the_gallery_stays_small_one_sheet_per_unit_and_one_thumbnail_per_image() {
    let f = fixture(7);
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 0, "{text}");
    let (bytes, files) = tree_size(&out);
    println!("gallery of 7 images, 72 units: {bytes} bytes in {files} files");
    // Measured: 3.29 MB in 255 files. Pages (75), 7 thumbnails, at most 2 sheets per
    // unit, 32 filters, 4 more (style, script, gallery.json, 2 layer JSON).
    assert!(files <= 75 + 7 + 2 * 72 + 32 + 2 + 5, "{files} files");
    assert!(bytes < 4_000_000, "{bytes} bytes");
    let thumbs = std::fs::read_dir(out.join("img")).unwrap().count();
    assert_eq!(thumbs, 7);
}

#[test]
fn a_unit_that_never_fires_says_so_instead_of_showing_images() {
    let f = fixture(7);
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 0, "{text}");
    let layer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("layers/stem.json")).unwrap())
            .unwrap();
    let dead: Vec<u64> = layer["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["never_fires"] == true)
        .map(|u| u["unit"].as_u64().unwrap())
        .collect();
    // The stem ranks before its ReLU6; on these flat synthetic pictures some of its
    // 32 units stay at or below 0 everywhere.
    assert!(!dead.is_empty(), "no dead stem unit in the fixture");
    let u = dead[0];
    let page = std::fs::read_to_string(out.join(format!("units/stem/{u}.html"))).unwrap();
    assert!(
        page.contains("never fires on the 7 indexed images"),
        "{page}"
    );
    let srcs = attrs(&page, "src");
    assert!(
        srcs.iter()
            .all(|s| s.ends_with(".js") || s.contains("/f/stem/")),
        "{srcs:?}"
    );
    assert!(!out.join(format!("s/stem/{u}m.jpg")).exists());
    let lp = std::fs::read_to_string(out.join("layers/stem.html")).unwrap();
    let card = &lp[lp.find(&format!("id=\"u{u}\"")).unwrap()..];
    let card = &card[..card.find("</a>").unwrap()];
    assert!(
        card.contains("never fires on the 7 indexed images"),
        "{card}"
    );
}

/// The gallery in a real headless Chromium (tests/browser/gallery.mjs). Skipped with a
/// notice when Chromium or the node modules are missing, unless CI is set.
#[test]
fn gallery_loads_in_headless_chromium() {
    let Some((browser_dir, chromium)) = common::browser() else {
        return;
    };
    let f = fixture(6);
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 0, "{text}");
    let shots = f.root.join("shots");
    std::fs::create_dir(&shots).unwrap();
    let res = Command::new("node")
        .arg(browser_dir.join("gallery.mjs"))
        .arg(&out)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let log =
        String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["failures"], 0, "{log}");
    assert!(summary["images"].as_u64().unwrap() > 0);
    // Speed is for the report; the bound only catches a page that hangs.
    let ms = summary["widest_layer_load_ms"].as_f64().unwrap();
    println!("widest layer page loaded in {ms} ms");
    assert!(ms < 10_000.0, "{ms} ms");
    for check in ["arrow_right", "arrow_up", "jump", "sort", "dead"] {
        assert_eq!(summary[check], true, "{check}: {log}");
    }
    for name in ["index", "layer", "unit"] {
        let shot = image::open(shots.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        assert!(shot.width() >= 1000 && varied(&shot), "{name} screenshot");
    }
}

/// Height of the colour bar under heat sheets and feature maps.
fn bar_height() -> u32 {
    use neurodex::render::colormap::{colorbar, Colormap};
    colorbar(Colormap::Gray, (0.0, 1.0), 200, "caption").height()
}

#[test]
fn labels_show_on_unit_layer_and_concept_pages_escaped_everywhere() {
    let f = fixture(7);
    let mut names: Vec<String> = std::fs::read_dir(&f.images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let hostile = "<script>alert(1)</script>&\"x\"";
    let mut csv = String::from("path,label\n");
    for (i, n) in names.iter().enumerate() {
        let label = if i < 3 {
            format!("\"{}\"", hostile.replace('"', "\"\""))
        } else {
            "plain".into()
        };
        csv += &format!("{n},{label}\n");
    }
    let file = f.root.join("odd.csv");
    std::fs::write(&file, csv).unwrap();
    let (code, text) = run(&[
        "labels",
        "--db",
        f.db.to_str().unwrap(),
        "--csv",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let (out, code, text) = build_gallery(&f);
    assert_eq!(code, 0, "{text}");
    let pages = html_files(&out);
    assert_eq!(
        pages.len(),
        1 + 1 + 2 + 32 + 40,
        "the concepts page joins the others"
    );
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        assert!(
            !html.contains("<script>alert"),
            "{} shows the label raw",
            page.display()
        );
    }
    let concepts = std::fs::read_to_string(out.join("concepts.html")).unwrap();
    assert!(
        concepts.contains("odd/&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&quot;"),
        "{concepts}"
    );
    assert!(concepts.contains("odd/plain"));
    for link in attrs(&concepts, "href")
        .into_iter()
        .chain(attrs(&concepts, "src"))
    {
        let file = link.split('#').next().unwrap();
        assert!(
            file.is_empty() || out.join(percent_decode(file)).exists(),
            "concepts.html: {link}"
        );
    }
    // A unit page lists its best concepts with their scores; its JSON has them too.
    let unit = std::fs::read_to_string(out.join("units/blocks.4/0.html")).unwrap();
    assert!(
        unit.contains("<h2>Concepts</h2>") && unit.contains("AUROC"),
        "{unit}"
    );
    assert!(unit.contains("labels of the top"), "{unit}");
    assert!(unit.contains("class selectivity over odd"), "{unit}");
    let layer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("layers/blocks.4.json")).unwrap())
            .unwrap();
    let best = &layer["units"][0]["concepts"];
    assert_eq!(best.as_array().unwrap().len(), 2, "{best}");
    // The layer page sorts by the best AP and by selectivity.
    let lp = std::fs::read_to_string(out.join("layers/blocks.4.html")).unwrap();
    assert!(lp.contains("<option value=\"ap\">") && lp.contains("<option value=\"sel0\">"));
    assert_eq!(attrs(&lp, "data-sel0").len(), 40);
}

/// `gallery --projections guided --visualize L`: every firing unit of L gets a
/// visualisation kept in the index (a second gallery makes none), and unit pages show
/// it and their top images' projections.
#[test]
fn unit_pages_show_projections_and_kept_visualisations() {
    let f = fixture(4);
    let out = f.root.join("gallery-g");
    let db = f.db.to_str().unwrap();
    let args = [
        "gallery",
        "--db",
        db,
        "-o",
        out.to_str().unwrap(),
        "--layers",
        "stem",
        "--projections",
        "guided",
        "--visualize",
        "stem",
        "--visualize-steps",
        "2",
    ];
    let (code, text) = run(&args);
    assert_eq!(code, 0, "{text}");
    let made = |t: &str| {
        t.lines()
            .find_map(|l| {
                l.strip_prefix("visualised ")?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no count in {t}"))
    };
    let first = made(&text);
    assert!(first > 0, "{text}");
    let (code, text) = run(&args);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        made(&text),
        0,
        "kept visualisations were made again: {text}"
    );
    let mut shown = (0, 0);
    for page in html_files(&out.join("units/stem")) {
        let html = std::fs::read_to_string(&page).unwrap();
        for src in attrs(&html, "src") {
            let path = page.parent().unwrap().join(percent_decode(src));
            if src.contains("/v/") || src.contains("/g/") {
                let img = image::open(&path)
                    .unwrap_or_else(|e| panic!("{src}: {e}"))
                    .to_rgb8();
                assert!(varied(&img), "{src} is one flat colour");
                if src.contains("/v/") {
                    assert_eq!(img.dimensions(), (224, 224));
                    shown.0 += 1;
                } else {
                    shown.1 += 1;
                }
            }
        }
    }
    assert_eq!(shown.0, first, "pages show every kept visualisation");
    assert_eq!(shown.1, first, "every firing unit has its projections");
}
