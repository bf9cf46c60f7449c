"""Cost estimates: every component answers its own (`Explainer.estimate`, `Simulator.estimate`),
the built-in LLM components count as before, and a plugin's component is estimated like a
built-in one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from neuron_explainer import (
    ActivationRecord,
    Explainer,
    Explanation,
    InvalidInputError,
    NeuronRecord,
    SequenceSimulation,
    Simulator,
)
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.explainers.token_table import TokenTableExplainer
from neuron_explainer.interfaces import CallEstimate, estimate_prompt_tokens
from neuron_explainer.llm import LLM, ChatRequest, ChatResponse
from neuron_explainer.llm.usage import Price
from neuron_explainer.plugins import Register, Registry, hookimpl
from neuron_explainer.records.splits import split_records
from neuron_explainer.runs import RunEstimate, explain_neurons
from neuron_explainer.runs.estimate import estimate_neuron
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator
from neuron_explainer.simulators.token_table import TokenTableSimulator
from neuron_explainer.testing import number_neuron_record


class PinLLM(LLM):
    """An LLM that offers everything and is never called (estimates send nothing)."""

    provider = "pin"
    capabilities = frozenset({"chat", "chat_logprobs", "prompt_logprobs", "json_schema"})

    async def achat(self, request: ChatRequest) -> ChatResponse:
        raise AssertionError("an estimate sends nothing")


def llm(model: str, **attributes: object) -> PinLLM:
    built = PinLLM(model)
    for name, value in attributes.items():
        setattr(built, name, value)
    return built


PRICED = llm("gpt-4o-mini")  # priced by the library's price table
CUSTOM = llm("unknown-model", price=Price(prompt=2.0, completion=8.0))
SCORED = llm("gpt-4o", prompt_logprobs_max_tokens=1)


@pytest.fixture(scope="module")
def record() -> NeuronRecord:
    return number_neuron_record(seed=3)


def figures(part: CallEstimate) -> tuple[object, ...]:
    assert part.cost_usd is not None
    return part.role, part.requests, part.prompt_tokens, part.completion_tokens, part.cost_usd


# Figures of the estimate before each component answered its own (runs/estimate.py recognising
# the built-ins by type): they change only with a component's prompt. Issue 15 changed both chat
# simulators' (numbered tokens, a 13-token few-shot answer in the system prompt; chat-logprob
# answers with the numbered JSON object where json_schema is offered, the JSON simulator with it
# always): chat 10,894 -> 14,485 prompt and 2,884 -> 3,250 completion tokens, chat batched
# 12,251 -> 16,117 and 7,414 -> 8,542, JSON batched 1,817 -> 2,627 and 760 -> 1,714, JSON small
# 2,004 -> 3,621 and 380 -> 807 (each value's property name is counted now). Issue 16 gave the
# all-at-once simulator its contrasting examples (prompt version 2): 19,614 -> 23,970 prompt
# tokens, and 49,053 -> 59,940 with best-of-3. Then the final score stopped simulating
# best-of-k's winner on the calibration split again (it reuses the candidate's simulation): at
# best-of-3, 34 -> 27 chat requests (16,117 -> 12,842 prompt, 8,542 -> 6,834 completion tokens)
# and 100 -> 80 prompt-logprob ones (59,940 -> 47,950 prompt tokens).
EXPLAINER = ("explainer", 1, 862, 80, 0.0001773)


@pytest.mark.parametrize(
    ("explainer", "simulator", "options", "expected"),
    [
        (
            LLMExplainer(PRICED),
            ChatLogprobSimulator(PRICED),
            {},
            [EXPLAINER, ("simulator", 40, 14485, 3250, 0.00412275)],
        ),
        (
            LLMExplainer(CUSTOM, n_candidates=3, supports_n=False),
            ChatLogprobSimulator(CUSTOM, excerpts_per_request=3),
            {"best_of": 3},
            [("explainer", 3, 2586, 240, 0.007092), ("simulator", 27, 12842, 6834, 0.080356)],
        ),
        (
            LLMExplainer(PRICED),
            JSONSimulator(CUSTOM, excerpts_per_request=4),
            {"calibration": "none", "score_split": "test"},
            [EXPLAINER, ("simulator", 5, 2627, 1714, 0.018966)],
        ),
        (
            LLMExplainer(PRICED, count_tokens=lambda s: len(s.split())),
            JSONSimulator(PRICED),
            {"n_top_per_split": 3, "n_random_per_split": 2},
            [("explainer", 1, 450, 80, 0.0001155), ("simulator", 10, 3621, 807, 0.00102735)],
        ),
        (
            LLMExplainer(PRICED),
            PromptLogprobSimulator(SCORED),
            {},
            [EXPLAINER, ("simulator", 40, 23970, 40, 0.060325)],
        ),
        (
            LLMExplainer(PRICED),
            PromptLogprobSimulator(CUSTOM),
            {"best_of": 3},
            [("explainer", 1, 862, 240, 0.0002733), ("simulator", 80, 47950, 0, 0.0959)],
        ),
        (
            TokenTableExplainer(),
            TokenTableSimulator(),
            {},
            [("explainer", 0, 0, 0, 0.0), ("simulator", 0, 0, 0, 0.0)],
        ),
    ],
    ids=[
        "chat",
        "chat-batched-best-of",
        "json-batched",
        "json-small",
        "prompt",
        "prompt-0",
        "offline",
    ],
)
def test_built_in_estimates_keep_their_figures(
    record: NeuronRecord,
    explainer: Explainer,
    simulator: Simulator,
    options: dict[str, object],
    expected: list[tuple[object, ...]],
) -> None:
    estimate = estimate_neuron(record, explainer, simulator, **options)  # type: ignore[arg-type]
    assert [figures(p) for p in estimate.parts] == [pytest.approx(e) for e in expected]
    assert estimate.requests == sum(e[1] for e in expected)  # type: ignore[misc]
    assert estimate.cost_usd == pytest.approx(sum(e[4] for e in expected))  # type: ignore[misc]


def test_the_component_answers_and_the_estimate_only_prices(record: NeuronRecord) -> None:
    simulator = JSONSimulator(PRICED)
    explanation = Explanation(text="numbers", explainer=TokenTableExplainer().info)
    part = simulator.estimate(explanation, [("a", "b"), (), ("c",)])
    assert part.cost_usd is None  # priced by the run's estimate, with the LLM's price
    assert (part.requests, part.llm) == (2, "pin:gpt-4o-mini")  # the empty excerpt needs none
    assert part.prompt_tokens == sum(
        estimate_prompt_tokens(m.content for m in simulator.messages(explanation, tokens))
        for tokens in (("a", "b"), ("c",))
    )
    offline = TokenTableSimulator().estimate(explanation, [("a",)])
    assert (offline.requests, offline.cost_usd, offline.note) == (0, 0.0, "no LLM calls")


# --- a plugin's component ------------------------------------------------------------------


class WordSimulator(Simulator):
    """A plugin-style LLM-backed simulator: one request per excerpt."""

    name = "acme-words"

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        raise AssertionError("a dry run sends nothing")


class CountingWordSimulator(WordSimulator):
    """The same, answering its estimate: 10 prompt tokens a request, 2 completion tokens a
    token."""

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        return CallEstimate.of(
            self,
            requests=len(excerpts),
            prompt_tokens=10 * len(excerpts),
            completion_tokens=2 * sum(len(e) for e in excerpts),
        )


class PluginWords:
    __name__ = "acme-words-plugin"

    @hookimpl
    def register_simulators(self, register: Register) -> None:
        register(WordSimulator, name="acme-words")
        register(CountingWordSimulator, name="acme-counting-words")


def dry_run(record: NeuronRecord, tmp_path: Path, simulator: str) -> RunEstimate:
    registry = Registry(plugins=[PluginWords()], entry_points=False)
    estimate = explain_neurons(
        records={record.unit: record},
        db=tmp_path / f"{simulator}.sqlite",
        simulator=registry.simulator(simulator, llm=CUSTOM),
        dry_run=True,
        registry=registry,
    )
    assert isinstance(estimate, RunEstimate)
    return estimate


def test_a_plugin_simulator_that_answers_is_estimated_like_a_built_in(
    record: NeuronRecord, tmp_path: Path
) -> None:
    estimate = dry_run(record, tmp_path, "acme-counting-words")
    simulator = estimate.per_neuron["simulator"]
    splits = split_records(record)
    shown = [*splits.calibration.records, *splits.held_out("valid").records]
    assert simulator["requests"] == len(shown) == 40
    assert simulator["prompt_tokens"] == 400
    assert simulator["completion_tokens"] == 2 * sum(len(r.tokens) for r in shown)
    # Priced with the LLM's own price: $2 / $8 per million tokens.
    price = (2.0 * 400 + 8.0 * simulator["completion_tokens"]) / 1e6
    assert estimate.cost_usd == pytest.approx(price)
    assert not any("counted as 0" in note for note in estimate.notes)


def test_a_plugin_simulator_that_does_not_answer_is_counted_as_zero_with_a_note(
    record: NeuronRecord, tmp_path: Path
) -> None:
    estimate = dry_run(record, tmp_path, "acme-words")
    assert (estimate.requests, estimate.cost_usd) == (0, 0.0)
    assert any(
        "simulator 'acme-words' calls pin:unknown-model" in note and "counted as 0" in note
        for note in estimate.notes
    ), estimate.notes
    assert "explainer token-table: no LLM calls" in estimate.notes


def test_estimate_options_are_checked_once(record: NeuronRecord) -> None:
    with pytest.raises(InvalidInputError, match="best_of must be an integer >= 1, got 0"):
        estimate_neuron(record, TokenTableExplainer(), TokenTableSimulator(), best_of=0)


def test_records_in_an_estimate_are_the_train_split(record: NeuronRecord) -> None:
    seen: list[int] = []

    class Spy(TokenTableExplainer):
        def estimate(
            self, records: Sequence[ActivationRecord], *, best_of: int = 1
        ) -> CallEstimate:
            seen.append(len(records))
            return CallEstimate.of(self, requests=best_of, cost_usd=0.0)

    estimate = estimate_neuron(
        record, Spy(), TokenTableSimulator(), n_top_per_split=3, n_random_per_split=2, best_of=2
    )
    assert seen == [3] and estimate.parts[0].requests == 2  # train: 3 top records, no random
