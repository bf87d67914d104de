//! The SQLite index: schema migrations, the run description, image rows, per-image
//! peaks, per-unit statistics and the exact per-unit top-K.
//!
//! Writers keep unit statistics and top-K lists in memory (`UnitStats`, `TopK`) and
//! write each batch in one transaction, so a killed process loses at most the batch
//! in flight. The database runs in WAL mode: readers (`open_readonly`) see the last
//! committed batch while an index is running.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::arch::Act;
use crate::peaks::{self, Peak};
use crate::receptive::Field;
use crate::{Error, Result};

mod lock;
pub use lock::{lock_path, writer_active, WriterLock};

/// Schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "0002_sessions",
        include_str!("../migrations/0002_sessions.sql"),
    ),
    (
        3,
        "0003_pre_activation",
        include_str!("../migrations/0003_pre_activation.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Adds the database path to SQLite errors.
pub(crate) trait Ctx<T> {
    fn ctx(self, conn: &Connection) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, conn: &Connection) -> Result<T> {
        self.map_err(|e| Error::Store {
            path: PathBuf::from(conn.path().unwrap_or("<database>")),
            reason: e.to_string(),
        })
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Held by a writer for as long as the store is open (released on drop, and by
    /// the OS when the process dies); `None` for readers.
    _writer: Option<WriterLock>,
    /// The schema version read from the file: readers accept older versions from
    /// `MIN_READABLE` on, and fill in what those lack.
    version: i64,
}

/// The oldest schema a reader opens without upgrading it: 2 lacks only the
/// pre-activation and duplicate columns of 3, which readers fill in (ranked after
/// the activation, duplicates kept).
pub const MIN_READABLE: i64 = 2;

/// What the database indexes: fixed when it is created.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunInfo {
    pub model: String,
    pub weights_id: String,
    /// The indexed directory (absolute); image paths are relative to it.
    pub root: PathBuf,
    /// Preprocessing recipe as JSON.
    pub recipe: String,
    pub max_pixels: u64,
    pub top_k: usize,
    pub tool_version: String,
    pub created_at: i64,
    pub layers: Vec<String>,
    /// Whether every file enters the top-K lists, or only the first of each content.
    pub keep_duplicates: bool,
    pub needs_rebuild: bool,
    /// Statistics and top-K include exactly the indexed images with id <= this.
    pub derived_upto: i64,
}

/// An indexed layer: its shape and receptive field.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    /// Position in the run's layer list (also the row id).
    pub id: i64,
    pub name: String,
    pub node: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub field: Field,
    /// Whether the peaks were taken before the layer's activation (`act`); `false`
    /// in databases made before that existed, whose peaks are after it.
    pub pre: bool,
    /// The layer's activation (`Act::None` where unrecorded).
    pub act: Act,
}

/// How far the index is from what its last `index` set out to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Complete,
    /// An `index` holds the writer lock now (`holder` says which); `pending` images
    /// are committed but not yet in the saved statistics and top-K.
    Building {
        holder: String,
        pending: u64,
    },
    /// The last `index` stopped before its end (killed, or an error such as a full
    /// disk); the next one completes it.
    CutShort {
        pending: u64,
        needs_rebuild: bool,
    },
}

impl LayerInfo {
    /// The network's value (after the activation) of a stored peak.
    pub fn value_of(&self, stored: f32) -> f32 {
        if self.pre {
            self.act.apply(stored)
        } else {
            stored
        }
    }

    /// The value before the activation of a stored peak, when the index has it.
    pub fn pre_of(&self, stored: f32) -> Option<f32> {
        self.pre.then_some(stored)
    }
}

/// What an indexer needs to know about a file it met before.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownImage {
    pub id: i64,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub sha256: Option<String>,
    pub status: String,
}

/// An image row to write.
#[derive(Clone, Debug)]
pub struct ImageRecord<'a> {
    pub path_raw: &'a [u8],
    pub path: &'a str,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub sha256: Option<&'a str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// JSON of the `preprocess::Transform`.
    pub transform: Option<&'a str>,
    pub status: &'a str,
    pub error_kind: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Raw OS bytes of a path (exact on Unix; elsewhere its UTF-8, lossily).
pub fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().as_bytes().to_vec()
    }
}

