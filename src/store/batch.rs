//! Writes, one index batch at a time: a `Batch` is one transaction, so a killed
//! process loses at most the batch in flight and never leaves half of one.

use rusqlite::{params, Connection};

use super::codec::{encode_hist, encode_hits};
use super::{Ctx, ImageRecord};
use crate::peaks::{self, Peak};
use crate::stats::{TopK, UnitStats};
use crate::Result;

/// One transaction of writes (`Store::begin`); nothing of it is seen by readers or
/// kept on disk until `commit`.
pub struct Batch<'a> {
    pub(super) tx: rusqlite::Transaction<'a>,
}

impl Batch<'_> {
    pub fn commit(self) -> Result<()> {
        let path = self.tx.path().map(std::path::PathBuf::from);
        self.tx.commit().map_err(|e| super::sql_error(path, e))
    }

    /// Images with ids up to `max_id` that are not marked removed: `(id, status)`.
    pub fn live_images_upto(&self, max_id: i64) -> Result<Vec<(i64, String)>> {
        let conn: &Connection = &self.tx;
        let mut st = conn
            .prepare("SELECT id, status FROM image WHERE id <= ?1 AND status != 'removed'")
            .ctx(conn)?;
        let rows = st
            .query_map([max_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(conn)
    }

    /// Inserts or updates an image row (keyed by its relative path); returns its id.
    pub fn upsert_image(&self, r: &ImageRecord) -> Result<i64> {
        upsert_image(&self.tx, r)
    }

    /// Records a new modification time for a file whose content is unchanged.
    pub fn touch_image(&self, id: i64, mtime_ns: i64) -> Result<()> {
        touch_image(&self.tx, id, mtime_ns)
    }

    /// Forgets an image's peaks. Its share of the statistics and top-K lists stays until
    /// `rebuild` (queries skip images that are not indexed).
    pub fn drop_image_data(&self, id: i64) -> Result<()> {
        drop_image_data(&self.tx, id)
    }

    /// Marks a vanished file as removed and drops its data.
    pub fn mark_removed(&self, id: i64) -> Result<()> {
        mark_removed(&self.tx, id)
    }

    /// Records that statistics and top-K now include every image indexed so far.
    pub fn set_derived_upto(&self) -> Result<()> {
        set_derived_upto(&self.tx)
    }

    pub fn set_needs_rebuild(&self, on: bool) -> Result<()> {
        set_needs_rebuild(&self.tx, on)
    }

    pub fn put_peaks(&self, image_id: i64, layer_id: i64, p: &[Peak]) -> Result<()> {
        put_peaks(&self.tx, image_id, layer_id, p)
    }

    pub fn write_stats(&self, layer_id: i64, unit: usize, s: &UnitStats) -> Result<()> {
        write_stats(&self.tx, layer_id, unit, s)
    }

    /// Writes a unit's top-K list, best first.
    pub fn write_top(&self, layer_id: i64, unit: usize, t: &TopK) -> Result<()> {
        write_top(&self.tx, layer_id, unit, t)
    }

    /// The first indexed file (lowest id) with the content `sha256` of image `id`, when
    /// that is an earlier file: `id` is then a duplicate, kept out of the top-K lists.
    pub fn duplicate_of(&self, id: i64, sha256: &str) -> Result<Option<i64>> {
        duplicate_of(&self.tx, id, sha256)
    }

    /// Whether a later file (higher id) indexed before has the content `sha256` of image
    /// `id`: that copy entered the top-K lists, which `id` now owns (they need a rebuild).
    pub fn has_later_copy(&self, id: i64, sha256: &str) -> Result<bool> {
        has_later_copy(&self.tx, id, sha256)
    }
}

/// Inserts or updates an image row (keyed by its relative path); returns its id.
pub(super) fn upsert_image(conn: &Connection, r: &ImageRecord) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO image (path_raw, path, size, mtime_ns, sha256, width, height, transform,
                            status, error_kind, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (path_raw) DO UPDATE SET
            path = excluded.path, size = excluded.size, mtime_ns = excluded.mtime_ns,
            sha256 = excluded.sha256, width = excluded.width, height = excluded.height,
            transform = excluded.transform, status = excluded.status,
            error_kind = excluded.error_kind, error = excluded.error
         RETURNING id",
    )
    .ctx(conn)?
    .query_row(
        params![
            r.path_raw,
            r.path,
            r.size.map(|v| v as i64),
            r.mtime_ns,
            r.sha256,
            r.width,
            r.height,
            r.transform,
            r.status,
            r.error_kind,
            r.error
        ],
        |row| row.get(0),
    )
    .ctx(conn)
}

