"""The rows of the run database's ``units`` table and its ``usage`` ledger: how `RunStore`
writes a finished attempt and reads units, spending and simulation statistics back (the
caller holds the lock and, for writes, the transaction)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from neuron_explainer.records import UnitId
from neuron_explainer.results import SimulationStats, UsageSummary
from neuron_explainer.runs._schema import now

__all__ = [
    "KEY",
    "USAGE",
    "UnitState",
    "UnitStatus",
    "columns",
    "key",
    "key_for",
    "read_units",
    "sum_simulation",
    "sum_usage",
    "write_finish",
]

UnitState = Literal["pending", "done", "failed"]
"""Where a unit stands in a run."""

KEY = "layer = ? AND idx = ? AND model = ? AND kind = ? AND site = ? AND source = ?"
"""The ``WHERE`` clause that picks one unit's row (with `key`)."""
_KEYS = {
    3: "layer = ? AND idx = ? AND model = ? AND kind = ?",
    4: "layer = ? AND idx = ? AND model = ? AND kind = ? AND site = ?",
}
"""`KEY` in a database of schema 3 or older (no site column) and of schema 4 (no source)."""
USAGE = ("prompt_tokens", "completion_tokens", "cached_tokens", "calls", "cache_hits", "cost_usd")
"""The ledger's columns: the fields of `UsageSummary` it sums."""


def key(unit: UnitId) -> tuple[int, int, str, str, str, str]:
    """The values of `KEY` for ``unit`` (its site and source ``''`` when it has none)."""
    return (unit.layer, unit.index, unit.model, unit.kind, unit.site or "", unit.source or "")


def key_for(unit: UnitId, version: int) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause and its values that pick ``unit``'s row in a database of schema
    ``version`` (read before migrating): before 4 without its site, before 5 without its
    source; a unit with a site (before 4) or a source (before 5) then matches no row (its
    values hold a layer no unit has)."""
    values = key(unit)
    if version >= 5:
        return KEY, values
    if version == 4:
        return _KEYS[4], (values[0] if unit.source is None else -1, *values[1:5])
    unmatched = unit.site is not None or unit.source is not None
    return _KEYS[3], (-1 if unmatched else values[0], *values[1:4])


def _unit(row: sqlite3.Row) -> UnitId:
    return UnitId(
        model=row["model"],
        kind=row["kind"],
        layer=row["layer"],
        index=row["idx"],
        site=row["site"] or None,
        source=row["source"] or None,
    )


def _stats(text: str | None) -> SimulationStats | None:
    return None if text is None else SimulationStats.model_validate_json(text)


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
        simulation: how the simulations of its last finished attempt went (done, failed or
            stopped by the budget); ``None`` when not measured (not attempted yet, or
            finished before schema 3).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: UnitId
    status: UnitState
    reason: str | None = None
    score: float | None = None
    attempts: int = 0
    updated_at: datetime
    simulation: SimulationStats | None = None


def write_finish(
    db: sqlite3.Connection,
    unit: UnitId,
    run_id: int,
    outcome: str,
    usage: UsageSummary,
    update: str,
    values: tuple[Any, ...],
    simulation: SimulationStats | None,
) -> None:
    """Finish an attempt at ``unit``: set ``update`` (assignments, each followed by ``", "``;
    ``values`` fill its ``?``) with the run, the time and ``simulation`` on its row, and add
    the attempt's ledger row (``outcome``: ``"done"``, ``"failed"`` or ``"stopped"``)."""
    at = now()
    stats = None if simulation is None else simulation.model_dump_json()
    db.execute(
        f"UPDATE units SET {update}run_id = ?, updated_at = ?, simulation = ? WHERE {KEY}",
        (*values, run_id, at, stats, *key(unit)),
    )
    spent = tuple(getattr(usage, name) for name in USAGE)
    db.execute(
        f"INSERT INTO usage (run_id, model, kind, layer, idx, outcome, {', '.join(USAGE)}, at, "
        f"simulation, site, source) VALUES ({', '.join('?' * (len(spent) + 10))})",
        (
            run_id,
            unit.model,
            unit.kind,
            unit.layer,
            unit.index,
            outcome,
            *spent,
            at,
            stats,
            unit.site or "",
            unit.source or "",
        ),
    )


def columns(version: int) -> dict[str, str]:
    """The expressions to read the ``simulation``, ``site`` and ``source`` columns with in a
    database of schema ``version`` (``NULL`` or ``''`` where it has no such column yet)."""
    return {
        "simulation": "simulation" if version >= 3 else "NULL",
        "site": "site" if version >= 4 else "''",
        "source": "source" if version >= 5 else "''",
    }


def read_units(db: sqlite3.Connection, version: int, status: UnitState | None) -> list[UnitStatus]:
    """Every unit (or those with ``status``), in (layer, index) order, from a database of
    schema ``version``."""
    where, args = ("WHERE status = ?", (status,)) if status else ("", ())
    read = columns(version)
    rows = db.execute(
        "SELECT model, kind, layer, idx, status, error, reason, score, attempts, updated_at, "
        f"{read['simulation']} AS simulation, {read['site']} AS site, "
        f"{read['source']} AS source FROM units {where} "
        "ORDER BY layer, idx, model, kind, site, source",
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
            simulation=_stats(row["simulation"]),
        )
        for row in rows
    ]


def sum_usage(db: sqlite3.Connection) -> UsageSummary:
    """The ledger's total spending."""
    sums = ", ".join(f"COALESCE(SUM({name}), 0)" for name in USAGE)
    row = db.execute(f"SELECT {sums} FROM usage").fetchone()
    return UsageSummary(**dict(zip(USAGE, row, strict=True)))


def sum_simulation(db: sqlite3.Connection, simulation: str, run_id: int | None) -> SimulationStats:
    """The sum of the ledger's simulation statistics (of the call ``run_id``'s rows, or all);
    ``simulation`` is the column (``"NULL"`` before schema 3: rows not measured count none)."""
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    total = SimulationStats()
    for (text,) in db.execute(f"SELECT {simulation} FROM usage {where}", args):
        total += _stats(text) or SimulationStats()
    return total