/// Inverse of `path_bytes`.
pub fn bytes_path(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

impl Store {
    /// Opens (creating if needed) a database for writing: WAL mode, schema upgraded
    /// to this build's version. A database from a newer neurodex is refused. The
    /// writer lock is taken first and held until the store is dropped, so a second
    /// writer is refused (`Error::Locked`, naming the holder) before it reads anything.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |reason: String| Error::Store {
            path: path.to_path_buf(),
            reason,
        };
        let writer = WriterLock::acquire(path)?;
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| err(e.to_string()))?;
        // NORMAL is durable against a killed process in WAL mode (only power loss can
        // drop the last commits), and much faster than FULL.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(format!("cannot use as a database: {e}")))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(e.to_string()))?;
        // Every batch rewrites the same statistics and top-K pages: a larger WAL lets a
        // checkpoint copy each of them once instead of once per batch. The page cache
        // holds those hot pages (a few MB) and caps what SQLite keeps in memory.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(|e| err(e.to_string()))?;
        conn.pragma_update(None, "cache_size", -16384)
            .map_err(|e| err(e.to_string()))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            _writer: Some(writer),
            version: 0,
        };
        store.migrate()?;
        store.version = SCHEMA_VERSION;
        Ok(store)
    }

    /// Opens an existing database for queries only; works while `index` writes to it.
    /// On read-only storage, where SQLite cannot create the WAL's side files, the
    /// file is opened immutable (nothing can be writing to it there).
    pub fn open_readonly(path: &Path) -> Result<Store> {
        let err = |reason: String| Error::Store {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                err("no such database (create it with `neurodex index`)".into())
            }
            _ => Error::io(path, e),
        })?;
        if meta.len() == 0 {
            return Err(err(
                "an empty file, not a neurodex database (`neurodex index DIR --db FILE` \
                 fills it)"
                    .into(),
            ));
        }
        let store = match Self::open_readonly_as(path, false) {
            Err(e) if on_read_only_storage(&e) => {
                let wal = side_file(path, "-wal");
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(err(format!(
                        "on read-only storage with an unfinished write-ahead log ({}) that \
                         SQLite cannot read there; copy the database and that file to \
                         writable storage, or open it once where it is writable",
                        wal.display()
                    )));
                }
                Self::open_readonly_as(path, true)?
            }
            other => other?,
        };
        let v = store.version;
        if v > SCHEMA_VERSION {
            return Err(store.newer_error(v));
        }
        if v == 0 {
            return Err(err(
                "not a neurodex database (an SQLite file without neurodex's tables)".into(),
            ));
        }
        if v < MIN_READABLE {
            return Err(err(format!(
                "database schema version {v} is older than this neurodex's ({SCHEMA_VERSION}); \
                 run `neurodex index` on it once to upgrade it"
            )));
        }
        Ok(store)
    }

    /// A read-only connection whose schema version has been read (the first read is
    /// what fails where the WAL's side files cannot be made).
    fn open_readonly_as(path: &Path, immutable: bool) -> Result<Store> {
        let err = |e: rusqlite::Error| Error::Store {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if immutable {
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            _writer: None,
            version: 0,
        };
        store.version = store.schema_version()?;
        Ok(store)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database predates rankings before the activation (schema 2).
    pub fn ranked_after_activation(&self) -> bool {
        self.version < 3
    }

    /// Starts a write transaction.
    pub fn begin(&mut self) -> Result<rusqlite::Transaction<'_>> {
        let path = self.path.clone();
        self.conn.transaction().map_err(|e| Error::Store {
            path,
            reason: e.to_string(),
        })
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Store {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn newer_error(&self, v: i64) -> Error {
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

    fn migrate(&mut self) -> Result<()> {
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
            let tx = self.begin()?;
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

    /// The run this database holds, if any images were ever indexed into it.
    pub fn run_info_opt(&self) -> Result<Option<RunInfo>> {
        let row = self
            .conn
            .query_row(
                if self.version < 3 {
                    "SELECT model, weights_id, root, recipe, max_pixels, top_k, tool_version,
                            created_at, needs_rebuild, derived_upto, 1 FROM run WHERE id = 1"
                } else {
                    "SELECT model, weights_id, root, recipe, max_pixels, top_k, tool_version,
                            created_at, needs_rebuild, derived_upto, keep_duplicates
                     FROM run WHERE id = 1"
                },
                [],
                |r| {
                    Ok(RunInfo {
                        model: r.get(0)?,
                        weights_id: r.get(1)?,
                        root: bytes_path(&r.get::<_, Vec<u8>>(2)?),
                        recipe: r.get(3)?,
                        max_pixels: r.get::<_, i64>(4)? as u64,
                        top_k: r.get::<_, i64>(5)? as usize,
                        tool_version: r.get(6)?,
                        created_at: r.get(7)?,
                        layers: vec![],
                        needs_rebuild: r.get::<_, i64>(8)? != 0,
                        derived_upto: r.get(9)?,
                        keep_duplicates: r.get::<_, i64>(10)? != 0,
                    })
                },
            )
            .optional()
            .ctx(&self.conn)?;
        match row {
            None => Ok(None),
            Some(mut info) => {
                info.layers = self.layers()?.into_iter().map(|l| l.name).collect();
                Ok(Some(info))
            }
        }
    }

    /// The run this database holds (an error for a database nothing was indexed into).
    pub fn run_info(&self) -> Result<RunInfo> {
        self.run_info_opt()?
            .ok_or_else(|| self.err("the database is empty: nothing has been indexed into it"))
    }

    /// Indexed layers in network order.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let mut st = self
            .conn
            .prepare(if self.version < 3 {
                "SELECT id, name, node, channels, height, width, rf_size_y, rf_size_x,
                            rf_jump_y, rf_jump_x, rf_off_y, rf_off_x, 'post', NULL
                     FROM layer ORDER BY id"
            } else {
                "SELECT id, name, node, channels, height, width, rf_size_y, rf_size_x,
                            rf_jump_y, rf_jump_x, rf_off_y, rf_off_x, stage, activation
                     FROM layer ORDER BY id"
            })
            .ctx(&self.conn)?;
        let rows = st
            .query_map([], |r| {
                Ok(LayerInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    node: r.get::<_, i64>(2)? as usize,
                    channels: r.get::<_, i64>(3)? as usize,
                    height: r.get::<_, i64>(4)? as usize,
                    width: r.get::<_, i64>(5)? as usize,
                    field: Field {
                        size: [r.get(6)?, r.get(7)?],
                        jump: [r.get(8)?, r.get(9)?],
                        offset: [r.get(10)?, r.get(11)?],
                    },
                    pre: r.get::<_, String>(12)? == "pre",
                    act: r
                        .get::<_, Option<String>>(13)?
                        .as_deref()
                        .and_then(Act::from_name)
                        .unwrap_or(Act::None),
                })
            })
            .ctx(&self.conn)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(&self.conn)
    }

    /// Writes the run description, its layers and empty statistics (first index only).
    pub fn create_run(&mut self, run: &RunInfo, layers: &[LayerInfo]) -> Result<()> {
        let tx = self.begin()?;
        tx.execute(
            "INSERT INTO run (id, model, weights_id, root, recipe, max_pixels, top_k,
                              tool_version, created_at, needs_rebuild, keep_duplicates)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
            params![
                run.model,
                run.weights_id,
                path_bytes(&run.root),
                run.recipe,
                run.max_pixels as i64,
                run.top_k as i64,
                run.tool_version,
                run.created_at,
                run.keep_duplicates as i64
            ],
        )
        .ctx(&tx)?;
        for l in layers {
            tx.execute(
                "INSERT INTO layer (id, name, node, channels, height, width, rf_size_y, rf_size_x,
                                    rf_jump_y, rf_jump_x, rf_off_y, rf_off_x, stage, activation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    l.id,
                    l.name,
                    l.node as i64,
                    l.channels as i64,
                    l.height as i64,
                    l.width as i64,
                    l.field.size[0],
                    l.field.size[1],
                    l.field.jump[0],
                    l.field.jump[1],
                    l.field.offset[0],
                    l.field.offset[1],
                    if l.pre { "pre" } else { "post" },
                    l.act.name()
                ],
            )
            .ctx(&tx)?;
            let empty = UnitStats::new();
            for u in 0..l.channels {
                write_stats(&tx, l.id, u, &empty)?;
                write_top(&tx, l.id, u, &TopK::new(run.top_k))?;
            }
        }
        tx.commit().ctx(&self.conn)
    }

    /// The row of a file met before, by its path relative to the root.
    pub fn find_image(&self, path_raw: &[u8]) -> Result<Option<KnownImage>> {
        self.conn
            .prepare_cached(
                "SELECT id, size, mtime_ns, sha256, status FROM image WHERE path_raw = ?1",
            )
            .ctx(&self.conn)?
            .query_row([path_raw], |r| {
                Ok(KnownImage {
                    id: r.get(0)?,
                    size: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    mtime_ns: r.get(2)?,
                    sha256: r.get(3)?,
                    status: r.get(4)?,
                })
            })
            .optional()
            .ctx(&self.conn)
    }

    /// Image id of a path relative to the root.
    pub fn image_id(&self, path_raw: &[u8]) -> Result<Option<i64>> {
        Ok(self.find_image(path_raw)?.map(|k| k.id))
    }

    pub fn max_image_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM image", [], |r| r.get(0))
            .ctx(&self.conn)
    }

    /// Statistics of every unit of `layers`, `[layer][unit]`.
    pub fn load_stats(&self, layers: &[LayerInfo]) -> Result<Vec<Vec<UnitStats>>> {
        let mut out: Vec<Vec<UnitStats>> = layers
            .iter()
            .map(|l| vec![UnitStats::new(); l.channels])
            .collect();
        let mut st = self
            .conn
            .prepare(
                "SELECT layer_id, unit, count, nan, sum, sum_sq, min, max, positive, hist
                 FROM unit_stats",
            )
            .ctx(&self.conn)?;
        let mut rows = st.query([]).ctx(&self.conn)?;
        while let Some(r) = rows.next().ctx(&self.conn)? {
            let (l, u): (i64, i64) = (r.get(0).ctx(&self.conn)?, r.get(1).ctx(&self.conn)?);
            let s = read_stats(r).ctx(&self.conn)?;
            if let Some(slot) = out.get_mut(l as usize).and_then(|v| v.get_mut(u as usize)) {
                *slot = s;
            }
        }
        Ok(out)
    }

    /// Top-K lists of every unit of `layers`, `[layer][unit]`.
    pub fn load_top(&self, layers: &[LayerInfo], k: usize) -> Result<Vec<Vec<TopK>>> {
        let mut out: Vec<Vec<TopK>> = layers
            .iter()
            .map(|l| (0..l.channels).map(|_| TopK::new(k)).collect())
            .collect();
        let mut st = self
            .conn
            .prepare("SELECT layer_id, unit, hits FROM top_k")
            .ctx(&self.conn)?;
        let mut rows = st.query([]).ctx(&self.conn)?;
        while let Some(r) = rows.next().ctx(&self.conn)? {
            let l: i64 = r.get(0).ctx(&self.conn)?;
            let u: i64 = r.get(1).ctx(&self.conn)?;
            let blob: Vec<u8> = r.get(2).ctx(&self.conn)?;
            if let Some(t) = out.get_mut(l as usize).and_then(|v| v.get_mut(u as usize)) {
                for hit in decode_hits(&blob)? {
                    t.offer(hit);
                }
            }
        }
        Ok(out)
    }

    /// Adds the stored peaks of indexed images with id > `after` to `stats` and
    /// `tops`, in id order (as the run that indexed them did). Returns how many.
    pub fn replay_after(
        &self,
        after: i64,
        layers: &[LayerInfo],
        stats: &mut [Vec<UnitStats>],
        tops: &mut [Vec<TopK>],
    ) -> Result<u64> {
        let keep = self.run_info()?.keep_duplicates;
        let n = add_stored_peaks(&self.conn, after, None, keep, layers, stats, tops)?;
        Ok(n)
    }

    /// What the saved statistics and top-K of `layer` lack while an index runs or
    /// after one was cut short: the images committed since their last save, replayed
    /// from their stored peaks (`[unit]`). Empty vectors when nothing lags.
    pub fn pending(&self, layer: &LayerInfo) -> Result<(Vec<UnitStats>, Vec<TopK>)> {
        let run = self.run_info()?;
        let layers = self.layers()?;
        let at = layers.iter().position(|l| l.id == layer.id);
        let mut stats: Vec<Vec<UnitStats>> = vec![Vec::new(); layers.len()];
        let mut tops: Vec<Vec<TopK>> = vec![Vec::new(); layers.len()];
        let Some(at) = at else {
            return Ok((Vec::new(), Vec::new()));
        };
        if self.lagging_images(run.derived_upto)? == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        stats[at] = vec![UnitStats::new(); layer.channels];
        tops[at] = (0..layer.channels).map(|_| TopK::new(run.top_k)).collect();
        add_stored_peaks(
            &self.conn,
            run.derived_upto,
            Some(layer.id),
            run.keep_duplicates,
            &layers,
            &mut stats,
            &mut tops,
        )?;
        Ok((
            std::mem::take(&mut stats[at]),
            std::mem::take(&mut tops[at]),
        ))
    }

    fn lagging_images(&self, derived_upto: i64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM image WHERE status = 'ok' AND id > ?1",
                [derived_upto],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .ctx(&self.conn)
    }

    /// Whether the index is complete, being built, or was left unfinished.
    pub fn progress(&self) -> Result<Progress> {
        let Some(run) = self.run_info_opt()? else {
            return Ok(Progress::Complete);
        };
        let pending = self.lagging_images(run.derived_upto)?;
        if let Some(holder) = writer_active(&self.path) {
            return Ok(Progress::Building { holder, pending });
        }
        let unfinished: bool = self
            .conn
            .query_row(
                "SELECT finished_at IS NULL FROM session ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .ctx(&self.conn)?
            .unwrap_or(false);
        if unfinished || pending > 0 || run.needs_rebuild {
            return Ok(Progress::CutShort {
                pending,
                needs_rebuild: run.needs_rebuild,
            });
        }
        Ok(Progress::Complete)
    }

    /// Recomputes every unit's statistics and top-K from the stored peaks of the
    /// images now indexed (after files changed or vanished), in one transaction.
    pub fn rebuild(&mut self) -> Result<()> {
        let info = self.run_info()?;
        let layers = self.layers()?;
        let mut stats: Vec<Vec<UnitStats>> = layers
            .iter()
            .map(|l| vec![UnitStats::new(); l.channels])
            .collect();
        let mut tops: Vec<Vec<TopK>> = layers
            .iter()
            .map(|l| (0..l.channels).map(|_| TopK::new(info.top_k)).collect())
            .collect();
        let tx = self.begin()?;
        add_stored_peaks(
            &tx,
            0,
            None,
            info.keep_duplicates,
            &layers,
            &mut stats,
            &mut tops,
        )?;
        for (l, layer) in layers.iter().enumerate() {
            for u in 0..layer.channels {
                write_stats(&tx, layer.id, u, &stats[l][u])?;
                write_top(&tx, layer.id, u, &tops[l][u])?;
            }
        }
        tx.execute("UPDATE run SET needs_rebuild = 0 WHERE id = 1", [])
            .ctx(&tx)?;
        set_derived_upto(&tx)?;
        tx.commit().ctx(&self.conn)
    }
}

