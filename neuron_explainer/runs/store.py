"""The state of a batch run in one SQLite file: which units are done, their results, what was
spent, what failed and why.

`RunStore` opens the file (WAL journal, ``synchronous=NORMAL``). A batch run
(`neuron_explainer.runs`) writes through it; anyone can read it, also while a run is going on
in another process. Schema (version 1)::

    meta   (key TEXT PRIMARY KEY, value TEXT)         JSON values: schema_version, kind
                                                     ("explain" or "rescore"), config (what the
                                                     results depend on), source_path,
                                                     created_at, library_version, ...
    runs   (id, kind, started_at, finished_at, budget_usd, stopped_reason, done, failed,
            skipped, cost_usd, options)               one row per call; finished_at stays NULL
                                                     when the process died
    units  (id, model, kind, layer, idx, status, result, score, error, reason, attempts,
            run_id, updated_at)                       one row per unit, UNIQUE(layer, idx, model,
                                                     kind); status 'pending' | 'done' | 'failed';
                                                     result: the ExplanationResult JSON (done);
                                                     error / reason: the exception class and
                                                     message (failed)
    usage  (id, run_id, model, kind, layer, idx, outcome, prompt_tokens, completion_tokens,
            cached_tokens, calls, cache_hits, cost_usd, at)
                                                     a ledger: what each attempt at a unit
                                                     spent, whatever its outcome ('done',
                                                     'failed', 'stopped')

A unit's new status and its ledger row are written in one transaction, so a process killed at
any point leaves every unit either finished (with its result) or pending.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from neuron_explainer._version import __version__
from neuron_explainer.errors import FormatError, InvalidInputError, UsageError
from neuron_explainer.records import UnitId
from neuron_explainer.results import ExplanationResult, UsageSummary

__all__ = ["SCHEMA_VERSION", "RunStore", "UnitState", "UnitStatus", "config_mismatch"]

SCHEMA_VERSION = 1
"""The version of the database layout written by this library."""

UnitState = Literal["pending", "done", "failed"]
"""Where a unit stands in a run."""

_SCHEMA = """
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
    UNIQUE (layer, idx, model, kind)
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
    at TEXT NOT NULL
);
"""
_KEY = "layer = ? AND idx = ? AND model = ? AND kind = ?"
_PAGE = 64


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _key(unit: UnitId) -> tuple[int, int, str, str]:
    return (unit.layer, unit.index, unit.model, unit.kind)


def _unit(row: sqlite3.Row) -> UnitId:
    return UnitId(model=row["model"], kind=row["kind"], layer=row["layer"], index=row["idx"])


class UnitStatus(BaseModel):
    """Where one unit of a run stands.

    Attributes:
        unit: the unit.
        status: ``"pending"`` (not finished yet, or stopped by a budget), ``"done"`` or
            ``"failed"``.
        reason: why it failed (``"SimulationError: ..."``), else ``None``.
        score: the headline score of a done unit (``None`` when undefined or not done).
        attempts: how many times a run started it.
        updated_at: when its row last changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: UnitId
    status: UnitState
    reason: str | None = None
    score: float | None = None
    attempts: int = 0
    updated_at: datetime


