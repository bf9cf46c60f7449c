from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from neuron_explainer import (
    ActivationRecord,
    InsufficientRecordsError,
    NeuronRecord,
    Provenance,
    UnitId,
    WindowId,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
token = st.text(min_size=0, max_size=6)


@st.composite
def activation_records(draw: st.DrawFn) -> ActivationRecord:
    n = draw(st.integers(1, 12))
    tokens = draw(st.lists(token, min_size=n, max_size=n))
    acts = draw(st.lists(finite, min_size=n, max_size=n))
    ids = draw(st.none() | st.lists(st.integers(0, 2**31), min_size=n, max_size=n))
    window = draw(
        st.none() | st.builds(WindowId, document=st.integers(0, 2**40), start=st.integers(0, 2**20))
    )
    return ActivationRecord(tokens=tokens, activations=acts, token_ids=ids, window_id=window)


UNIT = UnitId(model="gpt2", layer=5, index=131)


def test_mismatched_lengths_name_both_counts() -> None:
    with pytest.raises(ValidationError, match="activations has 2 values but tokens has 3"):
        ActivationRecord(tokens=["a", "b", "c"], activations=[1.0, 2.0])


def test_token_ids_must_match_tokens() -> None:
    with pytest.raises(ValidationError, match="token_ids has 1 values but tokens has 2"):
        ActivationRecord(tokens=["a", "b"], activations=[1.0, 2.0], token_ids=[3])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_activation_is_rejected_with_its_position(bad: float) -> None:
    with pytest.raises(ValidationError) as info:
        ActivationRecord(tokens=["a", "b"], activations=[0.5, bad])
    assert info.value.errors()[0]["loc"] == ("activations", 1)
    assert "finite" in str(info.value)


def test_empty_record_is_rejected() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        ActivationRecord(tokens=[], activations=[])


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="activation"):
        ActivationRecord(tokens=["a"], activation=[1.0])  # type: ignore[call-arg]


def test_json_round_trip_is_exact_for_awkward_floats() -> None:
    values = [0.1 + 0.2, 5e-324, -0.0, 1.7976931348623157e308, -1e-7, 3.0]
    record = ActivationRecord(
        tokens=["\n", "\t", "é", " \u00e2\u0080", "", "x"], activations=values
    )
    again = ActivationRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert [math.copysign(1, v) for v in again.activations] == [math.copysign(1, v) for v in values]


@given(activation_records())
@settings(max_examples=60, deadline=None)
def test_activation_record_round_trips(record: ActivationRecord) -> None:
    assert ActivationRecord.model_validate_json(record.model_dump_json()) == record


def test_unit_id_validates_and_hashes() -> None:
    assert str(UNIT) == "gpt2 layer 5 mlp_neuron 131"
    assert {UNIT: 1}[UnitId(model="gpt2", layer=5, index=131)] == 1
    assert UnitId(model="m", layer=0, index=0, kind="sae_latent").kind == "sae_latent"
    with pytest.raises(ValidationError):
        UnitId(model="m", layer=-1, index=0)
    with pytest.raises(ValidationError, match="pattern"):
        UnitId(model="m", layer=0, index=0, kind="MLP Neuron")


def _record(**kwargs: object) -> NeuronRecord:
    ex = ActivationRecord(tokens=["a", "b"], activations=[0.0, 1.0])
    base: dict[str, object] = {
        "unit": UNIT,
        "top_records": [ex],
        "provenance": Provenance(model="gpt2", hook_point="transformer.h.5.mlp.act"),
    }
    base.update(kwargs)
    return NeuronRecord.model_validate(base)


def test_quantile_samples_need_one_more_than_boundaries() -> None:
    ex = ActivationRecord(tokens=["a"], activations=[1.0])
    ok = _record(quantile_boundaries=[0.1, 0.5], quantile_samples=[[ex], [ex], []])
    assert len(ok.quantile_samples) == 3
    with pytest.raises(ValidationError, match="3 quantile samples need 2 quantile boundaries"):
        _record(quantile_boundaries=[0.1], quantile_samples=[[ex], [ex], [ex]])
    with pytest.raises(ValidationError, match="ascending"):
        _record(quantile_boundaries=[0.5, 0.1], quantile_samples=[[ex], [ex], [ex]])
    with pytest.raises(ValidationError, match="without quantile_samples"):
        _record(quantile_boundaries=[0.5])
    with pytest.raises(ValidationError, match="quantile_levels has 1 values"):
        _record(
            quantile_boundaries=[0.1, 0.5],
            quantile_levels=[0.5],
            quantile_samples=[[ex], [ex], [ex]],
        )


def test_nan_moments_read_as_unknown_and_negative_variance_fails() -> None:
    record = _record(mean=math.nan, variance=2.0, skewness=None)
    assert record.mean is None and record.variance == 2.0 and record.skewness is None
    with pytest.raises(ValidationError, match="variance"):
        _record(variance=-1.0)


def test_neuron_record_json_round_trip_is_exact() -> None:
    ex1 = ActivationRecord(tokens=["x", " y"], activations=[0.25, -1e-9], token_ids=[87, 331])
    ex2 = ActivationRecord(tokens=["z"], activations=[3.5])
    record = _record(
        top_records=[ex1, ex2],
        random_sample=[ex2],
        quantile_boundaries=[0.1],
        quantile_levels=[0.5],
        quantile_samples=[[ex1], [ex2]],
        mean=0.1,
        variance=0.2,
        skewness=-0.3,
        kurtosis=4.0,
    )
    text = record.model_dump_json()
    assert NeuronRecord.model_validate_json(text) == record
    assert NeuronRecord.model_validate_json(text).model_dump_json() == text


def test_max_activation_and_missing_top_records() -> None:
    assert _record().max_activation == 1.0
    with pytest.raises(InsufficientRecordsError, match="no top-activating records"):
        _ = _record(top_records=[]).max_activation


def test_a_window_id_names_a_document_and_an_offset() -> None:
    window = WindowId(document=3, start=64)
    record = ActivationRecord(tokens=["a"], activations=[1.0], window_id=window)
    assert str(window) == "document 3 token 64"
    assert ActivationRecord.model_validate_json(record.model_dump_json()) == record
    assert record != record.model_copy(update={"window_id": WindowId(document=3, start=0)})
    old = ActivationRecord.model_validate_json('{"tokens": ["a"], "activations": [1.0]}')
    assert old.window_id is None  # records written before window ids
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        WindowId(document=-1, start=0)
