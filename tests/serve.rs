//! `neurodex serve`, end to end through the binary on a small index of demo photos:
//! frames answer the layer's maps on one shared scale with the model's top-5 (checked
//! against an independent in-process computation), bad frames get an error while the
//! server keeps running, oversized uploads and every way of naming a file outside the
//! index are refused with 4xx, a unit's top images and filter come from the index,
//! a unit's best concepts, the labels of its top images and the classifier hint match
//! the library's scoring and each concept names its best unit (labels holding markup
//! come back escaped), and (when Chromium is present, always under CI) a real browser
//! with a fake camera drives the page.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use image::{Rgb, RgbImage};
use neurodex::model::{imagenet_label, Network};
use neurodex::preprocess;

const BIN: &str = env!("CARGO_BIN_EXE_neurodex");

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/images")
}

/// The first `n` demo photos (sorted by name).
fn demo_photos(n: usize) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(demo_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    all.sort();
    all.truncate(n);
    all
}

struct Fixture {
    tmp: tempfile::TempDir,
    photos: PathBuf,
    db: PathBuf,
}

/// `n` demo photos plus one broken file, indexed on stem, blocks.4 and blocks.7.
fn fixture(n: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for p in demo_photos(n) {
        std::fs::copy(&p, photos.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(photos.join("zz_broken.jpg"), b"\xff\xd8 this is not a JPEG").unwrap();
    let db = tmp.path().join("ix.db");
    let out = Command::new(BIN)
        .args([
            "index",
            photos.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(["--layers", "stem,blocks.4,blocks.7", "-q"])
        .output()
        .unwrap();
    // Exit 1: the broken file failed, as intended.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    Fixture { tmp, photos, db }
}

/// A running `neurodex serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("listening on http://") {
                break rest.trim_end_matches('/').to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            lines.for_each(|l| eprintln!("server: {}", l.unwrap_or_default()))
        });
        Server { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request, written byte for byte (the path is sent exactly as given,
/// never normalised); `declared` overrides Content-Length.
fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    declared: Option<usize>,
) -> Reply {
    request_with(addr, method, path, &[], body, declared)
}

/// As `raw_request`, with extra header lines; a `Host` among them replaces the default
/// (the server's own address).
fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    declared: Option<usize>,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {addr}\r\n");
    }
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        declared.unwrap_or(body.len())
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_reply(s)
}

/// Reads one response from `s`: the head, then exactly the body it announces.
fn read_reply(mut s: TcpStream) -> Reply {
    // Read the head, then exactly the body it announces: a server may keep the
    // connection open (e.g. waiting for the rest of a refused upload).
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).expect("response head");
        assert!(n > 0, "connection closed before a complete head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        while body.len() < len {
            let n = s.read(&mut buf).expect("response body");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).expect("response body");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        body = dechunk(&body);
    } else {
        s.read_to_end(&mut body).unwrap();
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn get(addr: &str, path: &str) -> Reply {
    raw_request(addr, "GET", path, b"", None)
}

fn post(addr: &str, path: &str, body: &[u8]) -> Reply {
    raw_request(addr, "POST", path, body, None)
}

/// Splits a frame reply: its JSON header and the map bytes.
fn parse_frame(body: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&body[4..4 + n]).unwrap(),
        &body[4 + n..],
    )
}

