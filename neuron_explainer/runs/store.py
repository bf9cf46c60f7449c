"""The state of a batch run in one SQLite file: which units are done, their results, what was
spent, what failed and why.

`RunStore` opens the file (WAL journal, ``synchronous=NORMAL``). A batch run
(`neuron_explainer.runs`) writes through it; anyone can read it, also while a run is going on
in another process. Its tables (``meta``, ``runs``, ``units``, ``usage``; see docs/batch.md
and ``neuron_explainer.runs._schema``) hold the run's description and config, one row per call,
one row per unit with its status and result, and a ledger of what each attempt spent.

A unit's new status and its ledger row are written in one transaction, so a process killed at
any point leaves every unit either finished (with its result) or pending.

A database of an older schema (0.1.0 wrote schema 1) is read as it is and migrated on the first
write, after a copy of it is kept beside it (``run.sqlite.v1.bak``); a database of a newer
schema is refused with a `FormatError`. ``neuron-explainer migrate PATH`` (or
`neuron_explainer.runs.migration.migrate`) migrates one without writing anything else.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from neuron_explainer._version import __version__
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import UnitId
from neuron_explainer.results import ExplanationResult, SimulationStats, UsageSummary
from neuron_explainer.runs._files import (
    open_database,
    raise_access,
    release_run_lock,
    take_run_lock,
)
from neuron_explainer.runs._rows import (
    KEY,
    UnitState,
    UnitStatus,
    columns,
    key,
    key_for,
    read_units,
    sum_simulation,
    sum_usage,
    write_finish,
)
from neuron_explainer.runs._schema import (
    SCHEMA_VERSION,
    config_mismatch,
    migrate_database,
    now,
    set_meta,
    transaction,
)

__all__ = ["SCHEMA_VERSION", "RunStore", "UnitState", "UnitStatus", "config_mismatch"]

_PAGE = 64


class RunStore:
    """A batch run's SQLite file (its tables: see the module docstring).

    Args:
        path: the database file.
        create: create the database (and its folder) when there is no file at ``path``, or
            an empty (0-byte) one; otherwise a missing or empty file raises.

    The file is checked with reads only (a read-only connection) before anything writes to
    it: a file that is not a run database is refused exactly as it was, never switched to WAL
    nor given a schema. A database of an older schema is read as it is; the first write
    migrates it (keeping a copy of the old file, see `migrate`) and warns once that it did.

    Raises:
        InvalidInputError: no file at ``path`` and ``create`` is false, or ``path`` is a
            folder.
        FormatError: the file is not a run database (an empty file without ``create``, not
            SQLite, SQLite without a run database's meta), or one of a newer schema than
            `SCHEMA_VERSION` (or of an older one that must be migrated first, with the
            command to run).
        DatabaseAccessError: the file or its folder cannot be read or written by this
            process (a read-only folder, say); the message names the path and the cause.
            Writes to a database this process may only read raise it too.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._lock_file: Any = None
        self._db, self._version = open_database(self.path, create=create)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        """The schema of the file as last read: `SCHEMA_VERSION`, or an older one until the
        database is migrated."""
        return self._version

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold the lock and run the block in one write transaction (rolled back if it
        raises), after migrating an older database; a write the file's permissions refuse
        raises `DatabaseAccessError`."""
        with self._lock:
            try:
                if self._version < SCHEMA_VERSION:
                    self.migrate(warn=True)
                with transaction(self._db):
                    yield
            except sqlite3.OperationalError as exc:
                raise_access(self.path, exc)

    def migrate(self, *, warn: bool = False) -> Path | None:
        """Migrate a database of an older schema to `SCHEMA_VERSION` now (the first write
        does it anyway), after copying the file to ``<name>.v<old>.bak`` beside it.

        Args:
            warn: also say so in a `UserWarning`.

        Returns:
            The backup's path, or ``None`` when the database was current (nothing written).

        Raises:
            FormatError: the file changed to an unreadable schema since it was opened.
            sqlite3.Error, OSError: the backup or a step failed (the file is left as it was).
        """
        with self._lock:
            _, backup = migrate_database(self._db, self.path)
            self._version = SCHEMA_VERSION
        if backup is not None and warn:
            warnings.warn(
                f"{self.path} was a run database of an older schema, migrated to schema "
                f"{SCHEMA_VERSION} for writing; the previous file is kept as {backup}",
                UserWarning,
                stacklevel=4,
            )
        return backup

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (and release the run lock, if held)."""
        with self._lock:
            self.unlock()
            self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def lock(self) -> None:
        """Take the run lock (an advisory ``flock`` on ``<db>.lock``, a file that exists only
        while the lock is held), so that two runs never write the same database at once. The
        OS releases it when the process dies.

        Raises:
            UsageError: another process holds it.
            DatabaseAccessError: the lock file cannot be made beside the database.
        """
        with self._lock:
            if self._lock_file is None:
                self._lock_file = take_run_lock(self.path)

    def unlock(self) -> None:
        """Release the run lock, if held, and remove its lock file."""
        with self._lock:
            if self._lock_file is not None:
                release_run_lock(self.path, self._lock_file)
                self._lock_file = None

    # -- meta --------------------------------------------------------------------------------

    def _set_meta(self, values: Mapping[str, Any]) -> None:
        with self._transaction():
            set_meta(self._db, dict(values))

    def meta(self) -> dict[str, Any]:
        """The run's description: ``schema_version``, ``kind`` (``"explain"`` or
        ``"rescore"``), ``config`` (the source's identity, the explainer and simulator with
        their settings, the explain options: what the results depend on), ``source_path``,
        ``created_at``, ``library_version``, for a rescore ``rescored_from``, and for a
        migrated database ``migrations`` (each step: ``from``, ``to``, ``what``, ``at``,
        ``library_version``)."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def check_config(
        self, kind: str, config: Mapping[str, Any], extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record ``config`` on first use; afterwards, refuse a different one.

        Args:
            kind: ``"explain"`` or ``"rescore"``.
            config: what the results depend on (JSON data).
            extra: more meta to store (updated every time, e.g. ``source_path``).

        Raises:
            InvalidInputError: the database holds results made with another config; the
                message names what differs.
        """
        wanted = json.loads(json.dumps(dict(config), sort_keys=True))
        meta = self.meta()
        if meta.get("config") is None:
            self._set_meta({"kind": kind, "config": wanted, "library_version": __version__})
        else:
            problem = config_mismatch(meta.get("kind"), meta["config"], kind, wanted)
            if problem is not None:
                raise InvalidInputError(
                    f"{self.path} holds results of another configuration ({problem}); results "
                    "are never mixed: use another database, or the same settings to resume"
                )
        if extra:
            self._set_meta(extra)

    # -- writing -----------------------------------------------------------------------------

    def add_units(self, units: Iterable[UnitId]) -> int:
        """Add ``units`` as pending (units already present keep their state); returns how
        many were new."""
        at = now()
        rows = [
            (u.model, u.kind, u.layer, u.index, u.site or "", u.source or "", at) for u in units
        ]
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO units (model, kind, layer, idx, site, source, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._db.total_changes - before

    def start_run(self, kind: str, *, budget_usd: float | None, options: Mapping[str, Any]) -> int:
        """Open a row in ``runs``; returns its id."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO runs (kind, started_at, budget_usd, options) VALUES (?, ?, ?, ?)",
                (kind, now(), budget_usd, json.dumps(dict(options), sort_keys=True)),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        *,
        done: int,
        failed: int,
        skipped: int,
        cost_usd: float,
        stopped_reason: str | None,
    ) -> None:
        """Close the ``runs`` row ``run_id`` with what the run did."""
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET finished_at = ?, done = ?, failed = ?, skipped = ?, "
                "cost_usd = ?, stopped_reason = ? WHERE id = ?",
                (now(), done, failed, skipped, cost_usd, stopped_reason, run_id),
            )

    def begin_unit(self, unit: UnitId, run_id: int) -> None:
        """Count an attempt at ``unit`` (its status stays as it is until it finishes)."""
        with self._transaction():
            self._db.execute(
                f"UPDATE units SET attempts = attempts + 1, run_id = ? WHERE {KEY}",
                (run_id, *key(unit)),
            )

    def _finish(
        self,
        unit: UnitId,
        run_id: int,
        outcome: str,
        usage: UsageSummary,
        update: str,
        values: tuple[Any, ...],
        simulation: SimulationStats | None,
    ) -> None:
        with self._transaction():
            write_finish(self._db, unit, run_id, outcome, usage, update, values, simulation)

    def mark_done(
        self,
        unit: UnitId,
        result: ExplanationResult | str,
        usage: UsageSummary,
        run_id: int,
        simulation: SimulationStats | None = None,
    ) -> None:
        """Store ``unit``'s result (an `ExplanationResult` or its JSON), what it spent and how
        its simulations went (default: the result's ``simulation``), in one transaction."""
        if not isinstance(result, ExplanationResult):
            result = ExplanationResult.model_validate_json(text := result)
        else:
            text = result.model_dump_json()
        self._finish(
            unit,
            run_id,
            "done",
            usage,
            "status = 'done', result = ?, score = ?, error = NULL, reason = NULL, ",
            (text, result.score),
            simulation if simulation is not None else result.simulation,
        )

    def mark_failed(
        self,
        unit: UnitId,
        error: str,
        reason: str,
        usage: UsageSummary,
        run_id: int,
        simulation: SimulationStats | None = None,
    ) -> None:
        """Record that ``unit`` failed (``error``: the exception class, ``reason``: its
        message), what it spent and how its simulations went, in one transaction."""
        self._finish(
            unit,
            run_id,
            "failed",
            usage,
            "status = 'failed', result = NULL, score = NULL, error = ?, reason = ?, ",
            (error, reason),
            simulation,
        )

    def mark_stopped(
        self,
        unit: UnitId,
        usage: UsageSummary,
        run_id: int,
        simulation: SimulationStats | None = None,
    ) -> None:
        """Record what an attempt stopped by a budget spent and simulated; the unit stays
        pending."""
        self._finish(unit, run_id, "stopped", usage, "", (), simulation)

    # -- reading -----------------------------------------------------------------------------

    def units(self, status: UnitState | None = None) -> list[UnitStatus]:
        """Every unit (or those with ``status``), in (layer, index) order."""
        with self._lock:
            return read_units(self._db, self._version, status)

    def status(self, unit: UnitId) -> UnitState | None:
        """``unit``'s status, or ``None`` when the run does not hold it."""
        with self._lock:
            where, values = key_for(unit, self._version)
            row = self._db.execute(f"SELECT status FROM units WHERE {where}", values).fetchone()
        return None if row is None else row["status"]

    def result(self, unit: UnitId) -> ExplanationResult | None:
        """``unit``'s result, or ``None`` when it is not done."""
        with self._lock:
            where, values = key_for(unit, self._version)
            row = self._db.execute(
                f"SELECT result FROM units WHERE status = 'done' AND {where}", values
            ).fetchone()
        return None if row is None else ExplanationResult.model_validate_json(row["result"])

    def results(self) -> Iterator[ExplanationResult]:
        """The results of the done units, in (layer, index) order, read a page at a time (so
        a large run never sits in memory at once)."""
        after: tuple[Any, ...] = (-1, -1, "", "", "", "")
        read = columns(self._version)
        order = ("layer", "idx", "model", "kind", "site", "source")
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT layer, idx, model, kind, {read['site']} AS site, "
                    f"{read['source']} AS source, result FROM units WHERE status = 'done' AND "
                    f"(layer, idx, model, kind, {read['site']}, {read['source']}) > "
                    "(?, ?, ?, ?, ?, ?) ORDER BY layer, idx, model, kind, site, source LIMIT ?",
                    (*after, _PAGE),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield ExplanationResult.model_validate_json(row["result"])
            after = tuple(rows[-1][name] for name in order)

    def failures(self, among: Iterable[UnitId] | None = None) -> list[tuple[UnitId, str]]:
        """Every failed unit (or those of ``among``) with its reason
        (``"SimulationError: ..."``), in (layer, index) order."""
        wanted = None if among is None else set(among)
        return [
            (s.unit, s.reason or "")
            for s in self.units("failed")
            if wanted is None or s.unit in wanted
        ]

    def spent(self) -> UsageSummary:
        """Everything the runs of this database spent (done, failed and stopped attempts;
        attempts cut short by a killed process are not recorded)."""
        with self._lock:
            return sum_usage(self._db)

    @property
    def _simulation(self) -> str:
        """The ``simulation`` column, or NULL in a database of schema 2 or older."""
        return columns(self._version)["simulation"]

    def simulation(self, run_id: int | None = None) -> SimulationStats:
        """How the simulations of every recorded attempt went (or of the call ``run_id``'s):
        the sum of the ledger's `SimulationStats` (attempts before schema 3 count none)."""
        with self._lock:
            return sum_simulation(self._db, self._simulation, run_id)

    def counts(self) -> dict[str, int]:
        """How many units are ``pending``, ``done`` and ``failed``."""
        counts = {"pending": 0, "done": 0, "failed": 0}
        with self._lock:
            for row in self._db.execute("SELECT status, COUNT(*) FROM units GROUP BY status"):
                counts[row[0]] = row[1]
        return counts

    def summary(self) -> dict[str, Any]:
        """Counts, spending and scores: ``units``, ``done``, ``failed``, ``pending``,
        ``usage`` (a `UsageSummary` as a dict), ``cost_usd``, ``runs`` (calls made),
        ``mean_score`` (over done units with a defined score), ``scored`` (how many) and
        ``simulation`` (`simulation`, a `SimulationStats` as a dict)."""
        counts = self.counts()
        spent = self.spent()
        with self._lock:
            runs = self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            mean, scored = self._db.execute(
                "SELECT AVG(score), COUNT(score) FROM units WHERE status = 'done'"
            ).fetchone()
        return {
            "units": sum(counts.values()),
            **counts,
            "usage": spent.model_dump(),
            "cost_usd": spent.cost_usd,
            "runs": runs,
            "mean_score": mean,
            "scored": scored,
            "simulation": self.simulation().model_dump(),
        }

    # -- exports -----------------------------------------------------------------------------

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write every done unit's `ExplanationResult` as JSON, one per line, in (layer,
        index) order; returns how many. Read back with
        ``ExplanationResult.model_validate_json(line)``."""
        from neuron_explainer.runs._export import write_jsonl

        return write_jsonl(path, self.results())

    def export_openai(self, path: str | os.PathLike[str]) -> int:
        """Write the results in OpenAI's explanation JSONL (one ``NeuronSimulationResults`` per
        unit, see `neuron_explainer.formats.explanation_results_to_openai`); returns how many.
        Read back with `neuron_explainer.formats.read_openai_explanations`."""
        from neuron_explainer.runs._export import write_openai_jsonl

        return write_openai_jsonl(path, self.results())
