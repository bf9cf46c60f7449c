"""The classification scorers (detection, fuzzing) on the shared puzzle benchmark
(benchmarks/puzzle_set/, frozen): does the judge score the true explanation above every false
one? Issue 17's target: with Qwen2.5-Coder-0.5B-Instruct (llama.cpp server and ``hf``) on the
test half, the true explanation's detection balanced accuracy is above every false one's in at
least 70 % of the puzzles, with at most 2 % failed judgements; and accuracy against the number
of excerpts per request measured.

``run``: for each puzzle of a range of one half, each scorer, each ``--per-request`` setting
and each backend, every explanation of the puzzle (the true one and every false one) is scored
with the library's `DetectionScorer` / `FuzzingScorer`, the judge being the backend's LLM (the
same LLM objects ``bench_simulators.py`` builds: llama.cpp's server on 127.0.0.1, or the
in-process ``hf`` provider)::

    python benchmarks/bench_detection.py run --half test --puzzles 0-33 \\
        --scorers detection,fuzzing --backends llamacpp --per-request 1,2,5,10

One piece per puzzle and backend is written after the puzzle (append-only, renamed into place
so a killed run leaves no half-written file and loses at most the puzzle in progress) into
``benchmarks/puzzle_set/results/detection/``; a rerun skips every (puzzle, scorer,
per-request) already in a piece of the same digest, half, backend and model (``--redo`` runs
them again; the later piece wins in the table).

``table``: merge the pieces of a half (per scorer x backend x model x per-request)::

    python benchmarks/bench_detection.py table --half test

What is judged. No explainer runs, so nothing of a puzzle was "seen": each puzzle becomes one
unit (`puzzle_record`: ``UnitId(model="puzzle:<id>")``, every sentence a top record and a
random record) whose `Splits` (`puzzle_splits`) put *every* sentence into the valid split,
which the scorers judge (train, calibration and test are empty). The caps ``n_positives`` and
``n_negatives`` are set above any puzzle's sentence count, so detection judges every sentence
once: the activating ones (a token at or above 0.2 x the puzzle's largest activation, the
scorers' firing rule) as positives, the others as negatives. `check_puzzle` makes sure each
puzzle has both, and that no sentence with a non-zero activation falls below the threshold
(every puzzle of the set passes). Fuzzing judges each activating sentence twice (its firing
tokens highlighted, and as many other tokens); a sentence with too few other tokens to
highlight is left out (``not_judged``: 4 of the 5 activating sentences of the test puzzle
``comments``, 1 of ``quoted-speech`` and 3 of ``string-literal`` on dev).
``negatives="hard"`` changes nothing here: hard negatives are those holding a token that fires
in the train split, which is empty.

Every explanation of a puzzle sees the same requests: which excerpts are judged, how they are
grouped into requests, their order within each request and fuzzing's wrong highlights depend
only on the record, the unit, the scorer's kind, its seed and ``excerpts_per_request``, never
on the explanation. The run checks it: each score's judged excerpts (in order) are
fingerprinted, and the piece says whether the fingerprints of a puzzle's explanations agree
(``same_excerpts``; the table counts disagreements). The plan of requests (their sizes and a
fingerprint of their contents) is recorded per puzzle and setting; the table notes settings
that sent exactly the same requests as another on every puzzle. Puzzles have 7 or 8 sentences,
so detection sends one request at 8 excerpts per request and above, and fuzzing (which never
puts both versions of a sentence in one request) two requests at 6 and above (at 5 and above on
the test half, where no puzzle has more than 5 activating sentences): 10 and 20 excerpts per
request send the same requests here, and so do 5 and 10 for fuzzing on the test half.

Explanations are scored one after the other (``--concurrency`` scores several at once), so each
one's wall time is its own; each score's requests are sent together, as the scorer does.

What the table counts, per scorer x backend x model x per-request (95 % intervals: Wilson for
shares, bootstrap over puzzles for means; ``bench_simulators``' helpers):

* truth first: the true explanation's balanced accuracy is strictly above every false one's
  (an explanation without a score ranks below every scored one; a tie is not first). The
  target: at least 70 % of the puzzles. Also by AUROC (puzzles where every explanation has
  one), and the truth above the decoy and above the near-miss (strictly).
* mean balanced accuracy of the true explanations and of the false ones (mean per puzzle).
* failed: failed judgements among all judgements (a score that raised counts all its planned
  judgements as failed). The target: at most 2 %.
* cost per puzzle (all its explanations): requests, prompt and completion tokens (the library's
  usage meter, `track_usage`), wall seconds.

Tune on dev, report test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import bench_simulators as sims  # noqa: E402
import puzzle_set  # noqa: E402

from neuron_explainer import ComponentInfo, Explanation, ScoringData  # noqa: E402
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId  # noqa: E402
from neuron_explainer.records.splits import HeldOutSet, SplitPlan, Splits  # noqa: E402
from neuron_explainer.scorers._examples import DEFAULT_FIRING_FRACTION, FiringRule  # noqa: E402
from neuron_explainer.scorers.classification import DetectionScorer, FuzzingScorer  # noqa: E402

FORMAT = "puzzle-detection-piece/1"
"""The format of a piece file (bump when its fields change meaning)."""
RESULTS = ROOT / "benchmarks" / "puzzle_set" / "results" / "detection"
"""Where pieces go by default (append-only; a folder of its own, so ``bench_simulators.py
table`` never reads them)."""
SCORERS: dict[str, type[DetectionScorer] | type[FuzzingScorer]] = {
    "detection": DetectionScorer,
    "fuzzing": FuzzingScorer,
}
EVERY = 64
"""``n_positives`` and ``n_negatives``: above any puzzle's sentence count, so every sentence is
judged (`check_puzzle` refuses a puzzle with more)."""
TARGET_FIRST = 0.70
TARGET_FAILED = 0.02


# Records ------------------------------------------------------------------------------------


def puzzle_unit(puzzle: puzzle_set.Puzzle) -> UnitId:
    """The puzzle's unit: named by its id, so the scorers' seeded shuffles and wrong highlights
    differ from puzzle to puzzle and never depend on the explanation."""
    return UnitId(model=f"puzzle:{puzzle.id}", layer=0, index=0)


def puzzle_excerpts(puzzle: puzzle_set.Puzzle) -> tuple[ActivationRecord, ...]:
    """Each sentence with its activations under the puzzle's rule, in the puzzle's order."""
    return tuple(
        ActivationRecord(tokens=tuple(tokens), activations=tuple(activations))
        for tokens, activations in puzzle.records()
    )


def puzzle_record(puzzle: puzzle_set.Puzzle) -> NeuronRecord:
    """The puzzle as a unit's record: every sentence is one of its top records (so its largest
    activation, which the firing rule is relative to, is the puzzle's) and one of its random
    records."""
    excerpts = puzzle_excerpts(puzzle)
    return NeuronRecord(
        unit=puzzle_unit(puzzle),
        top_records=tuple(sorted(excerpts, key=lambda r: -r.max_activation)),
        random_sample=excerpts,
        provenance=Provenance(
            model=f"puzzle:{puzzle.id}",
            dataset="benchmarks/puzzle_set",
            extra={"family": puzzle.family, "digest": puzzle_set.frozen()["sha256"]},
        ),
    )


def puzzle_splits(record: NeuronRecord) -> Splits:
    """Every sentence in the valid split (as a random record, so the silent ones can be
    detection's negatives); train, calibration and test empty. The plan only describes that:
    no scorer reads it."""
    n = len(record.random_sample)
    empty = HeldOutSet(top=(), random=())
    plan = SplitPlan(
        n_top_per_split=len(record.top_records),
        n_random_per_split=n,
        top={"train": (), "calibration": (), "valid": (), "test": ()},
        random={"calibration": (), "valid": tuple(range(n)), "test": ()},
        quantile={"calibration": (), "valid": (), "test": ()},
    )
    valid = HeldOutSet(top=(), random=record.random_sample)
    return Splits(plan=plan, train=(), calibration=empty, valid=valid, test=empty)


def puzzle_data(puzzle: puzzle_set.Puzzle) -> ScoringData:
    """What the scorers read for ``puzzle``: its record, and splits whose valid split holds
    every sentence."""
    record = puzzle_record(puzzle)
    return ScoringData(record, puzzle_splits(record), "valid")


def check_puzzle(
    puzzle: puzzle_set.Puzzle, fraction: float = DEFAULT_FIRING_FRACTION
) -> dict[str, int]:
    """How the puzzle's sentences fall under the scorers' firing rule at ``fraction``:
    ``activating``, ``silent``, ``ambiguous`` (neither: never judged), ``weak`` (silent yet
    with a non-zero activation, which the rule calls silent but the puzzle does not).

    Raises:
        ValueError: no activating or no silent sentence, an ambiguous or weak one, or more
            sentences than `EVERY`.
    """
    record = puzzle_record(puzzle)
    rule = FiringRule(fraction, record.max_activation)
    counts = {"sentences": len(record.random_sample), "activating": 0, "silent": 0}
    counts.update(ambiguous=0, weak=0)
    for excerpt in record.random_sample:
        if rule.fires(excerpt):
            counts["activating"] += 1
        elif rule.silent(excerpt):
            counts["silent"] += 1
            counts["weak"] += any(a != 0 for a in excerpt.activations)
        else:
            counts["ambiguous"] += 1
    problems = [k for k in ("activating", "silent") if not counts[k]]
    problems += [k for k in ("ambiguous", "weak") if counts[k]]
    if counts["sentences"] > EVERY:
        problems.append(f"more than {EVERY} sentences")
    if problems:
        raise ValueError(f"puzzle {puzzle.id} at firing fraction {fraction}: {problems} {counts}")
    return counts


# Scorers ------------------------------------------------------------------------------------


def build_scorer(name: str, llm: Any, per_request: int, kwargs: dict[str, Any]) -> Any:
    """``name``'s scorer judging with ``llm``, ``per_request`` excerpts per request, every
    sentence of a puzzle (caps at `EVERY`), and ``kwargs``.

    Raises:
        SystemExit: an unknown scorer.
    """
    if name not in SCORERS:
        raise SystemExit(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    options: dict[str, Any] = {"n_positives": EVERY, "excerpts_per_request": per_request}
    if name == "detection":
        options["n_negatives"] = EVERY
    return SCORERS[name](llm, **{**options, **kwargs})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def request_plan(scorer: Any, data: ScoringData) -> dict[str, Any]:
    """The requests the scorer sends for ``data`` whatever the explanation: their sizes, a
    fingerprint of their excerpts (in order, with highlights and labels), and the excerpts
    left unjudged. (Reads the scorers' private ``_choose``: the library has no public view of
    the grouping.)"""
    chosen = scorer._choose(data, scorer._rule(data))
    groups = [
        [[list(c.record.tokens), None if h is None else list(h), c.label] for c, h in group]
        for group in chosen.groups
    ]
    return {
        "requests": [len(g) for g in groups],
        "fingerprint": _digest(groups),
        "excerpts_fingerprint": _digest([item for g in groups for item in g]),
        "judgements": sum(len(g) for g in groups),
        "not_judged": chosen.not_judged,
    }


async def score_one(scorer: Any, text: str, data: ScoringData, planned: int) -> dict[str, Any]:
    """One explanation's score: balanced accuracy, AUROC, failures, each answer, cost.
    ``planned`` judgements count as failed if the scorer raises."""
    from neuron_explainer.llm.usage import track_usage

    explanation = Explanation(text=text, explainer=ComponentInfo(name="puzzle"))
    started = time.perf_counter()
    with track_usage() as meter:
        try:
            score = await scorer.ascore(explanation, data)
        except Exception as exc:  # counted, with its type: never a crash of the run
            outcome: dict[str, Any] = {
                "ok": False,
                "error_type": type(exc).__name__,
                "error": str(exc)[:2000],
                "judgements": planned,
                "failed": planned,
            }
        else:
            outcome = _score_fields(score)
    usage = meter.summary
    outcome.update(
        seconds=round(time.perf_counter() - started, 4),
        requests=usage.calls,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )
    return outcome


def _score_fields(score: Any) -> dict[str, Any]:
    m = score.metrics
    judged = [
        [list(j.record.tokens), None if j.highlighted is None else list(j.highlighted), j.label]
        for j in score.judgements
    ]
    reasons = Counter(j.failure.reason for j in score.judgements if j.failure is not None)
    return {
        "ok": True,
        "balanced_accuracy": m.balanced_accuracy.value,
        "pessimistic_balanced_accuracy": m.pessimistic_balanced_accuracy.value,
        "auroc": m.auroc.value,
        "positives": m.positives,
        "negatives": m.negatives,
        "judgements": m.positives + m.negatives,
        "failed": m.failed_positives + m.failed_negatives,
        "failure_reasons": dict(reasons),
        "not_judged": score.not_judged,
        "judged_fingerprint": _digest(judged),
        "answers": [
            [int(j.label), None if j.answer is None else int(j.answer), _round(j.p_yes)]
            for j in score.judgements
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


# Running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combo:
    """One scorer setting: the scorer's name, its constructor arguments and the excerpts per
    request."""

    scorer: str
    kwargs: dict[str, Any]
    per_request: int

    @property
    def label(self) -> str:
        """The scorer's name in the table (with its non-default arguments)."""
        return sims.label(self.scorer, self.kwargs)

    def key(self, puzzle_id: str) -> tuple[str, str, int]:
        """What a rerun checks to skip work done."""
        return (puzzle_id, self.label, self.per_request)


async def run_combo(
    puzzle: puzzle_set.Puzzle, combo: Combo, llm: Any, data: ScoringData, concurrency: int
) -> dict[str, Any]:
    """Every explanation of ``puzzle`` under one scorer setting (``concurrency`` at a time)."""
    scorer = build_scorer(combo.scorer, llm, combo.per_request, combo.kwargs)
    try:
        plan = request_plan(scorer, data)
    except Exception as exc:  # e.g. fuzzing with no sentence it can mislabel
        plan = {"requests": [], "fingerprint": None, "excerpts_fingerprint": None}
        plan.update(judgements=0, not_judged=None, error=f"{type(exc).__name__}: {exc}")
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> dict[str, Any]:
        async with gate:
            return await score_one(scorer, text, data, plan["judgements"])

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(text) for text in puzzle.explanations))
    prints = {o.get("judged_fingerprint") for o in outcomes if o["ok"]}
    return {
        "scorer": combo.scorer,
        "label": combo.label,
        "kwargs": combo.kwargs,
        "per_request": combo.per_request,
        "settings": sims.simulator_settings(scorer),
        "plan": plan,
        "same_excerpts": prints <= {plan["excerpts_fingerprint"]},
        "explanations": outcomes,
        "wall_seconds": round(time.perf_counter() - started, 4),
    }


