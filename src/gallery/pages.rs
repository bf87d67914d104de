//! The gallery's HTML and JSON: the index, one page per layer (a card per unit with
//! its small contact sheet, sortable, with a jump box) and one page per unit. Pages
//! share `style.css` and `gallery.js` at the root (sorting, jumping, arrow keys, heat
//! maps drawn from the numbers on the page), so they work from `file://`.

use std::fmt::Write as _;
use std::path::Path;

use rayon::prelude::*;
use serde_json::json;

use super::{
    filter_file, hit_label, layer_json, layer_page, map_grid, mini_file, projection_file,
    sheet_file, slug, thumb_file, unit_page, visual_file, write_file, Data, HeatMap, MINI,
};
use crate::query::TopHit;
use crate::render::grid::Sheet;
use crate::render::tile;
use crate::render::top::Mode;
use crate::stats::{self, UnitStats};
use crate::store::LayerInfo;
use crate::Result;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("gallery.js");

/// Writes every page and the JSON beside them; returns the number of HTML pages.
pub(crate) fn write_all(d: &Data, out: &Path) -> Result<usize> {
    write_file(&out.join("style.css"), STYLE.as_bytes())?;
    write_file(&out.join("gallery.js"), SCRIPT.as_bytes())?;
    write_file(&out.join("index.html"), index_html(d).as_bytes())?;
    write_file(
        &out.join("gallery.json"),
        serde_json::to_string_pretty(&index_json(d))
            .unwrap()
            .as_bytes(),
    )?;
    let mut pages = 1;
    if d.concepts.is_some() {
        write_file(&out.join("concepts.html"), concepts_html(d).as_bytes())?;
        pages += 1;
    }
    for (li, l) in d.layers.iter().enumerate() {
        write_file(&out.join(layer_page(&l.name)), layer_html(d, li).as_bytes())?;
        let units: Vec<serde_json::Value> = (0..l.channels).map(|u| unit_json(d, li, u)).collect();
        let j = json!({"layer": l.name, "activation": l.act.name(), "ranked_before_activation": l.pre, "units": units});
        write_file(
            &out.join(layer_json(&l.name)),
            serde_json::to_string(&j).unwrap().as_bytes(),
        )?;
        (0..l.channels).into_par_iter().try_for_each(|u| {
            write_file(
                &out.join(unit_page(&l.name, u)),
                unit_html(d, li, u).as_bytes(),
            )
        })?;
        pages += 1 + l.channels;
    }
    Ok(pages)
}

