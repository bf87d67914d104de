//! Concept labels (schema 4): label sets, their concepts, the images each concept
//! names; and the two reads concept scoring needs: the images it scores and every
//! stored peak blob of some layers, in one pass over the table.

use rusqlite::{params, types::ValueRef, Connection, OptionalExtension};
use serde::Serialize;

use super::{unix_now, Ctx, Store};
use crate::Result;

/// Whether a set's images each carry exactly one of its labels (and it has two or
/// more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// One label per labelled image (folders, a category column): class-selectivity
    /// applies.
    Classes,
    /// Any number per image.
    Tags,
}

impl SetKind {
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Classes => "classes",
            SetKind::Tags => "tags",
        }
    }

    fn parse(s: &str) -> SetKind {
        if s == "classes" {
            SetKind::Classes
        } else {
            SetKind::Tags
        }
    }
}

/// A label set as stored, with how much it labels.
#[derive(Clone, Debug, Serialize)]
pub struct LabelSet {
    pub id: i64,
    pub name: String,
    pub kind: SetKind,
    pub origin: String,
    pub added_at: i64,
    pub concepts: u64,
    /// Indexed images (status ok) with at least one label of the set.
    pub images: u64,
}

/// One concept: its set and how many indexed images show it.
#[derive(Clone, Debug, Serialize)]
pub struct Concept {
    pub id: i64,
    pub set: String,
    pub kind: SetKind,
    pub name: String,
    pub images: u64,
}

/// What `put_labels` wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PutLabels {
    /// Concepts of the set after the write.
    pub concepts: u64,
    /// (image, concept) pairs added (not there before).
    pub added: u64,
    /// Pairs removed by `replace`.
    pub removed: u64,
    pub kind: Option<SetKind>,
}

impl Store {
    /// Whether the database has the label tables (schema 4 on; readers of older
    /// files see no labels).
    fn has_labels(&self) -> bool {
        self.version >= 4
    }