async def run_puzzle(
    puzzle: puzzle_set.Puzzle, combos: Sequence[Combo], llm: Any, concurrency: int
) -> dict[str, Any]:
    """``puzzle`` under each scorer setting of ``combos``, as a piece records it."""
    fractions = {c.kwargs.get("firing_fraction", DEFAULT_FIRING_FRACTION) for c in combos}
    checks = {str(f): check_puzzle(puzzle, f) for f in sorted(fractions)}
    data = puzzle_data(puzzle)
    started = time.perf_counter()
    runs = [await run_combo(puzzle, combo, llm, data, concurrency) for combo in combos]
    return {
        "id": puzzle.id,
        "family": puzzle.family,
        "kinds": list(puzzle.kinds),
        "explanations": list(puzzle.explanations),
        "unit": str(data.record.unit),
        "sentences": checks,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 4),
    }


def write_piece(out: Path, piece: dict[str, Any]) -> Path:
    """Write ``piece`` to a new file in ``out``: written beside its name, then renamed into
    place (a killed run leaves no half-written piece; an existing file is never replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = piece["finished"].replace(":", "").replace("-", "").replace("+0000", "Z")
    name = f"{piece['half']}_{piece['puzzle']['id']}_{piece['backend']}_{stamp}_{os.getpid()}"
    safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "-", name)
    for n in range(1000):
        path = out / f"{safe}{f'_{n}' if n else ''}.json"
        if not path.exists():
            break
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(piece, indent=1) + "\n", encoding="utf-8")
    os.link(partial, path)  # fails rather than replace a file of the same name
    partial.unlink()
    return path


def read_pieces(out: Path, half: str, digest: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The pieces of ``half`` in ``out`` (of ``digest`` unless it is ``None``), oldest
    finished first, and notes on the files skipped."""
    pieces, notes = [], []
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            notes.append(f"skipped {path.name}: {exc}")
            continue
        if data.get("format") != FORMAT or data.get("half") != half:
            continue
        if digest is not None and data.get("digest") != digest:
            shown = str(data.get("digest"))[:12]
            notes.append(f"skipped {path.name}: digest {shown} is not {digest[:12]}")
            continue
        pieces.append(data)
    pieces.sort(key=lambda d: d.get("finished", ""))
    return pieces, notes


