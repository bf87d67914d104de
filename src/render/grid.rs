//! Contact sheets: tiles laid out in a near-square grid, each with a one-line label
//! underneath, under an optional title. Every geometric quantity comes from `Sheet`,
//! so callers (and the gallery's HTML) can tell where each tile landed.

use image::{Rgb, RgbImage};

use super::font;

pub const BACKGROUND: Rgb<u8> = Rgb([24, 24, 24]);
pub const TEXT: Rgb<u8> = Rgb([235, 235, 235]);
/// Placeholder where a tile has no image (e.g. the file is gone).
pub const MISSING: Rgb<u8> = Rgb([70, 20, 20]);

/// Columns and rows for `n` tiles: `cols = ceil(sqrt(n))`, `rows = ceil(n / cols)`.
pub fn layout(n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let mut cols = (n as f64).sqrt() as usize;
    while cols * cols < n {
        cols += 1;
    }
    (cols, n.div_ceil(cols))
}

/// One tile: an image fitted into the cell (centred) and a label.
pub struct Tile {
    pub image: Option<RgbImage>,
    pub label: String,
    /// Frame drawn around the cell (e.g. the selected unit).
    pub frame: Option<Rgb<u8>>,
}

impl Tile {
    pub fn new(image: Option<RgbImage>, label: impl Into<String>) -> Tile {
        Tile {
            image,
            label: label.into(),
            frame: None,
        }
    }
}

/// Geometry of a sheet of `n` cells of `cell_w` x `cell_h` pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sheet {
    pub n: usize,
    pub cols: usize,
    pub rows: usize,
    pub cell_w: u32,
    pub cell_h: u32,
    pub margin: u32,
    pub gap: u32,
    /// Height of the title band (0 without a title).
    pub title_h: u32,
    /// Height of the label strip under each cell (0 without labels).
    pub label_h: u32,
    pub width: u32,
    pub height: u32,
}

pub const TITLE_SCALE: u32 = 2;

impl Sheet {
    pub fn new(n: usize, cell_w: u32, cell_h: u32, title: Option<&str>, labels: bool) -> Sheet {
        Sheet::with_cols(n, layout(n).0, cell_w, cell_h, title, labels)
    }

    /// A sheet with `cols` columns (e.g. one row per filter, one column per input).
    pub fn with_cols(
        n: usize,
        cols: usize,
        cell_w: u32,
        cell_h: u32,
        title: Option<&str>,
        labels: bool,
    ) -> Sheet {
        let cols = cols.clamp(n.min(1), n.max(1));
        let rows = if n == 0 { 0 } else { n.div_ceil(cols) };
        let (margin, gap) = (6, 4);
        let title_h = match title {
            Some(_) => font::text_height(TITLE_SCALE) + 8,
            None => 0,
        };
        let label_h = if labels { font::text_height(1) + 4 } else { 0 };
        let grid_w = cols as u32 * cell_w + (cols as u32).saturating_sub(1) * gap;
        let grid_h = rows as u32 * (cell_h + label_h) + (rows as u32).saturating_sub(1) * gap;
        let title_w = title.map_or(0, |t| font::text_width(t, TITLE_SCALE));
        Sheet {
            n,
            cols,
            rows,
            cell_w,
            cell_h,
            margin,
            gap,
            title_h,
            label_h,
            width: 2 * margin + grid_w.max(title_w),
            height: 2 * margin + title_h + grid_h,
        }
    }

    /// Top-left corner of cell `i` (row-major).
    pub fn cell_origin(&self, i: usize) -> (u32, u32) {
        let (c, r) = ((i % self.cols.max(1)) as u32, (i / self.cols.max(1)) as u32);
        (
            self.margin + c * (self.cell_w + self.gap),
            self.margin + self.title_h + r * (self.cell_h + self.label_h + self.gap),
        )
    }
}

/// Draws the sheet: `title` on top, then `tiles` row by row.
pub fn compose(title: Option<&str>, tiles: &[Tile], cell_w: u32, cell_h: u32) -> RgbImage {
    compose_cols(title, tiles, cell_w, cell_h, layout(tiles.len()).0)
}