    /// Adds `(image id, concept name)` pairs to the set `set` (created if new), in one
    /// transaction; with `replace`, the set's earlier labels go first. The set's kind
    /// follows from what it then holds: `classes` when no image has two of its labels.
    pub fn put_labels(
        &mut self,
        set: &str,
        origin: &str,
        pairs: &[(i64, String)],
        replace: bool,
    ) -> Result<PutLabels> {
        let tx = self.transaction()?;
        let mut out = PutLabels::default();
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM label_set WHERE name = ?1", [set], |r| {
                r.get(0)
            })
            .optional()
            .ctx(&tx)?;
        let set_id = match existing {
            Some(id) => {
                if replace {
                    out.removed = delete_set_labels(&tx, id)?;
                }
                tx.execute(
                    "UPDATE label_set SET origin = ?2, added_at = ?3 WHERE id = ?1",
                    params![id, origin, unix_now()],
                )
                .ctx(&tx)?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO label_set (name, kind, origin, added_at) VALUES (?1, 'tags', ?2, ?3)",
                    params![set, origin, unix_now()],
                )
                .ctx(&tx)?;
                tx.last_insert_rowid()
            }
        };
        {
            let mut concept = tx
                .prepare_cached(
                    "INSERT INTO concept (set_id, name) VALUES (?1, ?2)
                     ON CONFLICT (set_id, name) DO UPDATE SET name = excluded.name
                     RETURNING id",
                )
                .ctx(&tx)?;
            let mut label = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO image_label (concept_id, image_id) VALUES (?1, ?2)",
                )
                .ctx(&tx)?;
            let mut ids = std::collections::HashMap::<&str, i64>::new();
            for (image, name) in pairs {
                let cid = match ids.get(name.as_str()) {
                    Some(&c) => c,
                    None => {
                        let c: i64 = concept
                            .query_row(params![set_id, name], |r| r.get(0))
                            .ctx(&tx)?;
                        ids.insert(name, c);
                        c
                    }
                };
                out.added += label.execute(params![cid, image]).ctx(&tx)? as u64;
            }
        }
        // Concepts that `replace` left without images go.
        tx.execute(
            "DELETE FROM concept WHERE set_id = ?1
               AND NOT EXISTS (SELECT 1 FROM image_label l WHERE l.concept_id = concept.id)",
            [set_id],
        )
        .ctx(&tx)?;
        let (concepts, kind) = settle_kind(&tx, set_id)?;
        out.concepts = concepts;
        out.kind = Some(kind);
        tx.commit().ctx(&self.conn)?;
        Ok(out)
    }

    /// Removes a label set (`name`) or one concept of a set (`set/concept`): returns
    /// the (image, concept) pairs removed, `None` when there was no such thing.
    pub fn remove_labels(&mut self, set: &str, concept: Option<&str>) -> Result<Option<u64>> {
        let tx = self.transaction()?;
        let Some(set_id) = tx
            .query_row("SELECT id FROM label_set WHERE name = ?1", [set], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .ctx(&tx)?
        else {
            return Ok(None);
        };
        let removed = match concept {
            None => {
                let n = delete_set_labels(&tx, set_id)?;
                tx.execute("DELETE FROM label_set WHERE id = ?1", [set_id])
                    .ctx(&tx)?;
                n
            }
            Some(name) => {
                let Some(cid) = tx
                    .query_row(
                        "SELECT id FROM concept WHERE set_id = ?1 AND name = ?2",
                        params![set_id, name],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                    .ctx(&tx)?
                else {
                    return Ok(None);
                };
                let n = tx
                    .execute("DELETE FROM image_label WHERE concept_id = ?1", [cid])
                    .ctx(&tx)? as u64;
                tx.execute("DELETE FROM concept WHERE id = ?1", [cid])
                    .ctx(&tx)?;
                n
            }
        };
        tx.commit().ctx(&self.conn)?;
        Ok(Some(removed))
    }

    /// Every label set, by name.
    pub fn label_sets(&self) -> Result<Vec<LabelSet>> {
        if !self.has_labels() {
            return Ok(Vec::new());
        }
        let conn = &self.conn;
        let mut st = conn
            .prepare(
                "SELECT s.id, s.name, s.kind, s.origin, s.added_at,
                        (SELECT count(*) FROM concept c WHERE c.set_id = s.id),
                        (SELECT count(DISTINCT l.image_id) FROM image_label l
                           JOIN concept c ON c.id = l.concept_id
                           JOIN image i ON i.id = l.image_id
                          WHERE c.set_id = s.id AND i.status = 'ok')
                 FROM label_set s ORDER BY s.name",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([], |r| {
                Ok(LabelSet {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: SetKind::parse(&r.get::<_, String>(2)?),
                    origin: r.get(3)?,
                    added_at: r.get(4)?,
                    concepts: r.get::<_, i64>(5)? as u64,
                    images: r.get::<_, i64>(6)? as u64,
                })
            })
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// Every concept, by set then name, with its count of indexed images.
    pub fn concepts(&self) -> Result<Vec<Concept>> {
        if !self.has_labels() {
            return Ok(Vec::new());
        }
        let conn = &self.conn;
        let mut st = conn
            .prepare(
                "SELECT c.id, s.name, s.kind, c.name,
                        (SELECT count(*) FROM image_label l JOIN image i ON i.id = l.image_id
                          WHERE l.concept_id = c.id AND i.status = 'ok')
                 FROM concept c JOIN label_set s ON s.id = c.set_id
                 ORDER BY s.name, c.name",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([], |r| {
                Ok(Concept {
                    id: r.get(0)?,
                    set: r.get(1)?,
                    kind: SetKind::parse(&r.get::<_, String>(2)?),
                    name: r.get(3)?,
                    images: r.get::<_, i64>(4)? as u64,
                })
            })
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// Every (concept id, image id) pair of indexed images, by concept then image.
    pub fn concept_images(&self) -> Result<Vec<(i64, i64)>> {
        if !self.has_labels() {
            return Ok(Vec::new());
        }
        let conn = &self.conn;
        let mut st = conn
            .prepare(
                "SELECT l.concept_id, l.image_id FROM image_label l
                 JOIN image i ON i.id = l.image_id WHERE i.status = 'ok'
                 ORDER BY l.concept_id, l.image_id",
            )
            .ctx(conn)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// The concepts an image shows: `(set, concept)`, by set then name.
    pub fn image_concepts(&self, image_id: i64) -> Result<Vec<(String, String)>> {
        if !self.has_labels() {
            return Ok(Vec::new());
        }
        let conn = &self.conn;
        let mut st = conn
            .prepare_cached(
                "SELECT s.name, c.name FROM image_label l
                 JOIN concept c ON c.id = l.concept_id JOIN label_set s ON s.id = c.set_id
                 WHERE l.image_id = ?1 ORDER BY s.name, c.name",
            )
            .ctx(conn)?;
        let rows = st
            .query_map([image_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// The images the rankings hold, by id: indexed ones, less later copies of a
    /// content unless the index keeps duplicates (as the top-K lists count them).
    pub fn ranked_images(&self) -> Result<Vec<i64>> {
        let keep = self.run_info()?.keep_duplicates;
        let conn = &self.conn;
        let mut st = conn
            .prepare(
                "SELECT id FROM image i WHERE status = 'ok' AND (?1 OR i.sha256 IS NULL
                   OR NOT EXISTS (SELECT 1 FROM image j WHERE j.sha256 = i.sha256
                                    AND j.status = 'ok' AND j.id < i.id))
                 ORDER BY id",
            )
            .ctx(conn)?;
        let rows = st.query_map([keep], |r| r.get(0)).ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// Calls `f(image id, layer id, peaks blob)` for every stored peak blob of the
    /// layers in `layer_ids`, in table order (by image): one pass over the table, the
    /// blobs lent, not copied. Decode them with `peaks::values` or `peaks::decode`.
    pub fn scan_peaks(
        &self,
        layer_ids: &[i64],
        mut f: impl FnMut(i64, i64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let conn = &self.conn;
        let max = layer_ids.iter().copied().max().unwrap_or(-1);
        let mut wanted = vec![false; (max + 1).max(0) as usize];
        for &l in layer_ids {
            if l >= 0 {
                wanted[l as usize] = true;
            }
        }
        let mut st = conn
            .prepare("SELECT image_id, layer_id, data FROM peaks")
            .ctx(conn)?;
        let mut rows = st.query([]).ctx(conn)?;
        while let Some(r) = rows.next().ctx(conn)? {
            let layer: i64 = r.get(1).ctx(conn)?;
            if !(0..=max).contains(&layer) || !wanted[layer as usize] {
                continue;
            }
            let image: i64 = r.get(0).ctx(conn)?;
            if let ValueRef::Blob(b) = r.get_ref(2).ctx(conn)? {
                f(image, layer, b)?;
            }
        }
        Ok(())
    }
}

fn delete_set_labels(tx: &rusqlite::Transaction, set_id: i64) -> Result<u64> {
    let n = tx
        .execute(
            "DELETE FROM image_label WHERE concept_id IN (SELECT id FROM concept WHERE set_id = ?1)",
            [set_id],
        )
        .ctx(tx)? as u64;
    tx.execute("DELETE FROM concept WHERE set_id = ?1", [set_id])
        .ctx(tx)?;
    Ok(n)
}

/// Counts set `set_id`'s concepts and records its kind as its labels now make it:
/// classes when every labelled image has one concept of two or more, else tags (a
/// single concept has no other classes to compare it with).
pub(super) fn settle_kind(conn: &Connection, set_id: i64) -> Result<(u64, SetKind)> {
    let concepts = conn
        .query_row(
            "SELECT count(*) FROM concept WHERE set_id = ?1",
            [set_id],
            |r| r.get::<_, i64>(0),
        )
        .ctx(conn)? as u64;
    let multi: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM image_label l JOIN concept c ON c.id = l.concept_id
               WHERE c.set_id = ?1 GROUP BY l.image_id HAVING count(*) > 1)",
            [set_id],
            |r| r.get(0),
        )
        .ctx(conn)?;
    let kind = if multi || concepts < 2 {
        SetKind::Tags
    } else {
        SetKind::Classes
    };
    conn.execute(
        "UPDATE label_set SET kind = ?2 WHERE id = ?1",
        params![set_id, kind.name()],
    )
    .ctx(conn)?;
    Ok((concepts, kind))
}