/// Adds the stored peaks of the indexed images with id > `after` to `stats` and
/// `tops`, in image order (as an uninterrupted incremental run adds them); unless
/// `keep_duplicates`, a file with the content of an earlier one enters the
/// statistics only. Returns how many images.
fn add_stored_peaks(
    conn: &Connection,
    after: i64,
    only_layer: Option<i64>,
    keep_duplicates: bool,
    layers: &[LayerInfo],
    stats: &mut [Vec<UnitStats>],
    tops: &mut [Vec<TopK>],
) -> Result<u64> {
    let mut st = conn
        .prepare(
            "SELECT p.image_id, p.layer_id, p.data, i.sha256 FROM peaks p
             JOIN image i ON i.id = p.image_id
             WHERE i.status = 'ok' AND p.image_id > ?1 AND (?2 IS NULL OR p.layer_id = ?2)
             ORDER BY p.image_id, p.layer_id",
        )
        .ctx(conn)?;
    let mut rows = st.query(params![after, only_layer]).ctx(conn)?;
    let (mut n, mut last, mut dup) = (0, None, false);
    while let Some(r) = rows.next().ctx(conn)? {
        let id: i64 = r.get(0).ctx(conn)?;
        let l = r.get::<_, i64>(1).ctx(conn)? as usize;
        let blob: Vec<u8> = r.get(2).ctx(conn)?;
        if last != Some(id) {
            n += 1;
            last = Some(id);
            let sha: Option<String> = r.get(3).ctx(conn)?;
            dup = !keep_duplicates
                && match sha {
                    Some(h) => duplicate_of(conn, id, &h)?.is_some(),
                    None => false,
                };
        }
        if l >= layers.len() {
            continue;
        }
        for (u, p) in peaks::decode(&blob)?.iter().enumerate() {
            if u < stats[l].len() {
                stats[l][u].add(p.value);
                if !dup {
                    tops[l][u].offer(Hit::new(p, id));
                }
            }
        }
    }
    Ok(n)
}

