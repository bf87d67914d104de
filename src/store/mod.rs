//! The SQLite index, and the one module that speaks SQL: schema migrations, the run
//! description, image rows, per-image peaks, per-unit statistics and the exact
//! per-unit top-K; concept labels (`labels`). Writes go through a `Batch` (`batch`),
//! reads are `Store` methods (`read`), the blobs' byte layouts are in `codec`, the
//! writer lock in `lock`.
//!
//! Writers keep unit statistics and top-K lists in memory (`UnitStats`, `TopK`) and
//! write each batch in one transaction, so a killed process loses at most the batch
//! in flight. The database runs in WAL mode: readers (`open_readonly`) see the last
//! committed batch while an index is running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::arch::Act;
use crate::peaks;
use crate::receptive::Field;
use crate::shard::Shard;
use crate::stats::{Hit, TopK, UnitStats};
use crate::{Error, Result};

mod batch;
mod codec;
mod labels;
mod lock;
mod merge;
mod read;
mod schema;
mod visuals;
pub use visuals::StoredVisual;

pub use batch::Batch;
use batch::{duplicate_of, set_derived_upto, write_stats, write_top};
pub use codec::{bytes_path, path_bytes};
use codec::{decode_hits, read_stats};
pub use labels::{Concept, LabelSet, PutLabels, SetKind};
pub use lock::{lock_path, writer_active, WriterLock};
pub use merge::{make_way, MergeTarget, MergedInput, Numbered};
pub use read::{Failures, ImageRow};
pub use schema::{MIN_READABLE, SCHEMA_VERSION};

/// Adds the database path to SQLite errors, which keep their cause whole.
trait Ctx<T> {
    fn ctx(self, conn: &Connection) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, conn: &Connection) -> Result<T> {
        self.map_err(|e| sql_error(conn.path().map(PathBuf::from), e))
    }
}

