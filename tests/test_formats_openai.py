"""OpenAI's public neuron-explainer formats: reading, writing, round trips and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from neuron_explainer import (
    ActivationRecord,
    ExplanationResult,
    FormatError,
    InvalidInputError,
    NeuronRecord,
    Provenance,
    UnitId,
    build_neuron_record,
    explain_neuron,
)
from neuron_explainer.formats import (
    OPENAI_DATASET,
    OpenAINeuronSimulationResults,
    explanation_results_to_openai,
    neuron_record_from_openai,
    neuron_record_to_openai,
    read_openai_explanations,
    read_openai_neuron_record,
    simulation_results_from_openai,
    simulation_results_to_openai,
    write_openai_explanations,
    write_openai_neuron_record,
)

DATA = Path(__file__).parent / "data" / "openai"
RECORD_FILES = ["neuron_record.json", "neuron_record_minimal.json"]


def same(a: Any, b: Any) -> bool:
    """Equal JSON values with equal types: ``0`` and ``0.0`` differ, ``-0.0`` and ``0.0`` too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def load_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


# --- neuron records: reading the hand-written files ---------------------------------------------


def test_published_record_reads_every_field() -> None:
    record = read_openai_neuron_record(DATA / "neuron_record.json")

    assert record.unit == UnitId(model="gpt2-xl", layer=5, index=131, kind="mlp_neuron")
    assert len(record.top_records) == 4
    assert record.top_records[0].tokens == (" born", " in", " 1912", ",")
    assert record.top_records[0].activations == (0.0, 0.125, 5.8125, -0.04)
    assert record.top_records[2].tokens[2] == " \U0001f600"
    assert record.top_records[3].tokens == (" the", ' "1984"', "\r\n")
    assert record.random_sample[1].tokens[:2] == ("\n", "\n")
    assert record.random_sample[2].tokens[:2] == (" \u00e2\u0080", "\u0099")
    assert record.random_sample[0].activations[2] == -0.16997669637203217
    assert len(record.quantile_samples) == 5
    assert [len(s) for s in record.quantile_samples] == [2, 1, 1, 1, 1]
    assert record.quantile_samples[1][0].tokens == (" 日本", "語")
    assert record.quantile_boundaries == (0.0123, 0.25, 1.5, 3.75)
    assert record.quantile_levels is None
    assert (record.mean, record.variance, record.skewness, record.kurtosis) == (
        0.043101,
        0.21875,
        None,
        12.5,
    )
    assert record.provenance == Provenance(
        model="gpt2-xl",
        hook_point=None,
        dataset=OPENAI_DATASET,
        library_version=None,
        extra={"source_format": "openai-neuron-record", "source": str(DATA / "neuron_record.json")},
    )


def test_model_and_kind_arguments_name_the_unit() -> None:
    record = read_openai_neuron_record(
        str(DATA / "neuron_record_minimal.json"), model="gpt2", kind="sae_latent"
    )
    assert record.unit == UnitId(model="gpt2", layer=47, index=6399, kind="sae_latent")
    assert record.provenance.model == "gpt2"
    assert record.random_sample == ()
    assert record.quantile_samples == ()
    assert record.quantile_boundaries == ()
    assert record.mean is None


def test_bad_model_argument_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="model or kind") as info:
        read_openai_neuron_record(DATA / "neuron_record.json", kind="Not A Kind")
    assert not isinstance(info.value, FormatError)


def test_bare_nan_statistics_read_as_none() -> None:
    assert "NaN" in (DATA / "neuron_record_nan.json").read_text(encoding="utf-8")
    record = read_openai_neuron_record(DATA / "neuron_record_nan.json")
    assert (record.mean, record.variance, record.skewness, record.kurtosis) == (None,) * 4
    assert record.top_records[0].activations == (1.5, -0.25)


# --- neuron records: round trips ----------------------------------------------------------------


