//! Feature visualisations kept in the index (schema 6): one PNG per layer and unit
//! with how it was made, written by `visualize --db` and `gallery --visualize`, read
//! by the gallery.

use rusqlite::{params, OptionalExtension};

use super::{unix_now, Ctx, Store};
use crate::Result;

/// One stored visualisation.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVisual {
    pub layer: String,
    pub unit: usize,
    /// "pre" (the mean before the activation was maximised) or "post".
    pub stage: String,
    pub steps: usize,
    pub size: usize,
    pub seed: u64,
    pub weights_id: String,
    pub value: f32,
    pub png: Vec<u8>,
}

impl Store {
    fn has_visuals(&self) -> bool {
        self.version >= 6
    }

    /// Stores `v`, replacing the layer and unit's earlier one.
    pub fn put_visual(&self, v: &StoredVisual) -> Result<()> {
        let conn = &self.conn;
        conn.execute(
            "INSERT OR REPLACE INTO visualisation
               (layer, unit, stage, steps, size, seed, weights_id, value, png, made_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                v.layer,
                v.unit as i64,
                v.stage,
                v.steps as i64,
                v.size as i64,
                v.seed as i64,
                v.weights_id,
                v.value as f64,
                v.png,
                unix_now()
            ],
        )
        .ctx(conn)?;
        Ok(())
    }

    /// The units of `layer` with a stored visualisation (none before schema 6).
    pub fn visualised_units(&self, layer: &str) -> Result<Vec<usize>> {
        if !self.has_visuals() {
            return Ok(Vec::new());
        }
        let conn = &self.conn;
        let mut st = conn
            .prepare("SELECT unit FROM visualisation WHERE layer = ?1 ORDER BY unit")
            .ctx(conn)?;
        let rows = st
            .query_map([layer], |r| r.get::<_, i64>(0).map(|u| u as usize))
            .ctx(conn)?;
        rows.collect::<rusqlite::Result<_>>().ctx(conn)
    }

    /// The stored visualisation of `layer`'s `unit`, if any.
    pub fn visual(&self, layer: &str, unit: usize) -> Result<Option<StoredVisual>> {
        if !self.has_visuals() {
            return Ok(None);
        }
        let conn = &self.conn;
        conn.query_row(
            "SELECT stage, steps, size, seed, weights_id, value, png FROM visualisation
             WHERE layer = ?1 AND unit = ?2",
            params![layer, unit as i64],
            |r| {
                Ok(StoredVisual {
                    layer: layer.to_string(),
                    unit,
                    stage: r.get(0)?,
                    steps: r.get::<_, i64>(1)? as usize,
                    size: r.get::<_, i64>(2)? as usize,
                    seed: r.get::<_, i64>(3)? as u64,
                    weights_id: r.get(4)?,
                    value: r.get::<_, f64>(5)? as f32,
                    png: r.get(6)?,
                })
            },
        )
        .optional()
        .ctx(conn)
    }
}
