//! What readers ask the index (`query`, `serve`, `image`, `stats`): image rows,
//! a unit's statistics and top-K, an image's peaks, counts for the overview. All
//! plain reads, answered while an `index` is writing (WAL).

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension};

use super::codec::{bytes_path, decode_hits, read_stats};
use super::{Ctx, Store};
use crate::peaks::{self, Peak};
use crate::stats::{Hit, UnitStats};
use crate::Result;

/// An image row as the index recorded it.
#[derive(Clone, Debug)]
pub struct ImageRow {
    /// Relative to the indexed root, lossy UTF-8 (for display).
    pub path: String,
    /// The same, exact (the OS's bytes).
    pub rel: PathBuf,
    /// `ok`, `failed` or `removed`.
    pub status: String,
    pub error: Option<String>,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// JSON of the `preprocess::Transform` the image went in with.
    pub transform: Option<String>,
}

/// Failed inputs of a database, for `stats`.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    /// How many failed, by kind, most first.
    pub by_kind: Vec<(String, u64)>,
    /// The first few by path: (path, kind, reason).
    pub some: Vec<(String, String, String)>,
}

impl Store {
    /// Image `id`'s row; `None` when there is none.
    pub fn image_row(&self, id: i64) -> Result<Option<ImageRow>> {
        let conn = &self.conn;
        conn.prepare_cached(
            "SELECT path, path_raw, status, error, size, mtime_ns, width, height, transform
             FROM image WHERE id = ?1",
        )
        .ctx(conn)?
        .query_row([id], |r| {
            Ok(ImageRow {
                path: r.get(0)?,
                rel: bytes_path(&r.get::<_, Vec<u8>>(1)?),
                status: r.get(2)?,
                error: r.get(3)?,
                size: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                mtime_ns: r.get(5)?,
                width: r.get(6)?,
                height: r.get(7)?,
                transform: r.get(8)?,
            })
        })
        .optional()
        .ctx(conn)
    }

    /// How many images have `status` (`ok`, `failed`, `removed`).
    pub fn count_images(&self, status: &str) -> Result<u64> {
        self.conn
            .prepare_cached("SELECT count(*) FROM image WHERE status = ?1")
            .ctx(&self.conn)?
            .query_row([status], |r| r.get::<_, i64>(0))
            .ctx(&self.conn)
            .map(|v| v as u64)
    }

    /// Up to `limit` successfully indexed images from `offset`, by id: `(id, path)`.
    pub fn ok_images(&self, offset: u64, limit: u64) -> Result<Vec<(i64, String)>> {
        // SQLite's integers are signed: past i64::MAX is past the end all the same.
        let (offset, limit) = (offset.min(i64::MAX as u64), limit.min(i64::MAX as u64));
        let conn = &self.conn;
        let mut st = conn
            .prepare_cached(
                "SELECT id, path FROM image WHERE status = 'ok' ORDER BY id LIMIT ?1 OFFSET ?2",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([limit as i64, offset as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(conn)
    }

    /// Failed inputs by kind, and the first `limit` of them by path.
    pub fn failures(&self, limit: usize) -> Result<Failures> {
        let conn = &self.conn;
        let mut st = conn
            .prepare(
                "SELECT error_kind, count(*) FROM image WHERE status = 'failed'
                 GROUP BY error_kind ORDER BY count(*) DESC, error_kind",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.get::<_, i64>(1)? as u64,
                ))
            })
            .ctx(conn)?;
        let by_kind = rows.collect::<rusqlite::Result<Vec<_>>>().ctx(conn)?;
        let mut st = conn
            .prepare(
                "SELECT path, coalesce(error_kind, ''), coalesce(error, '') FROM image
                 WHERE status = 'failed' ORDER BY path LIMIT ?1",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ctx(conn)?;
        let some = rows.collect::<rusqlite::Result<Vec<_>>>().ctx(conn)?;
        Ok(Failures { by_kind, some })
    }

    /// Indexing sessions: how many were started, and how many of those did not
    /// finish (killed, or running now).
    pub fn sessions(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT count(*), count(*) - count(finished_at) FROM session",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .ctx(&self.conn)
    }

    /// The database file's size in bytes, as SQLite counts its pages.
    pub fn db_bytes(&self) -> Result<u64> {
        let page = |p: &str| -> Result<u64> {
            self.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
                .ctx(&self.conn)
                .map(|v| v as u64)
        };
        Ok(page("page_count")? * page("page_size")?)
    }

    /// How many indexed files have the content of an earlier indexed file.
    pub fn count_duplicates(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM image i WHERE i.status = 'ok' AND i.sha256 IS NOT NULL
                   AND EXISTS (SELECT 1 FROM image j WHERE j.sha256 = i.sha256
                                 AND j.status = 'ok' AND j.id < i.id)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ctx(&self.conn)
            .map(|n| n as u64)
    }

    /// The peaks of one image on one layer, if indexed.
    pub fn peaks(&self, image_id: i64, layer_id: i64) -> Result<Option<Vec<Peak>>> {
        let conn = &self.conn;
        let blob: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM peaks WHERE image_id = ?1 AND layer_id = ?2")
            .ctx(conn)?
            .query_row([image_id, layer_id], |r| r.get(0))
            .optional()
            .ctx(conn)?;
        blob.map(|b| peaks::decode(&b)).transpose()
    }

    /// One unit's saved statistics (empty when it has no row).
    pub fn unit_stats(&self, layer_id: i64, unit: usize) -> Result<UnitStats> {
        let conn = &self.conn;
        conn.prepare_cached(
            "SELECT layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist
             FROM unit_stats WHERE layer_id = ?1 AND unit = ?2",
        )
        .ctx(conn)?
        .query_row(params![layer_id, unit as i64], read_stats)
        .optional()
        .ctx(conn)
        .map(Option::unwrap_or_default)
    }

    /// Every saved unit statistics of a layer: `(unit, stats)`, by unit.
    pub fn layer_stats(&self, layer_id: i64) -> Result<Vec<(usize, UnitStats)>> {
        let conn = &self.conn;
        let mut st = conn
            .prepare_cached(
                "SELECT layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist
                 FROM unit_stats WHERE layer_id = ?1 ORDER BY unit",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([layer_id], |r| {
                Ok((r.get::<_, i64>(1)? as usize, read_stats(r)?))
            })
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(conn)
    }

    /// Each unit's highest saved peak on a layer, by unit (`None` before any).
    pub fn unit_maxima(&self, layer_id: i64) -> Result<Vec<Option<f64>>> {
        let conn = &self.conn;
        let mut st = conn
            .prepare_cached("SELECT unit, max FROM unit_stats WHERE layer_id = ?1 ORDER BY unit")
            .ctx(conn)?;
        let rows = st
            .query_map([layer_id], |r| r.get::<_, Option<f64>>(1))
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// A unit's saved top-K list, best first.
    pub fn top_hits(&self, layer_id: i64, unit: usize) -> Result<Vec<Hit>> {
        let conn = &self.conn;
        let blob: Option<Vec<u8>> = conn
            .prepare_cached("SELECT hits FROM top_k WHERE layer_id = ?1 AND unit = ?2")
            .ctx(conn)?
            .query_row(params![layer_id, unit as i64], |r| r.get(0))
            .optional()
            .ctx(conn)?;
        blob.map(|b| decode_hits(&b))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}
