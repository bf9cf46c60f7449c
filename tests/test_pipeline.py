from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from conftest import make_record, synthetic_excerpts

from neuron_explainer import (
    ActivationRecord,
    ComponentInfo,
    Explainer,
    Explanation,
    ExplanationError,
    ExplanationResult,
    InsufficientRecordsError,
    InvalidInputError,
    InvalidRecordError,
    NeuronExplainerError,
    NeuronRecord,
    SequenceSimulation,
    SimulationError,
    Simulator,
    UnitId,
    UnknownComponentError,
    UsageError,
    aexplain_neuron,
    build_neuron_record,
    explain_neuron,
    split_records,
)

UNIT = UnitId(model="synthetic", layer=0, index=7)


@pytest.fixture
def number_record(number_excerpts: list[ActivationRecord]) -> NeuronRecord:
    return build_neuron_record(UNIT, number_excerpts, top_k=40, n_random=30)


class SpyExplainer(Explainer):
    name = "spy"

    def __init__(self) -> None:
        self.seen: list[ActivationRecord] = []

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        self.seen.extend(records)
        return Explanation(text="numbers", explainer=self.info)


class KeywordSimulator(Simulator):
    """Predicts 1 on digit tokens; records every excerpt it is asked about."""

    name = "keyword"

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        self.asked.append(tuple(tokens))
        values = tuple(1.0 if t.strip().isdigit() else 0.0 for t in tokens)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=values)


def test_offline_baseline_explains_and_scores_a_number_neuron(number_record: NeuronRecord) -> None:
    result = explain_neuron(number_record)
    assert result.unit == UNIT
    assert result.explainer.name == "token-table" and result.simulator.name == "token-table"
    assert "numbers in general" in result.explanation.text
    assert result.score is not None and result.score >= 0.9
    assert result.scored.split == "valid"
    assert result.scored.random_correlation.value is not None
    assert result.scored.calibration.method == "linear"
    assert result.split_plan.n_top_per_split == 10 and result.split_plan.n_random_per_split == 10
    assert result.provenance == number_record.provenance
    assert len(result.scored.sequences) == 20


def test_result_round_trips_through_json_exactly(number_record: NeuronRecord) -> None:
    result = explain_neuron(number_record)
    text = result.model_dump_json()
    again = ExplanationResult.model_validate_json(text)
    assert again == result
    assert again.model_dump_json() == text


def test_deterministic(number_record: NeuronRecord) -> None:
    a, b = explain_neuron(number_record), explain_neuron(number_record)
    assert a.explanation == b.explanation and a.scored == b.scored


def test_explainer_sees_train_only_and_simulator_held_out_only(number_record: NeuronRecord) -> None:
    spy, sim = SpyExplainer(), KeywordSimulator()
    result = explain_neuron(number_record, explainer=spy, simulator=sim)
    splits = split_records(number_record)
    assert spy.seen == list(splits.train)
    expected = [r.tokens for r in (*splits.calibration.records, *splits.valid.records)]
    assert sorted(sim.asked) == sorted(expected)
    train_tokens = {r.tokens for r in splits.train}
    assert not train_tokens & set(sim.asked)
    assert not {r.tokens for r in splits.test.records} & set(sim.asked)
    assert result.explainer == ComponentInfo(name="spy")
    assert result.scored.correlation.value is not None


def test_no_calibration_means_no_calibration_simulations(number_record: NeuronRecord) -> None:
    sim = KeywordSimulator()
    result = explain_neuron(
        number_record,
        explainer=SpyExplainer(),
        simulator=sim,
        calibration="none",
        score_split="test",
    )
    assert sorted(sim.asked) == sorted(r.tokens for r in split_records(number_record).test.records)
    assert result.scored.split == "test" and result.scored.calibration.method == "none"