class RunStore:
    """A batch run's SQLite file (layout in the module docstring).

    Args:
        path: the database file.
        create: create the file (and its folder) when it does not exist; otherwise a missing
            file raises.

    Raises:
        InvalidInputError: the file does not exist and ``create`` is false.
        FormatError: the file is not a run database, or one of a newer schema.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise InvalidInputError(f"no run database at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._lock_file: Any = None
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if not self._has_meta():
                self._create_schema()
            version = self.meta().get("schema_version")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise FormatError(f"{self.path} is not a run database: {exc}") from None
        except BaseException:
            self._db.close()
            raise
        if version != SCHEMA_VERSION:
            self._db.close()
            raise FormatError(
                f"{self.path} has run-database schema {version!r}; this library reads "
                f"{SCHEMA_VERSION} (upgrade neuron_explainer)"
            )

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def _has_meta(self) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        return found is not None

    def _create_schema(self) -> None:
        # One transaction, so a reader never sees half a schema.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._has_meta():
                if self._db.execute("SELECT 1 FROM sqlite_master").fetchone() is not None:
                    raise FormatError(f"{self.path} is an SQLite file but not a run database")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._set_meta({"schema_version": SCHEMA_VERSION, "created_at": _now()})
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
        """Take the run lock (an advisory ``flock`` on ``<db>.lock``), so that two runs never
        write the same database at once. The OS releases it when the process dies.

        Raises:
            UsageError: another process holds it.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        with self._lock:
            if self._lock_file is not None:
                return
            handle = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise UsageError(
                    f"another run is using {self.path}; wait for it to finish (or stop it)"
                ) from None
            self._lock_file = handle

    def unlock(self) -> None:
        """Release the run lock, if held."""
        with self._lock:
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    # -- meta --------------------------------------------------------------------------------

    def _set_meta(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        """The run's description: ``schema_version``, ``kind`` (``"explain"`` or
        ``"rescore"``), ``config`` (the source's identity, the explainer and simulator with
        their settings, the explain options: what the results depend on), ``source_path``,
        ``created_at``, ``library_version``, and for a rescore ``rescored_from``."""
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
        now = _now()
        rows = [(u.model, u.kind, u.layer, u.index, now) for u in units]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO units (model, kind, layer, idx, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def start_run(self, kind: str, *, budget_usd: float | None, options: Mapping[str, Any]) -> int:
        """Open a row in ``runs``; returns its id."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO runs (kind, started_at, budget_usd, options) VALUES (?, ?, ?, ?)",
                (kind, _now(), budget_usd, json.dumps(dict(options), sort_keys=True)),
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
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished_at = ?, done = ?, failed = ?, skipped = ?, "
                "cost_usd = ?, stopped_reason = ? WHERE id = ?",
                (_now(), done, failed, skipped, cost_usd, stopped_reason, run_id),
            )

    def begin_unit(self, unit: UnitId, run_id: int) -> None:
        """Count an attempt at ``unit`` (its status stays as it is until it finishes)."""
        with self._lock:
            self._db.execute(
                f"UPDATE units SET attempts = attempts + 1, run_id = ? WHERE {_KEY}",
                (run_id, *_key(unit)),
            )

    def _finish(
        self,
        unit: UnitId,
        run_id: int,
        outcome: str,
        usage: UsageSummary,
        update: str | None,
        values: tuple[Any, ...],
    ) -> None:
        now = _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if update is not None:
                    self._db.execute(
                        f"UPDATE units SET {update}, run_id = ?, updated_at = ? WHERE {_KEY}",
                        (*values, run_id, now, *_key(unit)),
                    )
                self._db.execute(
                    "INSERT INTO usage (run_id, model, kind, layer, idx, outcome, prompt_tokens, "
                    "completion_tokens, cached_tokens, calls, cache_hits, cost_usd, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        unit.model,
                        unit.kind,
                        unit.layer,
                        unit.index,
                        outcome,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        usage.cached_tokens,
                        usage.calls,
                        usage.cache_hits,
                        usage.cost_usd,
                        now,
                    ),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def mark_done(
        self, unit: UnitId, result: ExplanationResult | str, usage: UsageSummary, run_id: int
    ) -> None:
        """Store ``unit``'s result (an `ExplanationResult` or its JSON) and what it spent, in
        one transaction."""
        if isinstance(result, ExplanationResult):
            score, text = result.score, result.model_dump_json()
        else:
            score = ExplanationResult.model_validate_json(result).score
            text = result
        self._finish(
            unit,
            run_id,
            "done",
            usage,
            "status = 'done', result = ?, score = ?, error = NULL, reason = NULL",
            (text, score),
        )

    def mark_failed(
        self, unit: UnitId, error: str, reason: str, usage: UsageSummary, run_id: int
    ) -> None:
        """Record that ``unit`` failed (``error``: the exception class, ``reason``: its
        message) and what it spent, in one transaction."""
        self._finish(
            unit,
            run_id,
            "failed",
            usage,
            "status = 'failed', result = NULL, score = NULL, error = ?, reason = ?",
            (error, reason),
        )

    def mark_stopped(self, unit: UnitId, usage: UsageSummary, run_id: int) -> None:
        """Record what an attempt stopped by a budget spent; the unit stays pending."""
        self._finish(unit, run_id, "stopped", usage, None, ())

    # -- reading -----------------------------------------------------------------------------

    def units(self, status: UnitState | None = None) -> list[UnitStatus]:
        """Every unit (or those with ``status``), in (layer, index) order."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT model, kind, layer, idx, status, error, reason, score, attempts, "
                f"updated_at FROM units {where} ORDER BY layer, idx, model, kind",
                args,
            ).fetchall()
        return [
            UnitStatus(
                unit=_unit(row),
                status=row["status"],
                reason=f"{row['error']}: {row['reason']}" if row["status"] == "failed" else None,
                score=row["score"],
                attempts=row["attempts"],
                updated_at=datetime.fromisoformat(row["updated_at"]),
            )
            for row in rows
        ]

    def status(self, unit: UnitId) -> UnitState | None:
        """``unit``'s status, or ``None`` when the run does not hold it."""
        with self._lock:
            row = self._db.execute(f"SELECT status FROM units WHERE {_KEY}", _key(unit)).fetchone()
        return None if row is None else row["status"]

    def result(self, unit: UnitId) -> ExplanationResult | None:
        """``unit``'s result, or ``None`` when it is not done."""
        with self._lock:
            row = self._db.execute(
                f"SELECT result FROM units WHERE status = 'done' AND {_KEY}", _key(unit)
            ).fetchone()
        return None if row is None else ExplanationResult.model_validate_json(row["result"])

    def results(self) -> Iterator[ExplanationResult]:
        """The results of the done units, in (layer, index) order, read a page at a time (so
        a large run never sits in memory at once)."""
        after: tuple[Any, ...] = (-1, -1, "", "")
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT layer, idx, model, kind, result FROM units WHERE status = 'done' "
                    "AND (layer, idx, model, kind) > (?, ?, ?, ?) "
                    "ORDER BY layer, idx, model, kind LIMIT ?",
                    (*after, _PAGE),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield ExplanationResult.model_validate_json(row["result"])
            last = rows[-1]
            after = (last["layer"], last["idx"], last["model"], last["kind"])

    def failures(self) -> list[tuple[UnitId, str]]:
        """Every failed unit with its reason (``"SimulationError: ..."``), in (layer, index)
        order."""
        return [(s.unit, s.reason or "") for s in self.units("failed")]

    def spent(self) -> UsageSummary:
        """Everything the runs of this database spent (done, failed and stopped attempts;
        attempts cut short by a killed process are not recorded)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
                "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(calls), 0), "
                "COALESCE(SUM(cache_hits), 0), COALESCE(SUM(cost_usd), 0.0) FROM usage"
            ).fetchone()
        return UsageSummary(
            prompt_tokens=row[0],
            completion_tokens=row[1],
            cached_tokens=row[2],
            calls=row[3],
            cache_hits=row[4],
            cost_usd=row[5],
        )

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
        ``mean_score`` (over done units with a defined score) and ``scored`` (how many)."""
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
        }

    # -- exports -----------------------------------------------------------------------------

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write every done unit's `ExplanationResult` as JSON, one per line, in (layer,
        index) order; returns how many. Read back with
        ``ExplanationResult.model_validate_json(line)``."""
        return _write_lines(path, (r.model_dump_json() for r in self.results()))

    def export_openai(self, path: str | os.PathLike[str]) -> int:
        """Write the results in OpenAI's explanation JSONL (one ``NeuronSimulationResults`` per
        unit, see `neuron_explainer.formats.explanation_results_to_openai`); returns how many.
        Read back with `neuron_explainer.formats.read_openai_explanations`."""
        from neuron_explainer.formats._json import dump_json
        from neuron_explainer.formats.openai_explanations import explanation_results_to_openai

        return _write_lines(
            path, (dump_json(explanation_results_to_openai([r])) for r in self.results())
        )


def _write_lines(path: str | os.PathLike[str], lines: Iterable[str]) -> int:
    """Write ``lines`` to ``path`` (UTF-8, via a temporary file replaced at the end)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    os.replace(tmp, target)
    return count


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