/// Records a new modification time for a file whose content is unchanged.
pub(super) fn touch_image(conn: &Connection, id: i64, mtime_ns: i64) -> Result<()> {
    conn.prepare_cached("UPDATE image SET mtime_ns = ?2 WHERE id = ?1")
        .ctx(conn)?
        .execute(params![id, mtime_ns])
        .ctx(conn)
        .map(|_| ())
}

/// Forgets an image's peaks. Its share of the statistics and top-K lists stays until
/// `rebuild` (queries skip images that are not indexed).
pub(super) fn drop_image_data(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM peaks WHERE image_id = ?1")
        .ctx(conn)?
        .execute([id])
        .ctx(conn)?;
    Ok(())
}

/// Marks a vanished file as removed and drops its data.
pub(super) fn mark_removed(conn: &Connection, id: i64) -> Result<()> {
    drop_image_data(conn, id)?;
    conn.prepare_cached(
        "UPDATE image SET status = 'removed', error_kind = NULL, error = NULL WHERE id = ?1",
    )
    .ctx(conn)?
    .execute([id])
    .ctx(conn)
    .map(|_| ())
}

/// Records that statistics and top-K now include every image indexed so far.
pub(super) fn set_derived_upto(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE run SET derived_upto = (SELECT coalesce(max(id), 0) FROM image) WHERE id = 1",
        [],
    )
    .ctx(conn)
    .map(|_| ())
}

pub(super) fn set_needs_rebuild(conn: &Connection, on: bool) -> Result<()> {
    conn.execute(
        "UPDATE run SET needs_rebuild = ?1 WHERE id = 1",
        [on as i64],
    )
    .ctx(conn)
    .map(|_| ())
}

pub(super) fn put_peaks(conn: &Connection, image_id: i64, layer_id: i64, p: &[Peak]) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO peaks (image_id, layer_id, data) VALUES (?1, ?2, ?3)",
    )
    .ctx(conn)?
    .execute(params![image_id, layer_id, peaks::encode(p)])
    .ctx(conn)
    .map(|_| ())
}

pub(super) fn write_stats(
    conn: &Connection,
    layer_id: i64,
    unit: usize,
    s: &UnitStats,
) -> Result<()> {
    let opt = |v: f64| v.is_finite().then_some(v);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO unit_stats
            (layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .ctx(conn)?
    .execute(params![
        layer_id,
        unit as i64,
        s.count as i64,
        s.nan as i64,
        s.sum,
        s.sum_sq,
        if s.count > 0 { opt(s.min) } else { None },
        if s.count > 0 { opt(s.max) } else { None },
        s.positive as i64,
        encode_hist(&s.hist)
    ])
    .ctx(conn)
    .map(|_| ())
}

/// Writes a unit's top-K list, best first.
pub(super) fn write_top(conn: &Connection, layer_id: i64, unit: usize, t: &TopK) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO top_k (layer_id, unit, hits) VALUES (?1, ?2, ?3)")
        .ctx(conn)?
        .execute(params![layer_id, unit as i64, encode_hits(&t.sorted())])
        .ctx(conn)
        .map(|_| ())
}

/// The first indexed file (lowest id) with the content `sha256` of image `id`, when
/// that is an earlier file: `id` is then a duplicate, kept out of the top-K lists.
pub(super) fn duplicate_of(conn: &Connection, id: i64, sha256: &str) -> Result<Option<i64>> {
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(id) FROM image WHERE sha256 = ?1 AND status = 'ok'")
        .ctx(conn)?
        .query_row([sha256], |r| r.get(0))
        .ctx(conn)?;
    Ok(first.filter(|&f| f < id))
}

/// Whether a later file (higher id) indexed before has the content `sha256` of image
/// `id`: that copy entered the top-K lists, which `id` now owns (they need a rebuild).
pub(super) fn has_later_copy(conn: &Connection, id: i64, sha256: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM image WHERE sha256 = ?1 AND status = 'ok' AND id > ?2)",
    )
    .ctx(conn)?
    .query_row(params![sha256, id], |r| r.get(0))
    .ctx(conn)
}
