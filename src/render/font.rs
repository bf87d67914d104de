//! A tiny built-in 5x7 bitmap font for printable ASCII, so labels and titles need no
//! font files. Each glyph is drawn in a 6x8 cell (one column and one row of spacing),
//! optionally scaled up by whole pixels.

use std::sync::OnceLock;

use image::{Rgb, RgbImage};

pub const GLYPH_W: u32 = 5;
pub const GLYPH_H: u32 = 7;
/// Horizontal advance per character, in unscaled pixels.
pub const ADVANCE: u32 = GLYPH_W + 1;

/// Glyphs for ' ' (0x20) to '~' (0x7e): 7 rows of 5 columns, '#' = ink.
const GLYPHS: [&str; 95] = [
    "..... ..... ..... ..... ..... ..... .....", // ' '
    "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..", // !
    ".#.#. .#.#. ..... ..... ..... ..... .....", // "
    ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.", // #
    "..#.. .#### #.#.. .###. ..#.# ####. ..#..", // $
    "##..# ##..# ...#. ..#.. .#... #..## #..##", // %
    ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#", // &
    "..#.. ..#.. ..... ..... ..... ..... .....", // '
    "...#. ..#.. .#... .#... .#... ..#.. ...#.", // (
    ".#... ..#.. ...#. ...#. ...#. ..#.. .#...", // )
    "..... ..#.. #.#.# .###. #.#.# ..#.. .....", // *
    "..... ..#.. ..#.. ##### ..#.. ..#.. .....", // +
    "..... ..... ..... ..... .##.. ..#.. .#...", // ,
    "..... ..... ..... ##### ..... ..... .....", // -
    "..... ..... ..... ..... ..... .##.. .##..", // .
    "....# ....# ...#. ..#.. .#... #.... #....", // /
    ".###. #...# #..## #.#.# ##..# #...# .###.", // 0
    "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.", // 1
    ".###. #...# ....# ...#. ..#.. .#... #####", // 2
    "##### ...#. ..#.. ...#. ....# #...# .###.", // 3
    "...#. ..##. .#.#. #..#. ##### ...#. ...#.", // 4
    "##### #.... ####. ....# ....# #...# .###.", // 5
    "..##. .#... #.... ####. #...# #...# .###.", // 6
    "##### ....# ...#. ..#.. .#... .#... .#...", // 7
    ".###. #...# #...# .###. #...# #...# .###.", // 8
    ".###. #...# #...# .#### ....# ...#. .##..", // 9
    "..... .##.. .##.. ..... .##.. .##.. .....", // :
    "..... .##.. .##.. ..... .##.. ..#.. .#...", // ;
    "...#. ..#.. .#... #.... .#... ..#.. ...#.", // <
    "..... ..... ##### ..... ##### ..... .....", // =
    ".#... ..#.. ...#. ....# ...#. ..#.. .#...", // >
    ".###. #...# ....# ...#. ..#.. ..... ..#..", // ?
    ".###. #...# ....# .##.# #.#.# #.#.# .###.", // @
    ".###. #...# #...# ##### #...# #...# #...#", // A
    "####. #...# #...# ####. #...# #...# ####.", // B
    ".###. #...# #.... #.... #.... #...# .###.", // C
    "###.. #..#. #...# #...# #...# #..#. ###..", // D
    "##### #.... #.... ####. #.... #.... #####", // E
    "##### #.... #.... ####. #.... #.... #....", // F
    ".###. #...# #.... #.### #...# #...# .####", // G
    "#...# #...# #...# ##### #...# #...# #...#", // H
    ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", // I
    "..### ...#. ...#. ...#. ...#. #..#. .##..", // J
    "#...# #..#. #.#.. ##... #.#.. #..#. #...#", // K
    "#.... #.... #.... #.... #.... #.... #####", // L
    "#...# ##.## #.#.# #.#.# #...# #...# #...#", // M
    "#...# #...# ##..# #.#.# #..## #...# #...#", // N
    ".###. #...# #...# #...# #...# #...# .###.", // O
    "####. #...# #...# ####. #.... #.... #....", // P
    ".###. #...# #...# #...# #.#.# #..#. .##.#", // Q
    "####. #...# #...# ####. #.#.. #..#. #...#", // R
    ".#### #.... #.... .###. ....# ....# ####.", // S
    "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..", // T
    "#...# #...# #...# #...# #...# #...# .###.", // U
    "#...# #...# #...# #...# #...# .#.#. ..#..", // V
    "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", // W
    "#...# #...# .#.#. ..#.. .#.#. #...# #...#", // X
    "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", // Y
    "##### ....# ...#. ..#.. .#... #.... #####", // Z
    ".###. .#... .#... .#... .#... .#... .###.", // [
    "#.... #.... .#... ..#.. ...#. ....# ....#", // backslash
    ".###. ...#. ...#. ...#. ...#. ...#. .###.", // ]
    "..#.. .#.#. #...# ..... ..... ..... .....", // ^
    "..... ..... ..... ..... ..... ..... #####", // _
    ".#... ..#.. ..... ..... ..... ..... .....", // `
    "..... ..... .###. ....# .#### #...# .####", // a
    "#.... #.... #.##. ##..# #...# #...# ####.", // b
    "..... ..... .###. #.... #.... #...# .###.", // c
    "....# ....# .##.# #..## #...# #...# .####", // d
    "..... ..... .###. #...# ##### #.... .###.", // e
    "..##. .#..# .#... ###.. .#... .#... .#...", // f
    "..... .#### #...# #...# .#### ....# .###.", // g
    "#.... #.... #.##. ##..# #...# #...# #...#", // h
    "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.", // i
    "...#. ..... ..##. ...#. ...#. #..#. .##..", // j
    "#.... #.... #..#. #.#.. ##... #.#.. #..#.", // k
    ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", // l
    "..... ..... ##.#. #.#.# #.#.# #...# #...#", // m
    "..... ..... #.##. ##..# #...# #...# #...#", // n
    "..... ..... .###. #...# #...# #...# .###.", // o
    "..... ..... ####. #...# ####. #.... #....", // p
    "..... ..... .##.# #..## .#### ....# ....#", // q
    "..... ..... #.##. ##..# #.... #.... #....", // r
    "..... ..... .###. #.... .###. ....# ####.", // s
    ".#... .#... ###.. .#... .#... .#..# ..##.", // t
    "..... ..... #...# #...# #...# #..## .##.#", // u
    "..... ..... #...# #...# #...# .#.#. ..#..", // v
    "..... ..... #...# #...# #.#.# #.#.# .#.#.", // w
    "..... ..... #...# .#.#. ..#.. .#.#. #...#", // x
    "..... ..... #...# #...# .#### ....# .###.", // y
    "..... ..... ##### ...#. ..#.. .#... #####", // z
    "...#. ..#.. ..#.. .#... ..#.. ..#.. ...#.", // {
    "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..", // |
    ".#... ..#.. ..#.. ...#. ..#.. ..#.. .#...", // }
    "..... ..... .#... #.#.# ...#. ..... .....", // ~
];