/// The first indexed file (lowest id) with the content `sha256` of image `id`, when
/// that is an earlier file: `id` is then a duplicate, kept out of the top-K lists.
pub fn duplicate_of(conn: &Connection, id: i64, sha256: &str) -> Result<Option<i64>> {
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(id) FROM image WHERE sha256 = ?1 AND status = 'ok'")
        .ctx(conn)?
        .query_row([sha256], |r| r.get(0))
        .ctx(conn)?;
    Ok(first.filter(|&f| f < id))
}

/// Whether a later file (higher id) indexed before has the content `sha256` of image
/// `id`: that copy entered the top-K lists, which `id` now owns (they need a rebuild).
pub fn has_later_copy(conn: &Connection, id: i64, sha256: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM image WHERE sha256 = ?1 AND status = 'ok' AND id > ?2)",
    )
    .ctx(conn)?
    .query_row(params![sha256, id], |r| r.get(0))
    .ctx(conn)
}

/// How many indexed files have the content of an earlier indexed file.
pub fn count_duplicates(conn: &Connection) -> Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM image i WHERE i.status = 'ok' AND i.sha256 IS NOT NULL
           AND EXISTS (SELECT 1 FROM image j WHERE j.sha256 = i.sha256
                         AND j.status = 'ok' AND j.id < i.id)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .ctx(conn)
    .map(|n| n as u64)
}

