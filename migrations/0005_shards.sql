-- Past one machine: an index of one shard of a folder, and indexes merged from shards.

-- Which files of the root this database indexes: shard `shard_index` of `shard_count`
-- (0-based; a file belongs to the shard its relative path hashes to), or every file
-- when both are NULL. Fixed when the database is created.
ALTER TABLE run ADD COLUMN shard_index INTEGER;
ALTER TABLE run ADD COLUMN shard_count INTEGER;

-- The batch size every image was computed in (short batches padded to it), where the
-- network computes some indexed layers on a whole batch and its values depend on the
-- batch's size (ResNet's Winograd layers, fully connected layers); NULL where every
-- indexed layer is computed image by image (EfficientNet-Lite0), whatever --batch.
-- Fixed when the database is created, so that every run and every shard agrees.
ALTER TABLE run ADD COLUMN batch_images INTEGER;

-- The instruction set neurodex's kernels ran on in each `index` run (avx512, avx2,
-- neon, portable): values computed on different ones can differ in their last bits.
ALTER TABLE session ADD COLUMN isa TEXT;

-- The indexes merged into this one by `neurodex merge`, one row each (an input that was
-- itself merged brings its rows along): what was merged, so that `stats` can say which
-- shards the index covers.
CREATE TABLE merged_input (
    id           INTEGER PRIMARY KEY,
    path         TEXT    NOT NULL,  -- the input database as given, for display
    shard_index  INTEGER,           -- NULL: a whole index
    shard_count  INTEGER,
    images       INTEGER NOT NULL,  -- indexed images it held
    failed       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,  -- when its run began (unix seconds)
    isa          TEXT,              -- the instruction sets its runs used, comma-separated
    merged_at    INTEGER NOT NULL
);
