"""Exports of a run's results to JSONL files: this library's own `ExplanationResult` JSON, or
OpenAI's explanation format (through `neuron_explainer.formats`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from neuron_explainer.formats._json import dump_json
from neuron_explainer.formats.openai_explanations import explanation_results_to_openai
from neuron_explainer.results import ExplanationResult

__all__ = ["write_jsonl", "write_openai_jsonl"]


def write_jsonl(path: str | os.PathLike[str], results: Iterable[ExplanationResult]) -> int:
    """Write each result as its JSON, one per line; returns how many.

    Raises:
        OSError: the file cannot be written.
    """
    return _write_lines(path, (r.model_dump_json() for r in results))


def write_openai_jsonl(path: str | os.PathLike[str], results: Iterable[ExplanationResult]) -> int:
    """Write each result as one OpenAI ``NeuronSimulationResults`` line; returns how many.

    Raises:
        OSError: the file cannot be written.
    """
    return _write_lines(path, (dump_json(explanation_results_to_openai([r])) for r in results))


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
