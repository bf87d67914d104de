//! Opening an indexed photo again, later (to serve it, crop it, draw it): only a
//! regular file that still lies under the indexed folder once every link is
//! resolved, and that still has the size and modification time the index recorded.
//! A link swapped in after indexing that leads out of the folder, or a file
//! replaced since, is refused instead of read. The file is opened first and its
//! metadata taken from the open descriptor, so what is checked is what is read.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Why an indexed file is not opened.
#[derive(Debug)]
pub enum Refused {
    /// The recorded path is not a plain relative path, or it resolves outside the
    /// indexed folder.
    Outside(PathBuf),
    /// Not a regular file any more, or another size or modification time.
    Changed(PathBuf),
    /// Gone or unreadable.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Outside(p) => write!(
                f,
                "{}: leads outside the indexed folder (a symbolic link?); not served",
                p.display()
            ),
            Refused::Changed(p) => write!(
                f,
                "{}: the file changed since it was indexed (index again to see it)",
                p.display()
            ),
            Refused::Io(p, e) => write!(f, "{}: cannot be read any more: {e}", p.display()),
        }
    }
}

/// Opens `root/rel` if it is still the file the index recorded (`size` bytes,
/// modified at `mtime_ns`; `None` skips that part of the check).
pub fn open_indexed(
    root: &Path,
    rel: &Path,
    size: Option<u64>,
    mtime_ns: Option<i64>,
) -> Result<File, Refused> {
    let joined = root.join(rel);
    let plain =
        !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(Refused::Outside(joined));
    }
    let io = |e| Refused::Io(joined.clone(), e);
    let root = std::fs::canonicalize(root).map_err(io)?;
    let real = std::fs::canonicalize(&joined).map_err(io)?;
    if !real.starts_with(&root) {
        return Err(Refused::Outside(joined));
    }
    let file = open_no_follow(&real).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let changed = !meta.is_file()
        || size.is_some_and(|s| s != meta.len())
        || mtime_ns.is_some_and(|t| t != crate::crawl::mtime_ns(&meta));
    if changed {
        return Err(Refused::Changed(joined));
    }
    Ok(file)
}

/// Opens a resolved path, refusing a link put at its last component since.
fn open_no_follow(p: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_as_indexed_opens_and_others_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.jpg"), b"abc").unwrap();
        let meta = std::fs::metadata(root.join("a.jpg")).unwrap();
        let t = crate::crawl::mtime_ns(&meta);
        let rel = Path::new("a.jpg");
        assert!(open_indexed(&root, rel, Some(3), Some(t)).is_ok());
        assert!(matches!(
            open_indexed(&root, rel, Some(4), Some(t)),
            Err(Refused::Changed(_))
        ));
        assert!(matches!(
            open_indexed(&root, Path::new("../root/a.jpg"), None, None),
            Err(Refused::Outside(_))
        ));
        #[cfg(unix)]
        {
            std::fs::write(dir.path().join("secret"), b"abc").unwrap();
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("b.jpg")).unwrap();
            let e = open_indexed(&root, Path::new("b.jpg"), Some(3), None).unwrap_err();
            assert!(matches!(e, Refused::Outside(_)), "{e}");
            assert!(e.to_string().contains("outside the indexed folder"));
        }
    }
}
