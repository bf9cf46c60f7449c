"""``bench_classification.py judged``: the planted units scored by a real judge LLM, to
measure accuracy against ``excerpts_per_request`` (issue 17). The puzzle benchmark cannot
(7 or 8 sentences per puzzle); a planted unit's valid split has 20 activating and 20 silent
excerpts, so detection judges 40 excerpts and fuzzing up to 40 (each activating excerpt
twice): 8, 4 and 2 requests per explanation at 5, 10 and 20 excerpts per request.

For each planted unit (built by ``bench_classification.py``: `Case`), each scorer and each
``--per-request`` setting (`Setting`), two explanations are scored one after the other with
the library's `DetectionScorer` / `FuzzingScorer` at their defaults but for
``excerpts_per_request``: the unit's own description (``Planted.explanation``, written as an
explainer would: "numbers written with digits") and a false one, the next unit's description
(the last unit's false one is the first's), so the pairs never depend on ``--units``. Both see
the same requests (`request_plan`, checked per piece: ``same_excerpts``). The judge is the LLM
``bench_simulators.open_backend`` gives: llama.cpp's server on 127.0.0.1, or the in-process
``hf`` provider.

One piece per (unit, setting) is written when it is done (to a name of its own beside the
final one, then renamed into place) into ``benchmarks/results/classification_judged/``; its
name holds the backend, the model, the unit, the setting and a key of what was judged (the
explanations, the scorer's settings, the prompt version and the requests' fingerprint). A
killed run loses at most the piece in progress; a rerun skips every piece already there, and
starts no backend when nothing is left. The table is built from the pieces of the units and
settings asked for, so a rerun prints the whole of it.

Reported per scorer x per-request: mean balanced accuracy of the true explanations and of the
false ones (95 % bootstrap intervals over units), the share of units whose true explanation
scores strictly above its false one (Wilson interval; an unscored explanation ranks below a
scored one, a tie is not above), the paired change in the true explanations' balanced accuracy
and in the true - false gap against the smallest per-request setting of the scorer, mean AUROC
(when the judge gives logprobs), the true explanations' hit rate on activating excerpts and
correct-rejection rate on the others, failed judgements with their reasons, and per unit (both
explanations): requests, prompt and completion tokens (the library's usage meter,
`track_usage`) and wall seconds. Before running, the requests per unit and setting are
counted without a model, and the run time estimated from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import bench_detection as det  # noqa: E402
import bench_simulators as sims  # noqa: E402

from neuron_explainer import ComponentInfo, Explanation, ScoringData  # noqa: E402
from neuron_explainer.scorers.classification import PROMPT_VERSION  # noqa: E402
from neuron_explainer.testing import ScriptedLLM  # noqa: E402

FORMAT = "classification-judged-piece/1"
"""The format of a piece file (bump when its fields change meaning)."""
OUT = ROOT / "benchmarks" / "results" / "classification_judged"
SIDES = ("true", "false")
SECONDS_PER_REQUEST = 2.5
"""The run-time estimate's default: Qwen2.5-Coder-0.5B over llama.cpp on this machine's two
busy cores, for a request of about 500 prompt tokens (10 excerpts)."""
TOKENS_PER_REQUEST = 500


@dataclass(frozen=True)
class Case:
    """A planted unit as judged: what the scorers read, its true explanation, and the false
    one (another unit's, ``false_of``)."""

    name: str
    kind: str
    index: int
    data: ScoringData
    true: str
    false: str
    false_of: str
    firing: int = 0


@dataclass(frozen=True)
class Setting:
    """A scorer at one number of excerpts per request."""

    scorer: str
    per_request: int
    answer: str = "json"

    @property
    def label(self) -> str:
        return f"{self.scorer}@{'yesno' if self.answer == 'yesno' else self.per_request}"


def parse_settings(scorers: str, per_request: str) -> list[Setting]:
    """Each scorer at each per-request value, scorer by scorer, smallest value first.

    Raises:
        SystemExit: an unknown scorer, no value, or a value below 1.
    """
    names = [n for n in scorers.split(",") if n]
    values = [k for k in per_request.split(",") if k]
    yesno = "yesno" in values  # one excerpt per request, answered yes or no
    try:
        sizes = sorted({int(k) for k in values if k != "yesno"})
    except ValueError as exc:
        raise SystemExit(f"--per-request: {exc}") from None
    for name in names:
        if name not in det.SCORERS:
            raise SystemExit(f"unknown scorer {name!r}; choose from {', '.join(det.SCORERS)}")
    if not names or not (sizes or yesno) or (sizes and sizes[0] < 1):
        raise SystemExit("--scorers and --per-request need at least one value each (>= 1)")
    return [
        *(Setting(name, k) for name in names for k in sizes),
        *(Setting(name, 1, "yesno") for name in names if yesno),
    ]


def build_scorer(setting: Setting, llm: Any) -> Any:
    """The setting's scorer judging with ``llm``: the defaults but for the excerpts per
    request (or the yes/no answer)."""
    if setting.answer == "yesno":
        return det.SCORERS[setting.scorer](llm, answer="yesno")
    return det.SCORERS[setting.scorer](llm, excerpts_per_request=setting.per_request)


# Planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One (unit, setting): the requests it sends, what they cost at best, and its piece."""

    case: Case
    setting: Setting
    plan: dict[str, Any]
    settings: dict[str, Any]
    key: str
    path: Path


def _explanation(text: str) -> Explanation:
    return Explanation(text=text, explainer=ComponentInfo(name="planted"))


def plan_job(case: Case, setting: Setting, out: Path, backend: str, model: str) -> Job:
    """The job of ``case`` under ``setting`` on ``backend`` and ``model``, planned without a
    model: the requests (`bench_detection.request_plan`) and their estimated tokens for both
    explanations (no retries)."""
    scorer = build_scorer(setting, ScriptedLLM())
    try:
        plan = det.request_plan(scorer, case.data)
    except Exception as exc:  # e.g. fuzzing with no excerpt it can mislabel: run and record it
        plan = {"requests": [], "fingerprint": None, "excerpts_fingerprint": None}
        plan.update(judgements=0, not_judged=None, error=f"{type(exc).__name__}: {exc}")
    estimates = [scorer.estimate(_explanation(text), case.data) for text in (case.true, case.false)]
    plan["estimate"] = {
        what: sum(getattr(e, what) for e in estimates)
        for what in ("requests", "prompt_tokens", "completion_tokens")
    }
    settings = sims.simulator_settings(scorer)
    key = det._digest(
        {
            "format": FORMAT,
            "prompt_version": PROMPT_VERSION,
            "unit": case.name,
            "true": case.true,
            "false": case.false,
            "settings": settings,
            "plan": plan["fingerprint"],
        }
    )
    per = "yesno" if setting.answer == "yesno" else setting.per_request
    name = f"{backend}_{det.model_key(model)}_{case.name}_{setting.scorer}_{per}"
    path = out / f"{re.sub(r'[^A-Za-z0-9_.=,-]+', '-', name)}_{key}.json"
    return Job(case, setting, plan, settings, key, path)


def plan_jobs(
    cases: Sequence[Case], settings: Sequence[Setting], out: Path, backend: str, model: str
) -> list[Job]:
    """Every (unit, setting), unit by unit (so a stopped run has whole units)."""
    return [plan_job(c, s, out, backend, model) for c in cases for s in settings]


def read_piece(path: Path) -> dict[str, Any] | None:
    """The piece at ``path``, or ``None`` when it is missing or not a whole piece."""
    try:
        piece = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return piece if isinstance(piece, dict) and piece.get("format") == FORMAT else None


def write_piece(path: Path, piece: dict[str, Any]) -> None:
    """Write ``piece`` beside ``path``, then rename it into place (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(piece, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def estimate_lines(
    jobs: Sequence[Job], todo: Sequence[Job], seconds_per_request: float = SECONDS_PER_REQUEST
) -> list[str]:
    """What the run will send: requests and estimated tokens per unit for each setting (both
    explanations, no retries), and the run time of what is left, at ``seconds_per_request``
    per request and at that much per `TOKENS_PER_REQUEST` prompt tokens."""
    lines = [
        "requests per unit (true + false explanation; no retries), planned without a model:",
        "| scorer | per request | requests / unit | prompt tokens / unit (est.) "
        "| completion tokens / unit (est.) |",
        "|---|---:|---:|---:|---:|",
    ]
    by_setting: dict[Setting, list[Job]] = {}
    for job in jobs:
        by_setting.setdefault(job.setting, []).append(job)
    for setting, group in by_setting.items():
        means = {
            what: statistics.fmean(j.plan["estimate"][what] for j in group)
            for what in ("requests", "prompt_tokens", "completion_tokens")
        }
        lines.append(
            f"| {setting.scorer} | {setting.per_request} | {means['requests']:.1f} "
            f"| {means['prompt_tokens']:,.0f} | {means['completion_tokens']:,.0f} |"
        )
    requests = sum(j.plan["estimate"]["requests"] for j in todo)
    prompt = sum(j.plan["estimate"]["prompt_tokens"] for j in todo)
    units = len({j.case.name for j in jobs})
    by_requests = requests * seconds_per_request / 60
    by_tokens = prompt / TOKENS_PER_REQUEST * seconds_per_request / 60
    lines.append(
        f"{units} units x {len(by_setting)} settings: {len(jobs) - len(todo)} of {len(jobs)} "
        f"pieces done; left: {requests} requests, ~{prompt:,} prompt tokens, about "
        f"{by_requests:.0f} min at {seconds_per_request:g} s per request "
        f"({by_tokens:.0f} min at {seconds_per_request:g} s per {TOKENS_PER_REQUEST} prompt "
        "tokens)"
    )
    return lines


# Running ------------------------------------------------------------------------------------


async def run_job(job: Job, llm: Any) -> dict[str, Any]:
    """Both explanations of ``job`` scored one after the other (each score's requests sent
    together, as the scorer does)."""
    scorer = build_scorer(job.setting, llm)
    started = time.perf_counter()
    outcomes = {}
    for side, text in zip(SIDES, (job.case.true, job.case.false), strict=True):
        outcomes[side] = {"text": text} | await det.score_one(
            scorer, text, job.case.data, job.plan["judgements"]
        )
    outcomes["false"]["of"] = job.case.false_of
    prints = {o.get("judged_fingerprint") for o in outcomes.values() if o["ok"]}
    return {
        **outcomes,
        "same_excerpts": prints <= {job.plan["excerpts_fingerprint"]},
        "wall_seconds": round(time.perf_counter() - started, 4),
    }


async def run_jobs(
    jobs: Sequence[Job], llm: Any, backend: str, model: str, meta: dict[str, Any] | None = None
) -> list[Path]:
    """Each job without a piece yet, a piece written after each; the paths written."""
    meta = meta or {}
    written = []
    for job in jobs:
        if read_piece(job.path) is not None:
            continue
        started = sims._now()
        outcome = await run_job(job, llm)
        piece = {
            "format": FORMAT,
            "key": job.key,
            "backend": backend,
            "model": model,
            "llm": {
                "name": llm.name,
                "class": type(llm).__name__,
                "capabilities": sorted(llm.capabilities),
                **meta.get("extra", {}),
            },
            "git": meta.get("git", {}),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "prompt_version": PROMPT_VERSION,
            "started": started,
            "finished": sims._now(),
            "unit": {
                "name": job.case.name,
                "kind": job.case.kind,
                "index": job.case.index,
                "id": str(job.case.data.record.unit),
                "firing_windows": job.case.firing,
            },
            "scorer": job.setting.scorer,
            "per_request": job.setting.per_request,
            "answer": job.setting.answer,
            "settings": job.settings,
            "plan": job.plan,
            **outcome,
        }
        write_piece(job.path, piece)
        written.append(job.path)
        print(f"  {piece_line(piece)}", flush=True)
    return written


def piece_line(piece: dict[str, Any]) -> str:
    """One line: the unit, the setting, both balanced accuracies, failures, cost."""
    t, f = piece["true"], piece["false"]
    failed = t["failed"] + f["failed"]
    judged = t["judgements"] + f["judgements"]
    return (
        f"{piece['unit']['name']:14s} {piece['scorer']}@"
        f"{'yesno' if piece.get('answer') == 'yesno' else piece['per_request']}: BA true "
        f"{det._fmt(t.get('balanced_accuracy'))} false {det._fmt(f.get('balanced_accuracy'))}  "
        f"failed {failed}/{judged}  {t['requests'] + f['requests']} requests  "
        f"{piece['wall_seconds']:.1f}s" + ("" if piece["same_excerpts"] else "  EXCERPTS DIFFER")
    )


# The table ----------------------------------------------------------------------------------


def _ba(piece: dict[str, Any], side: str) -> float | None:
    value = piece[side].get("balanced_accuracy")
    return None if value is None or math.isnan(value) else value


def _rates(piece: dict[str, Any]) -> tuple[float | None, float | None]:
    """The true explanation's hit rate (yes on activating excerpts) and correct-rejection
    rate (no on the others), over the judgements that did not fail."""
    answers = [(label, answer) for label, answer, _ in piece["true"].get("answers", [])]
    out = []
    for wanted in (1, 0):
        given = [a for label, a in answers if label == wanted and a is not None]
        out.append(sum(a == wanted for a in given) / len(given) if given else None)
    return out[0], out[1]


def _mean_interval(
    pieces: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]
) -> dict[str, Any]:
    def mean(ps: Sequence[dict[str, Any]]) -> float | None:
        return det._mean_of(value(p) for p in ps)

    return sims._interval(sims.bootstrap(pieces, mean), len(pieces))


def _gap(piece: dict[str, Any]) -> float | None:
    t, f = _ba(piece, "true"), _ba(piece, "false")
    return None if t is None or f is None else t - f


def _paired(
    pieces: Sequence[dict[str, Any]],
    base: Sequence[dict[str, Any]],
    value: Callable[[dict[str, Any]], float | None],
) -> dict[str, Any]:
    """The mean change of ``value`` from ``base`` to ``pieces`` over the units both scored."""
    before = {p["unit"]["name"]: value(p) for p in base}
    diffs = []
    for p in pieces:
        now, then = value(p), before.get(p["unit"]["name"])
        if now is not None and then is not None:
            diffs.append(now - then)
    return sims._interval(sims.bootstrap(diffs, det._mean_of), len(diffs))


def failure_reasons(pieces: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Failed judgements by reason; a score that raised counts its planned judgements under
    its exception type."""
    reasons: Counter[str] = Counter()
    for piece in pieces:
        for side in SIDES:
            outcome = piece[side]
            if outcome["ok"]:
                reasons.update(outcome.get("failure_reasons", {}))
            else:
                reasons[f"score raised {outcome['error_type']}"] += max(outcome["failed"], 1)
    return dict(reasons.most_common())


def summarize(
    setting: Setting, pieces: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]] | None
) -> dict[str, Any]:
    """The table's row for ``setting`` (``base``: the pieces of the scorer's smallest
    per-request setting, which the paired changes are against; ``None`` for that one)."""
    above = [det._key(_ba(p, "true")) > det._key(_ba(p, "false")) for p in pieces]
    tied = [_ba(p, "true") is not None and _ba(p, "true") == _ba(p, "false") for p in pieces]
    judgements = sum(p[s]["judgements"] for p in pieces for s in SIDES)
    failed = sum(p[s]["failed"] for p in pieces for s in SIDES)
    row: dict[str, Any] = {
        "scorer": setting.scorer,
        "per_request": "yesno" if setting.answer == "yesno" else setting.per_request,
        "units": len(pieces),
        "unit_names": [p["unit"]["name"] for p in pieces],
        "ba_true": _mean_interval(pieces, lambda p: _ba(p, "true")),
        "ba_false": _mean_interval(pieces, lambda p: _ba(p, "false")),
        "true_above_false": sims._share(sum(above), len(pieces)),
        "tied": sum(tied),
        "auroc_true": det._mean_of(p["true"].get("auroc") for p in pieces),
        "auroc_false": det._mean_of(p["false"].get("auroc") for p in pieces),
        "hit_rate_true": det._mean_of(_rates(p)[0] for p in pieces),
        "rejection_rate_true": det._mean_of(_rates(p)[1] for p in pieces),
        "judgements": judgements,
        "failed": sims._share(failed, judgements),
        "failure_reasons": failure_reasons(pieces),
        "scores_raised": sum(not p[s]["ok"] for p in pieces for s in SIDES),
        "excerpts_differ": sum(not p["same_excerpts"] for p in pieces),
    }
    if base is not None:
        row["vs_per_request"] = base[0]["per_request"] if base else None
        row["change_ba_true"] = _paired(pieces, base, lambda p: _ba(p, "true"))
        row["change_gap"] = _paired(pieces, base, _gap)
    for what in ("requests", "prompt_tokens", "completion_tokens"):
        row[f"{what}_per_unit"] = _mean_interval(
            pieces, lambda p, w=what: float(sum(p[s][w] for s in SIDES))
        )
    row["seconds_per_unit"] = _mean_interval(pieces, lambda p: float(p["wall_seconds"]))
    return row


