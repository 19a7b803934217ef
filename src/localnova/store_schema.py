"""The store's tables, and the version check that keeps this code off a store it cannot read.

The database records its schema version in SQLite's user_version. A store this code cannot
read, older or newer, is refused when opened, with one line that names it and says what to
do, rather than failing later with "no such column".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from localnova.errors import UserError


def now_iso() -> str:
    """The time a row is written, as every table of the store holds it: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# The layout that SCHEMA creates. Raise it with any change to SCHEMA, add to MIGRATIONS a step
# from the version before where old stores can be brought forward safely, and keep SCHEMA_V1
# for the check of unversioned stores in open_schema (they all have that layout).
SCHEMA_VERSION = 4

# Version 1: every store written before the latency probe (and every unversioned store).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    config_json TEXT NOT NULL,
    environment_json TEXT NOT NULL,
    status TEXT NOT NULL,              -- running | incomplete | complete
    started_at TEXT NOT NULL,
    finished_at TEXT,
    model_calls INTEGER NOT NULL DEFAULT 0,   -- requests sent to a backend by this run
    cached_calls INTEGER NOT NULL DEFAULT 0   -- requests answered from the store
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,              -- hash of backend identity + full request
    backend_json TEXT NOT NULL,
    request_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    created_by_run TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    arm TEXT NOT NULL,
    question_id TEXT NOT NULL,
    generation_key TEXT NOT NULL REFERENCES generations(key),
    retrieved_json TEXT NOT NULL,      -- [{chunk_id, doc_id, score}], empty for base and ft
    PRIMARY KEY (run_id, model, arm, question_id)
);
CREATE TABLE IF NOT EXISTS judgments (
    run_id TEXT NOT NULL,
    judge TEXT NOT NULL,
    model TEXT NOT NULL,               -- '' for controls
    arm TEXT NOT NULL,                 -- '' for controls
    question_id TEXT NOT NULL,
    subject TEXT NOT NULL,             -- answer | control_ground_truth | control_empty | control_other
    content_key TEXT NOT NULL,         -- hash of judge identity, prompt version, question, truth, text
    score REAL,                        -- NULL when the judge failed: never 0
    method TEXT NOT NULL,              -- parsed | logprob | token_f1 | embedding_similarity
    reason TEXT,
    raw_text TEXT,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (run_id, judge, model, arm, question_id, subject)
);
CREATE INDEX IF NOT EXISTS judgments_by_content ON judgments(content_key);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,                -- e.g. loss_curve:<model>, data_report, cost_estimate
    value_json TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

# Version 2 adds the latency probe's timings (evaluate/latency_probe.py): each arm's answer to
# one request on its own, arms interleaved in a random order per question and round.
LATENCY_PROBE_TABLE = """
CREATE TABLE IF NOT EXISTS latency_probe (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    arm TEXT NOT NULL,
    question_id TEXT NOT NULL,
    round INTEGER NOT NULL,            -- the question's repeat, 0 first
    position INTEGER NOT NULL,         -- where the arm came in the round's random order, 0 first
    generation_key TEXT NOT NULL,      -- hash of backend identity + request: what was timed
    backend_json TEXT NOT NULL,
    latency_ms REAL NOT NULL,          -- wall clock around the one request, taken by the probe
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    measured_at TEXT NOT NULL,
    measured_in_run TEXT NOT NULL,     -- the run that made the request: another when a run reuses a round
    PRIMARY KEY (run_id, model, arm, question_id, round)
)"""

# Version 3 adds the probe's ledger: one row for every call the probe paid for, appended as
# it answers: each timed request, and each backend's untimed warm-up call, one per sitting that
# measured something. A timing measured again replaces its row in latency_probe (what the
# comparison uses); its first call stays here, so no call paid for goes uncounted.
LATENCY_PROBE_CALLS_TABLE = """
CREATE TABLE IF NOT EXISTS latency_probe_calls (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,                -- timed | warm-up
    arm TEXT NOT NULL,                 -- the timed arm; '' for a warm-up
    question_id TEXT NOT NULL,         -- the question whose request was sent
    round INTEGER,                     -- the timed request's round; NULL for a warm-up
    sitting INTEGER,                   -- a warm-up's: the run's n-th of this backend, 0 first; NULL when timed
    backend_json TEXT NOT NULL,
    generation_key TEXT NOT NULL,      -- hash of backend identity + request: what was sent
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    made_at TEXT NOT NULL
)"""

