-- The index: one run (model, weights, preprocessing, layers), the images it has seen,
-- per-image peaks of every unit, per-unit statistics and an exact top-K per unit.

-- The single run this database holds; every later `index` must match it.
CREATE TABLE run (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    model        TEXT    NOT NULL,
    weights_id   TEXT    NOT NULL,  -- sha256 of the weights
    root         BLOB    NOT NULL,  -- the indexed directory, absolute, raw OS bytes
    recipe       TEXT    NOT NULL,  -- preprocessing, JSON
    max_pixels   INTEGER NOT NULL,
    top_k        INTEGER NOT NULL,
    tool_version TEXT    NOT NULL,  -- neurodex version that created the run
    created_at   INTEGER NOT NULL,  -- unix seconds
    -- 1 while images have been changed or removed since unit_stats and top_hit were
    -- last recomputed from the peaks (done at the end of `index`)
    needs_rebuild INTEGER NOT NULL DEFAULT 0,
    -- unit_stats and top_k include the peaks of exactly the indexed images with
    -- id <= derived_upto (they are saved every few batches; a resumed run replays
    -- the later images' stored peaks in id order)
    derived_upto INTEGER NOT NULL DEFAULT 0
);

-- Indexed layers, in network order.
CREATE TABLE layer (
    id       INTEGER PRIMARY KEY,  -- 0-based position in the run's layer list
    name     TEXT    NOT NULL UNIQUE,
    node     INTEGER NOT NULL,     -- node index in the architecture
    channels INTEGER NOT NULL,
    height   INTEGER NOT NULL,
    width    INTEGER NOT NULL,
    -- receptive field per axis in network-input pixels: unit (y, x) covers
    -- [y*jump_y + off_y, +size_y) x [x*jump_x + off_x, +size_x)
    rf_size_y INTEGER NOT NULL, rf_size_x INTEGER NOT NULL,
    rf_jump_y INTEGER NOT NULL, rf_jump_x INTEGER NOT NULL,
    rf_off_y  INTEGER NOT NULL, rf_off_x  INTEGER NOT NULL
);

-- Every file met under the root, indexed or not.
CREATE TABLE image (
    id        INTEGER PRIMARY KEY,
    path_raw  BLOB    NOT NULL UNIQUE,  -- relative to the root, raw OS bytes
    path      TEXT    NOT NULL,         -- the same, lossily as UTF-8, for display
    size      INTEGER,                  -- bytes
    mtime_ns  INTEGER,
    sha256    TEXT,
    width     INTEGER,                  -- after EXIF orientation
    height    INTEGER,
    transform TEXT,                     -- JSON preprocess::Transform
    status    TEXT    NOT NULL CHECK (status IN ('ok', 'failed', 'removed')),
    error_kind TEXT,                    -- failed: empty, unreadable, not_image, decode, too_large, walk
    error     TEXT
);
CREATE INDEX image_status ON image (status);

-- Peak of every unit of one layer for one image: `channels` records of
-- (f32 value, u16 y, u16 x), little-endian.
CREATE TABLE peaks (
    image_id INTEGER NOT NULL REFERENCES image (id),
    layer_id INTEGER NOT NULL REFERENCES layer (id),
    data     BLOB    NOT NULL,
    PRIMARY KEY (image_id, layer_id)
) WITHOUT ROWID;

-- Running statistics of each unit's per-image peaks (NaN peaks are only counted).
CREATE TABLE unit_stats (
    layer_id INTEGER NOT NULL REFERENCES layer (id),
    unit     INTEGER NOT NULL,
    count    INTEGER NOT NULL,  -- finite peaks
    nan      INTEGER NOT NULL,
    sum      REAL    NOT NULL,
    sum_sq   REAL    NOT NULL,
    min      REAL,
    max      REAL,
    positive INTEGER NOT NULL,  -- peaks > 0
    hist     BLOB    NOT NULL,  -- u32 LE counts, log-spaced bins (see store::Histogram)
    PRIMARY KEY (layer_id, unit)
) WITHOUT ROWID;

-- The exact K highest peaks of each unit, one per image, best first: records of
-- (f32 value, i64 image_id, u16 y, u16 x), little-endian. One row per unit keeps a
-- batch's update to one write per unit and a query to one read.
CREATE TABLE top_k (
    layer_id INTEGER NOT NULL REFERENCES layer (id),
    unit     INTEGER NOT NULL,
    hits     BLOB    NOT NULL,
    PRIMARY KEY (layer_id, unit)
) WITHOUT ROWID;
