//! Where concept labels come from, before they meet the index: a label file (CSV or
//! TSV, `path,label[,label...]`), folder names (ImageNet's WordNet ids named through
//! the ImageNet-1k synset table), or the images under a folder. Plain data out:
//! `(path relative to the indexed root, label)` pairs; `concepts` matches them to
//! indexed images.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Longest label kept (in characters); a longer one is an error naming the line.
pub const MAX_LABEL_CHARS: usize = 200;
/// Largest label file read (bytes): a label file is text, 1.28 M ImageNet paths
/// with a label each are about 60 MB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A label file's rows: each path with its labels, in file order.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub rows: Vec<(PathBuf, Vec<String>)>,
    /// Rows that named a path but no label (1-based line numbers, the first few).
    pub unlabelled: Vec<usize>,
}

/// Reads a label file: one image per line, its path (relative to the indexed root)
/// then one or more labels, comma-separated (tab-separated when the file ends in
/// `.tsv` or its first line has a tab). Fields may be double-quoted (RFC 4180, `""`
/// for a quote inside). A first line whose first field is `path` or `file` is a
/// header. Blank lines and lines starting with `#` are skipped; surrounding
/// whitespace is trimmed; empty labels are dropped.
pub fn read_table(path: &Path) -> Result<Table> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Labels {
        path: path.to_path_buf(),
        reason,
    };
    if meta.is_dir() {
        return Err(bad("a directory, not a label file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "{} bytes; label files above {} MB are refused",
            meta.len(),
            MAX_FILE_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "not UTF-8 text (byte {} is not part of a character)",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
        || text.lines().next().is_some_and(|l| l.contains('\t'));
    parse_table(&text, if tsv { '\t' } else { ',' }).map_err(bad)
}

/// The rows of label-file text with fields separated by `sep`; errors name the line.
pub fn parse_table(text: &str, sep: char) -> std::result::Result<Table, String> {
    let mut table = Table::default();
    let mut first = true;
    for (n, fields) in records(text, sep) {
        let fields = fields.map_err(|e| format!("line {n}: {e}"))?;
        let fields: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
        if fields.iter().all(|f| f.is_empty()) || fields[0].starts_with('#') {
            continue;
        }
        if std::mem::take(&mut first)
            && (fields[0].eq_ignore_ascii_case("path") || fields[0].eq_ignore_ascii_case("file"))
        {
            continue;
        }
        let rel = relative(fields[0]).map_err(|e| format!("line {n}: {e}"))?;
        let mut labels = Vec::new();
        for l in fields[1..].iter().filter(|l| !l.is_empty()) {
            labels.push(check_label(l).map_err(|e| format!("line {n}: {e}"))?);
        }
        if labels.is_empty() {
            if table.unlabelled.len() < 20 {
                table.unlabelled.push(n);
            }
            continue;
        }
        table.rows.push((rel, labels));
    }
    Ok(table)
}

/// Splits text into records of fields, with their 1-based first line numbers.
/// Quoted fields may hold the separator, quotes (doubled) and line breaks.
fn records(
    text: &str,
    sep: char,
) -> impl Iterator<Item = (usize, std::result::Result<Vec<String>, String>)> + '_ {
    let mut chars = text.chars().peekable();
    let mut line = 1;
    std::iter::from_fn(move || {
        chars.peek()?;
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut was_quoted = false;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Some((start, Err("a quoted field is not closed".into())));
                }
                fields.push(std::mem::take(&mut field));
                break;
            };
            if c == '\n' {
                line += 1;
            }
            if quoted {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                    }
                } else {
                    field.push(c);
                }
                continue;
            }
            match c {
                '"' if field.trim().is_empty() && !was_quoted => {
                    field.clear();
                    quoted = true;
                    was_quoted = true;
                }
                '\n' => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                c if c == sep => {
                    fields.push(std::mem::take(&mut field));
                    was_quoted = false;
                }
                c => field.push(c),
            }
        }
        Some((start, Ok(fields)))
    })
}

/// A label as kept: trimmed, no control characters, at most `MAX_LABEL_CHARS`.
pub fn check_label(l: &str) -> std::result::Result<String, String> {
    let l = l.trim();
    if l.is_empty() {
        return Err("an empty label".into());
    }
    if let Some(c) = l.chars().find(|c| c.is_control()) {
        return Err(format!("label {l:?} holds a control character ({c:?})"));
    }
    if l.chars().count() > MAX_LABEL_CHARS {
        return Err(format!(
            "a label of {} characters (at most {MAX_LABEL_CHARS})",
            l.chars().count()
        ));
    }
    Ok(l.to_string())
}