def model_key(model: str) -> str:
    """The model as the table groups it: a path's file name."""
    return Path(model).name


def done_keys(
    pieces: Iterable[dict[str, Any]], backend: str, model: str
) -> set[tuple[str, str, int]]:
    """The (puzzle id, scorer label, per-request) that pieces of ``backend`` and ``model`` hold."""
    return {
        (piece["puzzle"]["id"], run["label"], run["per_request"])
        for piece in pieces
        if piece["backend"] == backend and model_key(piece["model"]) == model_key(model)
        for run in piece["puzzle"]["runs"]
    }


@dataclass
class RunOptions:
    """What one ``run`` invocation was asked for."""

    half: str
    chosen: list[puzzle_set.Puzzle]
    combos: list[Combo]
    concurrency: int
    out: Path
    redo: bool = False
    digest: str = ""
    git: dict[str, Any] = field(default_factory=dict)


async def run_backend(
    backend: str, llm: Any, model: str, options: RunOptions, extra: dict[str, Any]
) -> list[Path]:
    """Every chosen puzzle on one backend, skipping settings done; a piece per puzzle."""
    pieces, _ = read_pieces(options.out, options.half, options.digest)
    done = set() if options.redo else done_keys(pieces, backend, model)
    written = []
    for puzzle in options.chosen:
        todo = [c for c in options.combos if c.key(puzzle.id) not in done]
        if not todo:
            print(f"  {puzzle.id}: done already, skipped", flush=True)
            continue
        started = sims._now()
        entry = await run_puzzle(puzzle, todo, llm, options.concurrency)
        piece = {
            "format": FORMAT,
            "digest": options.digest,
            "half": options.half,
            "backend": backend,
            "model": model,
            "llm": {
                "name": llm.name,
                "class": type(llm).__name__,
                "capabilities": sorted(llm.capabilities),
                **extra,
            },
            "concurrency": options.concurrency,
            "git": options.git,
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "started": started,
            "finished": sims._now(),
            "puzzle": entry,
        }
        written.append(write_piece(options.out, piece))
        for line in puzzle_lines(entry):
            print(f"  {backend}: {line}", flush=True)
    return written


