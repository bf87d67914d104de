-- Feature visualisations (`neurodex visualize --db`, `neurodex gallery --visualize`):
-- an image optimised to excite one unit, kept so that galleries show it without the
-- half a minute each one takes. One per layer and unit; a new one replaces it.
CREATE TABLE visualisation (
    layer      TEXT    NOT NULL,  -- the layer's name, as `layer.name`
    unit       INTEGER NOT NULL,
    stage      TEXT    NOT NULL CHECK (stage IN ('pre', 'post')),
    steps      INTEGER NOT NULL,
    size       INTEGER NOT NULL,  -- side in pixels
    seed       INTEGER NOT NULL,
    weights_id TEXT    NOT NULL,  -- sha256 of the weights it was optimised for
    value      REAL    NOT NULL,  -- the unit's mean activation on it
    png        BLOB    NOT NULL,
    made_at    INTEGER NOT NULL,  -- unix seconds
    PRIMARY KEY (layer, unit)
) WITHOUT ROWID;
