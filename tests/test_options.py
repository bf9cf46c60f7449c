"""One options model: `ExplainOptions` and `RunOptions` validated once, with one clear error,
shared by explain_neuron, explain_neurons, the estimate and rescore; a run stored without an
option that now has a default resumes."""

from __future__ import annotations

import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest

from neuron_explainer import (
    ExplainOptions,
    InvalidInputError,
    NeuronRecord,
    UnitId,
    explain_neuron,
)
from neuron_explainer.options import RunOptions
from neuron_explainer.runs import EXPLAIN_OPTIONS, RunSummary, explain_neurons, rescore
from neuron_explainer.testing import number_neuron_record

DATA = Path(__file__).resolve().parent / "data" / "v1"


def records(n: int = 3) -> dict[UnitId, NeuronRecord]:
    found = {}
    for i in range(n):
        unit = UnitId(model="synthetic-numbers", layer=0, index=i)
        found[unit] = number_neuron_record(seed=i).model_copy(update={"unit": unit})
    return found


# --- the models ----------------------------------------------------------------------------


def test_options_come_from_keywords_a_mapping_or_the_model() -> None:
    default = ExplainOptions.build()
    assert default == ExplainOptions() and default.calibration == "linear"
    from_mapping = ExplainOptions.build({"best_of": 3, "score_split": "test"})
    assert from_mapping == ExplainOptions(best_of=3, score_split="test")
    assert ExplainOptions.build(from_mapping) is from_mapping
    assert ExplainOptions.build(from_mapping, best_of=2).best_of == 2  # keywords win
    assert (
        EXPLAIN_OPTIONS
        == default.model_dump()
        == {
            "calibration": "linear",
            "score_split": "valid",
            "n_top_per_split": None,
            "n_random_per_split": None,
            "best_of": 1,
            "max_failed_fraction": 0.10,
            "scoring": "plain",
            "sensitivity": "auto",
            "neutral_explanation": "an unknown pattern",
            "revise": False,
            "test_sentences": 6,
        }
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"budget_usd": 1}, r"unknown explain_options \['budget_usd'\]; choose from \['best_of'"),
        ({"calibration": "cubic"}, "unknown calibration 'cubic'; choose 'none', 'linear'"),
        ({"score_split": "train"}, "score_split must be 'valid' or 'test', got 'train'"),
        ({"best_of": 0}, "best_of must be an integer >= 1, got 0"),
        ({"best_of": True}, "best_of must be an integer >= 1, got True"),
        ({"best_of": 2.5}, "best_of must be an integer >= 1, got 2.5"),
        ({"n_top_per_split": 0}, "n_top_per_split must be an integer >= 1 or None, got 0"),
        ({"n_random_per_split": -1}, "n_random_per_split must be an integer >= 0 or None"),
        ({"max_failed_fraction": 1.5}, "max_failed_fraction must be a number from 0 to 1"),
        ({"max_failed_fraction": -0.1}, r"max_failed_fraction must be .* got -0\.1"),
        ({"max_failed_fraction": float("nan")}, "max_failed_fraction must be a number"),
    ],
)
def test_bad_explain_options_raise_one_typed_error(given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ExplainOptions.build(given)


def test_every_problem_is_named_in_one_error() -> None:
    with pytest.raises(InvalidInputError) as info:
        ExplainOptions.build({"colour": 1, "best_of": 0, "calibration": "x"})
    message = str(info.value)
    assert "unknown explain_options ['colour']" in message
    assert "best_of must be" in message and "unknown calibration 'x'" in message
    with pytest.raises(InvalidInputError, match="must be ExplainOptions or a mapping"):
        ExplainOptions.build("best_of=2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
        ({"budget_usd": -1}, r"budget_usd must be a number >= 0 \(or None\), got -1"),
        ({"budget_usd": float("nan")}, "budget_usd must be a number >= 0"),
        ({"retry_failed": "yes"}, "retry_failed must be True or False"),
        ({"sample_units": 0}, "sample_units must be an integer >= 1, got 0"),
    ],
)
def test_bad_run_options_raise_one_typed_error(given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RunOptions.build(given)


# --- shared by the public functions --------------------------------------------------------


def test_explain_neuron_takes_the_model_or_the_keywords_not_both() -> None:
    record = number_neuron_record()
    by_keywords = explain_neuron(record, n_top_per_split=3, n_random_per_split=2)
    options = ExplainOptions(n_top_per_split=3, n_random_per_split=2)
    by_model = explain_neuron(record, explain_options=options)
    assert by_model.split_plan == by_keywords.split_plan
    assert by_model.scored.correlation == by_keywords.scored.correlation
    assert explain_neuron(record, explain_options={"score_split": "test"}).scored.split == "test"
    with pytest.raises(InvalidInputError, match="best_of given both as keywords and in explain_"):
        explain_neuron(record, best_of=2, explain_options=options)
    with pytest.raises(InvalidInputError, match="budget_usd must be a number >= 0"):
        explain_neuron(record, budget_usd=-1.0)


def test_explain_neurons_takes_the_model_as_explain_options(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    options = ExplainOptions(n_top_per_split=3, n_random_per_split=2)
    first = explain_neurons(records=records(2), db=db, explain_options=options)
    assert isinstance(first, RunSummary) and first.done == 2
    # The same options as a mapping are the same configuration: the run resumes.
    again = explain_neurons(
        records=records(3), db=db, explain_options={"n_top_per_split": 3, "n_random_per_split": 2}
    )
    assert isinstance(again, RunSummary) and (again.done, again.already_done) == (1, 2)
    with pytest.raises(InvalidInputError, match=r"another configuration.*options"):
        explain_neurons(records=records(3), db=db, explain_options=ExplainOptions(best_of=2))
    with pytest.raises(InvalidInputError, match="concurrency must be an integer >= 1"):
        explain_neurons(records=records(1), db=db, concurrency=0, explain_options=options)
    with pytest.raises(InvalidInputError, match="sample_units must be an integer >= 1"):
        explain_neurons(records=records(1), db=db, dry_run=True, sample_units=0)
    with pytest.raises(InvalidInputError, match="budget_usd must be a number >= 0"):
        rescore(db, "token-table", records=records(3), budget_usd=-2)


# --- resuming a run stored before an option existed ----------------------------------------


def stored_options(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as connection:
        (value,) = connection.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    options: dict[str, object] = json.loads(value)["options"]
    return options


def drop_stored_option(db: Path, name: str) -> None:
    """Rewrite the run's config as a version that did not have option ``name`` wrote it."""
    with sqlite3.connect(db) as connection:
        (value,) = connection.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        config = json.loads(value)
        del config["options"][name]
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config, sort_keys=True),)
        )


