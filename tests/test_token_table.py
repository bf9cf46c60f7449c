from __future__ import annotations

import asyncio
import random

import pytest
from conftest import synthetic_excerpts

from neuron_explainer import (
    ActivationRecord,
    ComponentInfo,
    Explanation,
    InvalidInputError,
    UnitId,
    build_neuron_record,
    explain_neuron,
)
from neuron_explainer.explainers import TokenTableExplainer
from neuron_explainer.records.lookup import build_token_table, token_shape
from neuron_explainer.simulators import TokenTableSimulator


@pytest.mark.parametrize(
    ("token", "shape"),
    [
        (" 1999", "number"),
        ("3.14", "number"),
        ("1,000", "number"),
        (" Paris", "capitalized"),
        (" dog", "word"),
        (",", "punctuation"),
        ("\n\n", "whitespace"),
        (" x2", "other"),
    ],
)
def test_token_shapes(token: str, shape: str) -> None:
    assert token_shape(token) == shape


def rec(tokens: list[str], acts: list[float]) -> ActivationRecord:
    return ActivationRecord(tokens=tokens, activations=acts)


def test_table_means_and_shrinkage() -> None:
    table = build_token_table(
        [rec([" a", " b", " a"], [4.0, 0.0, 2.0]), rec([" b", " c"], [0.0, 0.0])],
        prior_weight=1.0,
    )
    assert table.background == 0.0  # median of all train activations
    assert table.tokens[" a"].mean == 3.0 and table.tokens[" a"].count == 2
    word = table.shapes["word"]
    assert word.count == 5 and word.mean == pytest.approx(6.0 / 5)
    shape_estimate = (5 * 1.2 + 1 * 0.0) / 6
    assert table.token_estimate(" a") == pytest.approx((2 * 3.0 + shape_estimate) / 3)
    # Unseen tokens back off to their shape, then the background.
    assert table.token_estimate(" zebra") == pytest.approx(shape_estimate)
    assert table.token_estimate("!") == 0.0


def test_prior_weight_zero_gives_raw_means() -> None:
    table = build_token_table([rec(["x", "y"], [2.0, 6.0])], prior_weight=0.0)
    assert table.predict(["x", "y", "x"]) == [2.0, 6.0, 2.0]


def test_table_keeps_only_the_most_informative_entries() -> None:
    records = [rec([f" w{i}" for i in range(50)], [float(i) for i in range(50)])]
    table = build_token_table(records, max_tokens=5, max_contexts=3)
    assert len(table.tokens) == 5
    assert sum(len(v) for v in table.contexts.values()) <= 3
    assert {" w49", " w0"} & set(table.tokens)  # the extremes differ most from the shape mean


def after_of(tokens: list[str], rng: random.Random) -> list[float]:
    return [5.0 if i and tokens[i - 1] == " of" else 0.0 for i in range(len(tokens))]


def test_contexts_capture_a_previous_token_rule() -> None:
    rng = random.Random(3)
    vocab = [" of", " the", " cat", " dog", " a", " river"]
    excerpts = []
    for _ in range(200):
        tokens = [rng.choice(vocab) for _ in range(12)]
        excerpts.append(rec(tokens, after_of(tokens, rng)))
    record = build_neuron_record(UnitId(model="m", layer=0, index=0), excerpts, top_k=40)
    result = explain_neuron(record)
    assert 'right after " of"' in result.explanation.text
    assert result.score is not None and result.score > 0.9


def test_explanation_quotes_tokens_safely() -> None:
    explanation = TokenTableExplainer().explain(
        [rec(["\n", "a", '\t"x'], [9.0, 0.0, 8.0]), rec(["b", "c"], [0.0, 0.0])]
    )
    assert explanation.text.startswith('fires most on the tokens "\\n", "\\t\\"x"')
    assert "\n" not in explanation.text
    assert explanation.explainer.name == "token-table"
    assert explanation.explainer.settings["prior_weight"] == 1.0


def test_simulator_needs_the_table() -> None:
    plain = Explanation(text="numbers", explainer=ComponentInfo(name="llm"))
    with pytest.raises(InvalidInputError, match="came from 'llm'"):
        TokenTableSimulator().simulate(plain, ["a"])
    broken = Explanation(
        text="x", data={"token_table": {"tokens": 3}}, explainer=ComponentInfo(name="token-table")
    )
    with pytest.raises(InvalidInputError, match="token_table'\\] is invalid"):
        TokenTableSimulator().simulate(broken, ["a"])


def test_simulation_is_in_activation_units() -> None:
    excerpts = synthetic_excerpts(lambda t, r: 3.0 if t == " cat" else 0.0, n=30)
    explanation = TokenTableExplainer(prior_weight=0.0).explain(excerpts)
    sim = TokenTableSimulator().simulate(explanation, [" cat", " dog"])
    assert sim.scale == "neuron_activations"
    assert sim.expected_activations == (3.0, 0.0)
    many = asyncio.run(TokenTableSimulator().asimulate_many(explanation, [[" cat"], [" a"]]))
    assert [m.expected_activations for m in many] == [(3.0,), (0.0,)]