/// `DB-wal`, `DB-shm`, `DB.lock`: the files SQLite and neurodex keep beside a database.
pub(crate) fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Whether opening failed because SQLite may not create or write the WAL's side
/// files (a read-only directory or medium, or a file without write permission).
fn on_read_only_storage(e: &Error) -> bool {
    // The message is all that survives `Ctx`; these are SQLite's texts for
    // SQLITE_CANTOPEN and SQLITE_READONLY.
    matches!(e, Error::Store { reason, .. }
        if reason.contains("unable to open database file")
            || reason.contains("attempt to write a readonly database"))
}

/// A `file:` URI opening `path` immutable: no locks, no side files, no WAL.
fn immutable_uri(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for &b in path_bytes(&abs).iter() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' | b':' => {
                uri.push(b as char)
            }
            // Windows paths: C:\x becomes /C:/x.
            b'\\' => uri.push('/'),
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    if !uri.starts_with("file:/") {
        uri.insert(5, '/');
    }
    uri.push_str("?immutable=1");
    uri
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Inserts or updates an image row (keyed by its relative path); returns its id.
pub fn upsert_image(conn: &Connection, r: &ImageRecord) -> Result<i64> {
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
pub fn touch_image(conn: &Connection, id: i64, mtime_ns: i64) -> Result<()> {
    conn.prepare_cached("UPDATE image SET mtime_ns = ?2 WHERE id = ?1")
        .ctx(conn)?
        .execute(params![id, mtime_ns])
        .ctx(conn)
        .map(|_| ())
}

/// Forgets an image's peaks. Its share of the statistics and top-K lists stays until
/// `rebuild` (queries skip images that are not indexed).
pub fn drop_image_data(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM peaks WHERE image_id = ?1")
        .ctx(conn)?
        .execute([id])
        .ctx(conn)?;
    Ok(())
}

/// Marks a vanished file as removed and drops its data.
pub fn mark_removed(conn: &Connection, id: i64) -> Result<()> {
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
pub fn set_derived_upto(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE run SET derived_upto = (SELECT coalesce(max(id), 0) FROM image) WHERE id = 1",
        [],
    )
    .ctx(conn)
    .map(|_| ())
}

pub fn set_needs_rebuild(conn: &Connection, on: bool) -> Result<()> {
    conn.execute(
        "UPDATE run SET needs_rebuild = ?1 WHERE id = 1",
        [on as i64],
    )
    .ctx(conn)
    .map(|_| ())
}

pub fn put_peaks(conn: &Connection, image_id: i64, layer_id: i64, p: &[Peak]) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO peaks (image_id, layer_id, data) VALUES (?1, ?2, ?3)",
    )
    .ctx(conn)?
    .execute(params![image_id, layer_id, peaks::encode(p)])
    .ctx(conn)
    .map(|_| ())
}