@pytest.mark.parametrize("name", RECORD_FILES)
def test_record_file_round_trips_exactly(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    write_openai_neuron_record(read_openai_neuron_record(DATA / name), out)
    assert same(json.loads(out.read_text(encoding="utf-8")), load(name))
    assert same(neuron_record_to_openai(read_openai_neuron_record(DATA / name)), load(name))


def test_nan_statistics_are_written_as_null(tmp_path: Path) -> None:
    out = tmp_path / "nan.json"
    write_openai_neuron_record(read_openai_neuron_record(DATA / "neuron_record_nan.json"), out)
    text = out.read_text(encoding="utf-8")
    assert "NaN" not in text
    expected = load("neuron_record_nan.json")
    assert all(math.isnan(expected[m]) for m in ("mean", "variance", "skewness", "kurtosis"))
    expected.update(mean=None, variance=None, skewness=None, kurtosis=None)
    assert same(json.loads(text), expected)


def test_written_file_is_ascii_json_with_dataclass_names_first(tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    write_openai_neuron_record(read_openai_neuron_record(DATA / "neuron_record.json"), out)
    raw = out.read_bytes()
    assert raw.isascii()
    assert raw.endswith(b"}\n")
    data = json.loads(raw)
    assert next(iter(data)) == "dataclass_name"
    assert list(data) == [
        "dataclass_name",
        "neuron_id",
        "random_sample",
        "random_sample_by_quantile",
        "quantile_boundaries",
        "mean",
        "variance",
        "skewness",
        "kurtosis",
        "most_positive_activation_records",
    ]
    assert data["random_sample_by_quantile"][1][0]["tokens"] == [" 日本", "語"]


def test_integer_activations_read_as_floats_and_write_as_floats() -> None:
    data = load("neuron_record_minimal.json")
    data["most_positive_activation_records"][0] = {
        "dataclass_name": "ActivationRecord",
        "tokens": ["a", "b"],
        "activations": [0, 3],
    }
    record = neuron_record_from_openai(data)
    assert record.top_records[0].activations == (0.0, 3.0)
    assert all(type(a) is float for a in record.top_records[0].activations)
    written = neuron_record_to_openai(record)["most_positive_activation_records"][0]
    assert same(written["activations"], [0.0, 3.0])


def test_missing_optional_fields_and_any_key_order_are_accepted() -> None:
    data = {
        "most_positive_activation_records": [{"activations": [1.0, 2.0], "tokens": ["a", "b"]}],
        "neuron_id": {"neuron_index": 3, "layer_index": 1},
    }
    record = neuron_record_from_openai(data, model="gpt2")
    assert record.unit == UnitId(model="gpt2", layer=1, index=3)
    assert record.top_records == (ActivationRecord(tokens=("a", "b"), activations=(1.0, 2.0)),)
    assert record.random_sample == ()
    assert record.quantile_samples == ()
    assert (record.mean, record.variance, record.skewness, record.kurtosis) == (None,) * 4
    assert "source" not in record.provenance.extra


def _synthetic_excerpts(n: int = 160) -> list[ActivationRecord]:
    words = [" the", " cat", " 1912", " sat", " on", "\n", " café", " 2001"]
    excerpts = []
    for i in range(n):
        tokens = tuple(words[(i * 3 + j * (i % 5 + 1)) % len(words)] for j in range(8))
        activations = tuple(
            (4.0 + (i % 7) * 0.25 if t.strip().isdigit() else 0.0) - 0.01 * ((i + j) % 3)
            for j, t in enumerate(tokens)
        )
        excerpts.append(ActivationRecord(tokens=tokens, activations=activations))
    return excerpts


@pytest.fixture(scope="module")
def synthetic_record() -> NeuronRecord:
    unit = UnitId(model="gpt2", layer=3, index=42)
    return build_neuron_record(unit, _synthetic_excerpts(), top_k=20, n_random=12)


def test_our_record_survives_openai_round_trip(synthetic_record: NeuronRecord) -> None:
    record = synthetic_record
    assert len(record.quantile_samples) == 5 and record.skewness is not None
    back = neuron_record_from_openai(
        neuron_record_to_openai(record), model=record.unit.model, kind=record.unit.kind
    )
    assert back.unit == record.unit
    assert back.top_records == record.top_records
    assert back.random_sample == record.random_sample
    assert back.quantile_samples == record.quantile_samples
    assert back.quantile_boundaries == record.quantile_boundaries
    assert (back.mean, back.variance, back.skewness, back.kurtosis) == (
        record.mean,
        record.variance,
        record.skewness,
        record.kurtosis,
    )
    assert back.quantile_levels is None  # not representable in OpenAI's format


def test_write_drops_token_ids_and_reads_back(tmp_path: Path) -> None:
    record = NeuronRecord(
        unit=UnitId(model="llama", layer=0, index=1),
        top_records=(ActivationRecord(tokens=("x",), activations=(1.0,), token_ids=(7,)),),
        provenance=Provenance(model="llama", hook_point="model.layers.0.mlp.down_proj"),
    )
    path = tmp_path / "r.json"
    write_openai_neuron_record(record, path)
    back = read_openai_neuron_record(path, model="llama")
    assert back.top_records[0].token_ids is None
    assert back.top_records[0].tokens == ("x",)
    assert back.quantile_samples == ()
    assert json.loads(path.read_text(encoding="utf-8"))["random_sample_by_quantile"] is None


# --- neuron records: bad input ------------------------------------------------------------------


def _set(data: dict[str, Any], path: list[Any], value: Any) -> None:
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _delete(data: dict[str, Any], path: list[Any]) -> None:
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]


BAD_RECORDS = [
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 3, "dataclass_name"], "Foo"),
        r"most_positive_activation_records\[3\]\.dataclass_name: expected 'ActivationRecord', "
        r"got the string 'Foo'",
        id="wrong-dataclass-name",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "dataclass_name"], "ActivationRecord"),
        r"neuron_id\.dataclass_name: expected 'NeuronId'",
        id="wrong-neuron-id-name",
    ),
    pytest.param(
        lambda d: _set(d, ["dataclass_name"], "NeuronSimulationResults"),
        r"dataclass_name: expected 'NeuronRecord'",
        id="wrong-top-level-name",
    ),
    pytest.param(
        lambda d: _delete(d, ["neuron_id"]),
        r": neuron_id: required field is missing",
        id="missing-neuron-id",
    ),
    pytest.param(
        lambda d: _delete(d, ["most_positive_activation_records"]),
        r": most_positive_activation_records: required field is missing",
        id="missing-top-records",
    ),
    pytest.param(
        lambda d: _delete(d, ["most_positive_activation_records", 1, "tokens"]),
        r"most_positive_activation_records\[1\]\.tokens: required field is missing",
        id="missing-tokens",
    ),
    pytest.param(
        lambda d: _delete(d, ["neuron_id", "neuron_index"]),
        r"neuron_id\.neuron_index: required field is missing",
        id="missing-neuron-index",
    ),
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 3, "activations"], [0.0, 1.0]),
        r"most_positive_activation_records\[3\]\.activations: has 2 values but tokens has 3",
        id="length-mismatch",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample_by_quantile", 2, 0, "activations"], [0.3]),
        r"random_sample_by_quantile\[2\]\[0\]\.activations: has 1 values but tokens has 2",
        id="length-mismatch-in-quantile",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample", 0, "activations", 2], float("nan")),
        r"random_sample\[0\]\.activations\[2\]: must be a finite number, got nan",
        id="nan-activation",
    ),
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 0, "activations", 1], float("inf")),
        r"most_positive_activation_records\[0\]\.activations\[1\]: must be a finite number",
        id="infinite-activation",
    ),
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 0, "activations", 1], "0.5"),
        r"most_positive_activation_records\[0\]\.activations\[1\]: expected a number, "
        r"got the string '0.5'",
        id="string-activation",
    ),
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 0, "activations", 1], True),
        r"activations\[1\]: expected a number, got the boolean true",
        id="boolean-activation",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample", 1, "tokens", 0], 13),
        r"random_sample\[1\]\.tokens\[0\]: expected a string, got the number 13",
        id="non-string-token",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample", 1], {"tokens": [], "activations": []}),
        r"random_sample\[1\]\.tokens: is empty",
        id="empty-record",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample"], {"tokens": ["a"]}),
        r"random_sample: expected a list, got an object",
        id="record-list-is-object",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample", 0], ["a"]),
        r"random_sample\[0\]: expected a JSON object \(ActivationRecord\), got a list of 1 items",
        id="record-is-list",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "layer_index"], -1),
        r"neuron_id\.layer_index: must be >= 0, got -1",
        id="negative-layer",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "neuron_index"], "131"),
        r"neuron_id\.neuron_index: expected a non-negative integer, got the string '131'",
        id="string-index",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "neuron_index"], 131.0),
        r"neuron_id\.neuron_index: expected a non-negative integer",
        id="float-index",
    ),
    pytest.param(
        lambda d: _set(d, ["most_positive_activation_records", 2, "token_ids"], [1, 2, 3]),
        r"most_positive_activation_records\[2\]: unexpected field\(s\) 'token_ids' in "
        r"ActivationRecord",
        id="unknown-field",
    ),
    pytest.param(
        lambda d: _set(d, ["quantile_boundaries"], [0.0123, 0.25, 1.5]),
        r"random_sample_by_quantile: 5 quantile samples do not fit 3 quantile_boundaries",
        id="quantile-count",
    ),
    pytest.param(
        lambda d: _set(d, ["random_sample_by_quantile"], None),
        r"random_sample_by_quantile: 0 quantile samples do not fit 4 quantile_boundaries",
        id="boundaries-without-samples",
    ),
    pytest.param(
        lambda d: _set(d, ["quantile_boundaries"], [0.0123, 1.5, 0.25, 3.75]),
        r"quantile_boundaries: must be ascending",
        id="descending-boundaries",
    ),
    pytest.param(
        lambda d: _set(d, ["quantile_boundaries", 3], float("nan")),
        r"quantile_boundaries\[3\]: must be a finite number",
        id="nan-boundary",
    ),
    pytest.param(
        lambda d: _set(d, ["variance"], -1.0),
        r": variance: must be >= 0, got -1.0",
        id="negative-variance",
    ),
    pytest.param(
        lambda d: _set(d, ["kurtosis"], float("inf")),
        r": kurtosis: must be a finite number, got inf",
        id="infinite-statistic",
    ),
    pytest.param(
        lambda d: _set(d, ["mean"], "0.1"),
        r": mean: expected a number",
        id="string-statistic",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_RECORDS)
