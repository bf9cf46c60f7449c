"""What the commands share: error handling and exit codes, progress bars on stderr, up-front
checks (components, API keys, layer and neuron ranges, corpora) and printing."""

from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import typer

from neuron_explainer.errors import (
    CapabilityError,
    DuplicateComponentError,
    InvalidInputError,
    NeuronExplainerError,
    UnknownComponentError,
    UsageError,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from neuron_explainer.models.loading import LoadedModel
    from neuron_explainer.results import ExplanationResult, ScoredSimulation
    from neuron_explainer.subjects.collection import Collection
    from neuron_explainer.subjects.corpus import Corpus

BAD_INPUT: tuple[type[NeuronExplainerError], ...] = (
    InvalidInputError,
    UnknownComponentError,
    DuplicateComponentError,
    CapabilityError,
    UsageError,
)
"""Errors that mean the command was given something unusable: exit code 2."""

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

SHOWN_FAILURES = 10
"""Failed units a summary lists with their reasons (the report lists them all)."""


def exit_code(error: BaseException) -> int:
    """2 for bad input (`BAD_INPUT`), 130 for Ctrl-C, 1 for everything else."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if isinstance(error, BAD_INPUT) else EXIT_FAILURE


def bad_input(message: str) -> InvalidInputError:
    """An error for bad input (exit code 2)."""
    return InvalidInputError(message)


def one_line(error: BaseException) -> str:
    """The error as one line: ``error: <message>`` (plus the type for unexpected errors)."""
    message = " ".join(str(error).split())
    if isinstance(error, KeyboardInterrupt):
        return "error: interrupted"
    if isinstance(error, OSError):
        return f"error: {message}"  # e.g. "[Errno 13] Permission denied: 'out.json'"
    if not isinstance(error, NeuronExplainerError):
        message = f"unexpected {type(error).__name__}: {message} (--debug shows the traceback)"
    return f"error: {message}"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Turn an exception into a one-line message on stderr and an exit code (`exit_code`);
    with ``debug``, print the traceback first."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # restored when the block ends
            yield
    except (typer.Exit, typer.Abort):
        raise
    except (Exception, KeyboardInterrupt) as error:
        if type(error).__module__.startswith(("click", "typer")):
            raise  # the framework's own usage errors and exits
        if debug:
            traceback.print_exc()
        typer.echo(one_line(error), err=True)
        raise typer.Exit(exit_code(error)) from None


# --- progress ------------------------------------------------------------------------------


def eta_column() -> Any:
    """A rich progress column that shows ``eta 0:01:05`` (rich's estimate of the time left)
    while a bar with a known total runs, and nothing for a bar without one or a finished one."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class ETA(TimeRemainingColumn):
        def render(self, task: Any) -> Text:
            if task.total is None or task.finished:
                return Text("")
            return Text.assemble("eta ", super().render(task))

    return ETA()


class Steps:
    """Rich progress bars on stderr, one per step, with the time taken and, while a bar with a
    total runs, the time left; nothing at all when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress: Progress = Progress(
            SpinnerColumn(finished_text="[green]done"),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            eta_column(),
            console=Console(stderr=True),
            disable=quiet,
        )

    def __enter__(self) -> Steps:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def task(self, description: str, total: int | None = None) -> Task:
        """Start a bar; with no ``total`` it pulses and counts."""
        if not self.progress.live.is_started:
            self.progress.start()  # on the first bar, so that checks before it print nothing
        return Task(self.progress, self.progress.add_task(description, total=total, count=""))

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A bar for one step, shown as done when the step ends normally; the step calls the
        yielded function with how much is done."""
        task = self.task(description, total)
        yield task.update
        task.finish()


class Task:
    """One bar of `Steps`."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress, self._task = progress, task
        self.done = 0
        self.finished = False

    def update(self, completed: int, total: int | None = None) -> None:
        """Show ``completed`` (of ``total``, when known)."""
        self.done = completed
        if total is not None:
            self._progress.update(self._task, total=total)
        known = self._progress.tasks[self._task].total if total is None else total
        count = f"{completed}" if known is None else f"{completed}/{known}"
        self._progress.update(self._task, completed=completed, count=count)

    def finish(self) -> None:
        """Show the bar as complete."""
        if not self.finished:
            self.finished = True
            total = self._progress.tasks[self._task].total
            end = max(self.done, 1) if total is None else total
            self._progress.update(self._task, total=end, completed=end)


def load_model_quietly(model: str, **options: Any) -> LoadedModel:
    """`load_model` without transformers' own progress bars (a spinner shows the step)."""
    import importlib

    from neuron_explainer.models.loading import load_model

    hf_logging: Any = importlib.import_module("transformers.utils.logging")
    # The GGUF converter uses a bare tqdm that no setting turns off: hand it a silent one.
    gguf: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    bar = getattr(gguf, "tqdm", None)
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if bar is not None:
        gguf.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        return load_model(model, **options)
    finally:
        if bar is not None:
            gguf.tqdm = bar
        if enabled:
            hf_logging.enable_progress_bar()


def check_device(device: str | None) -> None:
    """Check that ``device`` (``None``: the default) exists here, before loading anything.

    Raises:
        InvalidInputError: an unknown device, or CUDA or MPS that this machine lacks.
    """
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as error:
        raise InvalidInputError(f"unknown device {device!r}: {error}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but CUDA is not available here")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but MPS is not available here")


# --- checks --------------------------------------------------------------------------------


def check_components(
    *,
    explainer: str | None = None,
    simulator: str | None = None,
    need_key: bool = True,
    scorers: list[str] | None = None,
) -> None:
    """Build the named components once (unknown names, scorers' too, fail here, before any
    work) and, with ``need_key`` (not for a dry run, which sends nothing), check that an
    ``openai:`` one will find an API key.

    An ``openai:`` component also has its environment checked (``OPENAI_BASE_URL``,
    ``NEURON_EXPLAINER_LLM_TIMEOUT``, ``NEURON_EXPLAINER_LLM_CONCURRENCY``), dry run or not.

    Raises:
        UnknownComponentError: no component has that name.
        InvalidInputError: an ``openai:`` component without ``OPENAI_API_KEY`` for a server
            that is not on localhost, or with one of those variables unusable (named).
    """
    from neuron_explainer.llm.openai import check_environment
    from neuron_explainer.plugins import default_registry

    registry = default_registry()
    for name in scorers or ():
        if name != "correlation":
            registry.entry("scorer", name)
    for kind, spec in (("explainer", explainer), ("simulator", simulator)):
        if spec is None:
            continue
        getattr(registry, kind)(spec)
        if spec.startswith("openai:"):
            check_environment()  # a malformed OPENAI_BASE_URL is a usage error (exit code 2)
        if need_key and spec.partition(":")[0] == "openai" and ":" in spec:
            _check_openai_key(kind, spec)


def _check_openai_key(kind: str, spec: str) -> None:
    from neuron_explainer.llm.openai import ENV_API_KEY, ENV_BASE_URL, check_environment
    from neuron_explainer.llm.transport import is_local_url

    base_url = check_environment()
    if os.environ.get(ENV_API_KEY) or is_local_url(base_url):
        return
    raise InvalidInputError(
        f"the {kind} {spec!r} needs an API key: set the {ENV_API_KEY} environment variable "
        f"(or point {ENV_BASE_URL} at a server on localhost, which needs none)"
    )


def check_range(model: str, layers: list[int], neurons: list[int]) -> tuple[str, int, int]:
    """Check ``layers`` and ``neurons`` against ``model``'s config, before loading it.

    Returns:
        ``(model_type, layers, neurons per layer)``.

    Raises:
        InvalidInputError: the model cannot be found, or an index is out of range.
    """
    from neuron_explainer.models.loading import model_shape

    model_type, n_layers, n_neurons = model_shape(model)
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InvalidInputError(
                f"layer {layer} out of range: {model} ({model_type}) has layers 0..{n_layers - 1}"
            )
    for neuron in neurons:
        if not 0 <= neuron < n_neurons:
            raise InvalidInputError(
                f"neuron {neuron} out of range: the layers of {model} ({model_type}) have MLP "
                f"neurons 0..{n_neurons - 1}"
            )
    return model_type, n_layers, n_neurons


def read_collection(model: str) -> Collection | None:
    """The collection in folder ``model``, or ``None`` when it is not a collection folder."""
    from neuron_explainer.subjects.collection import PROGRESS, Collection

    path = Path(model)
    if not (path.is_dir() and (path / PROGRESS).is_file()):
        return None
    return Collection(path)


@dataclass
class Texts:
    """A corpus opened (and checked) for a command."""

    corpus: Corpus
    documents: int | None


def open_corpus(
    spec: str, *, split: str = "file", text_field: str = "text", count: bool = True
) -> Texts:
    """Open ``spec`` (a path, or ``python-docstrings[:CHARS|:all]`` when no such path exists)
    and read it once: every document when ``count`` (to count them), else the first.

    Raises:
        InvalidInputError: no such file or folder, unreadable, or no text in it.
    """
    from neuron_explainer.subjects.corpus import corpus_from
    from neuron_explainer.subjects.docstrings import (
        DEFAULT_MAX_CHARS,
        DOCSTRINGS_CORPUS,
        docstrings_corpus,
    )

    name, _, size = spec.partition(":")
    if name == DOCSTRINGS_CORPUS and not Path(spec).exists():
        if size in ("", "all") or size.isdigit():
            chars = DEFAULT_MAX_CHARS if not size else None if size == "all" else int(size)
            corpus = docstrings_corpus(chars)
            return Texts(corpus, corpus.details["documents"])
        raise InvalidInputError(
            f"unknown corpus {spec!r}: use {DOCSTRINGS_CORPUS}, {DOCSTRINGS_CORPUS}:CHARS or "
            f"{DOCSTRINGS_CORPUS}:all"
        )
    if not Path(spec).exists():
        raise InvalidInputError(
            f"cannot read corpus {spec!r}: no such file or folder (give a text or JSONL file, a "
            f"folder of them, or {DOCSTRINGS_CORPUS})"
        )
    corpus = corpus_from(spec, split=split, text_field=text_field)  # type: ignore[arg-type]
    documents = corpus.documents()
    n = sum(1 for _ in documents) if count else int(next(documents, None) is not None)
    if n == 0:
        raise InvalidInputError(f"corpus {spec!r} holds no text")
    return Texts(corpus, n if count else None)


# --- printing ------------------------------------------------------------------------------


def _score(value: float | None, reason: str | None) -> str:
    return f"{value:.3f}" if value is not None else f"undefined ({reason})"


def print_result(result: ExplanationResult, corpus: str) -> None:
    """A readable summary of one explained neuron, on stdout."""
    rows = [
        ("unit", f"{result.unit.kind} {result.unit.index} of layer {result.unit.layer}"),
        ("model", result.provenance.model or result.unit.model),
        ("hook", result.provenance.hook_point or "-"),
        ("corpus", corpus),
        ("explainer", result.explainer.name),
        ("simulator", result.simulator.name),
        ("explanation", result.explanation.text),
    ]
    from neuron_explainer.results import ClassificationScore, SimulationScore

    rows += _simulation_rows(result.scored) if result.scored is not None else []
    for name, entry in result.scores.items():
        if not isinstance(entry, SimulationScore):
            rows.append((f"{name} score", _score(*_value(entry.value))))
            if isinstance(entry, ClassificationScore):
                rows.append((f"{name} details", entry.metrics.describe()))
    from neuron_explainer.runs.revision import describe_revision

    if (revision := describe_revision(result.explanation)) is not None:
        rows.append(("revision", revision))
    if result.simulation is not None:
        rows.append(("simulations", result.simulation.describe()))
    for failed in result.scored.failed[:SHOWN_FAILURES] if result.scored else ():
        where = f"{failed.split} {failed.source} {failed.index + 1}"
        message = " ".join(failed.failure.message.split())[:200]
        rows.append((f"failed ({where})", f"{failed.failure.reason}: {message}"))
    usage = result.usage
    if usage.calls or usage.cache_hits:
        rows.append(
            (
                "LLM usage",
                f"{usage.calls} calls ({usage.cache_hits} cached), {usage.prompt_tokens} prompt + "
                f"{usage.completion_tokens} completion tokens, ${usage.cost_usd:.4f}",
            )
        )
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        typer.echo(f"{label + ':':<{width}}{value}")


def _simulation_rows(scored: ScoredSimulation) -> list[tuple[str, str]]:
    what = "top-and-random correlation"
    if scored.scoring == "contrastive":
        what += ", contrastive: prediction minus the neutral one"
    rows = [
        (f"score ({what})", _score(*_value(scored.correlation))),
        ("random-only correlation", _score(*_value(scored.random_correlation))),
        ("scored on", f"{scored.n_sequences} excerpts ({scored.n_failed} failed)"),
    ]
    if scored.sensitivity is not None:
        rows.append(("sensitivity to the explanation", scored.sensitivity.describe()))
    return rows


def _value(score: Any) -> tuple[float | None, str | None]:
    return score.value, score.reason