/// The peaks of one image on one layer, if indexed.
pub fn get_peaks(conn: &Connection, image_id: i64, layer_id: i64) -> Result<Option<Vec<Peak>>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT data FROM peaks WHERE image_id = ?1 AND layer_id = ?2")
        .ctx(conn)?
        .query_row([image_id, layer_id], |r| r.get(0))
        .optional()
        .ctx(conn)?;
    blob.map(|b| peaks::decode(&b)).transpose()
}

pub fn write_stats(conn: &Connection, layer_id: i64, unit: usize, s: &UnitStats) -> Result<()> {
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

/// Reads `count, nan, sum, sum_sq, min, max, positive, hist` from columns 2..=9.
pub(crate) fn read_stats(r: &rusqlite::Row) -> rusqlite::Result<UnitStats> {
    let blob: Vec<u8> = r.get(9)?;
    Ok(UnitStats {
        count: r.get::<_, i64>(2)? as u64,
        nan: r.get::<_, i64>(3)? as u64,
        sum: r.get(4)?,
        sum_sq: r.get(5)?,
        min: r.get::<_, Option<f64>>(6)?.unwrap_or(f64::INFINITY),
        max: r.get::<_, Option<f64>>(7)?.unwrap_or(f64::NEG_INFINITY),
        positive: r.get::<_, i64>(8)? as u64,
        hist: decode_hist(&blob),
    })
}

/// One unit's statistics (empty when it has no row).
pub fn read_unit_stats(conn: &Connection, layer_id: i64, unit: usize) -> Result<UnitStats> {
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

/// Bytes per hit in a top-K blob.
pub const HIT_RECORD: usize = 16;

/// Writes a unit's top-K list, best first.
pub fn write_top(conn: &Connection, layer_id: i64, unit: usize, t: &TopK) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO top_k (layer_id, unit, hits) VALUES (?1, ?2, ?3)")
        .ctx(conn)?
        .execute(params![layer_id, unit as i64, encode_hits(&t.sorted())])
        .ctx(conn)
        .map(|_| ())
}

/// A unit's top-K list, best first.
pub fn read_top(conn: &Connection, layer_id: i64, unit: usize) -> Result<Vec<Hit>> {
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

pub fn encode_hits(hits: &[Hit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hits.len() * HIT_RECORD);
    for h in hits {
        out.extend_from_slice(&h.value.to_le_bytes());
        out.extend_from_slice(&h.image_id.to_le_bytes());
        out.extend_from_slice(&h.y.to_le_bytes());
        out.extend_from_slice(&h.x.to_le_bytes());
    }
    out
}

pub fn decode_hits(blob: &[u8]) -> Result<Vec<Hit>> {
    if !blob.len().is_multiple_of(HIT_RECORD) {
        return Err(Error::Other(format!(
            "corrupt top-K record: {} bytes is not a multiple of {HIT_RECORD}",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(HIT_RECORD)
        .map(|r| Hit {
            value: f32::from_le_bytes(r[0..4].try_into().unwrap()),
            image_id: i64::from_le_bytes(r[4..12].try_into().unwrap()),
            y: u16::from_le_bytes([r[12], r[13]]),
            x: u16::from_le_bytes([r[14], r[15]]),
        })
        .collect())
}

// ---------------------------------------------------------------------------------
// Per-unit statistics: mergeable sums and a log-spaced histogram of peaks.

/// Histogram bins: one for |v| < 2^-12 (zero), then 4 per octave from 2^-12 to 2^12
/// on each side (values beyond fall into the outermost bins).
pub const HIST_BINS: usize = 193;
const ZERO_BIN: usize = 96;
const STEPS: f64 = 4.0;
const MIN_EXP: i32 = -48;

/// The histogram bin of a finite value.
pub fn hist_bin(v: f32) -> usize {
    let a = (v as f64).abs();
    // (NaN compares false and lands here too.)
    if a.is_nan() || a < (2f64).powi(MIN_EXP / STEPS as i32) {
        return ZERO_BIN;
    }
    let e = ((a.log2() * STEPS).floor() as i32).clamp(MIN_EXP, -MIN_EXP - 1);
    let off = (e - MIN_EXP) as usize;
    if v > 0.0 {
        ZERO_BIN + 1 + off
    } else {
        ZERO_BIN - 1 - off
    }
}

/// Values of bin `b`: `[lo, hi)` by magnitude, signed.
pub fn hist_bin_range(b: usize) -> (f64, f64) {
    if b == ZERO_BIN {
        return (0.0, 0.0);
    }
    let (off, sign) = if b > ZERO_BIN {
        (b - ZERO_BIN - 1, 1.0)
    } else {
        (ZERO_BIN - 1 - b, -1.0)
    };
    let e = off as i32 + MIN_EXP;
    let lo = (2f64).powf(e as f64 / STEPS);
    let hi = (2f64).powf((e + 1) as f64 / STEPS);
    if sign > 0.0 {
        (lo, hi)
    } else {
        (-hi, -lo)
    }
}

/// Sparse encoding: `(u8 bin, u32 LE count)` for every non-empty bin.
pub fn encode_hist(h: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (b, &c) in h.iter().enumerate() {
        if c > 0 {
            out.push(b as u8);
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    out
}

pub fn decode_hist(blob: &[u8]) -> Vec<u32> {
    let mut h = vec![0u32; HIST_BINS];
    for r in blob.chunks_exact(5) {
        if let Some(slot) = h.get_mut(r[0] as usize) {
            *slot = u32::from_le_bytes([r[1], r[2], r[3], r[4]]);
        }
    }
    h
}

/// Running statistics of one unit's per-image peaks. `add` in the same order gives
/// bit-identical sums, and `merge` combines disjoint sets of images.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitStats {
    /// Finite peaks seen.
    pub count: u64,
    /// NaN peaks seen (maps with no number at all).
    pub nan: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
    /// Peaks above zero: the images on which the unit fired at all.
    pub positive: u64,
    pub hist: Vec<u32>,
}

impl Default for UnitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl UnitStats {
    pub fn new() -> UnitStats {
        UnitStats {
            count: 0,
            nan: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            positive: 0,
            hist: vec![0; HIST_BINS],
        }
    }

    pub fn add(&mut self, v: f32) {
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        let x = v as f64;
        self.count += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.positive += (v > 0.0) as u64;
        self.hist[hist_bin(v)] += 1;
    }

    pub fn merge(&mut self, o: &UnitStats) {
        self.count += o.count;
        self.nan += o.nan;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.positive += o.positive;
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub fn std(&self) -> Option<f64> {
        let m = self.mean()?;
        Some((self.sum_sq / self.count as f64 - m * m).max(0.0).sqrt())
    }

    /// Fraction of images on which the unit never rose above zero.
    pub fn sparsity(&self) -> Option<f64> {
        (self.count > 0).then(|| 1.0 - self.positive as f64 / self.count as f64)
    }

    /// Approximate `q`-quantile of the peaks from the histogram (within a bin:
    /// about 19% relative), clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, &c) in self.hist.iter().enumerate() {
            seen += c as u64;
            if seen >= target {
                let (lo, hi) = hist_bin_range(b);
                let mid = if lo == 0.0 && hi == 0.0 {
                    0.0
                } else {
                    lo.signum() * (lo * hi).sqrt()
                };
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------
// Exact top-K per unit.

/// One image's peak for a unit, as kept in the top-K.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub value: f32,
    pub image_id: i64,
    pub y: u16,
    pub x: u16,
}

impl Hit {
    pub fn new(p: &Peak, image_id: i64) -> Hit {
        Hit {
            value: p.value,
            image_id,
            y: p.y,
            x: p.x,
        }
    }

    /// Rank order: higher value first, then the earlier image.
    pub fn rank_cmp(&self, o: &Hit) -> Ordering {
        o.value
            .total_cmp(&self.value)
            .then(self.image_id.cmp(&o.image_id))
    }
}

/// Heap order with the worst-ranked hit on top.
#[derive(Clone, Copy, Debug)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.rank_cmp(&o.0)
    }
}

/// What `TopK::offer` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Offer {
    Rejected,
    Added,
    /// Added, pushing out this hit.
    Replaced(Hit),
}

/// The K best hits of one unit, at most one per image (callers offer each image once).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps `h` if it ranks among the K best; NaN never does.
    pub fn offer(&mut self, h: Hit) -> Offer {
        if h.value.is_nan() || self.k == 0 {
            return Offer::Rejected;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(h));
            return Offer::Added;
        }
        let worst = self.heap.peek().expect("k > 0").0;
        if h.rank_cmp(&worst) == Ordering::Less {
            self.heap.pop();
            self.heap.push(Worst(h));
            Offer::Replaced(worst)
        } else {
            Offer::Rejected
        }
    }

    /// Hits best first.
    pub fn sorted(&self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.iter().map(|w| w.0).collect();
        v.sort_by(|a, b| a.rank_cmp(b));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_full_sort() {
        // Values with ties and a NaN; the reference sorts everything and cuts.
        let values = [
            3.0,
            1.0,
            4.0,
            1.0,
            5.0,
            9.0,
            2.0,
            6.0,
            5.0,
            3.0,
            5.0,
            f32::NAN,
            8.0,
            9.0,
            7.0,
        ];
        let mut t = TopK::new(5);
        for (i, &v) in values.iter().enumerate() {
            t.offer(Hit {
                value: v,
                image_id: i as i64,
                y: 0,
                x: 0,
            });
        }
        let got: Vec<(f32, i64)> = t.sorted().iter().map(|h| (h.value, h.image_id)).collect();
        // 9 (ids 5, 13), 8 (12), 7 (14), 6 (7).
        assert_eq!(
            got,
            vec![(9.0, 5), (9.0, 13), (8.0, 12), (7.0, 14), (6.0, 7)]
        );
    }

    #[test]
    fn a_tie_with_the_worst_keeps_the_earlier_image() {
        let mut t = TopK::new(1);
        let h = |v, id| Hit {
            value: v,
            image_id: id,
            y: 0,
            x: 0,
        };
        assert_eq!(t.offer(h(2.0, 7)), Offer::Added);
        assert_eq!(t.offer(h(2.0, 9)), Offer::Rejected);
        assert_eq!(t.offer(h(2.0, 3)), Offer::Replaced(h(2.0, 7)));
    }

    #[test]
    fn top_k_blobs_round_trip() {
        let hits = vec![
            Hit {
                value: 3.5,
                image_id: 1 << 40,
                y: 2,
                x: 7,
            },
            Hit {
                value: -1.0,
                image_id: 3,
                y: 0,
                x: 65535,
            },
        ];
        let blob = encode_hits(&hits);
        assert_eq!(blob.len(), 32);
        assert_eq!(decode_hits(&blob).unwrap(), hits);
        assert!(decode_hits(&blob[..15]).is_err());
    }

    #[test]
    fn histogram_bins_are_quarter_octaves() {
        assert_eq!(hist_bin(0.0), ZERO_BIN);
        assert_eq!(hist_bin(-0.0), ZERO_BIN);
        assert_eq!(hist_bin(1e-9), ZERO_BIN);
        // 1.0 = 2^0: e = 0, off 48 -> bin 96 + 1 + 48.
        assert_eq!(hist_bin(1.0), 145);
        // 2^(1/4) starts the next bin; just below it stays.
        assert_eq!(hist_bin(1.1892), 145);
        assert_eq!(hist_bin(1.1893), 146);
        assert_eq!(hist_bin(-1.0), 47);
        assert_eq!(hist_bin(1e30), HIST_BINS - 1);
        assert_eq!(hist_bin(-1e30), 0);
        let (lo, hi) = hist_bin_range(145);
        assert_eq!(lo, 1.0);
        assert!((hi - 2f64.powf(0.25)).abs() < 1e-12);
        assert_eq!(hist_bin_range(47), (-hi, -1.0));
    }

    #[test]
    fn stats_merge_like_one_pass_and_survive_the_blob() {
        let xs: Vec<f32> = (0..50).map(|i| (i as f32 - 10.0) * 0.37).collect();
        let mut one = UnitStats::new();
        xs.iter().for_each(|&v| one.add(v));
        let (mut a, mut b) = (UnitStats::new(), UnitStats::new());
        xs[..20].iter().for_each(|&v| a.add(v));
        xs[20..].iter().for_each(|&v| b.add(v));
        a.merge(&b);
        assert_eq!(a.count, 50);
        assert_eq!(a.hist, one.hist);
        assert_eq!(
            (a.min, a.max),
            ((-10.0f32 * 0.37) as f64, (39.0f32 * 0.37) as f64)
        );
        assert!((a.sum - one.sum).abs() < 1e-9);
        // 10 values <= 0 (i = 0..=10 gives -3.7..0; 0 is not positive) -> 11/50.
        assert_eq!(one.positive, 39);
        assert!((one.sparsity().unwrap() - 11.0 / 50.0).abs() < 1e-12);
        assert_eq!(decode_hist(&encode_hist(&one.hist)), one.hist);
    }

    #[test]
    fn quantiles_come_within_a_bin() {
        let mut s = UnitStats::new();
        for i in 1..=1000 {
            s.add(i as f32 / 100.0);
        }
        let median = s.quantile(0.5).unwrap();
        assert!((median / 5.0 - 1.0).abs() < 0.2, "{median}");
        assert_eq!(s.quantile(1.0), Some(10.0));
        let low = s.quantile(0.0).unwrap();
        assert!((low / 0.01 - 1.0).abs() < 0.2, "{low}");
    }

    #[test]
    fn migrations_upgrade_old_databases_and_refuse_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            let conn = Connection::open(&path).unwrap();
            let mut s = Store {
                conn,
                path: path.clone(),
                _writer: None,
                version: 0,
            };
            s.migrate_to(1).unwrap();
            assert_eq!(s.schema_version().unwrap(), 1);
        }
        // Opening for writing applies the rest.
        assert!(Store::open_readonly(&path).is_err());
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let n: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM session", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        s.conn()
            .execute(
                "INSERT INTO schema_migrations VALUES (99, '0099_future', 0)",
                [],
            )
            .unwrap();
        drop(s);
        let e = Store::open(&path).err().expect("newer schema refused");
        assert!(e.to_string().contains("newer"), "{e}");
        let e = Store::open_readonly(&path)
            .err()
            .expect("newer schema refused");
        assert!(e.to_string().contains("version 99"), "{e}");
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (a)")
            .unwrap();
        let e = Store::open(&path).err().unwrap();
        assert!(e.to_string().contains("not a neurodex database"), "{e}");
    }
}
