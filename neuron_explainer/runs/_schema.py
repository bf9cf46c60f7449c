"""The run database's layout, its versions and the steps that migrate one version to the next.

Tables (`SCHEMA`)::

    meta   (key TEXT PRIMARY KEY, value TEXT)         JSON values: schema_version, kind
                                                     ("explain" or "rescore"), config (what the
                                                     results depend on), source_path,
                                                     created_at, library_version,
                                                     migrations, ...
    runs   (id, kind, started_at, finished_at, budget_usd, stopped_reason, done, failed,
            skipped, cost_usd, options)               one row per call; finished_at stays NULL
                                                     when the process died
    units  (id, model, kind, layer, idx, status, result, score, error, reason, attempts,
            run_id, updated_at, simulation, site,     one row per unit, UNIQUE(layer, idx, model,
            source)                                  kind, site, source); site: the unit's hook
                                                     site ('' = the kind's default, UnitId.site
                                                     None); source: its SAE or direction ('' =
                                                     none, UnitId.source None);
                                                     status 'pending' | 'done' | 'failed';
                                                     result: the ExplanationResult JSON (done);
                                                     error / reason: the exception class and
                                                     message (failed); simulation: the
                                                     SimulationStats JSON of its last attempt
    usage  (id, run_id, model, kind, layer, idx, outcome, prompt_tokens, completion_tokens,
            cached_tokens, calls, cache_hits, cost_usd, at, simulation, site, source)
                                                     a ledger: what each attempt at a unit
                                                     spent, whatever its outcome ('done',
                                                     'failed', 'stopped'), and how its
                                                     simulations went (SimulationStats JSON)

`SCHEMA_VERSION` is the version this library writes. Versions:

1. 0.1.0: the tables of `neuron_explainer.runs.store`; ``units.result`` holds
   `ExplanationResult` JSON without a ``format_version``.
2. The same tables; ``units.result`` may also hold result JSON with a ``format_version`` (which
   0.1.0 cannot read, hence the new number). The meta key ``migrations`` records every
   migration a file went through.
3. ``units.simulation`` and ``usage.simulation``: `SimulationStats` as JSON (attempted,
   failed by reason, constant, retried, tokens), NULL for rows written before (not
   measured).
4. ``units.site`` and ``usage.site``: the unit's hook site (`UnitId.site`; ``''`` for none,
   what every row written before has), part of the units' key, so SAE latents, transcoder
   latents, heads and directions at different sites each have their row. The step rebuilds
   ``units`` (SQLite cannot change a UNIQUE constraint in place). A schema-3 database reads as
   it is (its units have no site).
5. ``units.source`` and ``usage.source``: the unit's SAE, transcoder or direction
   (`UnitId.source`; ``''`` for none), part of the units' key, so two SAEs at one site each
   have their rows. The step rebuilds ``units``; where the done latents (or directions) of one
   (model, kind, site) all name one SAE (or vector) by its sha256 in their result's provenance,
   as a collection records it, every row of that group takes its source (and each done
   result's unit with it, as result format 8), so a run resumes on the same rows; other rows
   keep ``''``. A schema-4 database reads as it is (its units have no source).

`MIGRATIONS` holds one step per version: the step from version ``n`` is ``MIGRATIONS[n]``. A step
marked ``reads_as_is`` means a database still at the old version can be read without migrating
(`RunStore` then migrates it on its first write); otherwise it must be migrated first
(``neuron-explainer migrate PATH``). Every migration first copies the file to a backup beside
it (`backup_path`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuron_explainer._version import __version__
from neuron_explainer.errors import FormatError
from neuron_explainer.results import check_stored_version

__all__ = [
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Migration",
    "backup_path",
    "check_version",
    "config_mismatch",
    "create_schema",
    "migrate_database",
    "now",
    "read_version",
    "set_meta",
    "transaction",
]

SCHEMA_VERSION = 5
"""The version of the database layout written by this library."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    budget_usd REAL,
    stopped_reason TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    layer INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    result TEXT,
    score REAL,
    error TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER REFERENCES runs(id),
    updated_at TEXT NOT NULL,
    simulation TEXT,
    site TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    UNIQUE (layer, idx, model, kind, site, source)
);
CREATE INDEX IF NOT EXISTS units_status ON units (status);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    layer INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    at TEXT NOT NULL,
    simulation TEXT,
    site TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT ''
);
"""
"""The tables of the current version (statements separated by ``;``)."""


def now() -> str:
    """The current UTC time in ISO format, as every timestamp of the database is stored."""
    return datetime.now(UTC).isoformat()


def set_meta(db: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Insert or replace the meta ``values`` (stored as JSON)."""
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()],
    )


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one write transaction of ``db`` (autocommit mode), rolled back if it
    raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _has_meta(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    return found.fetchone() is not None


def create_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables of `SCHEMA_VERSION` in the empty database ``db`` (the file ``path``),
    in one transaction so that a reader never sees half a schema; nothing when it has them.

    Raises:
        FormatError: the file holds other tables (an SQLite file, but not a run database).
    """
    if _has_meta(db):
        return
    with transaction(db):
        if not _has_meta(db):
            if db.execute("SELECT 1 FROM sqlite_master").fetchone() is not None:
                raise FormatError(f"{path} is an SQLite file but not a run database")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            set_meta(db, {"schema_version": SCHEMA_VERSION, "created_at": now()})


@dataclass(frozen=True)
class Migration:
    """One step from a version to the next.

    Attributes:
        description: what the step changes, for the migration log.
        apply: changes the tables (inside the caller's transaction; the meta
            ``schema_version`` is set by the caller).
        reads_as_is: a database still at the older version can be read by this library
            without migrating.
    """

    description: str
    apply: Callable[[sqlite3.Connection], None]
    reads_as_is: bool = True


def _nothing(db: sqlite3.Connection) -> None:
    """A step that changes no table (only the version number)."""


def _add_simulation_columns(db: sqlite3.Connection) -> None:
    """Add ``simulation`` (NULL: not measured) to ``units`` and ``usage``."""
    db.execute("ALTER TABLE units ADD COLUMN simulation TEXT")
    db.execute("ALTER TABLE usage ADD COLUMN simulation TEXT")


_UNITS_3 = (
    "id, model, kind, layer, idx, status, result, score, error, reason, attempts, run_id, "
    "updated_at, simulation"
)


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _rebuild_units(db: sqlite3.Connection, columns: str, added: str) -> None:
    """Rebuild ``units`` as `SCHEMA` makes it, copying ``columns`` and setting every
    ``added`` column to ``''`` (SQLite cannot change a UNIQUE constraint in place)."""
    units = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS units") :]
    db.execute(units[: units.index(";")].replace("IF NOT EXISTS units", "units_new"))
    blanks = ", ".join("''" for _ in added.split(", "))
    db.execute(f"INSERT INTO units_new ({columns}, {added}) SELECT {columns}, {blanks} FROM units")
    db.execute("DROP TABLE units")
    db.execute("ALTER TABLE units_new RENAME TO units")
    db.execute("CREATE INDEX IF NOT EXISTS units_status ON units (status)")


def _add_site_columns(db: sqlite3.Connection) -> None:
    """Add ``site`` ('' for every row: no site) to ``usage``, and rebuild ``units`` with it in
    the key (and with ``source``, '' for every row, which the next step would add)."""
    if not _has_column(db, "units", "site"):
        _rebuild_units(db, _UNITS_3, "site, source")
    if not _has_column(db, "usage", "site"):
        db.execute("ALTER TABLE usage ADD COLUMN site TEXT NOT NULL DEFAULT ''")


_SOURCE_FORMAT = 8
"""The result format that has `UnitId.source`."""
_NAMED_KINDS = ("sae_latent", "transcoder_latent", "direction")
"""The unit kinds that name a source (`UnitId.source`)."""


def _named(result: dict[str, Any]) -> str | None:
    """The source a done result's provenance names (`neuron_explainer.subjects.units.
    source_of`), else ``None``."""
    from neuron_explainer.subjects.units import source_of

    extra = (result.get("provenance") or {}).get("extra") or {}
    return source_of(extra.get("unit"))


def name_sources(db: sqlite3.Connection) -> None:
    """Name the sources of the units whose results say them: for each (model, kind, site) of
    SAE or transcoder latents or directions whose rows name none, when every done row's
    result names one and the same SAE or vector by its sha256 (as a collection's records do:
    `_named`), every row of the group (units and ledger) takes that source, and each done
    result's unit too (as result format 8). Other groups keep ``''``."""
    kinds = _NAMED_KINDS
    rows = db.execute(
        "SELECT id, model, kind, site, status, result FROM units WHERE source = '' AND kind IN "
        f"({', '.join('?' * len(kinds))})",
        kinds,
    ).fetchall()
    groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any] | None]]] = {}
    for row_id, model, kind, site, status, text in rows:
        result = json.loads(text) if status == "done" and text else None
        groups.setdefault((model, kind, site), []).append((row_id, result))
    for (model, kind, site), members in groups.items():
        done = [r for _, r in members if r is not None]
        named = {_named(r) for r in done}
        source = named.pop() if len(named) == 1 else None
        if source is None:
            continue
        for row_id, result in members:
            if result is not None:
                result["unit"] = {**result["unit"], "source": source}
                result["format_version"] = max(result.get("format_version", 1), _SOURCE_FORMAT)
            text = None if result is None else json.dumps(result, separators=(",", ":"))
            db.execute(
                "UPDATE units SET source = ?, result = COALESCE(?, result) WHERE id = ?",
                (source, text, row_id),
            )
        db.execute(
            "UPDATE usage SET source = ? WHERE model = ? AND kind = ? AND site = ? AND source = ''",
            (source, model, kind, site),
        )


def _add_source_columns(db: sqlite3.Connection) -> None:
    """Add ``source`` ('' for every row: none named) to ``units`` (in its key, rebuilding it)
    and ``usage``, then name the sources a collection's results show (`name_sources`)."""
    if not _has_column(db, "units", "source"):
        _rebuild_units(db, f"{_UNITS_3}, site", "source")
    if not _has_column(db, "usage", "source"):
        db.execute("ALTER TABLE usage ADD COLUMN source TEXT NOT NULL DEFAULT ''")
    name_sources(db)


MIGRATIONS: dict[int, Migration] = {
    1: Migration(
        "results may carry a format_version (result JSON of 0.1.0 reads as version 1)",
        _nothing,
    ),
    2: Migration(
        "units and usage gain a simulation column: how each attempt's simulations went "
        "(NULL for the rows before: not measured)",
        _add_simulation_columns,
    ),
    3: Migration(
        "units and usage gain a site column (the unit's hook site, '' for none: every row "
        "before), part of the units' key",
        _add_site_columns,
    ),
    4: Migration(
        "units and usage gain a source column (the unit's SAE or direction, '' for none), part "
        "of the units' key; named where a group's done results name one SAE or vector by sha256",
        _add_source_columns,
    ),
}
"""Version ``n`` → the step that migrates it to ``n + 1``."""


def check_version(path: Path, version: Any, *, to_read: bool = True) -> int:
    """The schema ``version`` read from ``path``'s meta, checked: this library can migrate
    it, and with ``to_read`` also read it before migrating.

    Raises:
        FormatError: no version or an invalid one; a version newer than `SCHEMA_VERSION`; or
            (``to_read``) an older one that must be migrated before it can be read, naming the
            command.
    """
    if version is None:
        raise FormatError(f"{path} is not a run database: its meta has no schema_version")
    checked = check_stored_version(version, SCHEMA_VERSION, f"{path}: run-database schema")
    if to_read and not all(MIGRATIONS[v].reads_as_is for v in range(checked, SCHEMA_VERSION)):
        raise FormatError(
            f"{path} is a run database of schema {checked}, which this version reads only "
            f"after migrating it to schema {SCHEMA_VERSION}: run `neuron-explainer migrate "
            f"{path}` (it keeps a backup)"
        )
    return checked