/// With a unit and a mode, a frame's reply carries the projection of that unit's
/// maximum: the same pixels `neurodex saliency` draws for the same photo (computed
/// here in-process), after the maps.
#[test]
fn a_frame_with_a_unit_and_mode_carries_its_projection() {
    let f = fixture(2);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let photo = &demo_photos(1)[0];
    let bytes = std::fs::read(photo).unwrap();
    let r = post(
        &srv.addr,
        "/api/frame?layer=blocks.4&unit=7&mode=guided",
        &bytes,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (h, rest) = parse_frame(&r.body);
    let p = &h["projection"];
    assert_eq!(
        (p["unit"].as_u64(), p["mode"].as_str()),
        (Some(7), Some("guided"))
    );
    let size = p["size"].as_u64().unwrap() as usize;
    assert_eq!(rest.len(), 40 * 28 * 28 + 3 * size * size);
    let mut net = Network::embedded_default().unwrap();
    let node = net.arch.resolve("blocks.4").unwrap();
    net.split_activations(&[node]);
    let img = preprocess::open_image(photo, u64::MAX).unwrap();
    let (x, _) = preprocess::prepare(&img, &net.arch.recipe);
    let obj = [neurodex::model::Objective {
        unit: 7,
        pick: neurodex::model::Pick::Max,
    }];
    let g = net
        .input_gradient(
            &x,
            (1, size, size),
            neurodex::model::Tap::pre(node),
            &obj,
            neurodex::model::Rule::Guided,
        )
        .unwrap();
    let want = neurodex::render::gradient::projection(&g.data, size, size, false).into_raw();
    let off = rest[40 * 28 * 28..]
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.abs_diff(**b) > 1)
        .count();
    assert!(
        off <= want.len() / 1000,
        "{off} of {} projection bytes differ",
        want.len()
    );
    assert_eq!(
        (p["y"].as_u64(), p["x"].as_u64()),
        (Some(g.at[0].0 as u64), Some(g.at[0].1 as u64))
    );
    // Half a request, or an unknown mode or unit, is refused with the reason.
    for (q, says) in [
        ("layer=blocks.4&unit=7", "both unit and mode"),
        ("layer=blocks.4&unit=7&mode=sideways", "unknown mode"),
        ("layer=blocks.4&unit=40&mode=guided", "no unit 40"),
    ] {
        let r = post(&srv.addr, &format!("/api/frame?{q}"), &bytes);
        assert_eq!(r.status, 400, "{q}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(says),
            "{q}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[test]
fn a_frame_answers_the_layers_maps_on_one_scale_and_the_top5() {
    let f = fixture(4);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let photo = &demo_photos(1)[0];
    let bytes = std::fs::read(photo).unwrap();
    let r = post(&srv.addr, "/api/frame?layer=blocks.4", &bytes);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (h, maps) = parse_frame(&r.body);
    assert_eq!(h["layer"], "blocks.4");
    assert_eq!(
        (h["c"].as_u64(), h["h"].as_u64(), h["w"].as_u64()),
        (Some(40), Some(28), Some(28))
    );
    assert_eq!(maps.len(), 40 * 28 * 28);

    // Independently of the server: decode as the index does (libjpeg's decoder, as
    // PIL; scripts/reference/top9.sh compares the inputs with PIL's), run the network
    // in-process, scale by hand.
    let net = Network::embedded_default().unwrap();
    let img = preprocess::open_image(photo, u64::MAX).unwrap();
    let (x, _) = preprocess::prepare(&img, &net.arch.recipe);
    let node = net.arch.resolve("blocks.4").unwrap();
    let act = net.forward_raw(&x, 1, &[node]).unwrap().remove(0);
    let max = act.data.iter().copied().fold(f32::MIN, f32::max);
    let min = act.data.iter().copied().fold(f32::MAX, f32::min).min(0.0);
    assert!((h["hi"].as_f64().unwrap() - max as f64).abs() < 1e-4);
    assert!((h["lo"].as_f64().unwrap() - min as f64).abs() < 1e-4);
    let mut worst = 0;
    for (i, &v) in act.data.iter().enumerate() {
        let want = ((v - min) / (max - min) * 255.0).round() as i32;
        worst = worst.max((want - maps[i] as i32).abs());
    }
    assert!(
        worst <= 1,
        "maps differ from the reference by {worst} levels"
    );
    // The brightest byte sits where the layer's maximum is.
    let argmax = act
        .data
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(maps[argmax], 255);

    let probs = net.classify(&x, 1).unwrap().remove(0);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top5 = h["top5"].as_array().unwrap();
    assert_eq!(top5.len(), 5);
    for (g, &c) in top5.iter().zip(&order) {
        assert_eq!(g["class"].as_u64(), Some(c as u64));
        assert_eq!(g["label"], imagenet_label(c));
        assert!((g["prob"].as_f64().unwrap() - probs[c] as f64).abs() < 1e-5);
    }
    // Where the network looked: the centre 87.5% square of the photo.
    let t = &h["transform"];
    assert_eq!(t["orig_w"].as_u64(), Some(img.width() as u64));
    let side = t["crop"][2].as_f64().unwrap();
    assert!((side - 0.875 * img.width().min(img.height()) as f64).abs() <= 1.0);

    // Without ?layer= the default (a middle layer) is used.
    let r = post(&srv.addr, "/api/frame", &bytes);
    let (h, _) = parse_frame(&r.body);
    let layers = get(&srv.addr, "/api/layers").json();
    assert_eq!(h["layer"], layers["default"]);
}

#[test]
fn bad_frames_get_an_error_and_the_server_keeps_running() {
    let mut srv = Server::start(&[]);
    let good = std::fs::read(&demo_photos(1)[0]).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"hello, not an image".to_vec(),
            "not a recognised image",
        ),
        ("empty", Vec::new(), "empty"),
        ("truncated JPEG", good[..100].to_vec(), "cannot decode"),
        // A PPM header claiming 10000 x 10000 pixels: refused before decoding.
        (
            "huge header",
            b"P6\n10000 10000\n255\n\x00\x00\x00".to_vec(),
            "10000x10000",
        ),
    ];
    for (what, body, says) in cases {
        let r = post(&srv.addr, "/api/frame", &body);
        assert_eq!(r.status, 400, "{what}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(says), "{what}: {e}");
        assert!(srv.alive(), "{what} took the server down");
    }
    let r = post(&srv.addr, "/api/frame?layer=no.such.layer", &good);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("no.such.layer"));
    // Still serving real frames afterwards.
    let r = post(&srv.addr, "/api/frame?layer=stem", &good);
    assert_eq!(r.status, 200);
    assert_eq!(parse_frame(&r.body).1.len(), 32 * 112 * 112);
}

#[test]
fn oversized_uploads_are_refused() {
    let srv = Server::start(&["--max-upload-mb", "1"]);
    // Announced larger than the limit: refused from the header, body unread.
    let r = raw_request(&srv.addr, "POST", "/api/frame", b"", Some((1 << 20) + 1));
    assert_eq!(r.status, 413);
    // Just under the limit is read (and then refused as a picture, not for its size).
    let r = post(&srv.addr, "/api/frame", &vec![b'x'; (1 << 20) - 16]);
    assert_eq!(r.status, 400);
}

#[test]
fn only_indexed_images_are_served_and_only_by_id() {
    let f = fixture(3);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let list = get(&srv.addr, "/api/images").json();
    assert_eq!(list["total"], 3, "the broken file is not listed: {list}");
    let first = &list["images"][0];
    let id = first["id"].as_i64().unwrap();
    let r = get(&srv.addr, &format!("/api/image/{id}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let on_disk = std::fs::read(f.photos.join(first["path"].as_str().unwrap())).unwrap();
    assert_eq!(r.body, on_disk);

    // The broken file has an id but is not an indexed picture.
    let conn = rusqlite::Connection::open(&f.db).unwrap();
    let broken: i64 = conn
        .query_row(
            "SELECT id FROM image WHERE path = 'zz_broken.jpg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // A tampered database row must not lead outside the indexed directory either.
    let secret = f.tmp.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    let (a, b) = (
        first["id"].as_i64().unwrap(),
        list["images"][1]["id"].as_i64().unwrap(),
    );
    conn.execute(
        "UPDATE image SET path_raw = CAST('../secret.txt' AS BLOB) WHERE id = ?1",
        [a],
    )
    .unwrap();
    conn.execute(
        "UPDATE image SET path_raw = CAST(?2 AS BLOB) WHERE id = ?1",
        rusqlite::params![b, secret.to_str().unwrap()],
    )
    .unwrap();
    drop(conn);

    let attempts = [
        format!("/api/image/{broken}"),
        format!("/api/image/{a}"),
        format!("/api/image/{b}"),
        "/api/image/0".into(),
        "/api/image/-1".into(),
        "/api/image/99999".into(),
        "/api/image/1.5".into(),
        "/api/image/../../../../etc/passwd".into(),
        "/api/image/..%2f..%2f..%2f..%2fetc%2fpasswd".into(),
        "/api/image/%2e%2e/%2e%2e/etc/passwd".into(),
        "/api/image/%2Fetc%2Fpasswd".into(),
        format!("/api/image/{}", secret.display()),
        "/../../../../etc/passwd".into(),
        "/page.js/../../Cargo.toml".into(),
        "/%2e%2e/%2e%2e/Cargo.toml".into(),
        "/photos/animals__Cat.jpg".into(),
        "/ix.db".into(),
        "/api/image/1%00".into(),
    ];
    for path in &attempts {
        let r = get(&srv.addr, path);
        assert!((400..500).contains(&r.status), "{path}: HTTP {}", r.status);
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            !text.contains("root:") && !text.contains("TOP SECRET"),
            "{path}: {text}"
        );
        assert!(!text.contains("[package]"), "{path}: {text}");
    }
}

#[test]
fn a_unit_shows_its_top_images_from_the_index_and_its_filter() {
    let f = fixture(10);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let rep = get(&srv.addr, "/api/unit/blocks.7/3").json();
    assert_eq!(rep["indexed"], true);
    let top = rep["top"].as_array().unwrap();
    assert_eq!(top.len(), 9);
    // The same images, in the same order, as `neurodex top`.
    let out = Command::new(BIN)
        .args([
            "top",
            "--db",
            f.db.to_str().unwrap(),
            "--layer",
            "blocks.7",
            "--unit",
            "3",
        ])
        .arg("--json")
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (mine, theirs) in top.iter().zip(cli["images"].as_array().unwrap()) {
        assert_eq!(mine["path"], theirs["path"]);
        assert_eq!(mine["box"], theirs["box"]);
    }
    let values: Vec<f64> = top.iter().map(|t| t["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    // Each crop is a PNG at most 112 px a side, with the field's aspect (square here,
    // padded where the field spills past the border).
    for t in top {
        let url = t["crop"].as_str().unwrap();
        let png = decode_base64(url.strip_prefix("data:image/png;base64,").unwrap());
        let crop = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(crop.dimensions(), (112, 112), "{}", t["path"]);
    }
    // blocks.7 sums 1x1 projections: no single filter picture.
    assert!(rep["filter"].is_null());
    // No labels in this index: no concepts, and no hint (no classifier behind blocks.7).
    assert_eq!(rep["concepts"].as_array().unwrap().len(), 0);
    assert_eq!(rep["labels"].as_array().unwrap().len(), 0);
    assert!(rep["hints"].is_null());
    let list = get(&srv.addr, "/api/concepts").json();
    assert_eq!(list["concepts"].as_array().unwrap().len(), 0, "{list}");

    // At the head the field (851 px) is larger than the input: each picture is the
    // region where the unit fired, not the photo shrunk into hatched padding.
    let rep = get(&srv.addr, "/api/unit/head/415").json();
    for t in rep["top"].as_array().unwrap() {
        let url = t["crop"].as_str().unwrap();
        let png = decode_base64(url.strip_prefix("data:image/png;base64,").unwrap());
        let crop = image::load_from_memory(&png).unwrap().to_rgb8();
        let hatched = crop
            .pixels()
            .filter(|p| neurodex::render::tile::is_padding(**p))
            .count();
        assert!(
            hatched * 20 < (crop.width() * crop.height()) as usize,
            "{}: {hatched} hatched pixels of {:?}",
            t["path"],
            crop.dimensions()
        );
    }

    // The stem's filters read RGB: unit 0's filter drawn per the weights, each
    // channel symmetric around mid-grey on the filter's largest |weight|.
    let rep = get(&srv.addr, "/api/unit/stem/0").json();
    let url = rep["filter"].as_str().expect("stem has filter pictures");
    let png = decode_base64(url.strip_prefix("data:image/png;base64,").unwrap());
    let pic = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(pic.dimensions(), (96, 96));
    let net = Network::embedded_default().unwrap();
    let (_, w) = net.conv_weights(net.arch.resolve("stem").unwrap()).unwrap();
    let w0 = &w[..27];
    let m = w0.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (ky, kx) in [(0usize, 0usize), (1, 1), (2, 0)] {
        let px = pic.get_pixel(kx as u32 * 32 + 16, ky as u32 * 32 + 16).0;
        for c in 0..3 {
            let want = (127.5 + 127.5 * w0[c * 9 + ky * 3 + kx] / m).round() as i32;
            assert!((px[c] as i32 - want).abs() <= 1, "({ky},{kx}) channel {c}");
        }
    }

    // A layer the database does not index: the filter logic still runs, no top images.
    let rep = get(&srv.addr, "/api/unit/blocks.10/0").json();
    assert_eq!(rep["indexed"], false);
    assert_eq!(rep["top"].as_array().unwrap().len(), 0);
    // An existing database's layers are fixed: the advice is a new one.
    let note = rep["notes"][0].as_str().unwrap();
    assert!(
        note.contains("which holds stem, blocks.4, blocks.7"),
        "{note}"
    );
    assert!(
        note.contains("index into a new --db with --layers blocks.10"),
        "{note}"
    );
    assert_eq!(get(&srv.addr, "/api/unit/blocks.7/80").status, 404);
    assert_eq!(get(&srv.addr, "/api/unit/nope/0").status, 404);
    assert_eq!(get(&srv.addr, "/api/unit/blocks.7/x").status, 400);
}

#[test]
fn the_page_and_the_layer_list_need_no_build_step() {
    let srv = Server::start(&[]);
    let r = get(&srv.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    let html = String::from_utf8(r.body).unwrap();
    for asset in ["/page.js", "/page.css"] {
        assert!(html.contains(asset));
        assert_eq!(get(&srv.addr, asset).status, 200, "{asset}");
    }
    let l = get(&srv.addr, "/api/layers").json();
    assert_eq!(l["model"], "efficientnet-lite0");
    assert!(l["db"].is_null());
    let net = Network::embedded_default().unwrap();
    let names: Vec<&str> = l["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    let taps: Vec<&str> = net
        .arch
        .taps()
        .iter()
        .map(|&i| net.arch.nodes[i].name.as_str())
        .collect();
    assert_eq!(names, taps, "every tap is offered, in network order");
    // No database: no images, and units say why they have no top images.
    assert_eq!(get(&srv.addr, "/api/image/1").status, 404);
    let rep = get(&srv.addr, "/api/unit/blocks.7/0").json();
    assert!(rep["notes"][0].as_str().unwrap().contains("--db"));
    let list = get(&srv.addr, "/api/concepts");
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["concepts"], serde_json::json!([]));
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |a, v| a << 6 | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

/// A YUV4MPEG2 clip of `frames` frames of `img` (I420, JPEG full-range coefficients),
/// each shifted `step` pixels further right (wrapping), so the camera picture moves.
fn write_y4m(path: &Path, img: &RgbImage, frames: u32, step: u32) {
    let (w, h) = img.dimensions();
    assert!(w % 2 == 0 && h % 2 == 0);
    let mut out = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n").into_bytes();
    for f in 0..frames {
        let px = |x: u32, y: u32| {
            img.get_pixel((x + w - (f * step) % w) % w, y)
                .0
                .map(|v| v as f32)
        };
        out.extend_from_slice(b"FRAME\n");
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = px(x, y);
                out.push(
                    (0.299 * r + 0.587 * g + 0.114 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
        let mut u = Vec::new();
        let mut v = Vec::new();
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let mut acc = [0f32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = px(x + dx, y + dy);
                    for c in 0..3 {
                        acc[c] += p[c] / 4.0;
                    }
                }
                let [r, g, b] = acc;
                u.push(
                    (128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
                v.push(
                    (128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
        out.extend_from_slice(&u);
        out.extend_from_slice(&v);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn y4m_frames_hold_the_picture_in_i420() {
    // White left half, black right half, 4x2: Y planes 255 / 0, chroma neutral.
    let img = RgbImage::from_fn(4, 2, |x, _| {
        if x < 2 {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.y4m");
    write_y4m(&p, &img, 2, 2);
    let b = std::fs::read(&p).unwrap();
    let head = b"YUV4MPEG2 W4 H2 F10:1 Ip A1:1 C420jpeg\n";
    assert!(b.starts_with(head));
    let frame = 6 + 8 + 2 + 2;
    assert_eq!(b.len(), head.len() + 2 * frame);
    let f0 = &b[head.len() + 6..head.len() + frame];
    assert_eq!(f0, [255, 255, 0, 0, 255, 255, 0, 0, 128, 128, 128, 128]);
    // The second frame is shifted 2 px right (wrapping): black first.
    let f1 = &b[head.len() + frame + 6..];
    assert_eq!(&f1[..4], [0, 0, 255, 255]);
}

/// The page in a real headless Chromium with a fake camera (tests/browser/serve.mjs).
/// Skipped with a notice when Chromium or the node modules are missing, unless CI is set.
#[test]
fn live_view_in_headless_chromium_with_a_fake_camera() {
    let Some((browser_dir, chromium)) = common::browser() else {
        return;
    };
    let f = fixture(12);
    add_markup_label(&f.db);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    // Kept after the run for people to look at.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&out).unwrap();
    let _ = std::fs::remove_file(out.join("serve.png"));
    let cat = image::open(demo_dir().join("animals__Cat.jpg"))
        .unwrap()
        .to_rgb8();
    let cam = image::imageops::resize(&cat, 320, 240, image::imageops::FilterType::Triangle);
    write_y4m(&out.join("camera.y4m"), &cam, 8, 12);

    let res = Command::new("node")
        .arg(browser_dir.join("serve.mjs"))
        .arg(srv.url())
        .arg(&out)
        .arg(out.join("camera.y4m"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let log =
        String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert!(summary["frames"].as_u64().unwrap() >= 10, "{summary}");
    assert!(summary["grid_changes"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["top9"], 9, "{summary}");
    // The concept picker went to the markup label's best unit, whose labels show it
    // as text.
    assert_eq!(summary["concepts"], 1, "{summary}");
    assert!(
        summary["concept_labels"]
            .as_str()
            .is_some_and(|t| t.contains(MARKUP_LABEL)),
        "{summary}"
    );
    assert_eq!(summary["injected"], 0, "{summary}");
    // The selected unit's guided projection came with the frames, and is a picture.
    assert!(summary["projections"].as_u64().unwrap() >= 3, "{summary}");
    assert!(
        summary["projection_colours"].as_u64().unwrap() > 50,
        "{summary}"
    );
    let shot = image::open(out.join("serve.png")).unwrap().to_rgb8();
    assert!(shot.width() >= 1000 && shot.height() >= 600);
    eprintln!("browser summary: {summary}");
    eprintln!(
        "live view: {} fps ({}) on layer {}; screenshot {}",
        summary["fps"],
        summary["fps_text"],
        summary["layer"],
        out.join("serve.png").display()
    );
}

// ---- Hardening (issue #13): hosts and origins, files swapped after indexing,
// ---- idle and slow connections, uploads and query values.

/// Whether a reply is a JSON `{"error": ...}` that contains `says`.
fn json_error_says(r: &Reply, says: &str) -> bool {
    r.header("content-type") == Some("application/json")
        && r.json()["error"].as_str().is_some_and(|e| e.contains(says))
}

#[test]
fn a_request_naming_a_host_that_is_not_allowed_is_refused_with_advice() {
    let f = fixture(2);
    let srv = Server::start(&["--db", f.db.to_str().unwrap(), "--allow-host", "photos.lan"]);
    let port = srv.addr.rsplit(':').next().unwrap().to_string();
    // DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "127.0.0.1.evil.example",
    ] {
        for path in [
            "/",
            "/api/layers",
            "/api/image/1",
            "/api/images",
            "/api/concepts",
        ] {
            let r = request_with(&srv.addr, "GET", path, &[("Host", host)], b"", None);
            assert_eq!(r.status, 421, "Host {host} {path}");
            assert!(json_error_says(&r, "--allow-host"), "Host {host} {path}");
        }
    }
    // An absolute request target names the host too, and is checked the same way.
    let target = "http://evil.example/api/image/1";
    let r = request_with(
        &srv.addr,
        "GET",
        target,
        &[("Host", "evil.example")],
        b"",
        None,
    );
    assert_eq!(r.status, 421);
    // Loopback names, with or without the port, the bound address and the added name.
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        "LocalHost.".to_string(),
        "127.0.0.1".into(),
        srv.addr.clone(),
        "[::1]".into(),
        format!("[::1]:{port}"),
        "photos.lan".into(),
        format!("photos.lan:{port}"),
    ] {
        let r = request_with(
            &srv.addr,
            "GET",
            "/api/layers",
            &[("Host", &host)],
            b"",
            None,
        );
        assert_eq!(r.status, 200, "Host {host}");
    }
}

#[test]
fn a_frame_posted_from_another_origin_is_refused() {
    let srv = Server::start(&[]);
    let port = srv.addr.rsplit(':').next().unwrap().to_string();
    let photo = std::fs::read(&demo_photos(1)[0]).unwrap();
    let other_port = format!("http://localhost:{}", port.parse::<u16>().unwrap() ^ 1);
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", other_port.as_str())],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ] {
        let r = request_with(&srv.addr, "POST", "/api/frame", &headers, &photo, None);
        assert_eq!(r.status, 403, "{headers:?}");
        assert!(json_error_says(&r, "origin"), "{headers:?}");
    }
    // The page itself: same origin, as a browser sends it.
    let own = format!("http://{}", srv.addr);
    let same = [("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let r = request_with(&srv.addr, "POST", "/api/frame", &same, &photo, None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A tool without browser headers (curl) is not a cross-origin page.
    assert_eq!(post(&srv.addr, "/api/frame", &photo).status, 200);
}

/// The indexed photo of image `id`: its path under the fixture's root.
fn indexed_photo(f: &Fixture, srv: &Server, rank: usize) -> (i64, PathBuf) {
    let list = get(&srv.addr, "/api/images").json();
    let img = &list["images"][rank];
    (
        img["id"].as_i64().unwrap(),
        f.photos.join(img["path"].as_str().unwrap()),
    )
}

#[test]
fn a_symlink_swapped_in_after_indexing_is_not_served_even_with_the_same_size_and_mtime() {
    let f = fixture(2);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let (id, photo) = indexed_photo(&f, &srv, 0);
    assert_eq!(get(&srv.addr, &format!("/api/image/{id}")).status, 200);
    // A secret outside the root, made to look like the photo to a size and mtime check.
    let meta = std::fs::metadata(&photo).unwrap();
    let mut secret = b"TOP SECRET ".to_vec();
    secret.resize(meta.len() as usize, b'!');
    let secret_path = f.tmp.path().join("secret.jpg");
    std::fs::write(&secret_path, &secret).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&secret_path)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    std::fs::remove_file(&photo).unwrap();
    std::os::unix::fs::symlink(&secret_path, &photo).unwrap();
    let r = get(&srv.addr, &format!("/api/image/{id}"));
    assert!(!String::from_utf8_lossy(&r.body).contains("TOP SECRET"));
    assert_eq!(r.status, 404);
    assert!(
        json_error_says(&r, "outside the indexed folder"),
        "{}",
        r.json()
    );
}

#[test]
fn a_file_replaced_after_indexing_is_reported_changed_not_served() {
    let f = fixture(2);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let (a, photo_a) = indexed_photo(&f, &srv, 0);
    let (b, photo_b) = indexed_photo(&f, &srv, 1);
    // Another size.
    std::fs::write(&photo_a, b"replaced").unwrap();
    // The same size, but written later (another mtime).
    let mtime = std::fs::metadata(&photo_b).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&photo_b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&photo_b, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&photo_b)
        .unwrap()
        .set_modified(mtime + std::time::Duration::from_secs(7))
        .unwrap();
    for id in [a, b] {
        let r = get(&srv.addr, &format!("/api/image/{id}"));
        assert_eq!(r.status, 409, "image {id}");
        assert!(
            json_error_says(&r, "changed since it was indexed"),
            "{}",
            r.json()
        );
    }
}

#[test]
fn symlinks_indexed_inside_the_root_are_served_and_ones_leading_out_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let outside = tmp.path().join("elsewhere");
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let [p, q] = [&demo_photos(2)[0], &demo_photos(2)[1]];
    std::fs::copy(p, root.join("real/a.jpg")).unwrap();
    std::fs::copy(q, outside.join("b.jpg")).unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    let db = tmp.path().join("ix.db");
    let out = Command::new(BIN)
        .args([
            "index",
            root.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(["--layers", "stem", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let srv = Server::start(&["--db", db.to_str().unwrap()]);
    let list = get(&srv.addr, "/api/images").json();
    let id = |path: &str| {
        list["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in {list}"))["id"]
            .as_i64()
            .unwrap()
    };
    for inside in ["alias/a.jpg", "real/a.jpg"] {
        let r = get(&srv.addr, &format!("/api/image/{}", id(inside)));
        assert_eq!(r.status, 200, "{inside}");
        assert_eq!(r.body, std::fs::read(p).unwrap());
    }
    let r = get(&srv.addr, &format!("/api/image/{}", id("out/b.jpg")));
    assert_eq!(r.status, 404);
    assert!(
        json_error_says(&r, "outside the indexed folder"),
        "{}",
        r.json()
    );
}

/// Reads from `s` until the server closes it; panics if it stays open `guard` long.
fn closed_by_server(s: &mut TcpStream, guard: std::time::Duration) -> Vec<u8> {
    s.set_read_timeout(Some(guard)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("still open after {guard:?} ({e}); read {got:?}"),
    }
}

#[test]
fn a_client_that_never_finishes_its_request_head_or_stays_idle_is_disconnected() {
    let srv = Server::start(&[]);
    // Slow headers: a head that never ends.
    let mut slow = TcpStream::connect(&srv.addr).unwrap();
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Wait: ", srv.addr).as_bytes())
        .unwrap();
    // Idle keep-alive: one answered request, then nothing.
    let mut idle = TcpStream::connect(&srv.addr).unwrap();
    idle.write_all(format!("GET /page.css HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr).as_bytes())
        .unwrap();
    // A failure bound only: the server's own limit is a few seconds.
    let guard = std::time::Duration::from_secs(60);
    let got = closed_by_server(&mut idle, guard);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    closed_by_server(&mut slow, guard);
}

#[test]
fn idle_sockets_beyond_the_descriptor_limit_do_not_stop_other_clients() {
    // 64 descriptors for the server, 120 idle connections, then a real request.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {BIN} serve --addr 127.0.0.1:0"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(|l| eprintln!("server: {}", l.unwrap_or_default())));
    let srv = Server { child, addr };
    let idle: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    let r = get(&srv.addr, "/api/layers");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "efficientnet-lite0");
    drop(idle);
}

#[test]
fn a_truncated_jpeg_frame_is_refused_not_decoded_padded() {
    let srv = Server::start(&[]);
    let photo = std::fs::read(&demo_photos(1)[0]).unwrap();
    // Past the headers, inside the scan: a decoder that pads would "succeed".
    for keep in [photo.len() / 2, photo.len() - 10] {
        let r = post(&srv.addr, "/api/frame", &photo[..keep]);
        assert_eq!(r.status, 400, "{keep} of {} bytes", photo.len());
        assert!(json_error_says(&r, "truncated"), "{}", r.json());
    }
    // Bytes after the end marker are no reason to refuse a complete picture.
    let mut trailing = photo.clone();
    trailing.extend_from_slice(b"trailing bytes after EOI");
    assert_eq!(post(&srv.addr, "/api/frame", &trailing).status, 200);
}

#[test]
fn malformed_query_and_path_values_answer_json_errors() {
    let f = fixture(2);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    for (path, status, says) in [
        ("/api/images?offset=abc", 400, "offset"),
        ("/api/images?limit=-1", 400, "limit"),
        ("/api/unit/blocks.7/notanumber", 400, "notanumber"),
        ("/api/unit/blocks.7/-1", 400, "-1"),
        ("/api/image/abc", 400, "abc"),
        (
            "/api/image/99999999999999999999",
            400,
            "99999999999999999999",
        ),
    ] {
        let r = get(&srv.addr, path);
        assert_eq!(r.status, status, "{path}");
        assert!(
            json_error_says(&r, says),
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let photo = std::fs::read(&demo_photos(1)[0]).unwrap();
    let r = post(&srv.addr, "/api/frame?layer=stem&layer=head", &photo);
    assert_eq!(r.status, 400);
    assert!(
        json_error_says(&r, "layer"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn an_offset_past_the_end_answers_an_empty_page_not_the_first() {
    let f = fixture(3);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    for offset in [
        "3",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let r = get(&srv.addr, &format!("/api/images?offset={offset}"));
        assert_eq!(r.status, 200, "offset {offset}");
        let v = r.json();
        assert_eq!(v["total"], 3, "offset {offset}");
        assert_eq!(
            v["images"].as_array().unwrap().len(),
            0,
            "offset {offset}: {v}"
        );
    }
    let r = get(&srv.addr, "/api/images?offset=1&limit=18446744073709551615").json();
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
}

// ---- Concepts (issue 16): the selected unit's concepts, each concept's best unit.

/// A label that is markup, with characters JSON and HTML treat specially.
const MARKUP_LABEL: &str = "<script>alert(\"x\")</script> & <b>co</b>";

/// The 20 smallest demo photos indexed on blocks.14 and head, without labels.
struct Labelled {
    _photos: tempfile::TempDir,
    _tmp: tempfile::TempDir,
    db: PathBuf,
}

fn labelled_fixture() -> Labelled {
    let photos = common::photo_folder(20);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("ix.db");
    let (code, _, err) = common::run(&[
        "index",
        photos.path().to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--layers",
        "blocks.14,head",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    Labelled {
        _photos: photos,
        _tmp: tmp,
        db,
    }
}

/// Labels the first four indexed photos `MARKUP_LABEL`, in the set `tricky`.
fn add_markup_label(db: &Path) {
    let mut store = neurodex::store::Store::open(db).unwrap();
    let images = store.ok_images(0, 4).unwrap();
    let markup: Vec<(i64, String)> = images
        .iter()
        .map(|(id, _)| (*id, MARKUP_LABEL.to_string()))
        .collect();
    store.put_labels("tricky", "test", &markup, false).unwrap();
}

/// Labels the fixture with the demo's category and face labels (by file name) and
/// `MARKUP_LABEL` on four photos.
fn add_labels(db: &Path) {
    let mut store = neurodex::store::Store::open(db).unwrap();
    let images = store.ok_images(0, u64::MAX).unwrap();
    let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/labels");
    for set in ["category", "face"] {
        let csv = std::fs::read_to_string(labels.join(format!("{set}.csv"))).unwrap();
        let pairs: Vec<(i64, String)> = csv
            .lines()
            .filter_map(|l| l.strip_prefix("images/")?.split_once(','))
            .filter_map(|(file, label)| {
                let (id, _) = images.iter().find(|(_, p)| p == file)?;
                Some((*id, label.to_string()))
            })
            .collect();
        assert!(pairs.len() >= 4, "{set}: {pairs:?}");
        store.put_labels(set, "test", &pairs, false).unwrap();
    }
    drop(store);
    add_markup_label(db);
}

fn close(json: &serde_json::Value, want: f32) -> bool {
    (json.as_f64().unwrap() - want as f64).abs() < 1e-6
}

#[test]
fn the_selected_unit_carries_its_concepts_as_the_library_scores_them() {
    use neurodex::concepts::{self, Options};
    let f = labelled_fixture();
    let db = f.db.to_str().unwrap();
    let net = Network::embedded_default().unwrap();

    // No labels yet: no concepts, but the head's classifier hint, which needs none.
    {
        let srv = Server::start(&["--db", db]);
        let list = get(&srv.addr, "/api/concepts").json();
        assert_eq!(list["concepts"].as_array().unwrap().len(), 0, "{list}");
        let rep = get(&srv.addr, "/api/unit/head/7").json();
        assert_eq!(rep["concepts"].as_array().unwrap().len(), 0);
        assert_eq!(rep["labels"].as_array().unwrap().len(), 0);
        assert_eq!(rep["hints"].as_array().map(Vec::len), Some(5), "{rep}");
    }

    add_labels(&f.db);
    let srv = Server::start(&["--db", db]);
    let store = neurodex::store::Store::open_readonly(&f.db).unwrap();
    let s = concepts::score(&store, &Options::default()).unwrap();
    let list = get(&srv.addr, "/api/concepts").json();
    let entries = list["concepts"].as_array().unwrap();
    assert_eq!(list["images"], s.images);
    assert_eq!(entries.len(), s.concepts.len(), "{list}");
    // Each concept names its best unit, the first of the library's ranking.
    for (c, e) in entries.iter().enumerate() {
        let info = &s.concepts[c];
        assert_eq!(e["concept"], info.qualified());
        assert_eq!(e["images"], info.images);
        let ranked = s.ranked(c);
        let best = &ranked[0];
        assert_eq!(e["best"]["layer"], best.layer.layer, "{e}");
        assert_eq!(e["best"]["unit"], best.unit, "{e}");
        assert!(close(&e["best"]["ap"], best.score.ap), "{e}");
        assert!(close(&e["best"]["auroc"], best.score.auroc), "{e}");
        assert_eq!(e["best"]["detector"], s.is_detector(c, &best.score));
        let detectors = ranked.iter().filter(|r| s.is_detector(c, &r.score)).count();
        assert_eq!(e["detectors"], detectors, "{e}");
    }

    // The best face unit's report: its best concepts as `Scores::best` has them, the
    // labels of its top images as `label_counts` counts them.
    let face = &entries
        .iter()
        .find(|e| e["concept"] == "face/face")
        .unwrap()["best"];
    let (layer, unit) = (
        face["layer"].as_str().unwrap(),
        face["unit"].as_u64().unwrap() as usize,
    );
    let rep = get(&srv.addr, &format!("/api/unit/{layer}/{unit}")).json();
    let l = s.layer(layer).unwrap();
    let want = s.best(l, unit, 5);
    let got = rep["concepts"].as_array().unwrap();
    assert_eq!(got.len(), want.len().min(5), "{rep}");
    for (g, (c, sc)) in got.iter().zip(&want) {
        assert_eq!(g["concept"], s.concepts[*c].qualified());
        assert!(
            close(&g["ap"], sc.ap) && close(&g["auroc"], sc.auroc),
            "{g}"
        );
        assert_eq!(g["top9"], sc.top9);
        assert_eq!(g["detector"], s.is_detector(*c, sc));
    }
    let ids: Vec<i64> = rep["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["image_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 9);
    let counts = concepts::label_counts(&store, &ids).unwrap();
    let labels = rep["labels"].as_array().unwrap();
    assert_eq!(labels.len(), counts.len(), "{rep}");
    for (g, w) in labels.iter().zip(&counts) {
        let w = serde_json::json!({ "set": w.set, "concept": w.concept, "count": w.count });
        assert_eq!(g, &w);
    }
    // The face count among the top 9 is the unit's top-9 score for face.
    let face_count = counts
        .iter()
        .find(|l| l.set == "face")
        .map_or(0, |l| l.count);
    assert_eq!(face["top9"], face_count);
    if layer != "head" {
        assert!(rep["hints"].is_null(), "only the head has a hint: {rep}");
    }

    // The head: the hint as `concepts::hints` gives it.
    let head = store
        .layers()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "head")
        .unwrap();
    let hints = concepts::hints(&net, &head, &s.layer("head").unwrap().mean_value, 5).unwrap();
    let rep = get(&srv.addr, "/api/unit/head/7").json();
    let got = rep["hints"].as_array().unwrap();
    assert_eq!(got.len(), 5);
    for (g, w) in got.iter().zip(&hints[7]) {
        assert_eq!(g["class"], w.class);
        assert_eq!(g["name"], w.name);
        assert!(close(&g["push"], w.push), "{g}");
    }
    assert_eq!(rep["concepts"].as_array().unwrap().len(), 5);
}

#[test]
fn a_label_holding_markup_comes_back_escaped_and_the_page_sets_it_as_text() {
    let f = labelled_fixture();
    add_labels(&f.db);
    let srv = Server::start(&["--db", f.db.to_str().unwrap()]);
    let r = get(&srv.addr, "/api/concepts");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    // In the reply's text the markup is JSON escapes; parsed, it is the label itself.
    assert!(
        !text.contains('<') && !text.contains('>') && !text.contains('&'),
        "{text}"
    );
    assert!(text.contains(r"\u003cscript\u003e"), "{text}");
    let list = r.json();
    let entry = list["concepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == MARKUP_LABEL)
        .unwrap_or_else(|| panic!("no {MARKUP_LABEL:?} in {list}"))
        .clone();
    assert_eq!(entry["concept"], format!("tricky/{MARKUP_LABEL}"));
    // Its best unit's report names it among the labels of the top images, escaped.
    let best = &entry["best"];
    assert!(best["top9"].as_u64().unwrap() > 0, "{entry}");
    let r = get(
        &srv.addr,
        &format!(
            "/api/unit/{}/{}",
            best["layer"].as_str().unwrap(),
            best["unit"]
        ),
    );
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(!text.contains("<script"), "{text}");
    let rep = r.json();
    assert!(
        rep["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["concept"] == MARKUP_LABEL && l["set"] == "tricky"),
        "{rep}"
    );
    // The page builds everything from text: no HTML-parsing sink anywhere in it, and
    // the concept list and the report go through textContent.
    let js = String::from_utf8(get(&srv.addr, "/page.js").body).unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "srcdoc",
    ] {
        assert!(!js.contains(sink), "page.js uses {sink}");
    }
    assert!(js.contains("/api/concepts"));
    assert!(
        js.contains("o.textContent = `${c.concept} "),
        "the picker's options"
    );
    assert!(
        js.contains("td.textContent = text"),
        "the concept table's cells"
    );
    assert!(
        js.contains("$('unit-labels').textContent"),
        "the labels line"
    );
    // The new endpoint answers only for this machine's names, like the others.
    for host in ["evil.example", "127.0.0.1.evil.example"] {
        let r = request_with(
            &srv.addr,
            "GET",
            "/api/concepts",
            &[("Host", host)],
            b"",
            None,
        );
        assert_eq!(r.status, 421, "Host {host}");
        assert!(json_error_says(&r, "--allow-host"), "Host {host}");
    }
}
