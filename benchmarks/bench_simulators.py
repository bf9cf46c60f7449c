"""The shared puzzle benchmark (benchmarks/puzzle_set/, frozen): run simulators over it in
pieces, then merge the pieces into one table with confidence intervals.

``run``: for each chosen simulator on each backend, every explanation of every puzzle in a range
of one half simulates every sentence of that puzzle, through the library's public simulator
classes; one JSON piece is written per (simulator, backend) into an append-only directory (a
file is never overwritten), carrying the git commit, the frozen digest, the model, the backend,
the simulator's settings, timestamps, each puzzle's true activations and each simulation's
predictions or failure, seconds and tokens::

    python benchmarks/bench_simulators.py run --half dev --puzzles 0-3 \\
        --simulators all-at-once,json --backends hf,llamacpp

``table``: merge every piece of a half into the table (per simulator x backend x model; the
latest piece wins where two cover the same puzzle; pieces of another digest are skipped)::

    python benchmarks/bench_simulators.py table --half dev

Ranges (``--puzzles 0-15``, inclusive) index the chosen half's puzzles in the set's order, so
``0-15`` and ``16-33`` cover a half in two sessions. Tune on dev, report test.

Simulators (``--simulators``) are looked up by name in `SIMULATORS` (one line each: add new ones
there) or given as ``module:Class`` (built as ``Class(llm, **kwargs)``); ``--kw NAME.KEY=VALUE``
passes a constructor argument (VALUE read as JSON, else as a string) and becomes part of the
simulator's label in the table (``json[retries=4]``). A simulator a backend cannot serve (its
constructor raises `CapabilityError`) is skipped with the reason.

Backends (``--backends``): ``hf`` runs the model in-process (`HFLLM`); ``llamacpp`` starts
llama.cpp's server on 127.0.0.1 (``tests/llamacpp_server.py``) and talks to it over HTTP with
`LlamaCppLLM` when the library has it (``neuron_explainer.llm.llamacpp``), else `OpenAILLM`
(``--llamacpp-client`` picks). Both default to Qwen2.5-Coder-0.5B-Instruct (the Q4_K_M GGUF
of the ``llamacpp`` test requirements); chat answers are capped at ``--max-new-tokens``.

What the table counts (each puzzle has a true explanation and 3+ false ones):

* failed: simulations that raised (a `SimulationError` or any other exception), by reason
  class (the exception type and its message's first problem, numbers and quotes blanked).
  Failures are counted, never scored as zeros.
* constant: successful simulations that predict one value on every token, among sentences
  with a firing token; all zero: successful simulations that predict 0 everywhere.
* scores: an explanation's score is the Pearson correlation between its predictions and the
  true activations, pooled over the puzzle's *common sentences*: those that every explanation
  of the puzzle simulated successfully. A puzzle with a failed sentence is scored on the rest;
  an explanation whose pooled prediction is constant (or a puzzle with no common sentence)
  has no score and ranks below every scored explanation.
* truth first: the true explanation scores strictly above every false one; top-2: at most one
  false one scores at or above it; mean rank: 1 + false ones above + half of those tied.
* decoy/near-miss beats truth: a false explanation of that kind scores strictly above the true.
* mean r: of the true explanations and of the false ones (mean per puzzle), over scored ones.
* sensitivity: the correlation between the raw predictions under the true explanation and
  under each false one, pooled over the common sentences (1.0 when identical, left out when
  one side is constant); the table gives its median (issue 16: 0.97 before its work).
* time and tokens per simulation: each puzzle's wall time (its simulations run concurrently,
  up to ``--concurrency``) and prompt/completion tokens (the library's usage meters) over its
  simulations, failed ones included.

95 % intervals: Wilson for proportions (over puzzles for the ranking shares; over simulations
for failed/constant/all-zero, which ignores that a puzzle's sentences are related), percentile
bootstrap over puzzles (2,000 resamples, seeded) for means, medians and per-simulation costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import puzzle_set  # noqa: E402

FORMAT = "puzzle-bench-piece/1"
"""The format of a piece file (bump when its fields change meaning)."""
RESULTS = ROOT / "benchmarks" / "puzzle_set" / "results"
"""Where pieces go by default (append-only: commit them to build a table across sessions)."""
EPS = 1e-9

Factory = Callable[[Any, dict[str, Any]], Any]


def _prompt_logprob(digits: str | None) -> Factory:
    def build(llm: Any, kwargs: dict[str, Any]) -> Any:
        from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator

        options = dict(kwargs)
        if digits:
            options.setdefault("digits", digits)
        return PromptLogprobSimulator(llm, **options)

    return build


def _chat_logprob(llm: Any, kwargs: dict[str, Any]) -> Any:
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator

    return ChatLogprobSimulator(llm, **kwargs)


def _json(llm: Any, kwargs: dict[str, Any]) -> Any:
    from neuron_explainer.simulators.json_output import JSONSimulator

    return JSONSimulator(llm, **kwargs)


SIMULATORS: dict[str, Factory] = {
    "all-at-once": _prompt_logprob(None),  # the paper's method; digits="auto" picks the path
    "all-at-once-top": _prompt_logprob("top_logprobs"),
    "chat-logprob": _chat_logprob,
    "json": _json,
}
"""Simulators by name: ``factory(llm, kwargs) -> Simulator``. Add a line to add one."""


# Running ------------------------------------------------------------------------------------


def parse_range(text: str, size: int) -> tuple[int, int]:
    """``"0-3"`` or ``"5"`` -> inclusive (start, end) within a half of ``size`` puzzles.

    Raises:
        ValueError: not a range, or outside the half.
    """
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not match:
        raise ValueError(f"--puzzles takes A-B or A (indices within the half), got {text!r}")
    start = int(match.group(1))
    end = int(match.group(2) or start)
    if start > end or end >= size:
        raise ValueError(f"--puzzles {text}: the half has puzzles 0-{size - 1}")
    return start, end


def parse_kwargs(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["json.retries=4", "all-at-once.digits=logits"]`` -> per-simulator constructor
    arguments (values read as JSON, else kept as strings).

    Raises:
        ValueError: an item not of the form NAME.KEY=VALUE.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        match = re.fullmatch(r"([^=]+)\.([A-Za-z_]\w*)=(.*)", item)
        if not match:
            raise ValueError(f"--kw takes NAME.KEY=VALUE, got {item!r}")
        name, key, raw = match.groups()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[key] = value
    return out


def label(name: str, kwargs: dict[str, Any]) -> str:
    """The simulator's name in the table: its name, plus its non-default arguments."""
    if not kwargs:
        return name
    return f"{name}[{','.join(f'{k}={json.dumps(v)}' for k, v in sorted(kwargs.items()))}]"