def test_bad_record_raises_format_error_naming_file_and_path(
    mutate: Any, message: str, tmp_path: Path
) -> None:
    data = load("neuron_record.json")
    mutate(data)

    with pytest.raises(FormatError, match=message) as from_dict:
        neuron_record_from_openai(data, source="my-record")
    assert str(from_dict.value).startswith("my-record: ")

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(FormatError, match=message) as from_file:
        read_openai_neuron_record(path)
    assert str(from_file.value).startswith(f"{path}: ")


def test_record_without_source_is_named_generically() -> None:
    with pytest.raises(FormatError, match=r"^OpenAI document: neuron_id: required field"):
        neuron_record_from_openai({"most_positive_activation_records": []})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b'{"neuron_id": ', r"not valid JSON: .*\(line 1, column 15\)", id="truncated"),
        pytest.param(b"[1, 2]", r"expected a NeuronRecord object at the top level", id="list"),
        pytest.param(b'{"a": "\xff"}', r"not valid UTF-8 at byte 7", id="not-utf8"),
        pytest.param(b"", r"not valid JSON", id="empty"),
    ],
)
def test_unreadable_record_file_raises_format_error(
    content: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as info:
        read_openai_neuron_record(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_openai_neuron_record(tmp_path / "nope.json")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + (DATA / "neuron_record_minimal.json").read_bytes())
    assert read_openai_neuron_record(path).unit.index == 6399


# --- explanations JSONL -------------------------------------------------------------------------


def test_explanations_file_reads_every_field() -> None:
    results = read_openai_explanations(DATA / "explanations.jsonl")

    assert [r.unit for r in results] == [
        UnitId(model="gpt2-xl", layer=5, index=131),
        UnitId(model="gpt2-xl", layer=12, index=0),
    ]
    first, second = results
    assert len(first.scored_explanations) == 2
    assert first.scored_explanations[1] is None
    explained = first.scored_explanations[0]
    assert explained is not None
    assert explained.explanation == " years, especially four-digit years"
    assert explained.score == 0.7071067811865476
    sim = explained.scored_simulation
    assert (sim.rsquared_score, sim.absolute_dev_explained_score) == (0.42, 0.3333333333333333)
    seq0, seq1 = sim.scored_sequence_simulations
    assert seq0.simulation.activation_scale == "simulated_normalized_activations"
    assert seq0.simulation.distribution_values == ((0.0,), (0.0, 1.0), (7.0, 8.0, 10.0))
    assert seq0.true_activations == (0.0, 0.125, 5.8125)
    assert (seq0.ev_correlation_score, seq0.rsquared_score) == (0.9965, -1.5)
    assert seq1.simulation.tokens == ("\n", " \u00e2\u0080", "\u2028")
    assert seq1.ev_correlation_score is None
    assert seq1.simulation.distribution_values[0] == ()

    calibrated = second.scored_explanations[0]
    assert calibrated is not None
    assert calibrated.explanation == 'the word "café"'
    assert calibrated.score is None
    assert calibrated.scored_simulation.rsquared_score is None
    scored = calibrated.scored_simulation.scored_sequence_simulations[0]
    assert (scored.ev_correlation_score, scored.rsquared_score) == (None, None)
    assert scored.simulation.activation_scale == "neuron_activations"
    raw = scored.simulation.uncalibrated_simulation
    assert raw is not None
    assert raw.activation_scale == "simulated_normalized_activations"
    assert raw.expected_activations == (0.2, 4.1)
    assert raw.uncalibrated_simulation is None


def test_explanations_file_round_trips_exactly(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_openai_explanations(read_openai_explanations(DATA / "explanations.jsonl"), out)
    written = out.read_text(encoding="utf-8")
    assert written.count("\n") == 2 and written.endswith("\n")
    assert same(load_jsonl(out), load_jsonl(DATA / "explanations.jsonl"))


def test_simulation_results_dict_round_trip() -> None:
    for line in load_jsonl(DATA / "explanations.jsonl"):
        results = simulation_results_from_openai(line, model="gpt2")
        assert results.unit.model == "gpt2"
        assert same(simulation_results_to_openai(results), line)


def test_explanations_nan_scores_read_as_none_and_write_as_null(tmp_path: Path) -> None:
    line = load_jsonl(DATA / "explanations.jsonl")[0]
    line["scored_explanations"][0]["scored_simulation"]["ev_correlation_score"] = float("nan")
    path = tmp_path / "nan.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert "NaN" in path.read_text(encoding="utf-8")

    (results,) = read_openai_explanations(path)
    entry = results.scored_explanations[0]
    assert entry is not None and entry.score is None
    write_openai_explanations([results], tmp_path / "out.jsonl")
    written = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in written
    assert (
        json.loads(written)["scored_explanations"][0]["scored_simulation"]["ev_correlation_score"]
        is None
    )


def test_explanations_tolerate_missing_optional_fields_and_crlf(tmp_path: Path) -> None:
    minimal = {
        "scored_explanations": [
            {
                "scored_simulation": {
                    "scored_sequence_simulations": [
                        {
                            "true_activations": [1, 0],
                            "simulation": {
                                "activation_scale": "neuron_activations",
                                "tokens": ["a", "b"],
                                "expected_activations": [0.5, 0],
                            },
                        }
                    ]
                },
                "explanation": "letters",
            }
        ],
        "neuron_id": {"layer_index": 2, "neuron_index": 9},
    }
    path = tmp_path / "min.jsonl"
    path.write_bytes(b"\r\n" + json.dumps(minimal).encode() + b"\r\n\r\n")
    (results,) = read_openai_explanations(path, model="gpt2", kind="mlp_neuron")
    assert results.unit == UnitId(model="gpt2", layer=2, index=9)
    entry = results.scored_explanations[0]
    assert entry is not None and entry.score is None
    seq = entry.scored_simulation.scored_sequence_simulations[0]
    assert seq.true_activations == (1.0, 0.0)
    assert seq.simulation.distribution_values == ()
    assert seq.simulation.uncalibrated_simulation is None
    assert seq.ev_correlation_score is None


def test_empty_jsonl_reads_as_no_results(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n \n", encoding="utf-8")
    assert read_openai_explanations(path) == []


SEQ = ["scored_explanations", 0, "scored_simulation", "scored_sequence_simulations"]
SEQ_PATH = r"scored_explanations\[0\]\.scored_simulation\.scored_sequence_simulations"
BAD_EXPLANATIONS = [
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "activation_scale"], "logits"),
        SEQ_PATH + r"\[0\]\.simulation\.activation_scale: unknown scale 'logits'",
        id="unknown-scale",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 1, "simulation", "dataclass_name"], "Foo"),
        SEQ_PATH + r"\[1\]\.simulation\.dataclass_name: expected 'SequenceSimulation'",
        id="wrong-dataclass-name",
    ),
    pytest.param(
        lambda d: _delete(d, ["scored_explanations", 0, "explanation"]),
        r"scored_explanations\[0\]\.explanation: required field is missing",
        id="missing-explanation",
    ),
    pytest.param(
        lambda d: _delete(d, [*SEQ, 0, "simulation", "tokens"]),
        SEQ_PATH + r"\[0\]\.simulation\.tokens: required field is missing",
        id="missing-tokens",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "true_activations"], [0.0, 0.125]),
        SEQ_PATH + r"\[0\]: true_activations has 2 values but the simulation has 3 tokens",
        id="true-activations-length",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "expected_activations"], [0.0]),
        SEQ_PATH + r"\[0\]\.simulation: expected_activations has 1 values for 3 tokens",
        id="expected-activations-length",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "distribution_probabilities", 2], [0.5]),
        SEQ_PATH + r"\[0\]\.simulation: token 2: 3 distribution values, 1 probabilities",
        id="distribution-length",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "expected_activations", 2], float("nan")),
        SEQ_PATH + r"\[0\]\.simulation\.expected_activations\[2\]: must be a finite number",
        id="nan-expected-activation",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "rsquared_score"], "high"),
        SEQ_PATH + r"\[0\]\.rsquared_score: expected a number, got the string 'high'",
        id="string-score",
    ),
    pytest.param(
        lambda d: _set(
            d,
            ["scored_explanations", 0, "scored_simulation", "ev_correlation_score"],
            float("-inf"),
        ),
        r"scored_explanations\[0\]\.scored_simulation\.ev_correlation_score: must be a finite",
        id="infinite-score",
    ),
    pytest.param(
        lambda d: _set(d, ["scored_explanations", 1], "n/a"),
        r"scored_explanations\[1\]: expected a JSON object \(ScoredExplanation\), got the "
        r"string 'n/a'",
        id="string-entry",
    ),
    pytest.param(
        lambda d: _set(d, ["scored_explanations", 0, "score"], 1.0),
        r"scored_explanations\[0\]: unexpected field\(s\) 'score' in ScoredExplanation",
        id="unknown-field",
    ),
    pytest.param(
        lambda d: _delete(d, ["neuron_id"]),
        r"line 1: neuron_id: required field is missing",
        id="missing-neuron-id",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "activation_scale"], 3),
        SEQ_PATH + r"\[0\]\.simulation\.activation_scale: expected a string, got the number 3$",
        id="scale-not-a-string",
    ),
    pytest.param(
        lambda d: _set(
            d,
            [*SEQ, 0, "simulation", "uncalibrated_simulation"],
            {"dataclass_name": "Foo", "tokens": ["a"], "expected_activations": [1]},
        ),
        SEQ_PATH + r"\[0\]\.simulation\.uncalibrated_simulation\.dataclass_name: expected "
        r"'SequenceSimulation', got the string 'Foo'$",
        id="nested-uncalibrated-simulation",
    ),
    pytest.param(
        lambda d: _set(
            d,
            [*SEQ, 0, "simulation", "uncalibrated_simulation"],
            {"tokens": ["a"], "expected_activations": [1], "activation_scale": "logits"},
        ),
        SEQ_PATH + r"\[0\]\.simulation\.uncalibrated_simulation\.activation_scale: unknown scale",
        id="nested-unknown-scale",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "rsquared_score"], True),
        SEQ_PATH + r"\[0\]\.rsquared_score: expected a number, got the boolean true$",
        id="boolean-score",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "true_activations", 1], float("nan")),
        SEQ_PATH + r"\[0\]\.true_activations\[1\]: must be a finite number, got nan$",
        id="nan-true-activation",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "tokens", 0], None),
        SEQ_PATH + r"\[0\]\.simulation\.tokens\[0\]: expected a string, got null$",
        id="null-token",
    ),
    pytest.param(
        lambda d: _set(d, [*SEQ, 0, "simulation", "distribution_probabilities"], [[1.0], [0.5]]),
        SEQ_PATH + r"\[0\]\.simulation: distribution_values has 3 entries but "
        r"distribution_probabilities has 2$",
        id="distribution-count",
    ),
    pytest.param(
        lambda d: _set(d, ["scored_explanations", 0, "scored_simulation"], []),
        r"scored_explanations\[0\]\.scored_simulation: expected a JSON object "
        r"\(ScoredSimulation\), got a list of 0 items$",
        id="simulation-is-a-list",
    ),
    pytest.param(
        lambda d: _set(d, ["scored_explanations"], {"0": None}),
        r"line 1: scored_explanations: expected a list, got an object$",
        id="explanations-not-a-list",
    ),
    pytest.param(
        lambda d: _set(d, ["scored_explanations", 0, "explanation"], 7),
        r"scored_explanations\[0\]\.explanation: expected a string, got the number 7$",
        id="explanation-not-a-string",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "layer_index"], -1),
        r"line 1: neuron_id\.layer_index: must be >= 0, got -1$",
        id="negative-layer",
    ),
    pytest.param(
        lambda d: _set(d, ["neuron_id", "neuron_index"], 1.5),
        r"line 1: neuron_id\.neuron_index: expected a non-negative integer, got the number 1\.5$",
        id="float-neuron-index",
    ),
    pytest.param(
        lambda d: _set(d, ["dataclass_name"], "NeuronRecord"),
        r"line 1: dataclass_name: expected 'NeuronSimulationResults', got the string "
        r"'NeuronRecord'$",
        id="wrong-top-level-name",
    ),
    pytest.param(
        lambda d: (
            _set(d, ["scored_explanations", 0, "scored_simulation", "a"], 1)
            or _set(d, ["scored_explanations", 0, "scored_simulation", "b"], 2)
        ),
        r"scored_explanations\[0\]\.scored_simulation: unexpected field\(s\) 'a', 'b' in "
        r"ScoredSimulation; known fields: 'scored_sequence_simulations', 'ev_correlation_score', "
        r"'rsquared_score', 'absolute_dev_explained_score'$",
        id="unknown-fields-listed-together",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_EXPLANATIONS)
