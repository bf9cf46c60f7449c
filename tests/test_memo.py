"""Simulations reused instead of repeated: one unit's explanation (best-of-k's winner and
revision's texts on calibration), and a batch's neutral explanation shared across units."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from _batch_worker import unit_record, units
from test_revision import keyword_simulator

from neuron_explainer import Explanation, InvalidInputError, explain_neuron
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.interfaces import Simulator, track_simulations
from neuron_explainer.options import DEFAULT_NEUTRAL_EXPLANATION
from neuron_explainer.records import ActivationRecord
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ComponentInfo, SequenceSimulation, SimulationFailure
from neuron_explainer.runs import explain_neurons
from neuron_explainer.runs.estimate import estimate_neuron
from neuron_explainer.scorers._memo import SimulationMemo, reusing
from neuron_explainer.scorers.simulation import simulate_each
from neuron_explainer.testing import (
    MockExplainer,
    MockSimulator,
    ScriptedLLM,
    number_neuron_record,
)

NEUTRAL = DEFAULT_NEUTRAL_EXPLANATION


def follows_explanation() -> MockSimulator:
    """`keyword_simulator` with a small surface habit (token length) elsewhere."""
    return keyword_simulator(habit=0.1)


def test_best_of_winner_is_not_simulated_again_on_calibration() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    calibration = {tuple(r.tokens) for r in splits.calibration.records}
    simulator = follows_explanation()
    texts = iter(["articles", "numbers", "articles and the", "words"])
    explainer = MockExplainer.from_function(lambda _records: next(texts))
    with track_simulations() as meter:
        result = explain_neuron(record, explainer=explainer, simulator=simulator, best_of=4)
    assert result.explanation.text == "numbers"
    calls = Counter(simulator.calls)
    assert max(calls.values()) == 1  # no excerpt simulated twice under one explanation
    winner = {tokens for text, tokens in simulator.calls if text == "numbers"}
    assert calibration <= winner
    assert len(winner) == len(calibration) + len(splits.valid.records)
    # the result's meter counts the simulations made, not the ones reused
    assert result.simulation is not None
    assert result.simulation.attempted == len(simulator.calls)
    assert meter.stats.attempted == len(simulator.calls)


def test_revision_reuses_the_calibration_simulations_of_both_texts() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", "numbers written as digits."])
    simulator = follows_explanation()
    result = explain_neuron(record, explainer=LLMExplainer(llm), simulator=simulator, revise=True)
    assert result.explanation.text == "numbers written as digits"
    assert max(Counter(simulator.calls).values()) == 1


def _neutral_calls(simulator: MockSimulator) -> Counter[tuple[str, ...]]:
    return Counter(tokens for text, tokens in simulator.calls if text == NEUTRAL)


def test_a_batch_simulates_the_neutral_explanation_once_per_shared_excerpt(
    tmp_path: Path,
) -> None:
    chosen = units(3)
    shared_random = unit_record(chosen[0]).random_sample

    def record_of(unit):  # type: ignore[no-untyped-def]
        # each unit has its own top excerpts, and the random excerpts of one reservoir
        return unit_record(unit).model_copy(update={"random_sample": shared_random})

    records = {u: record_of(u) for u in chosen}
    simulator = follows_explanation()
    summary = explain_neurons(
        records=records,
        units=chosen,
        db=tmp_path / "run.sqlite",
        explainer=MockExplainer("numbers"),
        simulator=simulator,
        explain_options={"scoring": "contrastive"},
    )
    assert summary.done == 3
    neutral = _neutral_calls(simulator)
    assert set(neutral.values()) == {1}  # every excerpt once for the whole batch
    held_random = set()
    held_top = 0
    for u in chosen:
        splits = split_records(records[u])
        for name in ("calibration", "valid"):
            held_random |= {tuple(r.tokens) for r in getattr(splits, name).random}
            held_top += len(getattr(splits, name).top)
    assert sum(neutral.values()) == len(held_random) + held_top
    # the explanation's own simulations are the unit's: the random excerpts once per unit
    own = Counter(tokens for text, tokens in simulator.calls if text == "numbers")
    assert all(own[t] == 3 for t in held_random)

    # each unit's score is the one it gets alone
    from neuron_explainer.runs import RunStore

    with RunStore(tmp_path / "run.sqlite") as store:
        for u in chosen:
            alone = explain_neuron(
                records[u],
                explainer=MockExplainer("numbers"),
                simulator=follows_explanation(),
                scoring="contrastive",
            )
            stored = store.result(u)
            assert stored is not None
            assert stored.scored.correlation == alone.scored.correlation
            assert stored.scored.rsquared == alone.scored.rsquared
            assert stored.scored.sensitivity == alone.scored.sensitivity


class _Gate(Simulator):
    """Counts calls per excerpt and waits for ``release`` before answering; fails excerpts
    whose first token is ``"bad"`` (an excerpt's failure) and raises on ``"boom"``."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, ...]] = Counter()
        self.release = asyncio.Event()

    @property
    def info(self) -> ComponentInfo:
        return ComponentInfo(name="gate")

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        raise NotImplementedError

    async def asimulate_each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        for s in sequences:
            self.calls[tuple(s)] += 1
        await self.release.wait()
        if any(s[0] == "boom" for s in sequences):
            raise RuntimeError("boom")
        return [
            SimulationFailure(reason="no_answer", message="bad")
            if s[0] == "bad"
            else SequenceSimulation(tokens=tuple(s), expected_activations=(1.0,) * len(s))
            for s in sequences
        ]


def _records(*firsts: str) -> list[ActivationRecord]:
    return [ActivationRecord(tokens=[f, " x"], activations=[0.0, 1.0]) for f in firsts]


EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))