def build_simulator(name: str, llm: Any, kwargs: dict[str, Any]) -> Any:
    """A simulator by registered name or ``module:Class``.

    Raises:
        SystemExit: an unknown name.
    """
    if name in SIMULATORS:
        return SIMULATORS[name](llm, kwargs)
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)(llm, **kwargs)
    raise SystemExit(f"unknown simulator {name!r}; choose from {', '.join(SIMULATORS)}")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def simulator_settings(simulator: Any) -> dict[str, Any]:
    """The simulator's class and its public scalar attributes (what it was built with)."""
    settings = {k: v for k, v in vars(simulator).items() if not k.startswith("_") and _jsonable(v)}
    cls = type(simulator)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", **settings}


def git_state() -> dict[str, Any]:
    """The commit, whether the work tree differs from it, and a hash of that difference."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    diff = git("diff", "HEAD", "--", "neuron_explainer", "benchmarks", "tests")
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "dirty": bool(diff),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def reason_class(error_type: str, message: str, llm_name: str = "") -> str:
    """A failure's class: its exception type and its message's first problem, with the model's
    name, numbers and quoted text blanked, cut to 100 characters."""
    text = message.replace(llm_name, "LLM") if llm_name else message
    if " attempts: " in text:
        text = text.split(" attempts: ", 1)[1]
    text = text.split("; ", 1)[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"\d+(?:\.\d+)?", "#", text)
    text = re.sub(r"\s+", " ", text).strip()
    return f"{error_type}: {text[:100]}"


async def simulate_one(simulator: Any, text: str, tokens: list[str]) -> dict[str, Any]:
    """One simulation: its prediction or its failure, with seconds and tokens."""
    from neuron_explainer import ComponentInfo, Explanation
    from neuron_explainer.llm.usage import track_usage

    explanation = Explanation(text=text, explainer=ComponentInfo(name="puzzle"))
    started = time.perf_counter()
    with track_usage() as meter:
        try:
            simulation = await simulator.asimulate(explanation, tokens)
        except Exception as exc:  # every failure is counted, with its type
            outcome: dict[str, Any] = {
                "ok": False,
                "error_type": type(exc).__name__,
                "error": str(exc)[:2000],
            }
        else:
            outcome = {
                "ok": True,
                "prediction": [round(float(v), 5) for v in simulation.expected_activations],
            }
    usage = meter.summary
    outcome.update(
        seconds=round(time.perf_counter() - started, 4),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        calls=usage.calls,
    )
    return outcome


async def run_puzzle(
    simulator: Any,
    puzzle: puzzle_set.Puzzle,
    concurrency: int,
    neutral: str | None = None,
    neutral_only: bool = False,
) -> dict[str, Any]:
    """Every explanation of ``puzzle`` on every sentence (concurrently, up to
    ``concurrency`` at a time), as the piece records it; with ``neutral``, also that neutral
    explanation on every sentence (``"neutral"``: its text and simulations, timed apart);
    ``neutral_only`` simulates the neutral explanation alone (``"simulations"`` is empty)."""
    records = puzzle.records()
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str, tokens: list[str]) -> dict[str, Any]:
        async with gate:
            return await simulate_one(simulator, text, tokens)

    texts = [] if neutral_only else list(puzzle.explanations)
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(text, tokens) for text in texts for tokens, _ in records))
    wall = time.perf_counter() - started
    n = len(records)
    entry: dict[str, Any] = {
        "id": puzzle.id,
        "family": puzzle.family,
        "kinds": list(puzzle.kinds),
        "explanations": list(puzzle.explanations),
        "sentences": [{"tokens": t, "activations": a} for t, a in records],
        "simulations": [outcomes[e * n : (e + 1) * n] for e in range(len(texts))],
        "wall_seconds": round(wall, 4),
    }
    if neutral is not None:
        started = time.perf_counter()
        baseline = await asyncio.gather(*(one(neutral, tokens) for tokens, _ in records))
        entry["neutral"] = {
            "text": neutral,
            "simulations": list(baseline),
            "wall_seconds": round(time.perf_counter() - started, 4),
        }
    return entry


def _piece_path(out: Path, meta: dict[str, Any]) -> Path:
    start, end = meta["range"]
    stamp = meta["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    name = f"{meta['half']}_{start:02d}-{end:02d}_{meta['simulator']['label']}_{meta['backend']}"
    if meta.get("neutral_only"):
        name += "_neutral"
    safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "-", name)
    return out / f"{safe}_{stamp}_{os.getpid()}.json"


def write_piece(out: Path, piece: dict[str, Any]) -> Path:
    """Write a piece to a new file in ``out`` (never over an existing one)."""
    out.mkdir(parents=True, exist_ok=True)
    path = _piece_path(out, piece)
    with path.open("x", encoding="utf-8") as f:
        json.dump(piece, f, indent=1)
        f.write("\n")
    return path


@dataclass
class RunOptions:
    """What one ``run`` invocation was asked for."""

    half: puzzle_set.Half
    start: int
    end: int
    simulators: list[str]
    kwargs: dict[str, dict[str, Any]]
    concurrency: int
    out: Path
    git: dict[str, Any] = field(default_factory=dict)
    neutral: str | None = None
    neutral_only: bool = False


async def run_backend(
    backend: str, llm: Any, model: str, options: RunOptions, extra: dict[str, Any]
) -> list[Path]:
    """Every chosen simulator on one backend; one piece each."""
    from neuron_explainer.errors import CapabilityError, InvalidInputError

    chosen = puzzle_set.puzzles(options.half)[options.start : options.end + 1]
    written = []
    for name in options.simulators:
        kwargs = options.kwargs.get(name, {})
        try:
            simulator = build_simulator(name, llm, kwargs)
        except (CapabilityError, InvalidInputError) as exc:
            print(f"skipped {name} on {backend}: {exc}", flush=True)
            continue
        piece: dict[str, Any] = {
            "format": FORMAT,
            "digest": puzzle_set.frozen()["sha256"],
            "half": options.half,
            "range": [options.start, options.end],
            "simulator": {
                "name": name,
                "label": label(name, kwargs),
                "kwargs": kwargs,
                "settings": simulator_settings(simulator),
            },
            "backend": backend,
            "model": model,
            "llm": {"name": llm.name, "class": type(llm).__name__, **extra},
            "concurrency": options.concurrency,
            "neutral": options.neutral,
            "neutral_only": options.neutral_only,
            "git": options.git,
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "started": _now(),
            "puzzles": [],
        }
        for puzzle in chosen:
            result = await run_puzzle(
                simulator, puzzle, options.concurrency, options.neutral, options.neutral_only
            )
            piece["puzzles"].append(result)
            print(f"  {name} on {backend}: {_puzzle_line(result, llm.name)}", flush=True)
        piece["finished"] = _now()
        written.append(write_piece(options.out, piece))
        print(f"wrote {written[-1]}", flush=True)
    return written


def _puzzle_line(result: dict[str, Any], llm_name: str) -> str:
    if not result["simulations"]:
        neutral = result["neutral"]["simulations"]
        failed = sum(not o["ok"] for o in neutral)
        return f"{result['id']:22s} neutral: failed {failed}  {result['neutral']['wall_seconds']}s"
    scores = PuzzleResult.from_json(result).scores
    failed = sum(not o["ok"] for row in result["simulations"] for o in row)
    shown = " ".join("-" if s is None else f"{s:+.2f}" for s in scores)
    return f"{result['id']:22s} r true/false: {shown}  failed {failed}  {result['wall_seconds']}s"


def capped_client(cls: type, cap: int) -> type:
    """A subclass of the LLM class ``cls`` whose chat requests generate at most ``cap`` tokens
    (the JSON simulator sets no ``max_tokens``; llama.cpp's server would then generate until
    the context is full)."""

    class Capped(cls):  # type: ignore[misc]
        async def achat(self, request: Any) -> Any:
            limit = min(request.max_tokens or cap, cap)
            return await super().achat(request.model_copy(update={"max_tokens": limit}))

    Capped.__name__ = Capped.__qualname__ = f"{cls.__name__}(max_tokens<={cap})"
    return Capped


def llamacpp_client_class(choice: str) -> type:
    """`LlamaCppLLM` (``llamacpp``), `OpenAILLM` (``openai``), or the first that exists
    (``auto``)."""
    from neuron_explainer.llm.openai import OpenAILLM

    if choice == "openai":
        return OpenAILLM
    try:
        from neuron_explainer.llm.llamacpp import LlamaCppLLM
    except ImportError:
        if choice == "llamacpp":
            raise
        return OpenAILLM
    return LlamaCppLLM


def default_model() -> str:
    """The Qwen2.5-Coder-0.5B-Instruct GGUF of the llamacpp test requirements."""
    from llamacpp_server import assemble_gguf

    return str(assemble_gguf())


async def run(args: argparse.Namespace) -> int:
    """The ``run`` command."""
    half_size = len(puzzle_set.puzzles(args.half))
    start, end = parse_range(args.puzzles, half_size)
    options = RunOptions(
        half=args.half,
        start=start,
        end=end,
        simulators=[n for n in args.simulators.split(",") if n],
        kwargs=parse_kwargs(args.kw),
        concurrency=args.concurrency,
        out=args.out,
        git=git_state(),
        neutral=args.neutral,
        neutral_only=args.neutral_only,
    )
    if options.neutral_only and not options.neutral:
        raise SystemExit("--neutral-only needs --neutral TEXT")
    model = args.model or default_model()
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        with open_backend(backend, model, args) as (llm, used, extra):
            await run_backend(backend, llm, used, options, extra)
    return 0


@contextlib.contextmanager
def open_backend(
    backend: str, model: str, args: argparse.Namespace
) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """The LLM of ``backend`` for the ``with`` block: ``hf`` loads ``model`` in-process,
    ``llamacpp`` starts llama.cpp's server on 127.0.0.1 (stopped on exit). Yields the LLM, the
    model as pieces record it, and what else to record about the backend. Reads ``args.dtype``,
    ``.max_new_tokens``, ``.slots`` and ``.llamacpp_client`` (shared with
    ``bench_detection.py``).

    Raises:
        SystemExit: an unknown backend.
    """
    if backend == "hf":
        from neuron_explainer.llm.hf import HFLLM

        started = time.perf_counter()
        llm = HFLLM(model, dtype=args.dtype, max_new_tokens=args.max_new_tokens)
        load = round(time.perf_counter() - started, 2)
        print(f"loaded {llm!r} in {load}s", flush=True)
        yield llm, model, {"load_seconds": load, "max_new_tokens": args.max_new_tokens}
    elif backend == "llamacpp":
        with llamacpp_llm(model, args) as opened:
            yield opened
    else:
        raise SystemExit(f"unknown backend {backend!r}; choose hf and/or llamacpp")


@contextlib.contextmanager
def llamacpp_llm(model: str, args: argparse.Namespace) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """A client of llama.cpp's server on 127.0.0.1, started for the ``with`` block."""
    from llamacpp_server import llamacpp_server

    gguf = Path(model) if model.endswith(".gguf") else None
    cls = capped_client(llamacpp_client_class(args.llamacpp_client), args.max_new_tokens)
    with llamacpp_server(gguf, n_parallel=args.slots, n_ctx=8192 * args.slots) as server:
        llm = cls(server.model, base_url=server.base_url, cache=False, timeout=600.0)
        extra = {
            "startup_seconds": round(server.startup_s, 2),
            "slots": args.slots,
            "max_new_tokens": args.max_new_tokens,
            "gguf": server.gguf.name,
        }
        yield llm, str(server.gguf), extra