def test_bad_explanation_line_raises_format_error_naming_line_and_path(
    mutate: Any, message: str, tmp_path: Path
) -> None:
    lines = load_jsonl(DATA / "explanations.jsonl")
    mutate(lines[0])
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in reversed(lines)), encoding="utf-8")

    with pytest.raises(FormatError, match=message.replace("line 1", "line 2")) as info:
        read_openai_explanations(path)
    assert str(info.value).startswith(f"{path} line 2: ")

    with pytest.raises(FormatError, match=message.removeprefix("line 1")):
        simulation_results_from_openai(lines[0])


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = (DATA / "explanations.jsonl").read_text(encoding="utf-8").split("\n")[0]
    path.write_text(f"{good}\n\n{{not json}}\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.jsonl line 3: top level: not valid JSON"):
        read_openai_explanations(path)


def test_top_level_array_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("[]\n", encoding="utf-8")
    with pytest.raises(
        FormatError, match=r"line 1: top level: expected a JSON object \(NeuronSimulationResults\)"
    ):
        read_openai_explanations(path)


def test_writing_a_bad_mapping_raises_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"^results\[0\]: neuron_id: required field is missing"):
        write_openai_explanations([{"scored_explanations": []}], tmp_path / "x.jsonl")


# --- exporting our own results -------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained(synthetic_record: NeuronRecord) -> ExplanationResult:
    return explain_neuron(synthetic_record)


