-- Concept labels: which indexed images show what, added and removed without
-- re-indexing (`neurodex labels`), scored against every unit's peaks by
-- `neurodex concepts`.

-- One source of labels: folder names, a label file, or ad hoc concepts.
-- kind 'classes': every labelled image has exactly one label of the set (ImageNet
-- folders, a category column), so the class-selectivity index applies; 'tags':
-- any number per image.
CREATE TABLE label_set (
    id       INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL UNIQUE,
    kind     TEXT    NOT NULL CHECK (kind IN ('classes', 'tags')),
    origin   TEXT    NOT NULL,  -- where the labels came from (a file, "folder names")
    added_at INTEGER NOT NULL   -- unix seconds
);

CREATE TABLE concept (
    id     INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES label_set (id),
    name   TEXT    NOT NULL,
    UNIQUE (set_id, name)
);

-- An image shows a concept. Removing an image's row (never done: images are marked
-- removed) would leave its labels; readers join on image status.
CREATE TABLE image_label (
    concept_id INTEGER NOT NULL REFERENCES concept (id),
    image_id   INTEGER NOT NULL REFERENCES image (id),
    PRIMARY KEY (concept_id, image_id)
) WITHOUT ROWID;
CREATE INDEX image_label_image ON image_label (image_id);
