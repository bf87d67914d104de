//! The schema's versions: the migrations in `migrations/`, applied in order (each in
//! its own transaction) and recorded in `schema_migrations`, and the versions this
//! build writes and still reads.

use rusqlite::params;

use super::{unix_now, Ctx, Store};
use crate::{Error, Result};

/// Schema migrations, applied in order and recorded in `schema_migrations`.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_sessions",
        include_str!("../../migrations/0002_sessions.sql"),
    ),
    (
        3,
        "0003_pre_activation",
        include_str!("../../migrations/0003_pre_activation.sql"),
    ),
    (
        4,
        "0004_labels",
        include_str!("../../migrations/0004_labels.sql"),
    ),
    (
        5,
        "0005_shards",
        include_str!("../../migrations/0005_shards.sql"),
    ),
    (
        6,
        "0006_visualisations",
        include_str!("../../migrations/0006_visualisations.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The oldest schema a reader opens without upgrading it: 2 lacks only the
/// pre-activation and duplicate columns of 3, which readers fill in (ranked after
/// the activation, duplicates kept).
pub const MIN_READABLE: i64 = 2;

impl Store {
    pub(super) fn newer_error(&self, v: i64) -> Error {
        self.err(format!(
            "database schema version {v} is newer than this neurodex supports \
             ({SCHEMA_VERSION}); it was written by a later neurodex: upgrade neurodex \
             or index into a new --db"
        ))
    }

    /// The highest applied migration (0 for an empty or foreign database).
    pub fn schema_version(&self) -> Result<i64> {
        let has_log: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| self.err(format!("not a neurodex database: {e}")))?
            > 0;
        if !has_log {
            let tables: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .ctx(&self.conn)?;
            if tables > 0 {
                return Err(self.err("not a neurodex database (it has other tables)"));
            }
            return Ok(0);
        }
        self.conn
            .query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .ctx(&self.conn)
    }

    pub(super) fn migrate(&mut self) -> Result<()> {
        self.migrate_to(SCHEMA_VERSION)
    }

    /// Applies the migrations up to `target`, each in its own transaction.
    /// (Public for tests that build databases of older versions.)
    #[doc(hidden)]
    pub fn migrate_to(&mut self, target: i64) -> Result<()> {
        let current = self.schema_version()?;
        if current > SCHEMA_VERSION {
            return Err(self.newer_error(current));
        }
        let path = self.path.clone();
        for &(version, name, sql) in MIGRATIONS {
            if version <= current || version > target {
                continue;
            }
            let tx = self.transaction()?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .ctx(&tx)?;
            tx.execute_batch(sql).map_err(|e| Error::Store {
                path: path.clone(),
                reason: format!("migration {name} failed: {e}"),
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, unix_now()],
            )
            .ctx(&tx)?;
            tx.commit().ctx(&self.conn)?;
        }
        Ok(())
    }
}