def test_explanation_results_export(explained: ExplanationResult, tmp_path: Path) -> None:
    exported = explanation_results_to_openai([explained])

    assert exported["dataclass_name"] == "NeuronSimulationResults"
    assert exported["neuron_id"] == {
        "dataclass_name": "NeuronId",
        "layer_index": 3,
        "neuron_index": 42,
    }
    (entry,) = exported["scored_explanations"]
    assert entry["dataclass_name"] == "ScoredExplanation"
    assert entry["explanation"] == explained.explanation.text
    sim = entry["scored_simulation"]
    assert sim["ev_correlation_score"] == explained.scored.correlation.value
    assert sim["ev_correlation_score"] is not None
    assert sim["rsquared_score"] == explained.scored.rsquared.value
    assert sim["absolute_dev_explained_score"] == explained.scored.absolute_dev_explained.value
    sequences = sim["scored_sequence_simulations"]
    assert len(sequences) == len(explained.scored.sequences) > 0
    for ours, theirs in zip(explained.scored.sequences, sequences, strict=True):
        assert theirs["dataclass_name"] == "ScoredSequenceSimulation"
        assert theirs["true_activations"] == list(ours.record.activations)
        assert theirs["ev_correlation_score"] == ours.correlation.value
        assert theirs["rsquared_score"] is None
        assert theirs["absolute_dev_explained_score"] is None
        simulation = theirs["simulation"]
        assert simulation["tokens"] == list(ours.record.tokens)
        assert simulation["expected_activations"] == list(ours.simulation.expected_activations)
        assert simulation["activation_scale"] == "neuron_activations"
        assert simulation["distribution_values"] == []
        assert simulation["distribution_probabilities"] == []
        assert simulation["uncalibrated_simulation"] is None

    path = tmp_path / "ours.jsonl"
    write_openai_explanations([exported], path)
    (back,) = read_openai_explanations(path, model="gpt2")
    assert isinstance(back, OpenAINeuronSimulationResults)
    assert back.unit == explained.unit
    assert same(simulation_results_to_openai(back), exported)
    assert same(load_jsonl(path), [exported])