/// A path from a label file as a relative path below the root: `./` and `\`
/// separators allowed, `..` and absolute paths refused.
fn relative(p: &str) -> std::result::Result<PathBuf, String> {
    let p = p.replace('\\', "/");
    let path = Path::new(&p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "path {p:?} is not relative to the indexed root (no `..`, no leading /)"
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("an empty path".into());
    }
    Ok(out)
}

/// The ImageNet-1k class of a WordNet id (`n01440764` -> 0, "tench").
pub fn imagenet_class(wnid: &str) -> Option<(usize, &'static str)> {
    let ids = wnids();
    let i = ids.binary_search(&wnid).ok()?;
    Some((i, crate::model::imagenet_label(i)))
}

fn wnids() -> &'static [&'static str] {
    static IDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    // ImageNet-1k's class order is its WordNet ids sorted, as the file lists them.
    IDS.get_or_init(|| include_str!("arch/imagenet_wnids.txt").lines().collect())
}

/// Labels from folder names: each path's parent folder (`n01440764/x.JPEG` ->
/// `n01440764`; paths at the root get none). When every such folder is an
/// ImageNet-1k WordNet id, they are named through the synset table ("tench") and the
/// set is `imagenet`; otherwise the folder names are the labels and the set is
/// `folders`.
pub fn from_dirs<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
) -> (String, Vec<(PathBuf, String)>) {
    let mut pairs: Vec<(PathBuf, String)> = Vec::new();
    for p in paths {
        let Some(dir) = p.parent().and_then(|d| d.file_name()) else {
            continue;
        };
        pairs.push((p.to_path_buf(), dir.to_string_lossy().into_owned()));
    }
    let imagenet = !pairs.is_empty() && pairs.iter().all(|(_, d)| imagenet_class(d).is_some());
    if imagenet {
        for (_, d) in &mut pairs {
            *d = imagenet_class(d).expect("checked").1.to_string();
        }
        ("imagenet".into(), pairs)
    } else {
        ("folders".into(), pairs)
    }
}

/// `NAME=DIR` of `--concept`.
pub fn parse_concept_arg(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=DIR"))?;
    let name = check_label(name)?;
    if dir.is_empty() {
        return Err(format!("{s:?} names no folder"));
    }
    Ok((name, PathBuf::from(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_quotes_header_comments_and_several_labels() {
        let t = parse_table(
            "path,label\n# a comment\n./a/x.jpg,face,\"dog, small\"\n\"b/y \"\"q\"\".jpg\",cat\n\nc.jpg,\n",
            ',',
        )
        .unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].0, PathBuf::from("a/x.jpg"));
        assert_eq!(t.rows[0].1, vec!["face", "dog, small"]);
        assert_eq!(t.rows[1].0, PathBuf::from("b/y \"q\".jpg"));
        assert_eq!(t.unlabelled, vec![6]);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let e = parse_table("a.jpg,x\n../b.jpg,y\n", ',').unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_table("a.jpg,\"open\n", ',').unwrap_err();
        assert!(e.contains("not closed"), "{e}");
        let e = parse_table("a.jpg\tx\u{7}y\n", '\t').unwrap_err();
        assert!(e.contains("control character"), "{e}");
    }

    #[test]
    fn imagenet_folders_are_named_through_the_synset_table() {
        assert_eq!(imagenet_class("n01440764"), Some((0, "tench")));
        assert_eq!(imagenet_class("n15075141"), Some((999, "toilet tissue")));
        assert_eq!(imagenet_class("n00000000"), None);
        let paths = [
            PathBuf::from("train/n01443537/a.JPEG"),
            PathBuf::from("n01440764/b.JPEG"),
        ];
        let (set, pairs) = from_dirs(paths.iter().map(|p| p.as_path()));
        assert_eq!(set, "imagenet");
        assert_eq!(pairs[0].1, "goldfish");
        assert_eq!(pairs[1].1, "tench");
        let paths = [PathBuf::from("cats/a.jpg"), PathBuf::from("top.jpg")];
        let (set, pairs) = from_dirs(paths.iter().map(|p| p.as_path()));
        assert_eq!((set.as_str(), pairs.len()), ("folders", 1));
        assert_eq!(pairs[0].1, "cats");
    }
}