def puzzle_lines(entry: dict[str, Any]) -> list[str]:
    """One line per scorer setting: each explanation's balanced accuracy, failures, time."""
    lines = []
    for run in entry["runs"]:
        shown = " ".join(_fmt(o.get("balanced_accuracy")) for o in run["explanations"])
        failed = sum(o["failed"] for o in run["explanations"])
        total = sum(o["judgements"] for o in run["explanations"])
        lines.append(
            f"{entry['id']:22s} {run['label']}@{run['per_request']}: BA true/false {shown}  "
            f"failed {failed}/{total}  {run['wall_seconds']}s"
            + ("" if run["same_excerpts"] else "  EXCERPTS DIFFER")
        )
    return lines


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def parse_combos(args: argparse.Namespace) -> list[Combo]:
    """The scorer settings asked for: each scorer at each per-request value.

    Raises:
        SystemExit: an unknown scorer, a per-request value below 1.
    """
    names = [n for n in args.scorers.split(",") if n]
    sizes = [int(k) for k in args.per_request.split(",") if k]
    kwargs = sims.parse_kwargs(args.kw)
    for name in [*names, *kwargs]:
        if name not in SCORERS:
            raise SystemExit(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    if not names or not sizes or min(sizes) < 1:
        raise SystemExit("--scorers and --per-request need at least one value each (>= 1)")
    return [Combo(name, kwargs.get(name, {}), k) for name in names for k in sizes]


def plan_summary(chosen: Sequence[puzzle_set.Puzzle], combos: Sequence[Combo]) -> list[str]:
    """Requests per puzzle (all explanations) for each setting, and the settings that send the
    same requests as an earlier one on every chosen puzzle (computed without a model)."""
    from neuron_explainer.testing import ScriptedLLM

    llm = ScriptedLLM()
    lines, seen = [], {}
    for combo in combos:
        plans = []
        for puzzle in chosen:
            scorer = build_scorer(combo.scorer, llm, combo.per_request, combo.kwargs)
            try:
                plans.append(request_plan(scorer, puzzle_data(puzzle)))
            except Exception:  # the run records it per puzzle
                plans.append({"requests": [], "fingerprint": None})
        requests = sum(len(p["requests"]) for p in plans) * statistics.fmean(
            len(p.explanations) for p in chosen
        )
        prints = tuple(p["fingerprint"] for p in plans)
        same = seen.setdefault((combo.label, prints), combo.per_request)
        note = "" if same == combo.per_request else f" (the same requests as {same} per request)"
        lines.append(
            f"{combo.label} at {combo.per_request} per request: "
            f"{requests / len(chosen):.1f} requests per puzzle{note}"
        )
    return lines


async def run(args: argparse.Namespace) -> int:
    """The ``run`` command."""
    half = puzzle_set.puzzles(args.half)
    start, end = sims.parse_range(args.puzzles, len(half))
    options = RunOptions(
        half=args.half,
        chosen=half[start : end + 1],
        combos=parse_combos(args),
        concurrency=args.concurrency,
        out=args.out,
        redo=args.redo,
        digest=puzzle_set.frozen()["sha256"],
        git=sims.git_state(),
    )
    for puzzle in options.chosen:
        check_puzzle(puzzle)
    for line in plan_summary(options.chosen, options.combos):
        print(line, flush=True)
    model = args.model or sims.default_model()
    for backend in [b for b in args.backends.split(",") if b]:
        with sims.open_backend(backend, model, args) as (llm, used, extra):
            await run_backend(backend, llm, used, options, extra)
    return 0


# The table ----------------------------------------------------------------------------------


def _key(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else value


@dataclass
class PuzzleScores:
    """One puzzle under one scorer setting on one backend: each explanation's scores and
    what they cost."""

    id: str
    kinds: list[str]
    balanced_accuracy: list[float | None]
    auroc: list[float | None]
    judgements: int
    failed: int
    errors: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    same_excerpts: bool
    fingerprint: str | None

    @classmethod
    def from_run(cls, puzzle: dict[str, Any], run: dict[str, Any]) -> PuzzleScores:
        """From a piece's puzzle entry and one of its runs."""
        outcomes = run["explanations"]
        return cls(
            id=puzzle["id"],
            kinds=list(puzzle["kinds"]),
            balanced_accuracy=[o.get("balanced_accuracy") for o in outcomes],
            auroc=[o.get("auroc") for o in outcomes],
            judgements=sum(o["judgements"] for o in outcomes),
            failed=sum(o["failed"] for o in outcomes),
            errors=sum(not o["ok"] for o in outcomes),
            requests=sum(o["requests"] for o in outcomes),
            prompt_tokens=sum(o["prompt_tokens"] for o in outcomes),
            completion_tokens=sum(o["completion_tokens"] for o in outcomes),
            seconds=sum(o["seconds"] for o in outcomes),
            same_excerpts=bool(run["same_excerpts"]),
            fingerprint=run["plan"].get("fingerprint"),
        )

    @staticmethod
    def first(values: Sequence[float | None]) -> bool:
        """Whether the truth (``values[0]``) is scored and strictly above every false one (an
        unscored explanation ranks below every scored one)."""
        return values[0] is not None and all(_key(values[0]) > _key(v) for v in values[1:])

    def tied(self) -> bool:
        """Whether the truth ties the best false explanation (by balanced accuracy)."""
        keys = [_key(v) for v in self.balanced_accuracy]
        return keys[0] > -math.inf and keys[0] == max(keys[1:])

    def above(self, kind: str) -> bool | None:
        """Whether the truth is strictly above every false explanation of ``kind`` (``None``
        when the puzzle has none)."""
        keys = [_key(v) for v in self.balanced_accuracy]
        others = [k for k, kd in zip(keys, self.kinds, strict=True) if kd == kind]
        return all(keys[0] > k for k in others) if others else None

    def mean_false(self) -> float | None:
        """The mean balanced accuracy of the scored false explanations."""
        values = [v for v in self.balanced_accuracy[1:] if v is not None]
        return statistics.fmean(values) if values else None


GroupKey = tuple[str, str, str, int]
"""(scorer label, backend, model, excerpts per request)."""


@dataclass
class Group:
    """Everything measured for one scorer setting on one backend and model."""

    label: str
    backend: str
    model: str
    per_request: int
    puzzles: dict[str, PuzzleScores] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)
    replaced: int = 0
    logprobs: bool = False


def merge(pieces: Iterable[dict[str, Any]]) -> dict[GroupKey, Group]:
    """Pieces (oldest finished first) into groups; a later piece wins a puzzle covered twice."""
    groups: dict[GroupKey, Group] = {}
    for piece in pieces:
        git = piece.get("git") or {}
        commit = str(git.get("commit") or "?")[:10] + ("+" if git.get("dirty") else "")
        for run in piece["puzzle"]["runs"]:
            key = (run["label"], piece["backend"], model_key(piece["model"]), run["per_request"])
            group = groups.setdefault(key, Group(*key))
            group.commits.add(commit)
            group.logprobs = "chat_logprobs" in piece["llm"].get("capabilities", ())
            group.replaced += piece["puzzle"]["id"] in group.puzzles
            group.puzzles[piece["puzzle"]["id"]] = PuzzleScores.from_run(piece["puzzle"], run)
    return groups


def _share(flags: Sequence[bool | None]) -> dict[str, Any]:
    known = [f for f in flags if f is not None]
    return sims._share(sum(known), len(known))


def _mean_of(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _per_puzzle(what: str) -> Any:
    return lambda rs: _mean_of(float(getattr(r, what)) for r in rs)


def summarize(group: Group, half_size: int) -> dict[str, Any]:
    """The table's row for ``group``: ranking shares, mean scores, failures, costs, verdict."""
    results = list(group.puzzles.values())
    n = len(results)
    with_auroc = [r for r in results if all(v is not None for v in r.auroc)]

    def mean_true(rs: Sequence[PuzzleScores]) -> float | None:
        return _mean_of(r.balanced_accuracy[0] for r in rs)

    def mean_false(rs: Sequence[PuzzleScores]) -> float | None:
        return _mean_of(r.mean_false() for r in rs)

    judgements = sum(r.judgements for r in results)
    row: dict[str, Any] = {
        "scorer": group.label,
        "backend": group.backend,
        "model": group.model,
        "per_request": group.per_request,
        "commits": sorted(group.commits),
        "puzzle_ids": sorted(group.puzzles),
        "puzzles": n,
        "half_size": half_size,
        "replaced": group.replaced,
        "truth_first": _share([r.first(r.balanced_accuracy) for r in results]),
        "truth_tied": _share([r.tied() for r in results]),
        "truth_first_auroc": _share([r.first(r.auroc) for r in with_auroc]),
        "above_decoy": _share([r.above("decoy") for r in results]),
        "above_near_miss": _share([r.above("near_miss") for r in results]),
        "mean_ba_true": sims._interval(sims.bootstrap(results, mean_true), n),
        "mean_ba_false": sims._interval(sims.bootstrap(results, mean_false), n),
        "judgements": judgements,
        "failed": sims._share(sum(r.failed for r in results), judgements),
        "errors": sum(r.errors for r in results),
        "excerpts_differ": sum(not r.same_excerpts for r in results),
    }
    for what in ("requests", "prompt_tokens", "completion_tokens", "seconds"):
        row[f"{what}_per_puzzle"] = sims._interval(sims.bootstrap(results, _per_puzzle(what)), n)
    row["verdict"] = verdict(row)
    return row


def verdict(row: dict[str, Any]) -> dict[str, str]:
    """PASS or FAIL against each target (on the point estimates), ``partial`` when the half is
    not covered."""
    first, failed = row["truth_first"], row["failed"]
    out = {
        "truth_first": "PASS" if first["n"] and first["value"] >= TARGET_FIRST else "FAIL",
        "failed": "PASS" if failed["n"] and failed["value"] <= TARGET_FAILED else "FAIL",
    }
    if row["puzzles"] < row["half_size"]:
        out = {k: f"{v} (partial: {row['puzzles']}/{row['half_size']})" for k, v in out.items()}
    return out


def same_requests(groups: dict[GroupKey, Group]) -> list[str]:
    """Notes on settings that sent the same requests as a smaller per-request setting of the
    same scorer, backend and model, on every puzzle both cover."""
    notes = []
    for (label, backend, model, k), group in sorted(groups.items()):
        for (label2, backend2, model2, k2), other in sorted(groups.items()):
            if (label2, backend2, model2) != (label, backend, model) or k2 >= k:
                continue
            common = set(group.puzzles) & set(other.puzzles)
            if common and all(
                group.puzzles[p].fingerprint == other.puzzles[p].fingerprint for p in common
            ):
                notes.append(
                    f"{label} on {backend} at {k} per request sent the same requests as at "
                    f"{k2} on every puzzle both cover ({len(common)})"
                )
                break
    return notes


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The discrimination table and the reliability and cost table."""
    pct, num = sims._pct, sims._num
    rows = sims._with_models(list(rows))
    lines = [
        "| scorer | backend | per request | puzzles | truth first (BA) | truth tied | "
        "truth first (AUROC) | truth > decoy | truth > near-miss | mean BA true "
        "| mean BA false | target ≥ 70 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scorer']} | {r['backend']} | {r['per_request']} | {r['puzzles']} "
            f"| {pct(r['truth_first'])} | {pct(r['truth_tied'])} "
            f"| {pct(r['truth_first_auroc'])} | {pct(r['above_decoy'])} "
            f"| {pct(r['above_near_miss'])} | {num(r['mean_ba_true'])} "
            f"| {num(r['mean_ba_false'])} | {r['verdict']['truth_first']} |"
        )
    lines += [
        "",
        "| scorer | backend | per request | judgements | failed | scores that raised "
        "| requests / puzzle | prompt tokens / puzzle | completion tokens / puzzle "
        "| s / puzzle | target ≤ 2 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scorer']} | {r['backend']} | {r['per_request']} | {r['judgements']} "
            f"| {pct(r['failed'])} | {r['errors']} | {num(r['requests_per_puzzle'], 1)} "
            f"| {num(r['prompt_tokens_per_puzzle'], 0)} "
            f"| {num(r['completion_tokens_per_puzzle'], 0)} "
            f"| {num(r['seconds_per_puzzle'], 1)} | {r['verdict']['failed']} |"
        )
    return "\n".join(lines)


def table(groups: dict[GroupKey, Group], half_size: int) -> list[dict[str, Any]]:
    """One row per group, sorted by scorer, backend, model, then excerpts per request."""
    return [summarize(groups[key], half_size) for key in sorted(groups)]


def table_command(args: argparse.Namespace) -> int:
    """The ``table`` command."""
    digest = None if args.any_digest else puzzle_set.frozen()["sha256"]
    pieces, notes = read_pieces(args.dir, args.half, digest)
    if args.commit:
        pieces = [p for p in pieces if str(p["git"].get("commit") or "").startswith(args.commit)]
    groups = merge(pieces)
    half_size = len(puzzle_set.puzzles(args.half))
    rows = table(groups, half_size)
    print(
        f"Half {args.half} of the puzzle set {puzzle_set.frozen()['sha256'][:12]} "
        f"({half_size} puzzles). Truth first: the true explanation strictly above every false "
        "one (ties are not first). Failed judgements are counted, never scored. 95 % "
        "intervals: Wilson (shares), bootstrap over puzzles (means).\n"
    )
    for row in rows:
        print(
            f"{row['scorer']} at {row['per_request']} per request on {row['backend']} "
            f"({row['model']}): {row['puzzles']}/{half_size} puzzles, commits "
            f"{', '.join(row['commits'])}"
            + (f", {row['replaced']} replaced by later pieces" if row["replaced"] else "")
            + (f", EXCERPTS DIFFERED in {row['excerpts_differ']}" if row["excerpts_differ"] else "")
        )
    print("\n" + markdown(rows))
    for note in same_requests(groups):
        print(f"\n{note}")
    for note in notes:
        print(note, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"half": args.half, "rows": rows}, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``run`` or ``table``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="score a range of a half; write one piece per puzzle")
    r.add_argument("--half", choices=("dev", "test"), required=True)
    r.add_argument("--puzzles", default="0-3", help="inclusive range within the half: A-B or A")
    r.add_argument("--scorers", default="detection,fuzzing")
    r.add_argument(
        "--per-request",
        default="1,2,5,10",
        help="excerpts per request, comma-separated (20 = 10 here)",
    )
    r.add_argument("--backends", default="llamacpp", help="hf and/or llamacpp")
    r.add_argument("--kw", action="append", default=[], help="SCORER.KEY=VALUE (repeatable)")
    sims.add_backend_arguments(r)
    r.add_argument("--concurrency", type=int, default=1, help="explanations scored at once")
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--redo", action="store_true", help="run settings already in a piece again")
    t = sub.add_parser("table", help="merge the pieces of a half into the table")
    t.add_argument("--half", choices=("dev", "test"), required=True)
    t.add_argument("--dir", type=Path, default=RESULTS)
    t.add_argument("--commit", help="only pieces run at a commit starting with this")
    t.add_argument("--any-digest", action="store_true", help="keep pieces of other digests")
    t.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.command == "run":
        return asyncio.run(run(args))
    return table_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
