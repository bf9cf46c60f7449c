from __future__ import annotations

import pytest
from pydantic import ValidationError

from neuron_explainer import ActivationRecord, PromptScale, Score, SequenceSimulation


def test_prompt_scale_maps_max_to_top_and_clips_negatives() -> None:
    records = [ActivationRecord(tokens=["a", "b", "c"], activations=[-2.0, 0.5, 4.0])]
    scale = PromptScale.for_records(records)
    assert scale is not None and scale.max_activation == 4.0 and scale.top == 10
    levels = scale.discretize([-2.0, 0.0, 0.19, 0.2, 1.0, 3.9, 4.0, 9.0])
    assert levels == [0, 0, 0, 1, 3, 10, 10, 10]  # 1.0 -> 2.5 rounds half up to 3
    assert PromptScale.for_records([ActivationRecord(tokens=["a"], activations=[-1.0])]) is None
    with pytest.raises(ValidationError):
        PromptScale(max_activation=0.0)


def test_sequence_simulation_validates_shapes() -> None:
    ok = SequenceSimulation(
        tokens=("a", "b"),
        expected_activations=(0.3, 9.0),
        distribution_values=((0.0, 1.0), (9.0,)),
        distribution_probabilities=((0.7, 0.3), (1.0,)),
    )
    assert ok.scale == "simulated_0_10"
    with pytest.raises(ValidationError, match="1 values for 2 tokens"):
        SequenceSimulation(tokens=("a", "b"), expected_activations=(1.0,))
    with pytest.raises(ValidationError, match="give both"):
        SequenceSimulation(
            tokens=("a",), expected_activations=(1.0,), distribution_values=((1.0,),)
        )
    with pytest.raises(ValidationError, match="token 0: 2 values but 1 probabilities"):
        SequenceSimulation(
            tokens=("a",),
            expected_activations=(1.0,),
            distribution_values=((0.0, 1.0),),
            distribution_probabilities=((1.0,),),
        )
    with pytest.raises(ValidationError, match="sum to <= 1"):
        SequenceSimulation(
            tokens=("a",),
            expected_activations=(1.0,),
            distribution_values=((0.0, 1.0),),
            distribution_probabilities=((0.8, 0.8),),
        )
    with pytest.raises(ValidationError, match="finite"):
        SequenceSimulation(tokens=("a",), expected_activations=(float("nan"),))


def test_score_has_a_value_or_a_reason() -> None:
    assert Score(value=0.5).defined
    undefined = Score.undefined("constant")
    assert not undefined.defined and undefined.reason == "constant"
    with pytest.raises(ValidationError, match="either a value or a reason"):
        Score(value=0.5, reason="x")
    with pytest.raises(ValidationError, match="either a value or a reason"):
        Score(value=None)
    with pytest.raises(ValidationError):
        Score(value=float("nan"))


def test_calibration_parameters_must_match_the_method() -> None:
    from neuron_explainer import Calibration

    assert Calibration(method="linear", slope=2.0, intercept=0.0).slope == 2.0
    with pytest.raises(ValidationError, match="needs both slope and intercept"):
        Calibration(method="linear")
    with pytest.raises(ValidationError, match="xs and ys of the same length"):
        Calibration(method="percentile", xs=(1.0, 2.0), ys=(1.0,))
    with pytest.raises(ValidationError, match="strictly increasing"):
        Calibration(method="percentile", xs=(2.0, 1.0), ys=(1.0, 2.0))
    with pytest.raises(ValidationError, match="no slope or intercept"):
        Calibration(method="none", slope=1.0)