fn sql_error(path: Option<PathBuf>, cause: rusqlite::Error) -> Error {
    Error::Sql {
        path: path.unwrap_or_else(|| PathBuf::from("<database>")),
        cause,
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
    /// The one shard of the root's files this database indexes (`None`: all of them).
    pub shard: Option<Shard>,
    /// The batch size every image is computed in, for networks whose values depend on
    /// it (`None`: they do not).
    pub batch: Option<usize>,
}

impl RunInfo {
    /// The recipe the images were prepared with, when it reads as one.
    pub fn parsed_recipe(&self) -> Option<crate::arch::Recipe> {
        serde_json::from_str(&self.recipe).ok()
    }

    /// The network input side the images were prepared for (from the stored recipe;
    /// 224 where it cannot be read).
    pub fn input_size(&self) -> u32 {
        serde_json::from_str::<serde_json::Value>(&self.recipe)
            .ok()
            .and_then(|r| r["size"].as_u64())
            .map_or(224, |s| s as u32)
    }
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
        let sql = |e| sql_error(Some(path.to_path_buf()), e);
        let writer = WriterLock::acquire(path)?;
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
        // NORMAL is durable against a killed process in WAL mode (only power loss can
        // drop the last commits), and much faster than FULL.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(format!("cannot use as a database: {e}")))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        // Every batch rewrites the same statistics and top-K pages: a larger WAL lets a
        // checkpoint copy each of them once instead of once per batch. The page cache
        // holds those hot pages (a few MB) and caps what SQLite keeps in memory.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(sql)?;
        conn.pragma_update(None, "cache_size", -16384)
            .map_err(sql)?;
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
        let err = |e| sql_error(Some(path.to_path_buf()), e);
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database predates rankings before the activation (schema 2).
    pub fn ranked_after_activation(&self) -> bool {
        self.version < 3
    }

    /// Starts an index batch: one transaction of writes.
    pub fn begin(&mut self) -> Result<Batch<'_>> {
        Ok(Batch {
            tx: self.transaction()?,
        })
    }

    fn transaction(&mut self) -> Result<rusqlite::Transaction<'_>> {
        let path = self.path.clone();
        self.conn
            .transaction()
            .map_err(|e| sql_error(Some(path), e))
    }

    /// Records the start of an `index` run; returns its session id.
    pub fn start_session(&self) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO session (tool_version, started_at, isa) VALUES (?1, ?2, ?3)",
                params![
                    env!("CARGO_PKG_VERSION"),
                    unix_now(),
                    crate::kernels::isa::isa().name()
                ],
            )
            .ctx(&self.conn)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how session `id` ended: images indexed, failed, unchanged, removed.
    pub fn finish_session(&self, id: i64, counts: [u64; 4]) -> Result<()> {
        let [indexed, failed, unchanged, removed] = counts.map(|c| c as i64);
        self.conn
            .execute(
                "UPDATE session SET finished_at = ?2, indexed = ?3, failed = ?4, skipped = ?5,
                                    removed = ?6 WHERE id = ?1",
                params![id, unix_now(), indexed, failed, unchanged, removed],
            )
            .ctx(&self.conn)
            .map(|_| ())
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Store {
            path: self.path.clone(),
            reason: reason.into(),
        }
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
                        shard: None,
                        batch: None,
                    })
                },
            )
            .optional()
            .ctx(&self.conn)?;
        match row {
            None => Ok(None),
            Some(mut info) => {
                info.layers = self.layers()?.into_iter().map(|l| l.name).collect();
                if self.version >= 5 {
                    let (i, n, b): (Option<i64>, Option<i64>, Option<i64>) = self
                        .conn
                        .query_row(
                            "SELECT shard_index, shard_count, batch_images FROM run WHERE id = 1",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .ctx(&self.conn)?;
                    info.batch = b.map(|b| b.max(1) as usize);
                    if let (Some(i), Some(n)) = (i, n) {
                        info.shard = Some(
                            Shard::new(i as u32, n as u32)
                                .map_err(|e| self.err(format!("its run's shard: {e}")))?,
                        );
                    }
                }
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
        let tx = self.transaction()?;
        tx.execute(
            "INSERT INTO run (id, model, weights_id, root, recipe, max_pixels, top_k,
                              tool_version, created_at, needs_rebuild, keep_duplicates,
                              shard_index, shard_count, batch_images)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11, ?12)",
            params![
                run.model,
                run.weights_id,
                path_bytes(&run.root),
                run.recipe,
                run.max_pixels as i64,
                run.top_k as i64,
                run.tool_version,
                run.created_at,
                run.keep_duplicates as i64,
                run.shard.map(|s| s.index as i64),
                run.shard.map(|s| s.count as i64),
                run.batch.map(|b| b as i64)
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
        self.progress_of(true)
    }

    /// `progress` for the process that holds the database's writer lock itself (and so
    /// knows nothing else is writing to it).
    pub fn progress_held(&self) -> Result<Progress> {
        self.progress_of(false)
    }

    fn progress_of(&self, check_writer: bool) -> Result<Progress> {
        let Some(run) = self.run_info_opt()? else {
            return Ok(Progress::Complete);
        };
        let pending = self.lagging_images(run.derived_upto)?;
        if let Some(holder) = writer_active(&self.path).filter(|_| check_writer) {
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
        let channels: Vec<usize> = layers.iter().map(|l| l.channels).collect();
        let (mut stats, mut tops) = crate::stats::fresh(&channels, info.top_k);
        let tx = self.transaction()?;
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

/// `DB-wal`, `DB-shm`, `DB.lock`: the files SQLite and neurodex keep beside a database.
pub(crate) fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Whether opening failed because SQLite may not create or write the WAL's side
/// files (a read-only directory or medium, or a file without write permission).
fn on_read_only_storage(e: &Error) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, ReadOnly};
    matches!(e, Error::Sql { cause, .. }
        if matches!(cause.sqlite_error_code(), Some(CannotOpen | ReadOnly)))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.sessions().unwrap(), (0, 0));
        s.conn
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