/// Shown for characters outside printable ASCII: a hollow box.
const UNKNOWN: [u8; 7] = [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f];

fn table() -> &'static [[u8; 7]; 95] {
    static TABLE: OnceLock<[[u8; 7]; 95]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0u8; 7]; 95];
        for (g, src) in t.iter_mut().zip(GLYPHS) {
            for (row, bits) in g.iter_mut().zip(src.split(' ')) {
                *row = bits
                    .bytes()
                    .fold(0u8, |acc, b| (acc << 1) | (b == b'#') as u8);
            }
        }
        t
    })
}

/// The 7 rows of `c`'s glyph; bit 4 of each row is the leftmost column.
pub fn glyph(c: char) -> [u8; 7] {
    match c as u32 {
        0x20..=0x7e => table()[c as usize - 0x20],
        _ => UNKNOWN,
    }
}

/// Width in pixels of `text` drawn at `scale` (no trailing spacing column).
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    (n * ADVANCE).saturating_sub(1) * scale
}

/// Height in pixels of one line at `scale`.
pub fn text_height(scale: u32) -> u32 {
    GLYPH_H * scale
}

/// The longest prefix of `text` that fits in `max_w` pixels, with ".." when cut.
pub fn fit(text: &str, max_w: u32, scale: u32) -> String {
    if text_width(text, scale) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 0 {
        n -= 1;
        let s: String = chars[..n].iter().chain(['.', '.'].iter()).collect();
        if text_width(&s, scale) <= max_w {
            return s;
        }
    }
    String::new()
}