# The timings a version 2 store measured were paid once each: they open its ledger (its
# warm-up calls are in generations, where they stay counted).
LEDGER_FROM_VERSION_2 = """
INSERT INTO latency_probe_calls(run_id, model, kind, arm, question_id, round, sitting, backend_json, generation_key, input_tokens,
    output_tokens, made_at)
SELECT run_id, model, 'timed', arm, question_id, round, NULL, backend_json, generation_key, input_tokens, output_tokens, measured_at
FROM latency_probe WHERE measured_in_run = run_id"""

# Version 4 keeps every generation a later one replaced: a failed call made again (a failed
# judgment rejudged, a failed answer asked anew) was paid for too, and the spend guard and the
# cost figures count it from here once its row in generations holds the new result.
REPLACED_GENERATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS replaced_generations (
    key TEXT NOT NULL,                 -- the generation key both calls share
    backend_json TEXT NOT NULL,
    result_json TEXT NOT NULL,         -- the replaced call's result, its token counts included
    created_by_run TEXT,
    created_at TEXT NOT NULL,
    replaced_at TEXT NOT NULL
)"""

SCHEMA = SCHEMA_V1 + LATENCY_PROBE_TABLE + ";\n" + LATENCY_PROBE_CALLS_TABLE + ";\n" + REPLACED_GENERATIONS_TABLE + ";\n"


def _add_probe_ledger(connection: sqlite3.Connection) -> None:
    connection.execute(LATENCY_PROBE_CALLS_TABLE)
    connection.execute(LEDGER_FROM_VERSION_2)


# version -> the function that brings a store of that version to the next one, in place.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda connection: connection.execute(LATENCY_PROBE_TABLE),
    2: _add_probe_ledger,
    3: lambda connection: connection.execute(REPLACED_GENERATIONS_TABLE),
}
OLDER_STORE = (
    "{path}: store from an older localnova ({what}) that cannot be upgraded in place; move it aside and run the study again "
    "(its answers are not reused), or read it with the localnova version that wrote it"
)


def _columns(connection: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Each table's columns as (name, type, not null, default, primary key position)."""
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    return {table: [tuple(column[1:]) for column in connection.execute(f"PRAGMA table_info({table})")] for table in tables}


def _has_version_1_layout(connection: sqlite3.Connection) -> bool:
    """Whether a store's tables have exactly the columns SCHEMA_V1 creates."""
    with closing(sqlite3.connect(":memory:")) as reference:
        reference.executescript(SCHEMA_V1)
        expected = _columns(reference)
    found = _columns(connection)
    return all(found.get(table) == columns for table, columns in expected.items())


def open_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new store, or check an existing store's version: bring an older
    one forward where that is safe, refuse it (UserError) where it is not, refuse a newer one."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: store schema version {version} was written by a newer localnova (this one reads version {SCHEMA_VERSION}); "
            "upgrade localnova to open it"
        )
    if version == 0 and _columns(connection):
        # Stores written before versions were recorded all have the layout of version 1 (the
        # schema never changed before), so stamping one is the whole migration; a store with
        # other columns is not one of ours as this code knows them, and is refused.
        if not _has_version_1_layout(connection):
            raise UserError(OLDER_STORE.format(path=path, what="no schema version and tables unlike this localnova's"))
        version = 1
        connection.execute("PRAGMA user_version = 1")
    while 0 < version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise UserError(OLDER_STORE.format(path=path, what=f"schema version {version}; this localnova reads version {SCHEMA_VERSION}"))
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            MIGRATIONS[version](connection)
            connection.execute(f"PRAGMA user_version = {version + 1}")
        version += 1
    if version == 0:
        # A new store gets its tables and its version in one transaction (IF NOT EXISTS: two
        # processes creating it at once both succeed).
        connection.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
