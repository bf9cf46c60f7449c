"""Revision with a real explainer: does revising raise the held-out score, and do the
explainer's own test sentences help?

Units: the rules of the puzzle benchmark's test half (``benchmarks/puzzle_set``), each run as a
synthetic unit over real English text it was not written for (Debian's fortunes: ``apt-get
install fortunes``; not in the repository), tokenized with the puzzle tokenizer and cut into
windows of ``--window`` tokens (a rule sees only its window). A rule that fires in fewer than
``--min-firing`` windows is skipped. A unit's probe is its rule applied to new text, so test
sentences get their true activations without a model.

Explainer and simulator: the same Qwen2.5-Coder GGUF (0.5B by default; ``--model`` for
another) behind llama.cpp's server on 127.0.0.1, the LLM explainer (greedy) and the
chat-logprob simulator, plain scoring, default splits. Three arms per unit: no revision;
revision from the train split only (``test_sentences=0``); revision with ``--tests``
sentences. A response cache in a temporary folder answers the requests the arms share (the
first explanation, its simulations), so the arms differ only where revision acts.

Reported per arm: mean valid correlation and the paired difference to no revision (95 %
bootstrap interval over units); how often a revision was asked, differed and was kept; for the
test-sentence arm, the sentences written per unit and the share on which the unit fired. Each
unit's figures go to ``benchmarks/results/revision_<time>.json``.

Run:  python benchmarks/bench_revision.py [--units 12] [--model GGUF] [--tests 6]
      python benchmarks/bench_revision.py --table benchmarks/results/revision_<time>.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import puzzle_set  # noqa: E402

from neuron_explainer import ActivationRecord, UnitId, explain_neuron  # noqa: E402
from neuron_explainer.explainers.llm import LLMExplainer  # noqa: E402
from neuron_explainer.records.building import build_neuron_record  # noqa: E402
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator  # noqa: E402

FORTUNES = Path("/usr/share/games/fortunes")


def fortunes(limit: int) -> list[str]:
    """Up to ``limit`` fortunes, each on one line with single spaces."""
    if not FORTUNES.is_dir():
        raise SystemExit("needs Debian's fortunes: apt-get install -y fortunes")
    out: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file():
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.split())
            if len(text) > 20:
                out.append(text)
    random.Random(0).shuffle(out)
    return out[:limit]


def windows(texts: Sequence[str], length: int) -> list[list[str]]:
    found = []
    for text in texts:
        try:
            tokens = puzzle_set.tokenize(text)
        except ValueError:
            continue
        for start in range(0, len(tokens), length):
            chunk = tokens[start : start + length]
            if len(chunk) >= 4:
                found.append(chunk)
    return found


def unit_records(puzzle: Any, cut: list[list[str]], index: int) -> tuple[Any, int]:
    excerpts = [
        ActivationRecord(tokens=w, activations=[float(puzzle.rule(w, i)) for i in range(len(w))])
        for w in cut
    ]
    firing = sum(max(e.activations) > 0 for e in excerpts)
    unit = UnitId(model=f"rule:{puzzle.id}", layer=0, index=index)
    return build_neuron_record(unit, excerpts, top_k=40, n_random=30, seed=index), firing


def probe_of(puzzle: Any):  # type: ignore[no-untyped-def]
    async def probe(texts: Sequence[str]) -> list[ActivationRecord]:
        out = []
        for text in texts:
            tokens = puzzle_set.tokenize(" ".join(text.split())) or ["."]
            values = [float(puzzle.rule(tokens, i)) for i in range(len(tokens))]
            out.append(ActivationRecord(tokens=tokens, activations=values))
        return out

    return probe


def bootstrap(diffs: Sequence[float], n: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choice(diffs) for _ in diffs) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def arm(result: Any) -> dict[str, Any]:
    note = result.explanation.data.get("revision")
    tests = note.get("tests") if isinstance(note, dict) else None
    sentences = tests.get("sentences", []) if isinstance(tests, dict) else []
    return {
        "explanation": result.explanation.text,
        "valid_correlation": result.scored.correlation.value,
        "revised": note.get("revised") if isinstance(note, dict) else None,
        "kept": note.get("kept") if isinstance(note, dict) else None,
        "reason": note.get("reason") if isinstance(note, dict) else None,
        "calibration": note.get("calibration_correlation") if isinstance(note, dict) else None,
        "tests": sentences,
        "tests_reason": tests.get("reason") if isinstance(tests, dict) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--model", default=None, help="a GGUF (default: the 0.5B test model)")
    parser.add_argument("--tests", type=int, default=6)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--fortunes", type=int, default=6000)
    parser.add_argument("--min-firing", type=int, default=45)
    parser.add_argument("--table", type=Path, help="print the table of a results file and stop")
    args = parser.parse_args()
    if args.table:
        table(json.loads(args.table.read_text(encoding="utf-8"))["units"])
        return

    from llamacpp_server import assemble_gguf, llamacpp_server

    from neuron_explainer.llm.llamacpp import LlamaCppLLM

    cut = windows(fortunes(args.fortunes), args.window)
    print(f"{len(cut)} windows of up to {args.window} tokens", flush=True)
    chosen = []
    for i, puzzle in enumerate(puzzle_set.puzzles("test")):
        record, firing = unit_records(puzzle, cut, i)
        if firing >= args.min_firing:
            chosen.append((puzzle, record, firing))
        if len(chosen) == args.units:
            break
    print(f"{len(chosen)} units: " + ", ".join(f"{p.id} ({f})" for p, _, f in chosen), flush=True)
    gguf = Path(args.model) if args.model else assemble_gguf()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    out = HERE / "results" / f"revision_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)

    def save() -> None:  # after every unit: a run cut short keeps what it measured
        data = {
            "model": gguf.name,
            "window": args.window,
            "tests": args.tests,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "units": rows,
        }
        out.write_text(json.dumps(data, indent=1), encoding="utf-8")

    with tempfile.TemporaryDirectory() as scratch, llamacpp_server(gguf) as server:
        llm = LlamaCppLLM(
            server.model, base_url=server.base_url, cache=Path(scratch) / "c.sqlite", timeout=600
        )
        explainer, simulator = LLMExplainer(llm), ChatLogprobSimulator(llm)
        for puzzle, record, firing in chosen:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"id": puzzle.id, "true": puzzle.true, "firing": firing}
            arms = {
                "none": {},
                "train": {"revise": True, "test_sentences": 0},
                "tests": {"revise": True, "test_sentences": args.tests},
            }
            for name, options in arms.items():
                try:
                    result = explain_neuron(
                        record,
                        explainer=explainer,
                        simulator=simulator,
                        probe=probe_of(puzzle),
                        **options,
                    )
                    row[name] = arm(result)
                except Exception as exc:  # a unit that fails is reported, not hidden
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            save()
            shown = {k: row[k].get("valid_correlation") for k in arms}
            print(f"{puzzle.id:22s} {shown} {row['seconds']}s", flush=True)
            print(f"    none: {row['none'].get('explanation')!r}", flush=True)
            for name in ("train", "tests"):
                print(
                    f"    {name}: {row[name].get('revised')!r} kept={row[name].get('kept')}",
                    flush=True,
                )
    table(rows)
    print(f"written to {out}")


def table(rows: Sequence[dict[str, Any]]) -> None:
    def value(row: dict[str, Any], name: str) -> float | None:
        v = row[name].get("valid_correlation")
        return v if isinstance(v, float) else None

    print("| arm | units | mean valid r | vs none (95 % CI) | revision differed | kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("none", "train", "tests"):
        both = [(value(r, name), value(r, "none")) for r in rows]
        paired = [(a, b) for a, b in both if a is not None and b is not None]
        mine = [a for a, _ in paired]
        mean = statistics.fmean(mine) if mine else float("nan")
        if name == "none" or not paired:
            print(f"| {name} | {len(mine)} | {mean:.3f} | | | |")
            continue
        diffs = [a - b for a, b in paired]
        low, high = bootstrap(diffs)
        differed = sum(
            bool(r[name].get("revised")) and r[name].get("revised") != r["none"].get("explanation")
            for r in rows
        )
        kept = sum(r[name].get("kept") == "revised" for r in rows)
        print(
            f"| {name} | {len(mine)} | {mean:.3f} | {statistics.fmean(diffs):+.3f} "
            f"[{low:+.3f}, {high:+.3f}] | {differed} | {kept} |"
        )
    written = [len(r["tests"].get("tests") or []) for r in rows]
    fired = [s.get("true_max", 0) > 0 for r in rows for s in (r["tests"].get("tests") or [])]
    if written:
        share = sum(fired) / len(fired) if fired else 0.0
        print(
            f"test sentences written per unit: {statistics.fmean(written):.1f}; "
            f"the unit fired on {share:.0%} of them"
        )


if __name__ == "__main__":
    main()