def test_concurrent_callers_share_one_simulation_and_failures_are_redone() -> None:
    async def main() -> None:
        gate = _Gate()
        memo = SimulationMemo()
        with reusing(memo):
            first = asyncio.create_task(simulate_each(gate, EXPLANATION, _records("a", "bad")))
            await asyncio.sleep(0)
            second = asyncio.create_task(
                simulate_each(gate, EXPLANATION, _records("a", "b", "bad"))
            )
            await asyncio.sleep(0)
            gate.release.set()
            one, two = await asyncio.gather(first, second)
            assert gate.calls[("a", " x")] == 1  # the second caller waited for the first's
            assert gate.calls[("b", " x")] == 1
            assert isinstance(one[1], SimulationFailure) and isinstance(two[2], SimulationFailure)
            assert one[0] == two[0]
            assert memo.reused == 2  # "a" and the in-flight "bad"
            # a failure is not kept: the next caller simulates it again; a simulation is kept
            again = await simulate_each(gate, EXPLANATION, _records("bad", "a"))
            assert gate.calls[("bad", " x")] == 2 and gate.calls[("a", " x")] == 1
            assert isinstance(again[0], SimulationFailure)
        # outside the block nothing is reused
        await simulate_each(gate, EXPLANATION, _records("a"))
        assert gate.calls[("a", " x")] == 2

    asyncio.run(main())


def test_a_failed_or_cancelled_owner_leaves_the_excerpt_to_its_waiters() -> None:
    async def main() -> None:
        gate = _Gate()
        memo = SimulationMemo()
        with reusing(memo):
            owner = asyncio.create_task(simulate_each(gate, EXPLANATION, _records("a", "boom")))
            await asyncio.sleep(0)
            waiter = asyncio.create_task(simulate_each(gate, EXPLANATION, _records("a")))
            await asyncio.sleep(0)
            gate.release.set()
            with pytest.raises(RuntimeError, match="boom"):
                await owner
            (outcome,) = await waiter  # simulated "a" itself once the owner gave up
            assert isinstance(outcome, SequenceSimulation)
            assert gate.calls[("a", " x")] == 2
            assert len(memo) == 1  # the waiter's simulation of "a"; nothing of "boom"

            gate.release.clear()
            owner = asyncio.create_task(simulate_each(gate, EXPLANATION, _records("c")))
            await asyncio.sleep(0)
            waiter = asyncio.create_task(simulate_each(gate, EXPLANATION, _records("c")))
            await asyncio.sleep(0)
            owner.cancel()
            await asyncio.sleep(0)
            gate.release.set()
            (outcome,) = await waiter
            assert isinstance(outcome, SequenceSimulation)
            assert gate.calls[("c", " x")] == 2

    asyncio.run(main())


def test_memo_keeps_only_its_texts_and_at_most_its_capacity() -> None:
    async def main() -> None:
        gate = _Gate()
        gate.release.set()
        memo = SimulationMemo(capacity=2, texts={"numbers"})
        other = Explanation(text="words", explainer=ComponentInfo(name="test"))
        with reusing(memo):
            await simulate_each(gate, EXPLANATION, _records("a", "b", "c"))
            assert len(memo) == 2  # "a" left first
            await simulate_each(gate, EXPLANATION, _records("c", "a"))
            assert gate.calls[("c", " x")] == 1 and gate.calls[("a", " x")] == 2
            await simulate_each(gate, other, _records("c"))
            await simulate_each(gate, other, _records("c"))
            assert gate.calls[("c", " x")] == 3  # "words" is not kept here
        with pytest.raises(InvalidInputError, match="capacity"):
            SimulationMemo(capacity=0)

    asyncio.run(main())


def test_the_run_estimate_counts_shared_neutral_simulations_once(tmp_path: Path) -> None:
    from neuron_explainer.llm.openai import OpenAILLM
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator

    chosen = units(3)
    shared_random = unit_record(chosen[0]).random_sample
    records = {
        u: unit_record(u).model_copy(update={"random_sample": shared_random}) for u in chosen
    }
    llm = OpenAILLM("gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")

    def estimate(scoring: str):  # type: ignore[no-untyped-def]
        return explain_neurons(
            records=records,
            units=chosen,
            db=tmp_path / f"{scoring}.sqlite",
            explainer=MockExplainer("numbers"),
            simulator=ChatLogprobSimulator(llm),
            explain_options={"scoring": scoring, "sensitivity": False},
            dry_run=True,
            sample_units=3,
        )

    plain, contrastive = estimate("plain"), estimate("contrastive")
    splits = [split_records(records[u]) for u in chosen]
    own = sum(len(s.calibration.records) + len(s.valid.records) for s in splits)
    assert plain.requests == own  # one request per excerpt
    top = sum(len(s.calibration.top) + len(s.valid.top) for s in splits)
    random = {tuple(r.tokens) for s in splits for r in (*s.calibration.random, *s.valid.random)}
    assert contrastive.requests == own + top + len(random)
    assert any("share are counted once" in note for note in contrastive.notes)
    # a unit alone counts every neutral simulation
    alone = estimate_neuron(
        records[chosen[0]],
        MockExplainer("numbers"),
        ChatLogprobSimulator(llm),
        scoring="contrastive",
    )
    per_unit = len(splits[0].calibration.records) + len(splits[0].valid.records)
    assert alone.requests == 2 * per_unit
