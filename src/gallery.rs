//! A static HTML gallery of an index, readable from `file://` or any static server:
//! an index of layers, a page per layer with every unit's top images as thumbnails,
//! and a page per unit with its top images large (receptive-field crop and activation
//! heat map), its peak statistics, its filter where one picture shows it, and links
//! to its neighbours. Every page has its data as JSON beside it.
//!
//! Work is image-major: each image is decoded and run through the network once, and
//! every tile that shows it is cut and written then, in parallel.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde_json::json;

use crate::preprocess::{self, Transform};
use crate::query::{self, TopHit};
use crate::render::colormap::Colormap;
use crate::render::filters::{self, FilterShape};
use crate::render::tile::{self, Pyramid, UnitMap};
use crate::render::top;
use crate::store::{self, LayerInfo, Store, UnitStats};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    /// Top images per unit.
    pub k: usize,
    /// Tile side in pixels.
    pub tile: u32,
    /// Draw activation heat maps (re-runs each top image through the network).
    pub heat: bool,
    /// Weights when the index was not built with the embedded ones.
    pub weights: Option<PathBuf>,
    /// Only these layers (default: all indexed).
    pub layers: Option<Vec<String>>,
}

impl Options {
    pub fn new(out: impl Into<PathBuf>) -> Options {
        Options {
            out: out.into(),
            k: 9,
            tile: 112,
            heat: true,
            weights: None,
            layers: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub layers: usize,
    pub units: usize,
    pub pages: usize,
    pub tiles: usize,
    pub images: usize,
    pub missing_images: usize,
    pub warnings: Vec<String>,
}

/// A name safe as one path component (layer names hold dots, never slashes, but be sure).
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a relative URL path (slashes kept), so any file name links.
fn url(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn write_jpeg(img: &RgbImage, path: &Path) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    image::codecs::jpeg::JpegEncoder::new_with_quality(BufWriter::new(f), 85)
        .encode_image(img)
        .map_err(|e| Error::Other(format!("{}: cannot write JPEG: {e}", path.display())))
}

/// Tile file names, relative to the gallery root.
fn crop_tile(l: &str, image_id: i64, y: usize, x: usize) -> String {
    format!("t/{}/c{image_id}_{y}_{x}.jpg", slug(l))
}
fn heat_tile(l: &str, unit: usize, image_id: i64) -> String {
    format!("t/{}/h{unit}_{image_id}.jpg", slug(l))
}
fn filter_file(l: &str, unit: usize) -> String {
    format!("f/{}/{unit}.png", slug(l))
}
fn layer_page(l: &str) -> String {
    format!("layers/{}.html", slug(l))
}
fn unit_page(l: &str, unit: usize) -> String {
    format!("units/{}/{unit}.html", slug(l))
}

/// An image's file, transform and the tiles to cut from it.
type ImageJobs = (PathBuf, Transform, Vec<Job>);

/// One tile to cut from an image.
struct Job {
    layer: usize,
    unit: usize,
    y: usize,
    x: usize,
    /// Unit's heat scale (0 to its best peak).
    range: (f32, f32),
    value: f32,
}

/// Builds the gallery of `store` into `opts.out`.
pub fn build(store: &Store, opts: &Options) -> Result<Summary> {
    let run = store.run_info()?;
    let mut layers = store.layers()?;
    if let Some(want) = &opts.layers {
        let picked: Vec<LayerInfo> = want
            .iter()
            .map(|w| query::layer(store, w))
            .collect::<Result<_>>()?;
        layers = picked;
    }
    let stats_all = store.load_stats(&store.layers()?)?;
    let stats: Vec<Vec<UnitStats>> = layers
        .iter()
        .map(|l| stats_all.get(l.id as usize).cloned().unwrap_or_default())
        .collect();
    let k = opts.k.clamp(1, run.top_k.max(1));
    let tops: Vec<Vec<Vec<TopHit>>> = layers
        .iter()
        .map(|l| {
            (0..l.channels)
                .map(|u| query::top(store, &l.name, u, k))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;

    let mut summary = Summary {
        layers: layers.len(),
        units: layers.iter().map(|l| l.channels).sum(),
        ..Default::default()
    };
    let net = if opts.heat {
        match top::index_network(store, opts.weights.as_deref()) {
            Ok((net, warn)) => {
                summary.warnings.extend(warn);
                Some(net)
            }
            Err(e) => {
                summary
                    .warnings
                    .push(format!("no heat maps: cannot load the network: {e}"));
                None
            }
        }
    } else {
        None
    };

    // Jobs per image.
    let mut per_image: BTreeMap<i64, ImageJobs> = BTreeMap::new();
    for (li, units) in tops.iter().enumerate() {
        for (u, hits) in units.iter().enumerate() {
            let best = hits.first().map_or(0.0, |h| h.value);
            for h in hits {
                per_image
                    .entry(h.image_id)
                    .or_insert_with(|| (h.abs_path.clone(), h.transform.clone(), Vec::new()))
                    .2
                    .push(Job {
                        layer: li,
                        unit: u,
                        y: h.y,
                        x: h.x,
                        range: (0.0, best),
                        value: h.value,
                    });
            }
        }
    }
    summary.images = per_image.len();
    for l in &layers {
        let d = opts.out.join("t").join(slug(&l.name));
        fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }

    let taps: Vec<usize> = layers.iter().map(|l| l.node).collect();
    let entries: Vec<(&i64, &ImageJobs)> = per_image.iter().collect();
    let mut missing: Vec<i64> = Vec::new();
    let mut mismatched = 0usize;
    let mut tiles = 0usize;
    for chunk in entries.chunks(8) {
        let decoded: Vec<Option<Pyramid>> = chunk
            .par_iter()
            .map(|(_, (path, _, _))| {
                preprocess::open_image(path, run.max_pixels)
                    .ok()
                    .map(Pyramid::new)
            })
            .collect();
        // One forward pass for the chunk's readable images, all layers at once.
        let present: Vec<usize> = (0..chunk.len()).filter(|&i| decoded[i].is_some()).collect();
        let acts = match (&net, present.is_empty()) {
            (Some(net), false) => {
                let input: Vec<f32> = present
                    .par_iter()
                    .map(|&i| {
                        preprocess::prepare(
                            decoded[i].as_ref().unwrap().original(),
                            &net.arch.recipe,
                        )
                        .0
                    })
                    .collect::<Vec<_>>()
                    .concat();
                Some(net.forward_raw(&input, present.len(), &taps)?)
            }
            _ => None,
        };
        for (i, (id, _)) in chunk.iter().enumerate() {
            if decoded[i].is_none() {
                missing.push(**id);
            }
        }
        let results: Vec<Result<(usize, usize)>> = present
            .par_iter()
            .enumerate()
            .map(|(slot, &i)| {
                let (id, (_, transform, jobs)) = chunk[i];
                let pyr = decoded[i].as_ref().unwrap();
                let (base, s) = pyr.whole(opts.tile, opts.tile);
                let (mut written, mut bad) = (0, 0);
                let mut crops = std::collections::HashSet::new();
                for job in jobs.iter() {
                    let l = &layers[job.layer];
                    let exact = transform
                        .box_to_original(l.field.unit_box(job.y, job.x))
                        .exact;
                    let cpath = opts.out.join(crop_tile(&l.name, *id, job.y, job.x));
                    if crops.insert((job.layer, job.y, job.x)) {
                        write_jpeg(&pyr.crop(exact, opts.tile, opts.tile), &cpath)?;
                        written += 1;
                    }
                    if let Some(acts) = &acts {
                        let a = &acts[job.layer];
                        let hw = a.h * a.w;
                        let data = &a.image(slot)[job.unit * hw..(job.unit + 1) * hw];
                        let got = data.get(job.y * a.w + job.x).copied().unwrap_or(f32::NAN);
                        if !top::close(got, job.value) {
                            bad += 1;
                        }
                        let map = UnitMap {
                            data,
                            h: a.h,
                            w: a.w,
                        };
                        let img = tile::heat_on(
                            base.clone(),
                            s,
                            transform,
                            &l.field,
                            map,
                            job.range,
                            Colormap::Viridis,
                        );
                        write_jpeg(&img, &opts.out.join(heat_tile(&l.name, job.unit, *id)))?;
                        written += 1;
                    }
                }
                Ok((written, bad))
            })
            .collect();
        for r in results {
            let (w, b) = r?;
            tiles += w;
            mismatched += b;
        }
    }
    summary.tiles = tiles;
    summary.missing_images = missing.len();
    if !missing.is_empty() {
        summary.warnings.push(format!(
            "{} top images could not be read any more; their tiles are marked missing",
            missing.len()
        ));
    }
    if mismatched > 0 {
        summary.warnings.push(format!(
            "{mismatched} recomputed peaks differ from the index by more than 1e-3 relative \
             (images changed since indexing, or other weights)"
        ));
    }
    let missing: std::collections::HashSet<i64> = missing.into_iter().collect();
    let has_heat = net.is_some();

    // Filters, where one picture shows a unit's filter (RGB or single-input).
    let mut filter_shown: Vec<bool> = vec![false; layers.len()];
    if let Some(net) = &net {
        for (li, l) in layers.iter().enumerate() {
            if let Some((g, w)) = net.conv_weights(l.node) {
                let shape = FilterShape {
                    out: g.out_ch,
                    inputs: g.in_ch / g.groups.max(1),
                    kh: g.kernel.0,
                    kw: g.kernel.1,
                };
                if shape.inputs != 1 && shape.inputs != 3 || shape.out != l.channels {
                    continue;
                }
                let zoom = (64 / shape.kh.max(shape.kw).max(1) as u32).max(1);
                (0..shape.out).into_par_iter().try_for_each(|u| {
                    let p = filters::filter_picture(w, shape, u, zoom).expect("1 or 3 inputs");
                    crate::render::save_png(&p, &opts.out.join(filter_file(&l.name, u)))
                })?;
                filter_shown[li] = true;
            }
        }
    }

    // Pages and JSON.
    let ctx = PageCtx {
        run: &run,
        layers: &layers,
        stats: &stats,
        tops: &tops,
        missing: &missing,
        has_heat,
        filters: &filter_shown,
        tile: opts.tile,
    };
    write_file(&opts.out.join("style.css"), STYLE.as_bytes())?;
    write_file(&opts.out.join("index.html"), ctx.index_html().as_bytes())?;
    write_file(
        &opts.out.join("gallery.json"),
        serde_json::to_string_pretty(&ctx.index_json())
            .unwrap()
            .as_bytes(),
    )?;
    summary.pages = 1;
    for (li, l) in layers.iter().enumerate() {
        write_file(
            &opts.out.join(layer_page(&l.name)),
            ctx.layer_html(li).as_bytes(),
        )?;
        let units: Vec<serde_json::Value> = (0..l.channels).map(|u| ctx.unit_json(li, u)).collect();
        write_file(
            &opts.out.join(format!("layers/{}.json", slug(&l.name))),
            serde_json::to_string(&json!({"layer": l.name, "units": units}))
                .unwrap()
                .as_bytes(),
        )?;
        (0..l.channels).into_par_iter().try_for_each(|u| {
            let page = opts.out.join(unit_page(&l.name, u));
            write_file(&page, ctx.unit_html(li, u).as_bytes())?;
            write_file(
                &page.with_extension("json"),
                serde_json::to_string_pretty(&ctx.unit_json(li, u))
                    .unwrap()
                    .as_bytes(),
            )
        })?;
        summary.pages += 1 + l.channels;
    }
    Ok(summary)
}

struct PageCtx<'a> {
    run: &'a store::RunInfo,
    layers: &'a [LayerInfo],
    stats: &'a [Vec<UnitStats>],
    tops: &'a [Vec<Vec<TopHit>>],
    missing: &'a std::collections::HashSet<i64>,
    has_heat: bool,
    filters: &'a [bool],
    tile: u32,
}

fn head(title: &str, root: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"{root}style.css\"></head><body>\n",
        html_escape(title)
    )
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

impl PageCtx<'_> {
    fn field_text(l: &LayerInfo) -> String {
        format!(
            "{}x{} px, stride {}",
            l.field.size[1], l.field.size[0], l.field.jump[1]
        )
    }

    fn index_html(&self) -> String {
        let mut s = head("neurodex gallery", "");
        let _ = write!(
            s,
            "<nav><b>neurodex gallery</b> · <a href=\"gallery.json\">gallery.json</a></nav>\n\
             <h1>{}</h1><p class=\"meta\">weights {} · images from {} · top {} per unit</p>\n\
             <table><tr><th>layer</th><th>units</th><th>map</th><th>receptive field</th><th>strongest unit</th></tr>\n",
            html_escape(&self.run.model),
            html_escape(&self.run.weights_id[..12.min(self.run.weights_id.len())]),
            html_escape(&self.run.root.display().to_string()),
            self.tops.first().and_then(|t| t.first()).map_or(0, |h| h.len()),
        );
        for (li, l) in self.layers.iter().enumerate() {
            let best = (0..l.channels)
                .filter_map(|u| self.tops[li][u].first().map(|h| (u, h.value)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let best = best.map_or("-".into(), |(u, v)| {
                format!(
                    "<a href=\"{}\">unit {u}</a> ({v:.3})",
                    url(&unit_page(&l.name, u))
                )
            });
            let _ = writeln!(
                s,
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}x{}</td><td>{}</td><td>{best}</td></tr>",
                url(&layer_page(&l.name)),
                html_escape(&l.name),
                l.channels,
                l.height,
                l.width,
                Self::field_text(l)
            );
        }
        s.push_str("</table>\n</body></html>\n");
        s
    }

    fn index_json(&self) -> serde_json::Value {
        json!({
            "model": self.run.model,
            "weights_id": self.run.weights_id,
            "root": self.run.root,
            "layers": self.layers.iter().map(|l| json!({
                "name": l.name,
                "units": l.channels,
                "height": l.height,
                "width": l.width,
                "field": l.field,
                "page": layer_page(&l.name),
                "json": format!("layers/{}.json", slug(&l.name)),
            })).collect::<Vec<_>>(),
        })
    }

    /// `<img>` of a crop tile, or a placeholder when the image is gone.
    fn crop_img(&self, root: &str, l: &LayerInfo, h: &TopHit, class: &str) -> String {
        if self.missing.contains(&h.image_id) {
            return format!("<span class=\"{class} gone\" title=\"missing\"></span>");
        }
        format!(
            "<img class=\"{class}\" src=\"{root}{}\" alt=\"#{} {:.3}\">",
            url(&crop_tile(&l.name, h.image_id, h.y, h.x)),
            h.rank,
            h.value
        )
    }

    fn layer_html(&self, li: usize) -> String {
        let l = &self.layers[li];
        let mut s = head(&format!("{} - neurodex", l.name), "../");
        let _ = write!(
            s,
            "<nav><a href=\"../index.html\">index</a> › {} · <a href=\"{}.json\">json</a></nav>\n\
             <h1>{}</h1><p class=\"meta\">{} units · map {}x{} · receptive field {}</p>\n<div class=\"units\">\n",
            html_escape(&l.name),
            url(&slug(&l.name)),
            html_escape(&l.name),
            l.channels,
            l.height,
            l.width,
            Self::field_text(l)
        );
        for u in 0..l.channels {
            let hits = &self.tops[li][u];
            // A field wider than the network's input shows the whole image anyway:
            // there the heat map says more than the crop.
            let thumbs: String = hits
                .iter()
                .map(|h| {
                    let wide = l.field.size.iter().all(|&s| s >= h.transform.size as i64);
                    if wide && self.has_heat && !self.missing.contains(&h.image_id) {
                        format!(
                            "<img class=\"thumb\" src=\"../{}\" alt=\"#{} {:.3}\">",
                            url(&heat_tile(&l.name, u, h.image_id)),
                            h.rank,
                            h.value
                        )
                    } else {
                        self.crop_img("../", l, h, "thumb")
                    }
                })
                .collect();
            let best = hits
                .first()
                .map_or("-".into(), |h| format!("{:.3}", h.value));
            let _ = writeln!(
                s,
                "<a class=\"unit\" id=\"u{u}\" href=\"../{}\"><span class=\"mini\">{thumbs}</span><span class=\"cap\">{u} · {best}</span></a>",
                url(&unit_page(&l.name, u))
            );
        }
        s.push_str("</div>\n</body></html>\n");
        s
    }

    fn unit_html(&self, li: usize, u: usize) -> String {
        let l = &self.layers[li];
        let hits = &self.tops[li][u];
        let st = &self.stats[li].get(u);
        let root = "../../";
        let mut s = head(&format!("{} unit {u} - neurodex", l.name), root);
        let prev = if u > 0 {
            format!("<a href=\"{}.html\">‹ unit {}</a>", u - 1, u - 1)
        } else {
            "<span class=\"off\">‹</span>".into()
        };
        let next = if u + 1 < l.channels {
            format!("<a href=\"{}.html\">unit {} ›</a>", u + 1, u + 1)
        } else {
            "<span class=\"off\">›</span>".into()
        };
        let _ = write!(
            s,
            "<nav><a href=\"{root}index.html\">index</a> › <a href=\"{root}{}#u{u}\">{}</a> › unit {u} · {prev} · {next} · <a href=\"{u}.json\">json</a></nav>\n\
             <h1>{} unit {u}</h1>\n",
            url(&layer_page(&l.name)),
            html_escape(&l.name),
            html_escape(&l.name),
        );
        if let Some(st) = st {
            let _ = writeln!(
                s,
                "<p class=\"meta\">peak over {} images: max {} · mean {} ± {} · median {} · fired (&gt; 0) on {} of them</p>",
                st.count,
                fmt_opt((st.count > 0).then_some(st.max)),
                fmt_opt(st.mean()),
                fmt_opt(st.std()),
                fmt_opt(st.quantile(0.5)),
                st.positive
            );
        }
        let side = self.tile;
        let _ = writeln!(
            s,
            "<h2>Top {} · receptive-field crops</h2><div class=\"big\" style=\"--tile:{side}px\">",
            hits.len()
        );
        for h in hits {
            let _ = writeln!(
                s,
                "<figure>{}<figcaption>#{} {:.3}</figcaption></figure>",
                self.crop_img(root, l, h, "tile"),
                h.rank,
                h.value
            );
        }
        s.push_str("</div>\n");
        if self.has_heat {
            let _ = writeln!(
                s,
                "<h2>Activation over the whole image</h2><div class=\"big\" style=\"--tile:{side}px\">"
            );
            for h in hits {
                let img = if self.missing.contains(&h.image_id) {
                    "<span class=\"tile gone\"></span>".to_string()
                } else {
                    format!(
                        "<img class=\"tile\" src=\"{root}{}\" alt=\"heat #{}\">",
                        url(&heat_tile(&l.name, u, h.image_id)),
                        h.rank
                    )
                };
                let _ = writeln!(
                    s,
                    "<figure>{img}<figcaption>#{} {:.3}</figcaption></figure>",
                    h.rank, h.value
                );
            }
            s.push_str("</div>\n");
        }
        s.push_str("<div class=\"side\">");
        if let Some(st) = st {
            let _ = write!(
                s,
                "<section><h2>Peaks on all images</h2>{}</section>",
                histogram_svg(st)
            );
        }
        if self.filters[li] {
            let _ = write!(
                s,
                "<section><h2>Filter</h2><img class=\"filter\" src=\"{root}{}\" alt=\"filter of unit {u}\"><p class=\"meta\">grey = 0, per-filter scale</p></section>",
                url(&filter_file(&l.name, u))
            );
        }
        s.push_str("</div>\n<h2>Images</h2><table><tr><th>rank</th><th>value</th><th>(y, x)</th><th>field in image (x0,y0,x1,y1)</th><th>path</th></tr>\n");
        for h in hits {
            let b = h.box_orig;
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{:.4}</td><td>({}, {})</td><td>{},{},{},{}</td><td>{}</td></tr>",
                h.rank,
                h.value,
                h.y,
                h.x,
                b[0],
                b[1],
                b[2],
                b[3],
                html_escape(&h.path)
            );
        }
        s.push_str("</table>\n</body></html>\n");
        s
    }

    fn unit_json(&self, li: usize, u: usize) -> serde_json::Value {
        let l = &self.layers[li];
        let st = self.stats[li].get(u);
        let top: Vec<serde_json::Value> = self.tops[li][u]
            .iter()
            .map(|h| {
                let gone = self.missing.contains(&h.image_id);
                json!({
                    "rank": h.rank,
                    "value": h.value,
                    "y": h.y,
                    "x": h.x,
                    "path": h.path,
                    "box": h.box_orig,
                    "box_exact": h.box_exact,
                    "crop": (!gone).then(|| crop_tile(&l.name, h.image_id, h.y, h.x)),
                    "heat": (!gone && self.has_heat).then(|| heat_tile(&l.name, u, h.image_id)),
                })
            })
            .collect();
        json!({
            "layer": l.name,
            "unit": u,
            "page": unit_page(&l.name, u),
            "stats": st.map(|s| json!({
                "count": s.count,
                "max": (s.count > 0).then_some(s.max),
                "min": (s.count > 0).then_some(s.min),
                "mean": s.mean(),
                "std": s.std(),
                "positive": s.positive,
                "sparsity": s.sparsity(),
            })),
            "filter": self.filters[li].then(|| filter_file(&l.name, u)),
            "top": top,
        })
    }
}

/// The unit's peak histogram (the index's log-spaced bins) as inline SVG.
fn histogram_svg(st: &UnitStats) -> String {
    let used: Vec<usize> = (0..st.hist.len()).filter(|&b| st.hist[b] > 0).collect();
    let (Some(&first), Some(&last)) = (used.first(), used.last()) else {
        return "<p class=\"meta\">no peaks recorded</p>".into();
    };
    let bins = &st.hist[first..=last];
    // Bin edges lie up to a bin's width past the data: label no more than was seen.
    let edges = |b| {
        let (lo, hi) = store::hist_bin_range(b);
        (lo.max(st.min), hi.min(st.max))
    };
    let top = *bins.iter().max().unwrap() as f64;
    let (w, h) = (320.0, 120.0);
    let bw = w / bins.len() as f64;
    let mut s = format!(
        "<svg class=\"hist\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"histogram of peaks\">",
        h + 16.0,
        h + 16.0
    );
    for (i, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bh = (c as f64 / top * h).max(1.0);
        let (lo, hi) = edges(first + i);
        let _ = write!(
            s,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{bh:.2}\"><title>{lo:.3} .. {hi:.3}: {c}</title></rect>",
            i as f64 * bw,
            h - bh,
            (bw - 0.5).max(0.5)
        );
    }
    let (lo, hi) = (edges(first).0, edges(last).1);
    let _ = write!(
        s,
        "<text x=\"0\" y=\"{}\">{lo:.3}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{hi:.3} (log bins)</text></svg>",
        h + 13.0,
        h + 13.0
    );
    s
}

const STYLE: &str = "\
body{background:#161616;color:#e6e6e6;font:14px/1.4 system-ui,sans-serif;margin:16px}\n\
a{color:#8cc4ff;text-decoration:none}a:hover{text-decoration:underline}\n\
nav{margin-bottom:8px;color:#aaa}.off{color:#555}\n\
h1{font-size:20px;margin:8px 0}h2{font-size:15px;margin:16px 0 6px}\n\
.meta{color:#aaa}\n\
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #333;text-align:left}\n\
.units{display:flex;flex-wrap:wrap;gap:8px}\n\
.unit{display:flex;flex-direction:column;background:#222;padding:4px;border-radius:4px;color:#ccc}\n\
.mini{display:grid;grid-template-columns:repeat(3,36px);gap:1px}\n\
.thumb{width:36px;height:36px;object-fit:contain;background:#333;display:block}\n\
.cap{font-size:12px;margin-top:2px}\n\
.big{display:grid;grid-template-columns:repeat(3,var(--tile));gap:6px}\n\
.big figure{margin:0}.big figcaption{font-size:12px;color:#bbb}\n\
.tile{width:var(--tile);height:var(--tile);object-fit:contain;background:#222;display:block}\n\
.gone{display:block;background:repeating-linear-gradient(45deg,#402020,#402020 4px,#301818 4px,#301818 8px)}\n\
.side{display:flex;gap:24px;flex-wrap:wrap}\n\
.hist rect{fill:#7ac}.hist text{fill:#aaa;font-size:11px}\n\
.filter{image-rendering:pixelated;width:96px;height:96px}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_urls_are_safe() {
        assert_eq!(slug("blocks.4"), "blocks.4");
        assert_eq!(slug("a/b c"), "a_b_c");
        assert_eq!(url("units/x y/1.html"), "units/x%20y/1.html");
        assert_eq!(url("t/é.jpg"), "t/%C3%A9.jpg");
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }

    #[test]
    fn histogram_spans_the_used_bins() {
        let mut st = UnitStats::new();
        for v in [0.5f32, 1.0, 1.0, 4.0] {
            st.add(v);
        }
        let svg = histogram_svg(&st);
        assert!(svg.starts_with("<svg"));
        // Three distinct occupied bins: 0.5, 1.0 (twice), 4.0.
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains(": 2</title>"));
    }

    #[test]
    fn histogram_labels_stay_within_the_peaks_seen() {
        let mut st = UnitStats::new();
        for v in [0.6f32, 6.0] {
            st.add(v);
        }
        // 6.0's bin is [5.66, 6.73): the top label says 6.000, not 6.727.
        let svg = histogram_svg(&st);
        assert!(svg.contains(">0.600</text>"), "{svg}");
        assert!(svg.contains(">6.000 (log bins)</text>"), "{svg}");
        assert!(svg.contains("<title>5.657 .. 6.000: 1</title>"), "{svg}");
    }
}
