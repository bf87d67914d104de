//! The SQL of `neurodex merge`: a new database built beside the output from the rows of
//! several inputs (each attached in turn, so any number can be merged), and put in the
//! output's place only once it is complete.
//!
//! Images are numbered afresh in the order a walk of the root meets them (names
//! sorted, directory by directory: the order one `index` of the whole folder gives
//! them), so a tie in a top-K list, broken by the earlier image, is broken the same
//! way whichever input an image came from.

use std::path::{Path, PathBuf};

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::codec::{decode_hits, path_bytes, read_stats};
use super::{sql_error, Ctx, LayerInfo, RunInfo, Store};
use crate::shard::Shard;
use crate::stats::{Hit, TopK, UnitStats};
use crate::{Error, Result};

/// One input as `merged_input` records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MergedInput {
    pub path: String,
    pub shard: Option<Shard>,
    pub images: u64,
    pub failed: u64,
    pub created_at: i64,
    pub merged_at: i64,
    /// The instruction sets its runs computed on.
    pub isa: Vec<String>,
}

/// Statistics and top-K lists `[layer][unit]`, as selected from the inputs.
pub type Derived<'a> = (&'a [Vec<UnitStats>], &'a [Vec<TopK>]);

/// How the inputs' images came together.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Numbered {
    /// Images (indexed, failed, removed) in the merged database.
    pub images: u64,
    /// Paths met in more than one input (counted once; the newest row kept).
    pub repeated_paths: u64,
}

/// A database being built by `merge`: a file of its own that nothing reads until
/// `finish` renames it over the output.
pub struct MergeTarget {
    store: Store,
}

/// `path_raw` as a key whose byte order is the walk's order: a walk sorted by file
/// name visits `a/z.jpg` before `a.jpg` ('/' ends a name, so it sorts below every byte).
fn walk_key(p: &[u8]) -> Vec<u8> {
    let sep = std::path::MAIN_SEPARATOR as u8;
    p.iter().map(|&b| if b == sep { 0 } else { b }).collect()
}