/// `compose` with a fixed number of columns.
pub fn compose_cols(
    title: Option<&str>,
    tiles: &[Tile],
    cell_w: u32,
    cell_h: u32,
    cols: usize,
) -> RgbImage {
    let labels = tiles.iter().any(|t| !t.label.is_empty());
    let sheet = Sheet::with_cols(tiles.len(), cols, cell_w, cell_h, title, labels);
    let mut img = RgbImage::from_pixel(sheet.width, sheet.height, BACKGROUND);
    if let Some(t) = title {
        let t = font::fit(t, sheet.width - 2 * sheet.margin, TITLE_SCALE);
        font::draw_text(
            &mut img,
            sheet.margin as i64,
            sheet.margin as i64 + 2,
            &t,
            TEXT,
            TITLE_SCALE,
        );
    }
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = sheet.cell_origin(i);
        match &tile.image {
            Some(im) => {
                let ox = x + cell_w.saturating_sub(im.width()) / 2;
                let oy = y + cell_h.saturating_sub(im.height()) / 2;
                paste(&mut img, im, ox, oy, cell_w, cell_h);
            }
            None => {
                fill(&mut img, [x, y, x + cell_w, y + cell_h], MISSING);
                let msg = font::fit("missing", cell_w.saturating_sub(4), 1);
                font::draw_text(
                    &mut img,
                    (x + 2) as i64,
                    (y + cell_h / 2 - 3) as i64,
                    &msg,
                    TEXT,
                    1,
                );
            }
        }
        if let Some(c) = tile.frame {
            outline(
                &mut img,
                [
                    x as i64 - 2,
                    y as i64 - 2,
                    (x + cell_w + 2) as i64,
                    (y + cell_h + 2) as i64,
                ],
                c,
                2,
            );
        }
        if labels && !tile.label.is_empty() {
            let l = font::fit(&tile.label, cell_w, 1);
            font::draw_text(&mut img, x as i64, (y + cell_h + 2) as i64, &l, TEXT, 1);
        }
    }
    img
}

/// Pictures one under another, left-aligned, `gap` pixels apart, on the background.
pub fn stack(parts: &[RgbImage], gap: u32) -> RgbImage {
    let w = parts.iter().map(|p| p.width()).max().unwrap_or(0);
    let h = parts.iter().map(|p| p.height()).sum::<u32>()
        + gap * (parts.len() as u32).saturating_sub(1);
    let mut out = RgbImage::from_pixel(w.max(1), h.max(1), BACKGROUND);
    let mut y = 0;
    for p in parts {
        paste(&mut out, p, 0, y, p.width(), p.height());
        y += p.height() + gap;
    }
    out
}

/// Copies `src` into `dst` at (x, y), at most `max_w` x `max_h` of it.
pub fn paste(dst: &mut RgbImage, src: &RgbImage, x: u32, y: u32, max_w: u32, max_h: u32) {
    let w = src.width().min(max_w).min(dst.width().saturating_sub(x));
    let h = src.height().min(max_h).min(dst.height().saturating_sub(y));
    for yy in 0..h {
        for xx in 0..w {
            dst.put_pixel(x + xx, y + yy, *src.get_pixel(xx, yy));
        }
    }
}