def table(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One row per setting of ``jobs``, from the pieces there are (a setting with none is
    left out)."""
    pieces: dict[Setting, list[dict[str, Any]]] = {}
    for job in jobs:
        piece = read_piece(job.path)
        group = pieces.setdefault(job.setting, [])
        if piece is not None:
            group.append(piece)
    rows = []
    smallest: dict[str, Setting] = {}
    for setting in sorted(pieces, key=lambda s: (s.scorer, s.answer, s.per_request)):
        if not pieces[setting]:
            continue
        first = smallest.setdefault(setting.scorer, setting)
        base = None if first == setting else pieces[first]
        rows.append(summarize(setting, pieces[setting], base))
    return rows


def _opt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The accuracy table and the reliability and cost table."""
    pct, num = sims._pct, sims._num
    lines = [
        "| scorer | per request | units | BA true | BA false | true > false "
        "| Δ BA true | Δ (true - false) | AUROC true / false | hits / rejections (true) |",
        "|---|---:|---:|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_per_request")
        change = (
            (f"{num(r['change_ba_true'])} vs {vs}", f"{num(r['change_gap'])} vs {vs}")
            if "change_ba_true" in r
            else ("(base)", "(base)")
        )
        lines.append(
            f"| {r['scorer']} | {r['per_request']} | {r['units']} | {num(r['ba_true'])} "
            f"| {num(r['ba_false'])} | {pct(r['true_above_false'])} ({r['tied']} tied) "
            f"| {change[0]} | {change[1]} "
            f"| {_opt(r['auroc_true'])} / {_opt(r['auroc_false'])} "
            f"| {_opt(r['hit_rate_true'])} / {_opt(r['rejection_rate_true'])} |"
        )
    lines += [
        "",
        "| scorer | per request | judgements | failed | reasons | scores raised "
        "| requests / unit | prompt tokens / unit | completion tokens / unit | s / unit |",
        "|---|---:|---:|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in r["failure_reasons"].items()) or "-"
        lines.append(
            f"| {r['scorer']} | {r['per_request']} | {r['judgements']} | {pct(r['failed'])} "
            f"| {reasons} | {r['scores_raised']} | {num(r['requests_per_unit'], 1)} "
            f"| {num(r['prompt_tokens_per_unit'], 0)} "
            f"| {num(r['completion_tokens_per_unit'], 0)} "
            f"| {num(r['seconds_per_unit'], 1)} |"
        )
    return "\n".join(lines)


# The command --------------------------------------------------------------------------------


async def run_backend(args: argparse.Namespace, model: str, todo: Sequence[Job]) -> list[Path]:
    """``todo`` with the judge of ``args.backend`` (started here, stopped after)."""
    meta = {"git": sims.git_state()}
    with sims.open_backend(args.backend, model, args) as (llm, used, extra):
        print(f"judge: {llm.name} ({type(llm).__name__}) on {args.backend}", flush=True)
        return await run_jobs(todo, llm, args.backend, used, meta | {"extra": extra})


def main(args: argparse.Namespace, cases: Sequence[Case]) -> Path | None:
    """The ``judged`` command for ``cases``: the estimate, the run of what is not done yet
    (starting the backend only then), the table; the summary file written, if any piece."""
    settings = parse_settings(args.scorers, args.per_request)
    model = args.model or sims.default_model()
    jobs = plan_jobs(cases, settings, args.out, args.backend, model)
    todo = [j for j in jobs if read_piece(j.path) is None]
    for line in estimate_lines(jobs, todo, args.seconds_per_request):
        print(line, flush=True)
    unplanned = {j.case.name: j.plan["error"] for j in jobs if "error" in j.plan}
    for name, error in unplanned.items():
        print(f"  {name}: cannot be planned ({error}); its scores will fail", flush=True)
    if todo:
        asyncio.run(run_backend(args, model, todo))
    rows = table(jobs)
    if not rows:
        print("no pieces: nothing to report")
        return None
    print(
        "\nBA: balanced accuracy, mean over units [95 % bootstrap interval]; true > false: "
        "share of units [Wilson]; Δ: paired change against the scorer's smallest per-request "
        "setting, over units both scored. Per unit: both explanations.\n"
    )
    print(markdown(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out.parent / f"classification_judged_{args.backend}_{stamp}.json"
    summary = {
        "backend": args.backend,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "settings": [s.label for s in settings],
        "units": [c.name for c in cases],
        "pieces": sorted(str(j.path.relative_to(args.out)) for j in jobs if j.path.exists()),
        "rows": rows,
    }
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"\nwritten to {path}")
    return path