impl MergeTarget {
    /// Creates `path` (replacing what an interrupted merge left there) with `run` and
    /// `layers` and empty temporary tables.
    pub fn create(path: &Path, run: &RunInfo, layers: &[LayerInfo]) -> Result<MergeTarget> {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let f = super::side_file(path, suffix);
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&f, e)),
                _ => {}
            }
        }
        let sql = |e| sql_error(Some(path.to_path_buf()), e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
        // Nothing reads this file until it is complete, and a failed merge starts it
        // again: no journal, no waiting for the disk (it is synced once, at the end).
        conn.pragma_update(None, "journal_mode", "OFF")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(sql)?;
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(sql)?;
        conn.create_scalar_function(
            "walk_key",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| Ok(walk_key(&ctx.get::<Vec<u8>>(0)?)),
        )
        .map_err(sql)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            _writer: None,
            version: 0,
        };
        store.migrate()?;
        store.version = super::SCHEMA_VERSION;
        store.create_run(run, layers)?;
        store
            .conn
            .execute_batch(
                "CREATE TEMP TABLE cand (
                     src INTEGER NOT NULL, src_id INTEGER NOT NULL, path_raw BLOB NOT NULL,
                     path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT, width INTEGER,
                     height INTEGER, transform TEXT, status TEXT, error_kind TEXT, error TEXT,
                     seen INTEGER NOT NULL, chosen INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (src, src_id));
                 CREATE INDEX temp.cand_path ON cand (path_raw);
                 CREATE TEMP TABLE idmap (
                     src INTEGER NOT NULL, src_id INTEGER NOT NULL, new_id INTEGER NOT NULL,
                     status TEXT NOT NULL, chosen INTEGER NOT NULL,
                     ranked INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (src, src_id)) WITHOUT ROWID;
                 BEGIN;",
            )
            .ctx(&store.conn)?;
        Ok(MergeTarget { store })
    }

    fn conn(&self) -> &Connection {
        &self.store.conn
    }

    /// Runs `f` with input `db` attached as `input`, in a transaction of its own
    /// (SQLite attaches and detaches only between transactions).
    fn attached<T>(&self, db: &Path, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn();
        let err = |e| sql_error(Some(db.to_path_buf()), e);
        conn.execute_batch("COMMIT").ctx(conn)?;
        conn.execute("ATTACH DATABASE ?1 AS input", [read_only_uri(db)])
            .map_err(err)?;
        conn.execute_batch("BEGIN").ctx(conn)?;
        let r = f(conn);
        let ended = conn
            .execute_batch("COMMIT")
            .and_then(|_| conn.execute_batch("DETACH DATABASE input"))
            .and_then(|_| conn.execute_batch("BEGIN"))
            .map_err(err);
        let v = r?;
        ended?;
        Ok(v)
    }

    /// Takes the image rows of input number `src` (0, 1, ... in the order given),
    /// which last looked at the folder at `seen` (`Store::seen_at`).
    pub fn add_images(&mut self, src: usize, db: &Path, seen: i64) -> Result<()> {
        self.attached(db, |c| {
            c.execute(
                "INSERT INTO temp.cand (src, src_id, path_raw, path, size, mtime_ns, sha256,
                                        width, height, transform, status, error_kind, error,
                                        seen)
                 SELECT ?1, id, path_raw, path, size, mtime_ns, sha256, width, height,
                        transform, status, error_kind, error, ?2
                 FROM input.image",
                params![src as i64, seen],
            )
            .map_err(|e| sql_error(Some(db.to_path_buf()), e))?;
            Ok(())
        })
    }

    /// Keeps one row per path (that of the input that looked at the folder last, then
    /// of the earlier input: a file deleted or changed since an older input saw it is
    /// as the newer one found it), numbers the kept rows in walk order, and maps every
    /// input row to its path's new id. `keep_duplicates`: as the run says; otherwise
    /// only the first file of each content is ranked.
    pub fn number_images(&mut self, keep_duplicates: bool) -> Result<Numbered> {
        let c = self.conn();
        c.execute_batch(
            "UPDATE temp.cand SET chosen = 1 WHERE (src, src_id) IN (
                 SELECT src, src_id FROM (
                     SELECT src, src_id, row_number() OVER (
                         PARTITION BY path_raw ORDER BY seen DESC, src) AS r
                     FROM temp.cand)
                 WHERE r = 1);
             INSERT INTO main.image (id, path_raw, path, size, mtime_ns, sha256, width, height,
                                     transform, status, error_kind, error)
             SELECT row_number() OVER (ORDER BY walk_key(path_raw)), path_raw, path, size,
                    mtime_ns, sha256, width, height, transform, status, error_kind, error
             FROM temp.cand WHERE chosen;
             INSERT INTO temp.idmap (src, src_id, new_id, status, chosen)
             SELECT c.src, c.src_id, i.id, c.status, c.chosen
             FROM temp.cand c JOIN main.image i ON i.path_raw = c.path_raw;",
        )
        .ctx(c)?;
        c.execute(
            "UPDATE temp.idmap SET ranked = 1 WHERE chosen AND status = 'ok' AND
                 (?1 OR NOT EXISTS (SELECT 1 FROM main.image i
                                    JOIN main.image j ON j.sha256 = i.sha256
                                    WHERE i.id = idmap.new_id AND j.status = 'ok'
                                      AND j.id < i.id))",
            [keep_duplicates],
        )
        .ctx(c)?;
        let images: i64 = c
            .query_row("SELECT count(*) FROM main.image", [], |r| r.get(0))
            .ctx(c)?;
        let repeated: i64 = c
            .query_row(
                "SELECT count(*) FROM (SELECT 1 FROM temp.cand WHERE status != 'removed'
                                       GROUP BY path_raw HAVING count(*) > 1)",
                [],
                |r| r.get(0),
            )
            .ctx(c)?;
        Ok(Numbered {
            images: images as u64,
            repeated_paths: repeated as u64,
        })
    }

    /// Whether input `src` numbered its indexed images in walk order, so that its top-K
    /// lists broke ties as the merged database does (not so where files were added to
    /// the folder between two runs of its `index`).
    pub fn in_walk_order(&self, src: usize) -> Result<bool> {
        let c = self.conn();
        let out_of_order: i64 = c
            .query_row(
                "SELECT count(*) FROM (
                     SELECT new_id, lag(new_id) OVER (ORDER BY src_id) AS before
                     FROM temp.idmap WHERE src = ?1 AND status = 'ok')
                 WHERE before > new_id",
                [src as i64],
                |r| r.get(0),
            )
            .ctx(c)?;
        Ok(out_of_order == 0)
    }

    /// Copies the peaks of input `src`'s kept images, under their new ids, and the
    /// labels of all its images (a path's labels from every input that has it).
    pub fn copy_rows(&mut self, src: usize, db: &Path) -> Result<()> {
        let in_err = |e| sql_error(Some(db.to_path_buf()), e);
        self.attached(db, |c| {
            c.execute(
                "INSERT INTO main.peaks (image_id, layer_id, data)
                 SELECT m.new_id, p.layer_id, p.data
                 FROM input.peaks p
                 JOIN temp.idmap m ON m.src = ?1 AND m.src_id = p.image_id
                 WHERE m.chosen AND m.status = 'ok'",
                [src as i64],
            )
            .map_err(in_err)?;
            let has_labels: bool = c
                .query_row(
                    "SELECT count(*) FROM input.sqlite_master WHERE name = 'image_label'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(in_err)?
                > 0;
            if !has_labels {
                return Ok(());
            }
            c.execute_batch(
                "INSERT OR IGNORE INTO main.label_set (name, kind, origin, added_at)
                     SELECT name, kind, origin, added_at FROM input.label_set;
                 INSERT OR IGNORE INTO main.concept (set_id, name)
                     SELECT ms.id, c.name FROM input.concept c
                     JOIN input.label_set s ON s.id = c.set_id
                     JOIN main.label_set ms ON ms.name = s.name;",
            )
            .map_err(in_err)?;
            c.execute(
                "INSERT OR IGNORE INTO main.image_label (concept_id, image_id)
                 SELECT mc.id, m.new_id FROM input.image_label il
                 JOIN input.concept c ON c.id = il.concept_id
                 JOIN input.label_set s ON s.id = c.set_id
                 JOIN main.label_set ms ON ms.name = s.name
                 JOIN main.concept mc ON mc.set_id = ms.id AND mc.name = c.name
                 JOIN temp.idmap m ON m.src = ?1 AND m.src_id = il.image_id",
                [src as i64],
            )
            .map_err(in_err)?;
            Ok(())
        })
    }

    /// Adds input `src`'s unit statistics to `stats` and offers its top-K hits, under
    /// their new ids, to `tops` (`[layer][unit]`); hits of images not ranked here (a
    /// later copy of a content, a row another input's replaced) are left out.
    pub fn add_derived(
        &mut self,
        src: usize,
        db: &Path,
        stats: &mut [Vec<UnitStats>],
        tops: &mut [Vec<TopK>],
    ) -> Result<()> {
        let in_err = |e| sql_error(Some(db.to_path_buf()), e);
        self.attached(db, |c| {
            let mut st = c
                .prepare(
                    "SELECT layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist
                     FROM input.unit_stats",
                )
                .map_err(in_err)?;
            let mut rows = st.query([]).map_err(in_err)?;
            while let Some(r) = rows.next().map_err(in_err)? {
                let (l, u): (i64, i64) = (r.get(0).map_err(in_err)?, r.get(1).map_err(in_err)?);
                let s = read_stats(r).map_err(in_err)?;
                if let Some(slot) = stats
                    .get_mut(l as usize)
                    .and_then(|v| v.get_mut(u as usize))
                {
                    slot.merge(&s);
                }
            }
            let mut find = c
                .prepare("SELECT new_id, ranked FROM temp.idmap WHERE src = ?1 AND src_id = ?2")
                .ctx(c)?;
            // A list longer than K is refused before it is read (a hostile file's
            // gigabyte blob would be allocated whole).
            let most = tops
                .iter()
                .flatten()
                .map(|t| t.capacity_k())
                .max()
                .unwrap_or(0)
                * super::codec::HIT_RECORD;
            let mut st = c
                .prepare(
                    "SELECT layer_id, unit, CASE WHEN length(hits) <= ?1 THEN hits END
                     FROM input.top_k",
                )
                .map_err(in_err)?;
            let mut rows = st.query([most as i64]).map_err(in_err)?;
            while let Some(r) = rows.next().map_err(in_err)? {
                let (l, u): (i64, i64) = (r.get(0).map_err(in_err)?, r.get(1).map_err(in_err)?);
                let blob: Vec<u8> =
                    r.get::<_, Option<Vec<u8>>>(2)
                        .map_err(in_err)?
                        .ok_or_else(|| Error::Store {
                            path: db.to_path_buf(),
                            reason: format!(
                                "the top-K list of layer {l} unit {u} is longer than K"
                            ),
                        })?;
                let Some(top) = tops.get_mut(l as usize).and_then(|v| v.get_mut(u as usize)) else {
                    continue;
                };
                for h in decode_hits(&blob)? {
                    let to: Option<(i64, bool)> = find
                        .query_row(params![src as i64, h.image_id], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                        .ctx(c)?;
                    if let Some((new_id, true)) = to {
                        top.offer(Hit {
                            image_id: new_id,
                            ..h
                        });
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes the statistics and top-K lists (or recomputes both from the copied peaks
    /// when `rebuild`), records the inputs, and puts the database in `out`'s place.
    pub fn finish(
        mut self,
        out: &Path,
        derived: Option<Derived<'_>>,
        inputs: &[MergedInput],
    ) -> Result<()> {
        let layers = self.store.layers()?;
        let c = &self.store.conn;
        // A set is classes or tags by what it labels: a set of one concept in each
        // shard may be a set of several classes here.
        let sets: Vec<i64> = c
            .prepare("SELECT id FROM label_set")
            .ctx(c)?
            .query_map([], |r| r.get(0))
            .ctx(c)?
            .collect::<rusqlite::Result<_>>()
            .ctx(c)?;
        for set in sets {
            super::labels::settle_kind(c, set)?;
        }
        for m in inputs {
            c.execute(
                "INSERT INTO merged_input (path, shard_index, shard_count, images, failed,
                                           created_at, merged_at, isa)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    m.path,
                    m.shard.map(|s| s.index),
                    m.shard.map(|s| s.count),
                    m.images as i64,
                    m.failed as i64,
                    m.created_at,
                    m.merged_at,
                    m.isa.join(",")
                ],
            )
            .ctx(c)?;
        }
        match derived {
            Some((stats, tops)) => {
                for (l, layer) in layers.iter().enumerate() {
                    for u in 0..layer.channels {
                        super::write_stats(c, layer.id, u, &stats[l][u])?;
                        super::write_top(c, layer.id, u, &tops[l][u])?;
                    }
                }
                super::set_derived_upto(c)?;
                c.execute_batch("COMMIT").ctx(c)?;
            }
            None => {
                c.execute_batch("COMMIT").ctx(c)?;
                self.store.rebuild()?;
            }
        }
        let tmp = self.store.path.clone();
        drop(self);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        make_way(out)?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself survives a power cut once its folder is synced.
            let _ = std::fs::File::open(dir).and_then(|f| f.sync_all());
        }
        Ok(())
    }
}

/// Before a new file takes `out`'s name: what SQLite keeps beside a database (a
/// write-ahead log, a rollback journal), which it would replay into whatever file
/// has that name, is folded into the old database (or deleted, where that is gone)
/// and the old database left in rollback-journal mode. The caller holds `out`'s
/// writer lock, so no neurodex writes to it; a reader that keeps it open (a
/// `serve`) keeps its log alive, and is named. Called before a merge starts and
/// again before the rename.
pub fn make_way(out: &Path) -> Result<()> {
    let sides = ["-wal", "-journal", "-shm"].map(|s| super::side_file(out, s));
    let remove = |f: &Path| match std::fs::remove_file(f) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(f, e)),
        _ => Ok(()),
    };
    if !out.exists() {
        // A log without its database (deleted after a killed run) would be replayed
        // into the merged file.
        for f in &sides {
            remove(f)?;
        }
        return Ok(());
    }
    if !sides[..2].iter().any(|f| f.exists()) {
        return Ok(());
    }
    let sql = |e| sql_error(Some(out.to_path_buf()), e);
    let conn = Connection::open(out).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql)?;
    // Reading the header rolls back a hot journal; leaving WAL mode checkpoints the
    // log and deletes it once no other connection has it open.
    let mode: Result<String> = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(sql);
    drop(conn);
    let busy = || Error::Store {
        path: out.to_path_buf(),
        reason: "another program has it open (a `neurodex serve`, `top` or `gallery`?): \
                 close it and run the merge again"
            .into(),
    };
    match mode {
        Ok(m) if m.eq_ignore_ascii_case("delete") => {}
        Ok(_) => return Err(busy()),
        Err(Error::Sql { cause, .. })
            if cause.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            return Err(busy())
        }
        Err(e) => return Err(e),
    }
    if sides[..2].iter().any(|f| f.exists()) {
        return Err(busy());
    }
    remove(&sides[2])
}

/// `merged_input` rows of the database attached as `schema`.
fn read_merged_inputs(c: &Connection, schema: &str) -> rusqlite::Result<Vec<MergedInput>> {
    let mut st = c.prepare(&format!(
        "SELECT path, shard_index, shard_count, images, failed, created_at, merged_at, isa
         FROM {schema}.merged_input ORDER BY id"
    ))?;
    let rows = st.query_map([], |r| {
        let (i, n): (Option<i64>, Option<i64>) = (r.get(1)?, r.get(2)?);
        Ok(MergedInput {
            path: r.get(0)?,
            shard: match (i, n) {
                (Some(i), Some(n)) => Shard::new(i as u32, n as u32).ok(),
                _ => None,
            },
            images: r.get::<_, i64>(3)? as u64,
            failed: r.get::<_, i64>(4)? as u64,
            created_at: r.get(5)?,
            merged_at: r.get(6)?,
            isa: r
                .get::<_, Option<String>>(7)?
                .map(|s| {
                    s.split(',')
                        .filter(|i| !i.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })?;
    rows.collect()
}

impl Store {
    /// When this index last looked at its folder: the end of its last finished
    /// `index` (or, for a merged index, of its last merge), else its creation.
    pub fn seen_at(&self) -> Result<i64> {
        let run = self.run_info()?;
        let sessions: Option<i64> = self
            .conn
            .query_row("SELECT max(finished_at) FROM session", [], |r| r.get(0))
            .ctx(&self.conn)?;
        let merged = self.merged_inputs()?.iter().map(|m| m.merged_at).max();
        Ok(sessions.max(merged).unwrap_or(run.created_at))
    }

    /// The instruction sets this index's values were computed on: its `index` runs',
    /// and those of the indexes merged into it (empty where none was recorded).
    pub fn isas(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        if self.version >= 5 {
            let mut st = self
                .conn
                .prepare("SELECT DISTINCT isa FROM session WHERE isa IS NOT NULL")
                .ctx(&self.conn)?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))
                .ctx(&self.conn)?;
            for r in rows {
                out.push(r.ctx(&self.conn)?);
            }
        }
        for m in self.merged_inputs()? {
            out.extend(m.isa);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The indexes merged into this one (`neurodex merge`), oldest first; empty for an
    /// index made by `index` alone.
    pub fn merged_inputs(&self) -> Result<Vec<MergedInput>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        read_merged_inputs(&self.conn, "main").ctx(&self.conn)
    }
}

/// A read-only `file:` URI for ATTACH.
fn read_only_uri(db: &Path) -> String {
    let abs: PathBuf = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
    let mut uri = String::from("file:");
    for &b in path_bytes(&abs).iter() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                uri.push(b as char)
            }
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_keys_sort_as_a_sorted_walk_visits() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a/b/c.jpg",
            "a/z.jpg",
            "a.jpg",
            "a0.jpg",
            "b.jpg",
            "b/a.jpg",
            "b-c.jpg",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let walked: Vec<Vec<u8>> = walkdir::WalkDir::new(dir.path())
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| path_bytes(e.path().strip_prefix(dir.path()).unwrap()))
            .collect();
        let mut by_key = walked.clone();
        by_key.reverse();
        by_key.sort_by_key(|p| walk_key(p));
        assert_eq!(by_key, walked);
        // Plain byte order would put a.jpg ('.' < '/') before the folder a.
        assert_eq!(walked[0], b"a/b/c.jpg");
    }
}