@pytest.mark.parametrize("calibration", ["linear", "percentile"])
def test_calibration_methods_run(number_record: NeuronRecord, calibration: str) -> None:
    result = explain_neuron(number_record, calibration=calibration)  # type: ignore[arg-type]
    assert result.scored.calibration.method == calibration
    assert result.scored.rsquared.value is not None and result.scored.rsquared.value > 0.8


def test_unknown_component_names_list_the_available_ones(number_record: NeuronRecord) -> None:
    with pytest.raises(UnknownComponentError, match=r"unknown explainer 'gpt-7'.*'token-table'"):
        explain_neuron(number_record, explainer="gpt-7")
    with pytest.raises(UnknownComponentError, match="unknown simulator 'x'"):
        explain_neuron(number_record, simulator="x")
    with pytest.raises(
        InvalidInputError,
        match="explainer must be an object of type Explainer or a registered name, got int",
    ):
        explain_neuron(number_record, explainer=42)  # type: ignore[arg-type]


def test_too_few_records_is_typed() -> None:
    with pytest.raises(InsufficientRecordsError, match="3 top records cannot fill"):
        explain_neuron(make_record(3, 9))


def test_bad_records_given_as_data_are_typed(number_record: NeuronRecord) -> None:
    data = number_record.model_dump(mode="json")
    data["top_records"][5]["activations"] = data["top_records"][5]["activations"][:-1]
    with pytest.raises(InvalidRecordError, match=r"top_records\.5") as info:
        explain_neuron(data)
    assert isinstance(info.value, NeuronExplainerError) and isinstance(info.value, ValueError)
    with pytest.raises(InvalidInputError, match=r"model 'gpt2', give layer= and neuron="):
        explain_neuron("gpt2")
    with pytest.raises(InvalidInputError, match="give corpus="):
        explain_neuron("gpt2", layer=0, neuron=1)
    with pytest.raises(InvalidInputError, match="a NeuronRecord is explained as it is"):
        explain_neuron(number_record, layer=0)
    assert explain_neuron(number_record.model_dump(mode="json")).unit == UNIT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score_split": "calibration"}, "score_split must be 'valid' or 'test'"),
        ({"calibration": "cubic"}, "unknown calibration 'cubic'"),
    ],
)
def test_bad_arguments(number_record: NeuronRecord, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        explain_neuron(number_record, **kwargs)  # type: ignore[arg-type]


class ShortSimulator(Simulator):
    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        return SequenceSimulation(
            tokens=tuple(tokens[:-1]), expected_activations=(0.5,) * (len(tokens) - 1)
        )


class MissingSimulator(KeywordSimulator):
    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        return (await super().asimulate_many(explanation, sequences))[1:]


class NoneExplainer(Explainer):
    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        return None  # type: ignore[return-value]


def test_misbehaving_components_fail_loudly(number_record: NeuronRecord) -> None:
    with pytest.raises(SimulationError, match="do not match the excerpt's 8 tokens"):
        explain_neuron(make_record(), explainer=SpyExplainer(), simulator=ShortSimulator())
    with pytest.raises(SimulationError, match="returned 39 simulations for 40 excerpts"):
        explain_neuron(number_record, explainer=SpyExplainer(), simulator=MissingSimulator())
    with pytest.raises(ExplanationError, match="returned NoneType, not an Explanation"):
        explain_neuron(number_record, explainer=NoneExplainer())


def test_dead_unit_is_an_explanation_error() -> None:
    dead = synthetic_excerpts(lambda t, r: 0.0, n=40)
    record = build_neuron_record(UNIT, dead, top_k=20, n_random=9)
    with pytest.raises(ExplanationError, match="nothing for a token table to explain"):
        explain_neuron(record)


def test_sync_call_inside_event_loop_is_a_usage_error(number_record: NeuronRecord) -> None:
    async def inside() -> ExplanationResult:
        with pytest.raises(UsageError, match="await its async twin"):
            explain_neuron(number_record)
        return await aexplain_neuron(number_record)

    assert asyncio.run(inside()).score is not None
