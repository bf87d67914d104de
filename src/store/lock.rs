//! One writer per database: an exclusive lock on a `DB.lock` file beside it, held
//! for the whole of an `index`. SQLite's own locks are per transaction, so two
//! indexers would each commit batches between the other's, and the one that saves
//! its in-memory statistics last would silently overwrite the other's. The lock is
//! advisory (`flock` on Unix, `LockFileEx` on Windows, via `std::fs::File::lock`):
//! the OS drops it when the holder dies, so a killed run never leaves it stale. The
//! file is never deleted, as unlinking a lock file lets two processes hold locks on
//! two different files of one name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The lock file of a database.
pub fn lock_path(db: &Path) -> PathBuf {
    super::side_file(db, ".lock")
}

/// The held writer lock; released when dropped.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// How long a writer retries before giving up: long enough to ride over a reader
/// probing the lock (`writer_active`), short enough to answer at once.
const RETRY_FOR: Duration = Duration::from_millis(500);

impl WriterLock {
    /// Takes the writer lock of `db`, or says who holds it.
    pub fn acquire(db: &Path) -> Result<WriterLock> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < RETRY_FOR => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: db.to_path_buf(),
                        holder: holder_text(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        let about = format!(
            "pid {} on {}, since {}: {}\n",
            std::process::id(),
            hostname(),
            super::unix_now(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(about.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(WriterLock { _file: file })
    }
}

/// Who holds the writer lock of `db`, if anyone: for readers to say that the
/// index they read is still being built. Never blocks and never creates the file.
pub fn writer_active(db: &Path) -> Option<String> {
    let mut file = File::open(lock_path(db)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(holder_text(&mut file)),
        // A file system without locks: nothing to tell.
        Err(TryLockError::Error(_)) => None,
    }
}

/// The holder's description from the lock file, with its age.
fn holder_text(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(4096).read_to_string(&mut text);
    let text = text.trim();
    // "pid P on H, since T: command" with T in Unix seconds, shown as an age.
    let shown = text
        .split_once(", since ")
        .and_then(|(who, rest)| {
            let (t, cmd) = rest.split_once(": ")?;
            let age = super::unix_now() - t.parse::<i64>().ok()?;
            Some(format!("{who}, running for {age} s: {cmd}"))
        })
        .unwrap_or_else(|| text.to_string());
    if shown.is_empty() {
        "a process that has not said who it is yet".into()
    } else {
        shown
    }
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
        // names that fit, and the length below stops at the buffer's end otherwise.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "this machine".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let first = WriterLock::acquire(&db).unwrap();
        let holder = writer_active(&db).expect("a reader sees the writer");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        match WriterLock::acquire(&db) {
            Err(Error::Locked { holder, .. }) => {
                assert!(holder.contains("running for"), "{holder}")
            }
            other => panic!("second writer not refused: {other:?}"),
        }
        drop(first);
        assert_eq!(writer_active(&db), None);
        WriterLock::acquire(&db).expect("free once the first is dropped");
    }
}
