-- One row per `neurodex index` invocation: when, which tool, what it did.
CREATE TABLE session (
    id           INTEGER PRIMARY KEY,
    tool_version TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,           -- NULL: interrupted (or still running)
    indexed      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    removed      INTEGER NOT NULL DEFAULT 0
);
