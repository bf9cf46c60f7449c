"""Helpers for tests/test_batch.py, and a batch run in a subprocess (the kill-and-resume test).

Usage: python _batch_worker.py DB N_UNITS CONCURRENCY [MARKED]

Runs `explain_neurons` over `units(N_UNITS)` with `unit_record`, ``openai:m`` as explainer and
simulator (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` from the environment) and `LLM_OPTIONS`.
MARKED: comma-separated indices of the units whose records are ``marked`` (a test server can
then fail them).
"""

from __future__ import annotations

import sys

from neuron_explainer import NeuronRecord, UnitId
from neuron_explainer.testing import number_neuron_record

MODEL = "synthetic-numbers"
MARK = " zqx"
LLM_OPTIONS = {"n_top_per_split": 3, "n_random_per_split": 3}
"""Small splits: 1 explanation + 6 calibration + 6 valid simulations = 13 requests a unit."""


def units(n: int, layer: int = 0) -> list[UnitId]:
    return [UnitId(model=MODEL, layer=layer, index=i) for i in range(n)]


def unit_record(unit: UnitId, *, marked: bool = False) -> NeuronRecord:
    """The number record of ``unit`` (seeded by it); ``marked``: every excerpt starts with the
    token `MARK`, so a test server can recognise the unit's prompts."""
    record = number_neuron_record(seed=unit.layer * 1000 + unit.index)
    if marked:

        def mark(excerpts: tuple) -> tuple:  # type: ignore[type-arg]
            return tuple(r.model_copy(update={"tokens": (MARK, *r.tokens[1:])}) for r in excerpts)

        record = record.model_copy(
            update={
                "top_records": mark(record.top_records),
                "random_sample": mark(record.random_sample),
            }
        )
    return record.model_copy(update={"unit": unit})


if __name__ == "__main__":
    from neuron_explainer.plugins import Registry
    from neuron_explainer.runs import explain_neurons

    db, n_units, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    marked = {int(i) for i in sys.argv[4].split(",")} if len(sys.argv) > 4 else set()
    explain_neurons(
        records=lambda unit: unit_record(unit, marked=unit.index in marked),
        source_name="numbers",
        units=units(n_units),
        db=db,
        explainer="openai:m",
        simulator="openai:m",
        concurrency=concurrency,
        explain_options=LLM_OPTIONS,
        registry=Registry(entry_points=False),
    )