def test_a_run_stored_without_a_defaulted_option_resumes(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    explain_neurons(records=records(2), db=db)
    drop_stored_option(db, "best_of")
    assert "best_of" not in stored_options(db)

    resumed = explain_neurons(records=records(3), db=db)  # best_of=1, the default
    assert isinstance(resumed, RunSummary) and (resumed.done, resumed.already_done) == (1, 2)
    assert "best_of" not in stored_options(db)  # the held config is kept as it was
    dry = explain_neurons(records=records(3), db=db, dry_run=True)
    assert dry.units == 0  # type: ignore[union-attr]
    # An option that differs from the default the old run had is still refused.
    with pytest.raises(InvalidInputError, match=r"another configuration.*options"):
        explain_neurons(records=records(3), db=db, explain_options={"best_of": 2})
    rescored = rescore(db, "token-table", records=records(3), out_db=tmp_path / "re.sqlite")
    assert rescored.done == 3


def test_the_run_written_by_the_previous_version_resumes(tmp_path: Path) -> None:
    shutil.copytree(DATA / "collection", tmp_path / "collection")
    shutil.copy(DATA / "run.sqlite", tmp_path / "run.sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a format migration may say what it did
        summary = explain_neurons(
            tmp_path / "collection", layers=[0], neurons="0-7", db=tmp_path / "run.sqlite"
        )
    assert isinstance(summary, RunSummary)
    assert (summary.total, summary.already_done, summary.done, summary.failed) == (8, 3, 5, 0)