def backup_path(path: Path, version: int) -> Path:
    """A free name beside ``path`` for its copy at ``version``: ``<name>.v<version>.bak``
    (``.bak-2``, ``.bak-3``, ... when taken)."""
    candidate = path.with_name(f"{path.name}.v{version}.bak")
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.v{version}.bak-{n}")
        n += 1
    return candidate


def read_version(db: sqlite3.Connection) -> Any:
    """The meta ``schema_version`` of ``db`` (``None`` when missing).

    Raises:
        sqlite3.DatabaseError: not an SQLite file, or no meta table.
    """
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else json.loads(row[0])


def _apply_steps(db: sqlite3.Connection, version: int) -> None:
    """Apply the steps from ``version`` to `SCHEMA_VERSION` and record them in the meta."""
    row = db.execute("SELECT value FROM meta WHERE key = 'migrations'").fetchone()
    history = json.loads(row[0]) if row is not None else []
    for step in range(version, SCHEMA_VERSION):
        MIGRATIONS[step].apply(db)
        history.append(
            {
                "from": step,
                "to": step + 1,
                "what": MIGRATIONS[step].description,
                "at": now(),
                "library_version": __version__,
            }
        )
    set_meta(db, {"schema_version": SCHEMA_VERSION, "migrations": history})


def migrate_database(db: sqlite3.Connection, path: Path) -> tuple[int, Path | None]:
    """Migrate ``db`` (the file ``path``, opened in autocommit mode) to `SCHEMA_VERSION`: in
    one write transaction, copy it to a backup beside it (`backup_path`), apply the steps and
    record them in the meta ``migrations``. Returns the version it had and the backup's path
    (``None`` when it was current and nothing was written).

    Raises:
        FormatError: the version is unknown or newer than `SCHEMA_VERSION`.
        sqlite3.Error: the backup or a step failed (the database is left as it was).
    """
    with transaction(db):  # no other writer from here on, so the backup is exact
        version = check_version(path, read_version(db), to_read=False)
        if version == SCHEMA_VERSION:
            return version, None
        backup = backup_path(path, version)
        try:
            # Through a second connection: a connection cannot copy a database it writes to.
            # It reads the last committed state, which the write lock held here keeps as it is.
            source, target = sqlite3.connect(path), sqlite3.connect(backup)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            _apply_steps(db, version)
        except BaseException:
            backup.unlink(missing_ok=True)  # the database stays as it was: no copy needed
            raise
    return version, backup


def config_mismatch(
    held_kind: Any, held: Mapping[str, Any], kind: str, wanted: Mapping[str, Any]
) -> str | None:
    """What differs between a stored run config and a wanted one, or ``None`` when they
    match (both as JSON data)."""
    if held_kind != kind:
        return f"it is a {held_kind!r} run, not {kind!r}"
    wanted = json.loads(json.dumps(dict(wanted), sort_keys=True))
    keys = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
    if not keys:
        return None
    shown = "; ".join(f"{k}: was {_short(held.get(k))}, now {_short(wanted.get(k))}" for k in keys)
    return f"they differ in {shown}"


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