/// Draws `text` with its top-left corner at (x, y); ink outside the image is dropped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: Rgb<u8>, scale: u32) {
    let s = scale.max(1) as i64;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * ADVANCE as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W as i64 {
                if bits >> (GLYPH_W as i64 - 1 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        let (px, py) = (gx + col * s + dx, y + row as i64 * s + dy);
                        if (0..w).contains(&px) && (0..h).contains(&py) {
                            img.put_pixel(px as u32, py as u32, color);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_seven_rows_of_five() {
        for (i, g) in GLYPHS.iter().enumerate() {
            let rows: Vec<&str> = g.split(' ').collect();
            assert_eq!(rows.len(), 7, "glyph {:?}", (i as u8 + 0x20) as char);
            for r in rows {
                assert_eq!(r.len(), 5, "glyph {:?}", (i as u8 + 0x20) as char);
                assert!(r.bytes().all(|b| b == b'#' || b == b'.'));
            }
        }
    }

    #[test]
    fn glyphs_are_distinct_and_only_space_is_blank() {
        let all: Vec<[u8; 7]> = (0x20u8..=0x7e).map(|b| glyph(b as char)).collect();
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.iter().all(|&r| r == 0), i == 0);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn draws_the_digit_one_pixel_for_pixel_at_scale_two() {
        let mut img = RgbImage::new(12, 16);
        draw_text(&mut img, 1, 1, "1", Rgb([255, 255, 255]), 2);
        // Hand-written '1': column 2 down the middle, a foot on row 6, a flag at row 1.
        let rows = [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ];
        for (r, row) in rows.iter().enumerate() {
            for (c, ch) in row.chars().enumerate() {
                let want = if ch == '#' { 255 } else { 0 };
                for d in 0..4 {
                    let (x, y) = (1 + c as u32 * 2 + d % 2, 1 + r as u32 * 2 + d / 2);
                    assert_eq!(img.get_pixel(x, y).0[0], want, "row {r} col {c}");
                }
            }
        }
        // Nothing outside the 10x14 glyph box.
        let ink = img.pixels().filter(|p| p.0[0] > 0).count();
        assert_eq!(ink, 4 * rows.concat().matches('#').count());
    }

    #[test]
    fn widths_and_fitting() {
        assert_eq!(text_width("", 1), 0);
        assert_eq!(text_width("ab", 1), 11);
        assert_eq!(text_width("abc", 2), 34);
        assert_eq!(fit("short", 100, 1), "short");
        // 6 px per char + 5 for the last: 4 chars of "abcdefgh" plus ".." is 35 px.
        assert_eq!(fit("abcdefgh", 35, 1), "abcd..");
        assert!(text_width(&fit("a very long label", 40, 1), 1) <= 40);
    }

    #[test]
    fn text_past_the_border_is_clipped_not_a_panic() {
        let mut img = RgbImage::new(8, 8);
        draw_text(&mut img, -2, 5, "W?\u{e9}", Rgb([9, 9, 9]), 3);
        assert!(img.pixels().any(|p| p.0[0] == 9));
    }
}