def test_explanation_results_export_maps_the_0_10_scale(explained: ExplanationResult) -> None:
    def rescaled(seq: Any) -> Any:
        n = len(seq.simulation.tokens)
        simulation = seq.simulation.model_copy(
            update={
                "scale": "simulated_0_10",
                "distribution_values": ((0.0, 10.0),) * n,
                "distribution_probabilities": ((0.75, 0.25),) * n,
            }
        )
        return seq.model_copy(update={"simulation": simulation})

    scored = explained.scored.model_copy(
        update={"sequences": tuple(rescaled(s) for s in explained.scored.sequences)}
    )
    other = explained.model_copy(update={"scored": scored})
    exported = explanation_results_to_openai([explained, other])

    first, second = exported["scored_explanations"]
    seq = second["scored_simulation"]["scored_sequence_simulations"][0]["simulation"]
    assert seq["activation_scale"] == "simulated_normalized_activations"
    assert seq["distribution_values"] == [[0.0, 10.0]] * len(seq["tokens"])
    assert seq["distribution_probabilities"] == [[0.75, 0.25]] * len(seq["tokens"])
    assert (
        first["scored_simulation"]["scored_sequence_simulations"][0]["simulation"][
            "activation_scale"
        ]
        == "neuron_activations"
    )
    assert simulation_results_from_openai(exported).scored_explanations[1] is not None


def test_explanation_results_export_refuses_mixed_or_no_units(
    explained: ExplanationResult,
) -> None:
    elsewhere = explained.model_copy(update={"unit": UnitId(model="gpt2", layer=3, index=43)})
    with pytest.raises(InvalidInputError, match=r"results\[1\] is for gpt2 layer 3 mlp_neuron 43"):
        explanation_results_to_openai([explained, elsewhere])
    with pytest.raises(InvalidInputError, match="no results"):
        explanation_results_to_openai([])
    with pytest.raises(InvalidInputError, match=r"results\[0\] is a dict"):
        explanation_results_to_openai([{"unit": 1}])  # type: ignore[list-item]


# --- import hygiene -------------------------------------------------------------------------------


def test_importing_formats_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys, neuron_explainer.formats\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