async def run_llamacpp(model: str, args: argparse.Namespace, options: RunOptions) -> None:
    """The simulators against llama.cpp's server on 127.0.0.1, started for the run."""
    with llamacpp_llm(model, args) as (llm, used, extra):
        await run_backend("llamacpp", llm, used, options, extra)


# The table ----------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """The share ``k/n`` and its Wilson score interval (``nan`` for ``n == 0``)."""
    if n == 0:
        return (math.nan, math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(
    items: Sequence[Any],
    statistic: Callable[[Sequence[Any]], float | None],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(items)`` and its 95 % percentile interval over resamples of ``items`` with
    replacement (seeded; resamples where the statistic is undefined are left out)."""
    estimate = statistic(items)
    if estimate is None or not items:
        return (math.nan, math.nan, math.nan)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        value = statistic([items[rng.randrange(len(items))] for _ in items])
        if value is not None:
            values.append(value)
    values.sort()
    lo = values[int(0.025 * (len(values) - 1))]
    hi = values[math.ceil(0.975 * (len(values) - 1))]
    return (estimate, lo, hi)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r, or ``None`` for fewer than 2 values or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"lengths differ: {len(x)} vs {len(y)}")
    if len(x) < 2:
        return None
    mx, my = statistics.fmean(x), statistics.fmean(y)
    dx = [a - mx for a in x]
    dy = [b - my for b in y]
    sxx, syy = sum(a * a for a in dx), sum(b * b for b in dy)
    if sxx < EPS or syy < EPS:
        return None
    return max(
        -1.0, min(1.0, sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sxx * syy))
    )


def _constant(values: Sequence[float]) -> bool:
    return max(values) - min(values) < EPS


@dataclass
class PuzzleResult:
    """One puzzle under one simulator: the truth and every simulation's outcome."""

    id: str
    family: str
    kinds: list[str]
    truth: list[list[float]]
    outcomes: list[list[dict[str, Any]]]  # [explanation][sentence]
    wall_seconds: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PuzzleResult:
        """From a piece's puzzle entry."""
        return cls(
            id=data["id"],
            family=data["family"],
            kinds=list(data["kinds"]),
            truth=[list(s["activations"]) for s in data["sentences"]],
            outcomes=[list(row) for row in data["simulations"]],
            wall_seconds=float(data["wall_seconds"]),
        )

    @cached_property
    def common(self) -> list[int]:
        """The sentences that every explanation simulated successfully."""
        return [s for s in range(len(self.truth)) if all(row[s]["ok"] for row in self.outcomes)]

    def pooled(self, explanation: int) -> list[float]:
        """The explanation's predictions over the common sentences, concatenated."""
        row = self.outcomes[explanation]
        return [v for s in self.common for v in row[s]["prediction"]]

    @cached_property
    def scores(self) -> list[float | None]:
        """Each explanation's correlation with the truth over the common sentences."""
        truth = [v for s in self.common for v in self.truth[s]]
        return [pearson(truth, self.pooled(e)) for e in range(len(self.outcomes))]

    @cached_property
    def rank(self) -> tuple[int, int]:
        """How many false explanations score strictly above the truth, and how many tie it
        (an explanation without a score is below every scored one)."""
        key = [-math.inf if s is None else s for s in self.scores]
        above = sum(k > key[0] for k in key[1:])
        tied = sum(k == key[0] for k in key[1:])
        return above, tied

    def beaten_by(self, kind: str) -> bool:
        """Whether a false explanation of ``kind`` scores strictly above the truth."""
        key = [-math.inf if s is None else s for s in self.scores]
        return any(k > key[0] for k, kd in zip(key, self.kinds, strict=True) if kd == kind)

    @cached_property
    def sensitivities(self) -> list[float]:
        """Correlation of the raw predictions under the truth and under each false
        explanation, pooled over the common sentences (1.0 when identical; left out when one
        side is constant)."""
        true = self.pooled(0)
        out = []
        for e in range(1, len(self.outcomes)):
            other = self.pooled(e)
            if not true:
                continue
            if all(abs(a - b) < EPS for a, b in zip(true, other, strict=True)):
                out.append(1.0)
            elif (r := pearson(true, other)) is not None:
                out.append(r)
        return out

    def simulations(self) -> list[tuple[int, dict[str, Any]]]:
        """Every (sentence index, outcome)."""
        return [(s, o) for row in self.outcomes for s, o in enumerate(row)]

    def contrastive(self, neutral: Sequence[dict[str, Any]], wall_seconds: float) -> PuzzleResult:
        """The puzzle scored contrastively: each prediction minus the neutral explanation's
        prediction of the same sentence (a sentence fails where either simulation failed).
        Each outcome carries its own tokens and seconds plus an even share of the neutral
        simulation's (it is simulated once per puzzle, for every explanation)."""
        share = 1 / len(self.outcomes)
        rows = []
        for row in self.outcomes:
            out = []
            for own, base in zip(row, neutral, strict=True):
                costs = {
                    k: own[k] + share * base[k]
                    for k in ("seconds", "prompt_tokens", "completion_tokens", "calls")
                }
                if own["ok"] and base["ok"]:
                    pairs = zip(own["prediction"], base["prediction"], strict=True)
                    out.append({"ok": True, "prediction": [a - b for a, b in pairs], **costs})
                else:
                    failed = own if not own["ok"] else base
                    prefix = "" if not own["ok"] else "neutral: "
                    out.append(
                        {
                            "ok": False,
                            "error_type": failed["error_type"],
                            "error": prefix + failed["error"],
                            **costs,
                        }
                    )
            rows.append(out)
        return PuzzleResult(
            id=self.id,
            family=self.family,
            kinds=self.kinds,
            truth=self.truth,
            outcomes=rows,
            wall_seconds=self.wall_seconds + wall_seconds,
        )

    def neutral_sensitivity(self, neutral: Sequence[dict[str, Any]]) -> list[float | None]:
        """Each explanation's sensitivity: 1 - Pearson r between its raw predictions and the
        neutral explanation's, pooled over the sentences every explanation and the neutral
        one simulated (0.0 when identical; 1.0 when only the neutral side is constant; None
        when the explanation's side is constant or nothing is common)."""
        common = [s for s in self.common if neutral[s]["ok"]]
        base = [v for s in common for v in neutral[s]["prediction"]]
        out: list[float | None] = []
        for row in self.outcomes:
            own = [v for s in common for v in row[s]["prediction"]]
            if not own:
                out.append(None)
            elif all(abs(a - b) < EPS for a, b in zip(own, base, strict=True)):
                out.append(0.0)
            elif _constant(own):
                out.append(None)
            elif _constant(base):
                out.append(1.0)
            else:
                r = pearson(own, base)
                out.append(None if r is None else 1 - r)
        return out


@dataclass
class Group:
    """Everything measured for one simulator on one backend and model."""

    simulator: str
    backend: str
    model: str
    puzzles: dict[str, PuzzleResult] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)
    replaced: int = 0
    llm_name: str = ""
    neutral: dict[str, dict[str, tuple[list[dict[str, Any]], float]]] = field(default_factory=dict)
    """Neutral simulations: by neutral text, by puzzle id, (outcome per sentence, seconds)."""


def load_pieces(
    paths: Iterable[Path], half: str, digest: str | None, commit: str | None = None
) -> tuple[dict[tuple[str, str, str], Group], list[str]]:
    """Merge piece files into groups; the later-finished piece wins a puzzle covered twice.
    Returns the groups and notes on what was skipped."""
    notes: list[str] = []
    pieces = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("half") != half:
            continue
        if digest is not None and data["digest"] != digest:
            notes.append(f"skipped {path.name}: digest {data['digest'][:12]} is not {digest[:12]}")
            continue
        if commit and not str(data["git"].get("commit") or "").startswith(commit):
            continue
        pieces.append(data)
    pieces.sort(key=lambda d: d.get("finished", ""))
    groups: dict[tuple[str, str, str], Group] = {}
    for data in pieces:
        key = (data["simulator"]["label"], data["backend"], Path(data["model"]).name)
        group = groups.setdefault(key, Group(*key))
        group.llm_name = data["llm"]["name"]
        group.commits.add(
            str(data["git"].get("commit") or "?")[:10] + ("+" if data["git"].get("dirty") else "")
        )
        for entry in data["puzzles"]:
            if "neutral" in entry:
                neutral = entry["neutral"]
                group.neutral.setdefault(neutral["text"], {})[entry["id"]] = (
                    list(neutral["simulations"]),
                    float(neutral["wall_seconds"]),
                )
            if not entry["simulations"]:
                continue
            group.replaced += entry["id"] in group.puzzles
            group.puzzles[entry["id"]] = PuzzleResult.from_json(entry)
    return groups, notes


Groups = dict[tuple[str, str, str], Group]


def contrastive_groups(groups: Groups) -> Groups:
    """For each group with neutral simulations, one group per neutral text scored
    contrastively (``label, contrastive vs "text"``) over the puzzles that have both."""
    out: dict[tuple[str, str, str], Group] = {}
    for (label_, backend, model), group in groups.items():
        for text, by_puzzle in sorted(group.neutral.items()):
            name = f'{label_} contrastive vs "{text}"'
            derived = Group(name, backend, model, commits=group.commits, llm_name=group.llm_name)
            for pid, result in group.puzzles.items():
                if pid in by_puzzle:
                    outcomes, seconds = by_puzzle[pid]
                    derived.puzzles[pid] = result.contrastive(outcomes, seconds)
            if derived.puzzles:
                out[(name, backend, model)] = derived
    return out


def baselines(group: Group, threshold: float) -> list[dict[str, Any]]:
    """Per neutral text: how the neutral simulations went and each explanation's
    sensitivity to it (median over true explanations and over false ones; the share of true
    explanations flagged, sensitivity below ``threshold``)."""
    rows = []
    for text, by_puzzle in sorted(group.neutral.items()):
        pairs = [(r, by_puzzle[pid][0]) for pid, r in group.puzzles.items() if pid in by_puzzle]
        if not pairs:
            continue
        per = [(r.neutral_sensitivity(n), n) for r, n in pairs]
        neutral_sims = [o for _, n in pairs for o in n]
        firing = [
            o
            for r, n in pairs
            for s, o in enumerate(n)
            if o["ok"] and any(v > 0 for v in r.truth[s])
        ]

        def true_median(items: Sequence[Any]) -> float | None:
            return _median([v[0] for v, _ in items if v[0] is not None])

        def false_median(items: Sequence[Any]) -> float | None:
            return _median([x for v, _ in items for x in v[1:] if x is not None])

        true_values = [v[0] for v, _ in per]
        rows.append(
            {
                "simulator": group.simulator,
                "backend": group.backend,
                "neutral": text,
                "puzzles": len(pairs),
                "neutral_failed": _share(sum(not o["ok"] for o in neutral_sims), len(neutral_sims)),
                "neutral_constant_on_firing": _share(
                    sum(_constant(o["prediction"]) for o in firing), len(firing)
                ),
                "sensitivity_true": _interval(bootstrap(per, true_median), len(per)),
                "sensitivity_false": _interval(bootstrap(per, false_median), len(per)),
                "true_flagged": _share(
                    sum(v is None or v < threshold for v in true_values), len(true_values)
                ),
            }
        )
    return rows


def _share(k: int, n: int) -> dict[str, Any]:
    p, lo, hi = wilson(k, n)
    return {"k": k, "n": n, "value": p, "lo": lo, "hi": hi}


def _interval(triple: tuple[float, float, float], n: int) -> dict[str, Any]:
    return {"n": n, "value": triple[0], "lo": triple[1], "hi": triple[2]}


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _per_simulation(results: Sequence[PuzzleResult], what: str) -> float | None:
    sims = sum(len(r.simulations()) for r in results)
    if not sims:
        return None
    if what == "wall_seconds":
        return sum(r.wall_seconds for r in results) / sims
    return float(sum(o[what] for r in results for _, o in r.simulations())) / sims


def _cost(what: str) -> Callable[[Sequence[PuzzleResult]], float | None]:
    return lambda results: _per_simulation(results, what)


def reliability(group: Group) -> dict[str, Any]:
    """Failed (with reasons), constant on firing sentences, all zero, cost per simulation."""
    results = list(group.puzzles.values())
    sims = [(r, s, o) for r in results for s, o in r.simulations()]
    failed = [o for _, _, o in sims if not o["ok"]]
    good = [(r, s, o) for r, s, o in sims if o["ok"]]
    firing = [o for r, s, o in good if any(v > 0 for v in r.truth[s])]
    reasons = Counter(reason_class(o["error_type"], o["error"], group.llm_name) for o in failed)
    costs = {
        what: _interval(bootstrap(results, _cost(what)), len(results))
        for what in ("wall_seconds", "prompt_tokens", "completion_tokens")
    }
    return {
        "puzzles": len(results),
        "simulations": len(sims),
        "failed": _share(len(failed), len(sims)),
        "failure_reasons": dict(reasons.most_common()),
        "constant_on_firing": _share(sum(_constant(o["prediction"]) for o in firing), len(firing)),
        "all_zero": _share(
            sum(max(abs(v) for v in o["prediction"]) < EPS for _, _, o in good), len(good)
        ),
        "puzzles_with_failed_sentences": sum(len(r.common) < len(r.truth) for r in results),
        "puzzles_without_common_sentences": sum(not r.common for r in results),
        **{f"{what}_per_simulation": value for what, value in costs.items()},
    }


def discrimination(group: Group) -> dict[str, Any]:
    """Truth first, top-2, mean rank, decoy/near-miss beats truth, mean r, sensitivity."""
    results = list(group.puzzles.values())
    ranks = [r.rank for r in results]
    n = len(results)

    def mean_true(rs: Sequence[PuzzleResult]) -> float | None:
        return _mean([s for r in rs if (s := r.scores[0]) is not None])

    def mean_false(rs: Sequence[PuzzleResult]) -> float | None:
        per = [_mean([s for s in r.scores[1:] if s is not None]) for r in rs]
        return _mean([p for p in per if p is not None])

    def mean_rank(rs: Sequence[PuzzleResult]) -> float | None:
        return _mean([1 + above + tied / 2 for above, tied in (r.rank for r in rs)])

    def sensitivity(rs: Sequence[PuzzleResult]) -> float | None:
        return _median([v for r in rs for v in r.sensitivities])

    return {
        "puzzles": n,
        "truth_first": _share(sum(a == 0 and t == 0 for a, t in ranks), n),
        "top_2": _share(sum(a + t <= 1 for a, t in ranks), n),
        "mean_rank": _interval(bootstrap(results, mean_rank), n),
        "decoy_beats_truth": _share(sum(r.beaten_by("decoy") for r in results), n),
        "near_miss_beats_truth": _share(sum(r.beaten_by("near_miss") for r in results), n),
        "truth_scored": sum(r.scores[0] is not None for r in results),
        "mean_r_true": _interval(bootstrap(results, mean_true), n),
        "mean_r_false": _interval(bootstrap(results, mean_false), n),
        "sensitivity_median_r": _interval(bootstrap(results, sensitivity), n),
    }


def _pct(cell: dict[str, Any]) -> str:
    if not cell["n"] or math.isnan(cell["value"]):
        return "-"
    return f"{100 * cell['value']:.0f} % [{100 * cell['lo']:.0f}, {100 * cell['hi']:.0f}]"


def _num(cell: dict[str, Any], digits: int = 2) -> str:
    if math.isnan(cell["value"]):
        return "-"
    return f"{cell['value']:.{digits}f} [{cell['lo']:.{digits}f}, {cell['hi']:.{digits}f}]"


def _with_models(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the model named in the backend cell when the rows span several models."""
    if len({row["model"] for row in rows}) <= 1:
        return rows
    return [{**row, "backend": f"{row['backend']}, {row['model']}"} for row in rows]


def markdown(rows: list[dict[str, Any]], baseline_rows: Sequence[dict[str, Any]] = ()) -> str:
    """The tables (reliability and cost; discrimination; neutral baselines and sensitivity)
    and the failure reasons; the backend cells name the model when the rows span several."""
    rows = _with_models(rows)
    lines = [
        "| simulator | backend | puzzles | simulations | failed | constant (firing sentences) "
        "| all zero | s / simulation | prompt tokens / sim. | completion tokens / sim. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rel = row["reliability"]
        lines.append(
            f"| {row['simulator']} | {row['backend']} | {rel['puzzles']} | {rel['simulations']} "
            f"| {_pct(rel['failed'])} | {_pct(rel['constant_on_firing'])} "
            f"| {_pct(rel['all_zero'])} | {_num(rel['wall_seconds_per_simulation'])} "
            f"| {_num(rel['prompt_tokens_per_simulation'], 0)} "
            f"| {_num(rel['completion_tokens_per_simulation'], 0)} |"
        )
    lines += [
        "",
        "| simulator | backend | truth first | top-2 | mean rank | decoy beats truth "
        "| near-miss beats truth | mean r true | mean r false | sensitivity (median r) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        dis = row["discrimination"]
        lines.append(
            f"| {row['simulator']} | {row['backend']} | {_pct(dis['truth_first'])} "
            f"| {_pct(dis['top_2'])} | {_num(dis['mean_rank'])} "
            f"| {_pct(dis['decoy_beats_truth'])} | {_pct(dis['near_miss_beats_truth'])} "
            f"| {_num(dis['mean_r_true'])} | {_num(dis['mean_r_false'])} "
            f"| {_num(dis['sensitivity_median_r'])} |"
        )
    if baseline_rows:
        lines += [
            "",
            "| simulator | backend | neutral explanation | puzzles | neutral failed "
            "| neutral constant (firing) | sensitivity, true (median 1 - r) "
            "| sensitivity, false | true flagged |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for b in baseline_rows:
            lines.append(
                f'| {b["simulator"]} | {b["backend"]} | "{b["neutral"]}" | {b["puzzles"]} '
                f"| {_pct(b['neutral_failed'])} | {_pct(b['neutral_constant_on_firing'])} "
                f"| {_num(b['sensitivity_true'])} | {_num(b['sensitivity_false'])} "
                f"| {_pct(b['true_flagged'])} |"
            )
    for row in rows:
        reasons = row["reliability"]["failure_reasons"]
        if reasons:
            lines.append(f"\nFailures of {row['simulator']} on {row['backend']}:")
            lines += [f"- {n} x {reason}" for reason, n in reasons.items()]
    return "\n".join(lines)


def table(groups: dict[tuple[str, str, str], Group]) -> list[dict[str, Any]]:
    """One row per group, sorted by simulator then backend."""
    rows = []
    for key in sorted(groups):
        group = groups[key]
        rows.append(
            {
                "simulator": group.simulator,
                "backend": group.backend,
                "model": group.model,
                "commits": sorted(group.commits),
                "puzzle_ids": sorted(group.puzzles),
                "replaced": group.replaced,
                "reliability": reliability(group),
                "discrimination": discrimination(group),
            }
        )
    return rows


def table_command(args: argparse.Namespace) -> int:
    """The ``table`` command."""
    digest = None if args.any_digest else puzzle_set.frozen()["sha256"]
    groups, notes = load_pieces(sorted(args.dir.glob("*.json")), args.half, digest, args.commit)
    half_size = len(puzzle_set.puzzles(args.half))
    rows = table({**groups, **contrastive_groups(groups)})
    baseline_rows = [b for key in sorted(groups) for b in baselines(groups[key], args.flag_below)]
    print(
        f"Half {args.half} of the puzzle set {puzzle_set.frozen()['sha256'][:12]} "
        f"({half_size} puzzles). Scores use each puzzle's common sentences (those every "
        "explanation simulated); failed simulations are counted, never scored as zeros. "
        "95 % intervals: Wilson (shares), bootstrap over puzzles (means, medians, costs).\n"
    )
    for row in rows:
        print(
            f"{row['simulator']} on {row['backend']} ({row['model']}): "
            f"{len(row['puzzle_ids'])}/{half_size} puzzles, commits {', '.join(row['commits'])}"
            + (
                f", {row['replaced']} puzzle results replaced by later pieces"
                if row["replaced"]
                else ""
            )
        )
    print("\n" + markdown(rows, baseline_rows))
    for note in notes:
        print(note, file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"half": args.half, "rows": rows, "baselines": baseline_rows}, indent=1)
            + "\n"
        )
    return 0


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `open_backend` reads: ``--model``, ``--dtype``, ``--max-new-tokens``,
    ``--slots`` and ``--llamacpp-client`` (shared with ``bench_detection.py``)."""
    parser.add_argument("--model", help="hf: directory, .gguf or hub name; llamacpp: a .gguf")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--slots", type=int, default=1, help="llama.cpp server slots")
    parser.add_argument("--llamacpp-client", choices=("auto", "llamacpp", "openai"), default="auto")


def main(argv: list[str] | None = None) -> int:
    """``run`` or ``table``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate a range of a half; write one piece per simulator")
    r.add_argument("--half", choices=("dev", "test"), required=True)
    r.add_argument("--puzzles", default="0-3", help="inclusive range within the half: A-B or A")
    r.add_argument("--simulators", default="all-at-once,chat-logprob,json")
    r.add_argument("--backends", default="hf", help="hf and/or llamacpp")
    r.add_argument("--kw", action="append", default=[], help="NAME.KEY=VALUE (repeatable)")
    add_backend_arguments(r)
    r.add_argument("--concurrency", type=int, default=8)
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--neutral", help="also simulate this neutral explanation on every sentence")
    r.add_argument(
        "--neutral-only",
        action="store_true",
        help="simulate only the neutral explanation (joins earlier pieces in the table)",
    )
    t = sub.add_parser("table", help="merge the pieces of a half into the table")
    t.add_argument("--half", choices=("dev", "test"), required=True)
    t.add_argument("--dir", type=Path, default=RESULTS)
    t.add_argument("--commit", help="only pieces run at a commit starting with this")
    t.add_argument("--any-digest", action="store_true", help="keep pieces of other digests")
    t.add_argument("--json", type=Path, help="also write the rows here")
    t.add_argument(
        "--flag-below",
        type=float,
        default=0.1,
        help="a true explanation whose sensitivity is below this is counted as flagged",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return asyncio.run(run(args))
    return table_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
