"""Contrastive scoring and explanation sensitivity (issue 16): the neutral explanation's
simulation, made once per unit, is the baseline of both."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from neuron_explainer import (
    ExplainOptions,
    Explanation,
    ExplanationResult,
    InvalidInputError,
    NeuronRecord,
    explain_neuron,
)
from neuron_explainer.options import DEFAULT_NEUTRAL_EXPLANATION
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import (
    RESULT_FORMAT_VERSION,
    ComponentInfo,
    Score,
    SequenceSimulation,
)
from neuron_explainer.runs.best_of import abest_of_k
from neuron_explainer.scorers.correlation import correlation, sensitivity
from neuron_explainer.scorers.simulation import ascore_explanation, asimulate_neutral
from neuron_explainer.testing import MockExplainer, MockSimulator, number_neuron_record

NEUTRAL = DEFAULT_NEUTRAL_EXPLANATION


def _is_number(token: str) -> bool:
    return token.strip().isdigit()


def _prior(token: str) -> float:
    """What the simulator predicts whatever it is told: a surface habit (long tokens fire),
    unrelated to the unit (which fires on numbers)."""
    return 0.5 * len(token.strip())


def copying_simulator(effect: float = 4.0) -> MockSimulator:
    """A small-model-like simulator: every prediction is the surface prior, plus ``effect``
    on number tokens when the explanation mentions numbers, plus ``effect`` on tokens the
    explanation names in quotes."""

    def predict(explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
        text = explanation.text
        named = {w.strip("'\"") for w in text.split() if w.startswith(("'", '"'))}
        out = []
        for t in tokens:
            v = _prior(t)
            if "number" in text and _is_number(t):
                v += effect
            if t.strip() in named:
                v += effect
            out.append(v)
        return out

    return MockSimulator(predict, mode="copying")


def _by_hand(result: ExplanationResult) -> float:
    """The contrastive correlation computed from the stored sequences."""
    truth = np.concatenate([s.record.activations for s in result.scored.sequences])
    own = np.concatenate([s.simulation.expected_activations for s in result.scored.sequences])
    base = np.concatenate(
        [s.neutral.expected_activations for s in result.scored.sequences if s.neutral]
    )
    value = correlation(truth, own - base).value
    assert value is not None
    return value


def test_contrastive_scores_the_prediction_minus_the_neutral_prediction() -> None:
    record = number_neuron_record(n_excerpts=100)
    simulator = copying_simulator()
    plain = explain_neuron(
        record,
        explainer=MockExplainer("numbers"),
        simulator=simulator,
        sensitivity=True,
    )
    contrastive = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=simulator, scoring="contrastive"
    )
    assert plain.scored.scoring == "plain" and contrastive.scored.scoring == "contrastive"
    assert all(s.contrastive and s.neutral for s in contrastive.scored.sequences)
    assert contrastive.score == pytest.approx(_by_hand(contrastive))
    # the surface prior is noise for this unit: subtracting it raises the score
    assert plain.score is not None and contrastive.score is not None
    assert contrastive.score > plain.score + 0.1
    # the same simulations underneath
    assert [s.simulation for s in plain.scored.sequences] == [
        s.simulation for s in contrastive.scored.sequences
    ]
    # calibration is fitted on the difference
    seq = contrastive.scored.sequences[0]
    cal = contrastive.scored.calibration
    assert cal.slope is not None and cal.intercept is not None
    assert seq.calibrated == pytest.approx([cal.slope * v + cal.intercept for v in seq.predicted])


def test_an_explanation_that_changes_nothing_is_flagged_and_scores_undefined() -> None:
    record = number_neuron_record(n_excerpts=100)
    ignores = MockSimulator.from_function(lambda tokens: [_prior(t) for t in tokens])
    result = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=ignores, scoring="contrastive"
    )
    sens = result.scored.sensitivity
    assert sens is not None and sens.value.value == 0.0 and sens.flagged
    assert sens.neutral == NEUTRAL and sens.n_sequences == result.scored.n_sequences
    assert result.score is None
    assert result.scored.correlation.reason and "constant" in result.scored.correlation.reason

    plain = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=ignores, sensitivity=True
    )
    assert plain.score is not None  # the plain score exists, but says nothing of the text
    assert plain.scored.sensitivity is not None and plain.scored.sensitivity.flagged


def test_a_sensitive_explanation_is_not_flagged() -> None:
    record = number_neuron_record(n_excerpts=100)
    result = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=copying_simulator(), sensitivity=True
    )
    sens = result.scored.sensitivity
    assert sens is not None and sens.value.value is not None
    assert sens.value.value > 0.2 and not sens.flagged
    pairs = [(s.simulation, s.neutral) for s in result.scored.sequences if s.neutral]
    assert sensitivity(pairs, NEUTRAL).value == sens.value


def _neutral_calls(simulator: MockSimulator) -> Counter[tuple[str, ...]]:
    return Counter(tokens for text, tokens in simulator.calls if text == NEUTRAL)


def test_the_neutral_simulation_is_made_once_per_excerpt_and_shared_by_best_of() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    n_cal = len(splits.calibration.records)
    n_valid = len(splits.valid.records)
    simulator = copying_simulator()
    texts = iter(["numbers", "'the'", "numbers and 'a'", "'of'", "'it'"])
    explainer = MockExplainer.from_function(lambda _records: next(texts))
    result = explain_neuron(
        record, explainer=explainer, simulator=simulator, scoring="contrastive", best_of=5
    )
    calls = _neutral_calls(simulator)
    assert sum(calls.values()) == n_cal + n_valid  # calibration and scored split, once each
    assert set(calls.values()) == {1}
    best = result.explanation.data["best_of"]
    assert isinstance(best, dict) and best["scoring"] == "contrastive"
    assert result.explanation.text in ("numbers", "numbers and 'a'")
    assert result.scored.sensitivity is not None  # auto: on with contrastive scoring


def test_sensitivity_auto_switch_and_costs() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    quiet = copying_simulator()
    result = explain_neuron(record, explainer=MockExplainer("numbers"), simulator=quiet)
    assert result.scored.sensitivity is None and not _neutral_calls(quiet)

    # forced on in plain mode: the neutral explanation simulates the scored split only
    measured = copying_simulator()
    result = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=measured, sensitivity=True
    )
    assert sum(_neutral_calls(measured).values()) == len(splits.valid.records)
    assert result.scored.sensitivity is not None

    # auto at best_of >= 5
    texts = iter(["numbers", "'the'", "'of'", "'a'", "'it'"])
    result = explain_neuron(
        record,
        explainer=MockExplainer.from_function(lambda _r: next(texts)),
        simulator=copying_simulator(),
        best_of=5,
    )
    assert result.scored.sensitivity is not None

    # off even with contrastive scoring when asked
    result = explain_neuron(
        record,
        explainer=MockExplainer("numbers"),
        simulator=copying_simulator(),
        scoring="contrastive",
        sensitivity=False,
    )
    assert result.scored.sensitivity is None and result.scored.scoring == "contrastive"


def test_a_neutral_failure_fails_the_excerpt_only_in_contrastive_scoring() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    victim = splits.valid.top[0].tokens

    base = copying_simulator()

    def failing(explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
        if explanation.text == NEUTRAL and tokens == tuple(victim):
            return ["not", "numbers"]  # type: ignore[list-item]
        return list(base._predict(explanation, tokens))

    simulator = MockSimulator(failing)
    contrastive = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=simulator, scoring="contrastive"
    )
    (failed,) = contrastive.scored.failed
    assert failed.record.tokens == victim and failed.split == "valid"
    assert failed.failure.message.startswith(f"neutral explanation {NEUTRAL!r}: ")
    assert contrastive.scored.n_sequences == len(splits.valid.records) - 1

    plain = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=simulator, sensitivity=True
    )
    assert not plain.scored.failed
    assert plain.scored.n_sequences == len(splits.valid.records)
    sens = plain.scored.sensitivity
    assert sens is not None and sens.n_sequences == len(splits.valid.records) - 1
    assert sum(s.neutral is None for s in plain.scored.sequences) == 1


def test_ascore_explanation_simulates_the_baseline_when_not_given() -> None:
    asyncio.run(_ascore_baseline())


async def _ascore_baseline() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    simulator = copying_simulator()
    explanation = Explanation(text="numbers", explainer=ComponentInfo(name="t"))
    scored = await ascore_explanation(simulator, explanation, splits, scoring="contrastive")
    baseline = await asimulate_neutral(simulator, splits)
    again = await ascore_explanation(
        simulator, explanation, splits, scoring="contrastive", neutral=baseline
    )
    assert scored.correlation == again.correlation
    only_scored = await asimulate_neutral(simulator, splits, calibration=False)
    with pytest.raises(InvalidInputError, match="neutral simulation of every excerpt"):
        await ascore_explanation(
            simulator, explanation, splits, scoring="contrastive", neutral=only_scored
        )


def test_best_of_compares_candidates_contrastively_with_a_baseline() -> None:
    asyncio.run(_best_of_baseline())


async def _best_of_baseline() -> None:
    record = number_neuron_record(n_excerpts=100)
    splits = split_records(record)
    cal = splits.calibration.records
    simulator = copying_simulator()
    baseline = (await asimulate_neutral(simulator, splits)).records_of("calibration")
    texts = iter(["numbers", "'the'"])
    chosen, table = await abest_of_k(
        MockExplainer.from_function(lambda _r: next(texts)),
        simulator,
        splits.train,
        cal,
        2,
        baseline=baseline,
    )
    truth = np.concatenate([r.activations for r in cal])
    for explanation, value in table:
        own = [(await simulator.asimulate(explanation, r.tokens)).expected_activations for r in cal]
        base = [b.expected_activations for b in baseline if isinstance(b, SequenceSimulation)]
        expected = correlation(truth, np.concatenate(own) - np.concatenate(base)).value
        assert value == pytest.approx(expected)
    assert chosen.text == "numbers"
    with pytest.raises(InvalidInputError, match="baseline has 1 simulations"):
        await abest_of_k(MockExplainer("x"), simulator, splits.train, cal, 2, baseline=baseline[:1])


def _contrastive_result(record: NeuronRecord) -> ExplanationResult:
    return explain_neuron(
        record,
        explainer=MockExplainer("numbers"),
        simulator=copying_simulator(),
        scoring="contrastive",
    )


def test_results_round_trip_and_older_results_read_as_plain() -> None:
    record = number_neuron_record(n_excerpts=100)
    result = _contrastive_result(record)
    data = json.loads(result.model_dump_json())
    assert data["format_version"] == RESULT_FORMAT_VERSION
    again = ExplanationResult.model_validate(data)
    assert again == result and again.score == result.score
    # a format-3 result: no scoring, no sensitivity, no neutral simulations
    plain = explain_neuron(
        record, explainer=MockExplainer("numbers"), simulator=copying_simulator()
    )
    old = json.loads(plain.model_dump_json())
    old["format_version"] = 3
    for key in ("scoring", "sensitivity", "neutral_explanation"):
        old["scored"].pop(key)
    for seq in old["scored"]["sequences"]:
        seq.pop("neutral"), seq.pop("contrastive")
    loaded = ExplanationResult.model_validate(old)
    assert loaded.scored.scoring == "plain" and loaded.scored.sensitivity is None
    assert loaded.score == plain.score


def test_contrastive_sequences_must_carry_the_neutral_simulation() -> None:
    result = _contrastive_result(number_neuron_record(n_excerpts=100))
    data = json.loads(result.model_dump_json())
    data["scored"]["sequences"][0]["neutral"] = None
    with pytest.raises(ValueError, match="needs the neutral simulation"):
        ExplanationResult.model_validate(data)
    data = json.loads(result.model_dump_json())
    data["scored"]["scoring"] = "plain"
    with pytest.raises(ValueError, match="scoring is 'plain' but sequence 0 is contrastive"):
        ExplanationResult.model_validate(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scoring", "relative", "scoring must be 'plain' or 'contrastive', got 'relative'"),
        ("sensitivity", "yes", "sensitivity must be True, False or 'auto', got 'yes'"),
        ("neutral_explanation", "  ", "neutral_explanation must be a non-empty text"),
    ],
)
def test_bad_scoring_options_are_one_clear_error(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ExplainOptions.build({field: value})


def test_sensitivity_edge_cases() -> None:
    tokens = ("a", "b", "c")

    def sim(values: Sequence[float]) -> SequenceSimulation:
        return SequenceSimulation(tokens=tokens, expected_activations=tuple(values))

    assert sensitivity([(sim([1, 2, 3]), sim([0, 0, 0]))], NEUTRAL).value == Score(value=1.0)
    constant = sensitivity([(sim([1, 1, 1]), sim([0, 2, 0]))], NEUTRAL)
    assert constant.value.value is None and "constant" in (constant.value.reason or "")
    assert not constant.flagged
    assert sensitivity([], NEUTRAL).value.value is None
    opposite = sensitivity([(sim([1, 2, 3]), sim([3, 2, 1]))], NEUTRAL)
    assert opposite.value.value == pytest.approx(2.0)
    with pytest.raises(InvalidInputError, match="different tokens"):
        sensitivity(
            [(sim([1, 2, 3]), SequenceSimulation(tokens=("x",), expected_activations=(0.0,)))],
            NEUTRAL,
        )


@pytest.mark.parametrize(
    ("options", "extra"),
    [
        ({"sensitivity": True}, ("valid",)),
        ({"scoring": "contrastive"}, ("valid", "calibration")),
        ({"scoring": "contrastive", "calibration": "none"}, ("valid",)),
        ({"best_of": 5}, ("valid",)),
    ],
)
def test_the_estimate_counts_the_neutral_simulations(
    options: dict[str, object], extra: tuple[str, ...]
) -> None:
    from neuron_explainer.explainers.llm import LLMExplainer
    from neuron_explainer.llm.openai import OpenAILLM
    from neuron_explainer.runs.estimate import estimate_neuron
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator

    llm = OpenAILLM("gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    record = number_neuron_record(seed=3)
    splits = split_records(record)
    explainer, simulator = LLMExplainer(llm), ChatLogprobSimulator(llm)
    base = {k: v for k, v in options.items() if k in ("best_of", "calibration")}
    without = estimate_neuron(record, explainer, simulator, **base, sensitivity=False)
    with_neutral = estimate_neuron(record, explainer, simulator, **options)  # type: ignore[arg-type]
    excerpts = sum(len(getattr(splits, name).records) for name in extra)
    assert with_neutral.parts[1].requests - without.parts[1].requests == excerpts
    assert with_neutral.parts[0] == without.parts[0]
