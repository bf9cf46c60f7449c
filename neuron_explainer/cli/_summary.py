"""The summary a batch command prints (`print_summary`) and its exit code."""

from __future__ import annotations

from typing import Any

import typer

from neuron_explainer.cli._support import EXIT_FAILURE, EXIT_OK, SHOWN_FAILURES

__all__ = ["DEAD_FAILURE", "print_summary"]


def print_summary(outcome: Any) -> int:
    """Print a batch's `RunSummary` (or `RunEstimate` for a dry run), with each failed unit's
    reason, and return the exit code: 1 when a chosen unit is failed (in this call or an
    earlier one, until a call retries it) for another reason than being dead (never active on
    the corpus: `DeadUnitError`), or the run stopped early, else 0."""
    if hasattr(outcome, "cost_usd") and not hasattr(outcome, "done"):  # a RunEstimate
        typer.echo(
            f"dry run: {outcome.units} units, about {outcome.requests} LLM requests, "
            f"{outcome.prompt_tokens} prompt + {outcome.completion_tokens} completion tokens, "
            f"estimated ${outcome.cost_usd:.4f}"
        )
        for note in getattr(outcome, "notes", ()) or ():
            typer.echo(f"note: {note}")
        return EXIT_OK
    usage = outcome.usage
    failed = f"{outcome.failed} failed"
    if outcome.failed_before:
        failed += f" ({outcome.failed_now} in this call, {outcome.failed_before} before it)"
    dead = sum(f.reason.startswith(DEAD_FAILURE) for f in outcome.failures)
    if dead:
        failed += f", {dead} of them dead units (never active: nothing to explain)"
    typer.echo(
        f"{outcome.done} done, {failed}, {outcome.skipped} skipped "
        f"(of {outcome.total}) in {outcome.elapsed_s:.1f} s"
    )
    _print_failures(outcome.failures)
    simulation = getattr(outcome, "simulation", None)
    if simulation is not None and simulation.attempted:
        typer.echo(f"simulations: {simulation.describe()}")
    if getattr(outcome, "sensitivity_measured", 0):
        typer.echo(
            f"sensitivity: measured for {outcome.sensitivity_measured} units, "
            f"{outcome.flagged} flagged (the prediction hardly depends on the explanation)"
        )
    typer.echo(
        f"LLM usage: {usage.calls} calls ({usage.cache_hits} cached), {usage.prompt_tokens} "
        f"prompt + {usage.completion_tokens} completion tokens, ${usage.cost_usd:.4f}"
    )
    typer.echo(f"database: {outcome.db}")
    if getattr(outcome, "collection", None):
        typer.echo(f"collection: {outcome.collection}")
    if outcome.stopped_reason:
        typer.echo(f"stopped early: {outcome.stopped_reason}")
    return EXIT_FAILURE if outcome.failed > dead or outcome.stopped_reason else EXIT_OK


DEAD_FAILURE = "DeadUnitError: "
"""How a dead unit's failure reason begins: such a failure alone does not fail the command."""


def _print_failures(failures: Any) -> None:
    """One line per failed unit (the first `SHOWN_FAILURES`): the unit, whether it failed in
    this call or before, and why."""
    for failure in failures[:SHOWN_FAILURES]:
        when = "" if failure.in_this_call else " (before this call)"
        reason = " ".join(failure.reason.split())
        typer.echo(f"  failed{when}: {failure.unit}: {reason[:300]}")
    if len(failures) > SHOWN_FAILURES:
        typer.echo(
            f"  ... and {len(failures) - SHOWN_FAILURES} more failed units (all of them, with "
            "their reasons: neuron-explainer report)"
        )