/// Fills `[x0, y0, x1, y1)` (clipped to the image).
pub fn fill(img: &mut RgbImage, r: [u32; 4], c: Rgb<u8>) {
    for y in r[1]..r[3].min(img.height()) {
        for x in r[0]..r[2].min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

/// Draws the outline of `[x0, y0, x1, y1)`, `t` pixels thick inward; parts outside the
/// image are dropped, so a box that spills past the border shows no edge there.
pub fn outline(img: &mut RgbImage, r: [i64; 4], c: Rgb<u8>, t: i64) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for y in r[1]..r[3] {
        for x in r[0]..r[2] {
            let edge = x < r[0] + t || x >= r[2] - t || y < r[1] + t || y >= r[3] - t;
            if edge {
                put(x, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_near_square() {
        assert_eq!(layout(0), (0, 0));
        assert_eq!(layout(1), (1, 1));
        assert_eq!(layout(2), (2, 1));
        assert_eq!(layout(9), (3, 3));
        assert_eq!(layout(10), (4, 3));
        assert_eq!(layout(96), (10, 10));
        assert_eq!(layout(100), (10, 10));
        assert_eq!(layout(101), (11, 10));
        assert_eq!(layout(1280), (36, 36));
    }

    #[test]
    fn sheet_size_is_margins_cells_gaps_title_and_labels() {
        let s = Sheet::new(9, 50, 40, Some("t"), true);
        // Width: 2*6 margin + 3*50 + 2*4 gaps = 170. Height: 12 + title (14+8)
        // + 3*(40 + label 11) + 2*4 = 195.
        assert_eq!((s.width, s.height), (170, 195));
        assert_eq!(s.cell_origin(0), (6, 28));
        assert_eq!(s.cell_origin(4), (60, 83));
        // A long title widens the sheet instead of being cut.
        let wide = Sheet::new(1, 10, 10, Some("a long title here"), false);
        assert_eq!(wide.width, 12 + 17 * 12 - 2);
    }

    #[test]
    fn tiles_land_in_their_cells_and_missing_ones_are_marked() {
        let red = RgbImage::from_pixel(20, 10, Rgb([255, 0, 0]));
        let tiles = vec![
            Tile::new(Some(red.clone()), "#1 3.5"),
            Tile::new(None, "#2"),
            Tile::new(Some(red), "#3"),
        ];
        let img = compose(None, &tiles, 20, 20);
        let s = Sheet::new(3, 20, 20, None, true);
        assert_eq!(img.dimensions(), (s.width, s.height));
        // 20x10 image centred vertically in a 20x20 cell: rows 5..15 red.
        let (x, y) = s.cell_origin(0);
        assert_eq!(*img.get_pixel(x + 10, y + 7), Rgb([255, 0, 0]));
        assert_eq!(*img.get_pixel(x + 10, y + 2), BACKGROUND);
        let (x, y) = s.cell_origin(1);
        assert_eq!(*img.get_pixel(x + 1, y + 1), MISSING);
        let (x, y) = s.cell_origin(2);
        assert_eq!(*img.get_pixel(x, y + 5), Rgb([255, 0, 0]));
        // The label strip under cell 0 has ink.
        let (x, y) = s.cell_origin(0);
        let ink = (x..x + 20)
            .flat_map(|xx| (y + 22..y + 29).map(move |yy| (xx, yy)))
            .filter(|&(xx, yy)| *img.get_pixel(xx, yy) == TEXT)
            .count();
        assert!(ink > 10);
    }

    #[test]
    fn fixed_columns_and_stacking() {
        let s = Sheet::with_cols(10, 5, 8, 8, None, false);
        assert_eq!((s.cols, s.rows), (5, 2));
        assert_eq!(s.cell_origin(7), (6 + 2 * 12, 6 + 12));
        let a = RgbImage::from_pixel(4, 2, Rgb([1, 1, 1]));
        let b = RgbImage::from_pixel(6, 3, Rgb([2, 2, 2]));
        let st = stack(&[a, b], 1);
        assert_eq!(st.dimensions(), (6, 6));
        assert_eq!(st.get_pixel(0, 1).0, [1, 1, 1]);
        assert_eq!(*st.get_pixel(5, 1), BACKGROUND);
        assert_eq!(*st.get_pixel(0, 2), BACKGROUND);
        assert_eq!(st.get_pixel(5, 5).0, [2, 2, 2]);
    }

    #[test]
    fn outline_is_clipped_at_the_border() {
        let mut img = RgbImage::new(10, 10);
        outline(&mut img, [-5, 2, 6, 8], Rgb([0, 255, 0]), 1);
        assert_eq!(img.get_pixel(5, 4).0[1], 255); // right edge
        assert_eq!(img.get_pixel(0, 2).0[1], 255); // top edge reaches the border
        assert_eq!(img.get_pixel(0, 4).0[1], 0); // the left edge lies outside
        assert_eq!(img.get_pixel(3, 4).0[1], 0); // inside stays untouched
    }
}
