//! Writing output files (pictures, gallery pages, JSON): each file is written whole
//! under a temporary name beside it and renamed into place, so a full disk or a
//! killed process leaves the old file or none, never a truncated one; and nothing is
//! written through a symbolic link: a link at the name is replaced by the rename
//! (its target untouched), the temporary name is created exclusively (a link
//! planted there makes the create fail), and `refuse_linked_dirs` checks an output
//! folder's subfolders before a command fills it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes `bytes` to `path` (see the module doc), creating the parent directory.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Writes what `fill` puts into the buffered writer to `path`, whole or not at all.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let (tmp, file) = temp_beside(path)?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        // No fsync: a full disk fails the writes above; a power cut is what fsync
        // would guard against, at a cost a 4,000-file gallery would feel.
        drop(file);
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A new file beside `path`, created exclusively under a name no other writer uses.
fn temp_beside(path: &Path) -> Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| Error::Output {
        path: path.to_path_buf(),
        reason: "not a file name".into(),
    })?;
    loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = path.with_file_name(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // Left by a killed run of an earlier process with this pid: take the next.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// Refuses an output folder holding a symbolic link to a directory anywhere below
/// it, which would send files written "inside" it elsewhere. (The folder itself
/// may be a link: that is where the user asked the output to go.)
pub fn refuse_linked_dirs(out: &Path) -> Result<()> {
    if !out.is_dir() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(out).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(out).to_path_buf();
            Error::io(path, e.into())
        })?;
        if entry.path_is_symlink() && entry.path().is_dir() {
            return Err(Error::Output {
                path: entry.path().to_path_buf(),
                reason: "a symbolic link to a directory inside the output folder; neurodex \
                         writes no output through links (remove it, or choose another folder)"
                    .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_name_is_replaced_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"keep me").unwrap();
        let out = dir.path().join("style.css");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write(&out, b"body {}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert!(!fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&out).unwrap(), b"body {}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.png");
        fs::write(&out, b"old").unwrap();
        let e = write_with(&out, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::io(&out, std::io::Error::other("disk full")))
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&out).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_subfolder_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("units")).unwrap();
        let e = refuse_linked_dirs(dir.path()).unwrap_err().to_string();
        assert!(e.contains("units") && e.contains("symbolic link"), "{e}");
    }
}