pub(crate) fn html_escape(s: &str) -> String {
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
pub(crate) fn url(path: &str) -> String {
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

fn head(title: &str, root: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"{root}style.css\">\
         <script defer src=\"{root}gallery.js\"></script></head><body>\n",
        html_escape(title)
    )
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn field_text(l: &LayerInfo) -> String {
    format!(
        "{}x{} px, stride {}",
        l.field.size[1], l.field.size[0], l.field.jump[1]
    )
}

/// What the layer's stored peaks are: "before relu6" or "".
fn stage(l: &LayerInfo) -> String {
    // A layer without an activation has one value: "before none" would say nothing.
    if l.pre && l.act != crate::arch::Act::None {
        format!("before {}", l.act.name())
    } else {
        String::new()
    }
}

fn dead_text(st: Option<&UnitStats>) -> String {
    format!(
        "never fires on the {} indexed images",
        st.map_or(0, |s| s.count)
    )
}

fn index_html(d: &Data) -> String {
    let mut s = head("neurodex gallery", "");
    let k = d.tops.iter().flatten().map(|t| t.len()).max().unwrap_or(0);
    let _ = write!(
        s,
        "<nav><b>neurodex gallery</b> · {}<a href=\"gallery.json\">gallery.json</a></nav>\n\
         <h1>{}</h1><p class=\"meta\">weights {} · images from {} · top {k} per unit</p>\n\
         <table><tr><th>layer</th><th>units</th><th>never fire</th><th>map</th><th>receptive field</th><th>shown as</th><th>strongest unit</th>{}</tr>\n",
        if d.concepts.is_some() { "<a href=\"concepts.html\">concepts</a> · " } else { "" },
        html_escape(&d.run.model),
        html_escape(&d.run.weights_id[..12.min(d.run.weights_id.len())]),
        html_escape(&d.run.root.display().to_string()),
        if d.concepts.is_some() { "<th>detectors (distinct concepts)</th>" } else { "" },
    );
    let summary = d.concepts.as_ref().map(|c| c.scores.summary());
    for (li, l) in d.layers.iter().enumerate() {
        let detectors = summary.as_ref().map_or(String::new(), |v| {
            format!("<td>{} ({})</td>", v[li].detectors, v[li].concepts)
        });
        let best = (0..l.channels)
            .filter_map(|u| d.tops[li][u].first().map(|h| (u, h)))
            .max_by(|a, b| {
                let key = |h: &TopHit| h.pre.unwrap_or(h.value);
                key(a.1).total_cmp(&key(b.1))
            });
        let best = best.map_or("-".into(), |(u, h)| {
            format!(
                "<a href=\"{}\">unit {u}</a> ({})",
                url(&unit_page(&l.name, u)),
                value_text(h)
            )
        });
        let dead = d.dead[li].iter().filter(|&&x| x).count();
        let _ = writeln!(
            s,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{dead}</td><td>{}x{}</td><td>{}</td><td>{}</td><td>{best}</td>{detectors}</tr>",
            url(&layer_page(&l.name)),
            html_escape(&l.name),
            l.channels,
            l.height,
            l.width,
            field_text(l),
            mode_text(d.modes[li]),
        );
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

fn mode_text(m: Mode) -> &'static str {
    match m {
        Mode::Region => "active region",
        _ => "receptive-field crop",
    }
}

/// "6.000 (15.372 before relu6)" or "0.731".
fn value_text(h: &TopHit) -> String {
    match h.pre {
        Some(p) if p != h.value => format!("{:.3}, {p:.3} before", h.value),
        _ => format!("{:.3}", h.value),
    }
}

fn index_json(d: &Data) -> serde_json::Value {
    json!({
        "model": d.run.model,
        "weights_id": d.run.weights_id,
        "root": d.run.root,
        "layers": d.layers.iter().enumerate().map(|(li, l)| json!({
            "name": l.name,
            "units": l.channels,
            "never_fire": d.dead[li].iter().filter(|&&x| x).count(),
            "height": l.height,
            "width": l.width,
            "field": l.field,
            "activation": l.act.name(),
            "ranked_before_activation": l.pre,
            "page": layer_page(&l.name),
            "json": layer_json(&l.name),
        })).collect::<Vec<_>>(),
    })
}

fn layer_html(d: &Data, li: usize) -> String {
    let l = &d.layers[li];
    let mut s = head(&format!("{} - neurodex", l.name), "../");
    let stage = stage(l);
    let dead = d.dead[li].iter().filter(|&&x| x).count();
    let _ = write!(
        s,
        "<nav><a rel=\"up\" href=\"../index.html\">index</a> › {} · <a href=\"{}.json\">json</a></nav>\n\
         <h1>{}</h1><p class=\"meta\">{} units ({dead} never fire) · map {}x{} · receptive field {} · \
         peaks {} · top images shown as {}</p>\n\
         <form id=\"jump\" class=\"tools\" data-base=\"../units/{}/\">\
         <label>unit <input id=\"jump-unit\" type=\"number\" min=\"0\" max=\"{}\" inputmode=\"numeric\" placeholder=\"0-{}\"></label> \
         <button type=\"submit\">go</button> \
         <label>sort by <select id=\"sort\"><option value=\"unit\">unit</option>\
         <option value=\"max\">max (highest first)</option><option value=\"mean\">mean (highest first)</option>\
         <option value=\"sparsity\">sparsity (sparsest first)</option>{}</select></label></form>\n\
         <div class=\"units\" id=\"units\">\n",
        html_escape(&l.name),
        url(&slug(&l.name)),
        html_escape(&l.name),
        l.channels,
        l.height,
        l.width,
        field_text(l),
        if stage.is_empty() { "of the output".to_string() } else { stage.clone() },
        mode_text(d.modes[li]),
        url(&slug(&l.name)),
        l.channels.saturating_sub(1),
        l.channels.saturating_sub(1),
        concept_sort_options(d),
    );
    let side = Sheet::new(
        d.tops[li].iter().map(|t| t.len()).max().unwrap_or(9),
        MINI,
        MINI,
        None,
        false,
    );
    for u in 0..l.channels {
        let st = d.stats[li].get(u);
        let num = |v: Option<f64>| v.map_or("".into(), |v| format!("{v}"));
        let (max, mean, sp) = match st.filter(|s| s.count > 0) {
            Some(st) => (Some(st.max), st.mean(), st.sparsity()),
            None => (None, None, None),
        };
        let body = if d.dead[li][u] {
            format!(
                "<span class=\"deadbox\" style=\"width:{}px;height:{}px\">{}</span>",
                side.width,
                side.height,
                dead_text(st)
            )
        } else if d.tops[li][u].is_empty() {
            format!("<span class=\"deadbox\" style=\"width:{}px;height:{}px\">no images recorded</span>", side.width, side.height)
        } else {
            let sh = Sheet::new(d.tops[li][u].len(), MINI, MINI, None, false);
            format!(
                "<img class=\"sheet\" loading=\"lazy\" src=\"../{}\" width=\"{}\" height=\"{}\" alt=\"unit {u}: top {}\">",
                url(&mini_file(&l.name, u)),
                sh.width,
                sh.height,
                d.tops[li][u].len()
            )
        };
        let stat = match max {
            Some(m) => format!(
                "max {m:.2} · mean {:.2} · sparsity {:.0}%",
                mean.unwrap_or(0.0),
                100.0 * sp.unwrap_or(0.0)
            ),
            None => "no data".into(),
        };
        let (concept_data, concept_cap) = unit_card_concepts(d, li, u);
        let _ = writeln!(
            s,
            "<a class=\"unit{}\" id=\"u{u}\" data-unit=\"{u}\" data-max=\"{}\" data-mean=\"{}\" data-sparsity=\"{}\"{concept_data} href=\"../{}\">{body}<span class=\"cap\"><b>{u}</b> <small>{stat}</small>{concept_cap}</span></a>",
            if d.dead[li][u] { " dead" } else { "" },
            num(max),
            num(mean),
            num(sp),
            url(&unit_page(&l.name, u)),
        );
    }
    s.push_str("</div>\n</body></html>\n");
    s
}

/// The unit's top images as one contact sheet with a labelled cell over each image
/// (crop layers): the cells link to the image's row in the table below.
fn crop_sheet(d: &Data, l: &LayerInfo, u: usize, hits: &[TopHit], root: &str) -> String {
    let sh = Sheet::new(hits.len(), d.tile, d.tile, None, true);
    let mut s = format!(
        "<div class=\"sheetbox\" style=\"width:{}px;height:{}px\"><img class=\"sheet\" loading=\"lazy\" src=\"{root}{}\" width=\"{}\" height=\"{}\" alt=\"top {} of unit {u}\">",
        sh.width, sh.height, url(&sheet_file(&l.name, u)), sh.width, sh.height, hits.len()
    );
    for (i, h) in hits.iter().enumerate() {
        let (x, y) = sh.cell_origin(i);
        let _ = write!(
            s,
            "<a class=\"cell\" href=\"#r{}\" style=\"left:{x}px;top:{y}px;width:{}px;height:{}px\" title=\"{}\"><span class=\"badge\">#{}</span></a>",
            h.rank,
            sh.cell_w,
            sh.cell_h + sh.label_h,
            html_escape(&hit_title(l, h)),
            h.rank
        );
    }
    s.push_str("</div>\n");
    s
}

/// Hover text of a top image: everything about it.
fn hit_title(l: &LayerInfo, h: &TopHit) -> String {
    let act = l.act.name();
    let mut t = format!(
        "#{} · {} {:.4}",
        h.rank,
        if l.pre { act } else { "value" },
        h.value
    );
    if let Some(p) = h.pre {
        let _ = write!(t, " · before {act} {p:.4}");
    }
    if h.tie {
        t.push_str(" · tied");
    }
    let _ = write!(t, " · at ({}, {}) · {}", h.y, h.x, h.path);
    t
}

/// One figure per top image: the shared thumbnail cropped to where the unit fired
/// (region layers), or with the unit's map over it (`heat`).
fn figures(d: &Data, li: usize, u: usize, root: &str, heat: bool) -> String {
    let l = &d.layers[li];
    let side = d.tile as f64;
    let mut s = format!("<div class=\"big\" style=\"--tile:{}px\">\n", d.tile);
    for (slot, h) in d.tops[li][u].iter().enumerate() {
        let shown = d.shown.get(&(li, u, slot));
        let inner = match (d.thumbs.get(&h.image_id), shown) {
            (None, _) => "<span class=\"tile gone\" title=\"missing\"></span>".to_string(),
            (Some(_), Some(sh)) if heat => match &sh.heat {
                Some(m) => heat_figure(l, h, m, side, root),
                None => String::new(),
            },
            (Some(_), Some(sh)) => {
                let area = sh.region.unwrap_or(h.box_exact);
                cropped(h, area, side, root)
            }
            (Some(_), None) => String::new(),
        };
        // The hover text once per image: on the region figures, not again on the heat ones.
        let title = if heat {
            String::new()
        } else {
            format!(" title=\"{}\"", html_escape(&hit_title(l, h)))
        };
        let _ = writeln!(
            s,
            "<figure{title}><a href=\"#r{}\">{inner}</a><figcaption>{}</figcaption></figure>",
            h.rank,
            html_escape(&hit_label(h))
        );
    }
    s.push_str("</div>\n");
    s
}

/// A value to 6 significant digits (the f32 peaks' precision, without the 17
/// digits their f64 form prints).
fn sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(5 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// A box in original pixels to a tenth of a pixel: the JSON's 17-digit floats were
/// a third of each layer file.
fn tenths(b: [f64; 4]) -> [f64; 4] {
    b.map(|v| (v * 10.0).round() / 10.0)
}

/// The shared thumbnail shown through a window onto `area` (original pixels).
fn cropped(h: &TopHit, area: [f64; 4], side: f64, root: &str) -> String {
    let (ow, oh) = (h.transform.orig_w as f64, h.transform.orig_h as f64);
    let a = [
        area[0].max(0.0),
        area[1].max(0.0),
        area[2].min(ow),
        area[3].min(oh),
    ];
    let (aw, ah) = ((a[2] - a[0]).max(1.0), (a[3] - a[1]).max(1.0));
    let r = (side / aw).min(side / ah);
    format!(
        "<span class=\"win\" style=\"width:{:.0}px;height:{:.0}px\"><img loading=\"lazy\" src=\"{root}{}\" width=\"{:.0}\" height=\"{:.0}\" alt=\"#{}\" style=\"left:{:.0}px;top:{:.0}px\"></span>",
        aw * r, ah * r, url(&thumb_file(h.image_id)), ow * r, oh * r, h.rank,
        -a[0] * r, -a[1] * r
    )
}

/// The whole image at the tile size with the unit's map drawn over the part the
/// network saw (by gallery.js from `data-map`); outside it the image is dimmed.
fn heat_figure(l: &LayerInfo, h: &TopHit, m: &HeatMap, side: f64, root: &str) -> String {
    let t = &h.transform;
    let (w, hh) = tile::fit(t.orig_w as f64, t.orig_h as f64, side as u32, side as u32);
    let s = w as f64 / t.orig_w as f64;
    // The input square in display pixels, and the map's cells in it.
    let [cx0, cy0, cw, ch] = t.crop;
    let k = cw / t.size as f64 * s;
    let kh = ch / t.size as f64 * s;
    let [gx, gy, jx, jy] = map_grid(&l.field, m.factor);
    let hex: String = m.bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "<span class=\"heat\" style=\"width:{w}px;height:{hh}px\"><img loading=\"lazy\" src=\"{root}{}\" width=\"{w}\" height=\"{hh}\" alt=\"#{}\">\
         <span class=\"clip\" style=\"left:{:.0}px;top:{:.0}px;width:{:.0}px;height:{:.0}px\">\
         <canvas width=\"{}\" height=\"{}\" data-map=\"{hex}\" style=\"left:{:.1}px;top:{:.1}px;width:{:.1}px;height:{:.1}px\"></canvas></span></span>",
        url(&thumb_file(h.image_id)), h.rank,
        cx0 * s, cy0 * s, cw * s, ch * s,
        m.w, m.h,
        (gx - jx / 2.0) * k, (gy - jy / 2.0) * kh, m.w as f64 * jx * k, m.h as f64 * jy * kh,
    )
}

fn unit_html(d: &Data, li: usize, u: usize) -> String {
    let l = &d.layers[li];
    let hits = &d.tops[li][u];
    let st = d.stats[li].get(u);
    let root = "../../";
    let mut s = head(&format!("{} unit {u} - neurodex", l.name), root);
    let prev = if u > 0 {
        format!(
            "<a rel=\"prev\" href=\"{}.html\">‹ unit {}</a>",
            u - 1,
            u - 1
        )
    } else {
        "<span class=\"off\">‹</span>".into()
    };
    let next = if u + 1 < l.channels {
        format!(
            "<a rel=\"next\" href=\"{}.html\">unit {} ›</a>",
            u + 1,
            u + 1
        )
    } else {
        "<span class=\"off\">›</span>".into()
    };
    let _ = write!(
        s,
        "<nav><a href=\"{root}index.html\">index</a> › <a rel=\"up\" href=\"{root}{}#u{u}\">{}</a> › unit {u} of {} · {prev} · {next} · <a href=\"{root}{}\">json</a> <span class=\"keys\">(← → units, ↑ layer)</span></nav>\n\
         <h1>{} unit {u}</h1>\n",
        url(&layer_page(&l.name)),
        html_escape(&l.name),
        l.channels,
        url(&layer_json(&l.name)),
        html_escape(&l.name),
    );
    let stage = stage(l);
    if let Some(st) = st {
        let _ = writeln!(
            s,
            "<p class=\"meta\">peak {}over {} images: max {} · mean {} ± {} · median {} · above 0 on {} of them</p>",
            if stage.is_empty() { String::new() } else { format!("{stage} ") },
            st.count,
            fmt_opt((st.count > 0).then_some(st.max)),
            fmt_opt(st.mean()),
            fmt_opt(st.std()),
            fmt_opt(st.quantile(0.5)),
            st.positive
        );
    }
    if d.dead[li][u] {
        let _ = writeln!(
            s,
            "<p class=\"dead\">This unit {}{}.</p>",
            dead_text(st),
            if l.pre {
                format!(": its peak {stage} is never above 0")
            } else {
                ": its peak is the same on every image".into()
            }
        );
    } else if hits.is_empty() {
        s.push_str("<p class=\"dead\">no images recorded for this unit</p>\n");
    } else {
        unit_pictures(d, li, u, root, &mut s);
    }
    s.push_str("<div class=\"side\">");
    if let Some(st) = st {
        let _ = write!(
            s,
            "<section><h2>Peaks on all images{}</h2>{}</section>",
            if stage.is_empty() {
                String::new()
            } else {
                format!(" ({stage})")
            },
            histogram_svg(st)
        );
    }
    if d.filters[li] {
        let _ = write!(
            s,
            "<section><h2>Filter</h2><img class=\"filter\" src=\"{root}{}\" width=\"96\" height=\"96\" alt=\"filter of unit {u}\"><p class=\"meta\">grey = 0, per-filter scale</p></section>",
            url(&filter_file(&l.name, u))
        );
    }
    if d.visuals[li][u] {
        let _ = write!(
            s,
            "<section><h2>What excites it most</h2><img class=\"visual\" src=\"{root}{}\" width=\"224\" alt=\"feature visualisation of unit {u}\"><p class=\"meta\">an image optimised to raise its mean activation (neurodex visualize)</p></section>",
            url(&visual_file(&l.name, u))
        );
    }
    s.push_str(&concepts_section(d, li, u));
    s.push_str("</div>\n");
    if let (Some(mode), true) = (d.projection_mode, d.projections[li][u]) {
        let _ = write!(
            s,
            "<section class=\"projections\"><h2>{} of the top images</h2><img src=\"{root}{}\" alt=\"{} projections of unit {u}'s top images\"><p class=\"meta\">{}</p></section>",
            match mode.name() {
                "backprop" => "Gradients",
                "guided" => "Guided backprop",
                "erf" => "Effective receptive fields",
                _ => "Deconvnet projections",
            },
            url(&projection_file(&l.name, u)),
            mode.name(),
            mode.help()
        );
    }
    if !hits.is_empty() {
        hits_table(l, hits, &mut s);
    }
    s.push_str("</body></html>\n");
    s
}

/// The layer page's extra sort keys when the index has labels: the unit's best AP,
/// and its class selectivity over each set of classes.
fn concept_sort_options(d: &Data) -> String {
    let Some(c) = &d.concepts else {
        return String::new();
    };
    let mut s = String::from("<option value=\"ap\">best concept AP (highest first)</option>");
    for (i, set) in c.scores.class_sets.iter().enumerate() {
        let _ = write!(
            s,
            "<option value=\"sel{i}\">selectivity over {} (highest first)</option>",
            html_escape(set)
        );
    }
    s
}

/// A unit card's data attributes for those keys, and its caption line: the unit's
/// best concept with its AP (bold when it counts as a detector).
fn unit_card_concepts(d: &Data, li: usize, u: usize) -> (String, String) {
    let Some(c) = &d.concepts else {
        return (String::new(), String::new());
    };
    let s = &c.scores;
    let l = &s.layers[li];
    let best = s.best(l, u, 1).into_iter().next();
    let ap = best.map_or(String::new(), |(_, sc)| format!("{}", sc.ap));
    let mut data = format!(" data-ap=\"{ap}\"");
    for (i, sel) in l.selectivity.iter().enumerate() {
        let _ = write!(data, " data-sel{i}=\"{}\"", sel[u].index);
    }
    let cap = best.map_or(String::new(), |(k, sc)| {
        let det = s.is_detector(k, &sc);
        format!(
            "<small class=\"concept{}\" title=\"best concept: AP, and its count in the top 9\">{} AP {:.2} · {}/{}</small>",
            if det { " det" } else { "" },
            html_escape(&s.concepts[k].name),
            sc.ap,
            sc.top9,
            crate::concepts::TOP.min(s.images)
        )
    });
    (data, cap)
}

/// The unit page's concept section: its best concepts (AP, AUROC, top-9), the labels
/// of its top images, its class selectivity and the classifier hint.
fn concepts_section(d: &Data, li: usize, u: usize) -> String {
    let Some(c) = &d.concepts else {
        return String::new();
    };
    let s = &c.scores;
    let l = &s.layers[li];
    let mut out = String::from("<section class=\"concepts\"><h2>Concepts</h2>");
    if s.concepts.is_empty() {
        out.push_str("<p class=\"meta\">no concept left to score</p>");
    } else {
        out.push_str(
            "<table><tr><th>concept</th><th>images</th><th>AP</th><th>AUROC</th><th>top 9</th><th></th></tr>",
        );
        for (k, sc) in s.best(l, u, 5) {
            let info = &s.concepts[k];
            let _ = write!(
                out,
                "<tr><td><a href=\"../../concepts.html#c{k}\">{}</a></td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}/{}</td><td>{}</td></tr>",
                html_escape(&info.qualified()),
                info.images,
                sc.ap,
                sc.auroc,
                sc.top9,
                crate::concepts::TOP.min(s.images),
                if s.is_detector(k, &sc) { "detector" } else { "" }
            );
        }
        out.push_str("</table>");
        let _ = write!(
            out,
            "<p class=\"meta\">by AP above the concept's share of the {} images; a detector has AP &ge; {} and AUROC &ge; {}</p>",
            s.images,
            crate::concepts::DETECTOR_AP,
            crate::concepts::DETECTOR_AUROC
        );
    }
    let hits = &d.tops[li][u];
    let mut counts: std::collections::BTreeMap<usize, usize> = Default::default();
    for h in hits {
        for &k in c.of_image.get(&h.image_id).into_iter().flatten() {
            *counts.entry(k).or_default() += 1;
        }
    }
    if !counts.is_empty() {
        let mut v: Vec<(usize, usize)> = counts.into_iter().collect();
        v.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
        let items: Vec<String> = v
            .iter()
            .map(|&(k, n)| format!("{} {n}/{}", html_escape(&c.names[k]), hits.len()))
            .collect();
        let _ = write!(
            out,
            "<p>labels of the top {}: {}</p>",
            hits.len(),
            items.join(" · ")
        );
    }
    for (i, set) in s.class_sets.iter().enumerate() {
        let sel = l.selectivity[i][u];
        let _ = write!(
            out,
            "<p>class selectivity over {}: {:.3} (highest mean: {})</p>",
            html_escape(set),
            sel.index,
            html_escape(&s.concepts[sel.class].name)
        );
    }
    if let Some(h) = c.hints.get(li).and_then(|h| h.as_ref()) {
        let items: Vec<String> = h[u]
            .iter()
            .map(|h| format!("{} ({:+.3})", html_escape(&h.name), h.push))
            .collect();
        let _ = write!(
            out,
            "<p title=\"the classifier's weight from this unit times its mean peak; needs no labels\">pushes most through the classifier: {}</p>",
            items.join(", ")
        );
    }
    out.push_str("</section>");
    out
}

/// `concepts.html`: per concept, its units best first (the detectors, else the best
/// three), each with its small contact sheet; then the units per layer that detect.
fn concepts_html(d: &Data) -> String {
    let c = d.concepts.as_ref().expect("called with concepts");
    let s = &c.scores;
    let mut out = head("concepts - neurodex", "");
    let _ = write!(
        out,
        "<nav><a rel=\"up\" href=\"index.html\">index</a> › concepts</nav>\n<h1>Concepts</h1>\n\
         <p class=\"meta\">each unit's per-image peak scored as a detector of each label over the {} indexed images: \
         average precision (AP), AUROC, and its count in the unit's top 9. A detector has AP &ge; {} and AUROC &ge; {} \
         over a concept of at least {} images.</p>\n",
        s.images,
        crate::concepts::DETECTOR_AP,
        crate::concepts::DETECTOR_AUROC,
        crate::concepts::DETECTOR_MIN_IMAGES
    );
    out.push_str(
        "<table><tr><th>layer</th><th>units</th><th>detectors</th><th>distinct concepts</th></tr>",
    );
    for l in s.summary() {
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(&layer_page(&l.layer)),
            html_escape(&l.layer),
            l.units,
            l.detectors,
            l.concepts
        );
    }
    out.push_str("</table>\n");
    for k in &s.skipped {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} left out: {}</p>",
            html_escape(&k.concept),
            html_escape(&k.reason)
        );
    }
    // Concepts with the best detectors first.
    let mut order: Vec<(usize, Vec<crate::concepts::Ranked>)> =
        (0..s.concepts.len()).map(|k| (k, s.ranked(k))).collect();
    order.sort_by(|a, b| {
        let ap = |r: &[crate::concepts::Ranked]| r.first().map_or(0.0, |r| r.score.ap);
        ap(&b.1).total_cmp(&ap(&a.1))
    });
    for (k, ranked) in order {
        let info = &s.concepts[k];
        let detectors: Vec<_> = ranked
            .iter()
            .filter(|r| s.is_detector(k, &r.score))
            .collect();
        let detector_count = detectors.len();
        let shown: Vec<&crate::concepts::Ranked> = if detectors.is_empty() {
            ranked.iter().take(3).collect()
        } else {
            detectors.into_iter().take(12).collect()
        };
        let _ = write!(
            out,
            "<h2 id=\"c{k}\">{} <small>{} of {} images · {} detector units{}</small></h2><div class=\"units\">",
            html_escape(&info.qualified()),
            info.images,
            s.images,
            detector_count,
            if detector_count == 0 { "; the best three" } else { "" }
        );
        for r in shown {
            let li = d
                .layers
                .iter()
                .position(|l| l.name == r.layer.layer)
                .expect("scored layer");
            let u = r.unit;
            let body = if d.tops[li][u].is_empty() {
                "<span class=\"deadbox\">no images</span>".to_string()
            } else {
                let sh = Sheet::new(d.tops[li][u].len(), MINI, MINI, None, false);
                format!(
                    "<img class=\"sheet\" loading=\"lazy\" src=\"{}\" width=\"{}\" height=\"{}\" alt=\"top images of {} unit {u}\">",
                    url(&mini_file(&r.layer.layer, u)),
                    sh.width,
                    sh.height,
                    html_escape(&r.layer.layer)
                )
            };
            let _ = write!(
                out,
                "<a class=\"unit\" href=\"{}\">{body}<span class=\"cap\"><b>{} {u}</b><small>AP {:.3} · AUROC {:.3} · {}/{} in the top 9</small></span></a>",
                url(&unit_page(&r.layer.layer, u)),
                html_escape(&r.layer.layer),
                r.score.ap,
                r.score.auroc,
                r.score.top9,
                crate::concepts::TOP.min(s.images)
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The top images: crops or regions, then heat maps with their scale.
fn unit_pictures(d: &Data, li: usize, u: usize, root: &str, s: &mut String) {
    let l = &d.layers[li];
    let hits = &d.tops[li][u];
    let note = "#rank, value | value before the activation; = marks a tie";
    match d.modes[li] {
        Mode::Crop => {
            let _ = writeln!(
                s,
                "<h2>Top {} · receptive-field crops <small>{note}</small></h2>",
                hits.len()
            );
            s.push_str(&crop_sheet(d, l, u, hits, root));
        }
        _ => {
            let _ = writeln!(
                s,
                "<h2>Top {} · where it fired (active region) <small>{note}</small></h2>",
                hits.len()
            );
            s.push_str(&figures(d, li, u, root, false));
        }
    }
    let has_heat =
        (0..hits.len()).any(|i| d.shown.get(&(li, u, i)).is_some_and(|s| s.heat.is_some()));
    if has_heat {
        let hi = d.stats[li].get(u).map_or(0.0, |s| s.max);
        let stage = stage(l);
        let _ = writeln!(s, "<h2>Activation over the whole image</h2>");
        s.push_str(&figures(d, li, u, root, true));
        let _ = writeln!(
            s,
            "<div class=\"bar\"><span class=\"grad\"></span><span>0</span><span>{hi:.3}{}</span></div><p class=\"meta\">one scale for the unit: 0 to its highest peak on the indexed images; maps larger than {m}x{m} max-pooled</p>",
            if stage.is_empty() { String::new() } else { format!(" ({stage})") },
            m = super::MAP_SIDE
        );
    }
}

fn hits_table(l: &LayerInfo, hits: &[TopHit], s: &mut String) {
    let act = l.act.name();
    let _ = writeln!(
        s,
        "<h2>Images</h2><table class=\"hits\"><tr><th>rank</th><th>value{}</th><th>before {act}</th><th>tie</th><th>(y, x)</th><th>field in image (x0,y0,x1,y1)</th><th>path</th></tr>",
        if l.pre { format!(" ({act})") } else { String::new() }
    );
    for h in hits {
        let b = h.box_orig;
        let _ = writeln!(
            s,
            "<tr id=\"r{}\"><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>({}, {})</td><td>{},{},{},{}</td><td>{}</td></tr>",
            h.rank,
            h.rank,
            h.value,
            h.pre.map_or("-".into(), |p| format!("{p:.4}")),
            if h.tie { "=" } else { "" },
            h.y,
            h.x,
            b[0],
            b[1],
            b[2],
            b[3],
            html_escape(&h.path)
        );
    }
    s.push_str("</table>\n");
}

fn unit_json(d: &Data, li: usize, u: usize) -> serde_json::Value {
    let l = &d.layers[li];
    let st = d.stats[li].get(u);
    let live = !d.tops[li][u].is_empty();
    let top: Vec<serde_json::Value> = d.tops[li][u]
        .iter()
        .enumerate()
        .map(|(slot, h)| {
            let gone = d.missing.contains(&h.image_id);
            json!({
                "rank": h.rank,
                "value": sig(h.value as f64),
                "pre": h.pre.map(|p| sig(p as f64)),
                "tie": h.tie,
                "y": h.y,
                "x": h.x,
                "path": h.path,
                "box": h.box_orig,
                "box_exact": tenths(h.box_exact),
                "region": d.shown.get(&(li, u, slot)).and_then(|s| s.region).map(tenths),
                "thumb": (!gone).then(|| thumb_file(h.image_id)),
            })
        })
        .collect();
    json!({
        "unit": u,
        "page": unit_page(&l.name, u),
        "never_fires": d.dead[li][u],
        "sheet": (live && d.modes[li] == Mode::Crop).then(|| sheet_file(&l.name, u)),
        "mini": live.then(|| mini_file(&l.name, u)),
        "stats": st.map(|s| json!({
            "count": s.count,
            "max": (s.count > 0).then_some(sig(s.max)),
            "min": (s.count > 0).then_some(sig(s.min)),
            "mean": s.mean().map(sig),
            "std": s.std().map(sig),
            "positive": s.positive,
            "sparsity": s.sparsity().map(sig),
        })),
        "filter": d.filters[li].then(|| filter_file(&l.name, u)),
        "visualisation": d.visuals[li][u].then(|| visual_file(&l.name, u)),
        "projections": d.projections[li][u].then(|| projection_file(&l.name, u)),
        "top": top,
        "concepts": d.concepts.as_ref().map(|c| {
            let sc = &c.scores;
            sc.best(&sc.layers[li], u, 5).into_iter().map(|(k, x)| json!({
                "concept": sc.concepts[k].qualified(),
                "ap": sig(x.ap as f64),
                "auroc": sig(x.auroc as f64),
                "top9": x.top9,
                "detector": sc.is_detector(k, &x),
            })).collect::<Vec<_>>()
        }),
    })
}

/// The unit's peak histogram (the index's log-spaced bins) as inline SVG; the
/// labelled ends are the exact min and max where those lie inside the end bins.
pub(crate) fn histogram_svg(st: &UnitStats) -> String {
    let used: Vec<usize> = (0..st.hist.len()).filter(|&b| st.hist[b] > 0).collect();
    let (Some(&first), Some(&last)) = (used.first(), used.last()) else {
        return "<p class=\"meta\">no peaks recorded</p>".into();
    };
    let clamp = |v: f64| v.clamp(st.min, st.max);
    let bins = &st.hist[first..=last];
    let top = *bins.iter().max().unwrap() as f64;
    let (w, h) = (320.0, 120.0);
    let bw = w / bins.len() as f64;
    // One path for all bars (a <rect> and <title> per bar was a quarter of each
    // unit page); the whole chart's title says what the bars are.
    let mut bars = String::new();
    for (i, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bh = (c as f64 / top * h).max(1.0);
        let _ = write!(
            bars,
            "M{:.1} {h}v-{bh:.1}h{:.1}v{bh:.1}z",
            i as f64 * bw,
            (bw - 0.5).max(0.5)
        );
    }
    let n: u64 = bins.iter().map(|&c| c as u64).sum();
    let mut s = format!(
        "<svg class=\"hist\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"histogram of peaks\"><title>{n} per-image peaks in {} log-spaced bins (4 per octave); tallest bin {top}</title><path d=\"{bars}\"/>",
        h + 16.0,
        h + 16.0,
        bins.len(),
    );
    let lo = clamp(stats::hist_bin_range(first).0);
    let hi = clamp(stats::hist_bin_range(last).1);
    let _ = write!(
        s,
        "<text x=\"0\" y=\"{}\">{lo:.3}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{hi:.3} (log bins)</text></svg>",
        h + 13.0,
        h + 13.0
    );
    s
}

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
        // Three distinct occupied bins: 0.5, 1.0 (twice, the tallest), 4.0.
        assert_eq!(svg.matches('z').count(), 3, "{svg}");
        assert!(
            svg.contains("4 per-image peaks") && svg.contains("tallest bin 2"),
            "{svg}"
        );
    }

    #[test]
    fn histogram_labels_stay_within_the_exact_min_and_max() {
        let mut st = UnitStats::new();
        for v in [0.7f32, 1.3, 5.1] {
            st.add(v);
        }
        let svg = histogram_svg(&st);
        let labels: Vec<f64> = svg
            .split("<text")
            .skip(1)
            .map(|t| {
                let t = &t[t.find('>').unwrap() + 1..];
                t.split(['<', ' ']).next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(labels, vec![0.7, 5.1], "{svg}");
    }
}
