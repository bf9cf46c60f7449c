"""Scorers in `explain_neuron`: which run, in which order, what they cost, how they are stored."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from neuron_explainer import ExplanationResult, explain_neuron
from neuron_explainer.errors import InvalidInputError, UnknownComponentError
from neuron_explainer.plugins import Registry, hookimpl
from neuron_explainer.results import ClassificationScore, PluginScore, Score, SimulationScore
from neuron_explainer.scorers.base import Scorer, ScoringData
from neuron_explainer.scorers.classification import (
    DEFAULT_PER_REQUEST,
    DETECTION_SYSTEM,
    DetectionScorer,
)
from neuron_explainer.scorers.simulation_scorer import CorrelationScorer
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import MockExplainer, MockSimulator, ScriptedLLM, number_neuron_record
from neuron_explainer.testing.judges import OracleJudge


def _record():  # type: ignore[no-untyped-def]
    return number_neuron_record(silent_fraction=0.5)


def _simulator() -> MockSimulator:
    return MockSimulator(lambda e, tokens: [10.0 if t.strip().isdigit() else 0.0 for t in tokens])


def _judge() -> ScriptedLLM:
    return ScriptedLLM(default=OracleJudge())


def test_default_is_the_correlation_score_alone() -> None:
    result = explain_neuron(_record(), explainer=MockExplainer("numbers"), simulator=_simulator())
    assert list(result.scores) == ["correlation"]
    entry = result.scores["correlation"]
    assert isinstance(entry, SimulationScore)
    assert result.scored is not None and entry.value == result.scored.correlation
    assert result.score == result.scored.correlation.value


def test_scorers_run_in_order_the_first_is_the_headline_and_all_round_trip() -> None:
    simulator = _simulator()
    result = explain_neuron(
        _record(),
        explainer=MockExplainer("numbers"),
        simulator=simulator,
        scorers=[DetectionScorer(_judge()), "correlation"],
    )
    assert list(result.scores) == ["detection", "correlation"]
    detection = result.scores["detection"]
    assert isinstance(detection, ClassificationScore)
    assert result.score == detection.value.value == pytest.approx(1.0)
    assert result.scored is not None and simulator.calls
    back = ExplanationResult.model_validate_json(result.model_dump_json())
    assert back == result and list(back.scores) == ["detection", "correlation"]
    assert isinstance(back.scores["detection"], ClassificationScore)


def test_a_detection_only_run_simulates_nothing() -> None:
    simulator = _simulator()
    judge = _judge()
    result = explain_neuron(
        _record(),
        explainer=MockExplainer("numbers"),
        simulator=simulator,
        scorers=[DetectionScorer(judge)],
    )
    assert simulator.calls == []
    assert result.scored is None
    assert list(result.scores) == ["detection"] and judge.requests
    assert ExplanationResult.model_validate_json(result.model_dump_json()) == result


def test_a_named_llm_scorer_borrows_the_simulators_llm() -> None:
    llm = _judge()
    simulator = ChatLogprobSimulator(llm)
    result = explain_neuron(
        _record(), explainer=MockExplainer("numbers"), simulator=simulator, scorers=["detection"]
    )
    entry = result.scores["detection"]
    assert isinstance(entry, ClassificationScore)
    assert entry.scorer.settings["llm"] == llm.name
    assert llm.requests and all(r.messages[0].content == DETECTION_SYSTEM for r in llm.requests)


@pytest.mark.parametrize(
    ("scorers", "error", "match"),
    [
        (["detection"], InvalidInputError, "needs an LLM"),
        (["correlation", "correlation"], InvalidInputError, "twice"),
        ([], InvalidInputError, "empty"),
        (["no-such-scorer"], UnknownComponentError, "no-such-scorer"),
    ],
)
def test_bad_scorers_are_refused_before_any_work(
    scorers: list[str], error: type[Exception], match: str
) -> None:
    explainer = MockExplainer("numbers")
    with pytest.raises(error, match=match):
        explain_neuron(_record(), explainer=explainer, simulator="token-table", scorers=scorers)
    assert explainer.calls == []


def test_a_correlation_scorer_object_is_named_instead() -> None:
    with pytest.raises(InvalidInputError, match="name the simulation score"):
        explain_neuron(
            _record(),
            explainer=MockExplainer("numbers"),
            simulator=_simulator(),
            scorers=[CorrelationScorer(_simulator())],
        )


class _Count(BaseModel):
    value: Score
    excerpts: int


class _CountingScorer(Scorer):
    """A plugin scorer: the share of held-out excerpts whose text mentions the explanation."""

    name = "mentions"

    async def ascore(self, explanation, data: ScoringData) -> _Count:  # type: ignore[no-untyped-def, override]
        held = data.splits.held_out(data.split).records
        return _Count(value=Score(value=0.25), excerpts=len(held))


class _Plugin:
    @hookimpl
    def register_scorers(self, register) -> None:  # type: ignore[no-untyped-def]
        register(_CountingScorer, name="mentions")


def test_a_plugin_scorer_is_stored_as_a_plugin_score() -> None:
    registry = Registry(plugins=[_Plugin()], entry_points=False)
    result = explain_neuron(
        _record(),
        explainer=MockExplainer("numbers"),
        simulator=_simulator(),
        scorers=["correlation", "mentions"],
        registry=registry,
    )
    entry = result.scores["mentions"]
    assert isinstance(entry, PluginScore)
    assert entry.value.value == 0.25 and entry.details["excerpts"] > 0
    assert ExplanationResult.model_validate_json(result.model_dump_json()) == result


def test_a_scorer_result_without_a_value_is_refused() -> None:
    class Bad(BaseModel):
        total: int

    class BadScorer(Scorer):
        name = "bad"

        async def ascore(self, explanation, data):  # type: ignore[no-untyped-def, override]
            return Bad(total=1)

    with pytest.raises(InvalidInputError, match="'value' Score"):
        explain_neuron(
            _record(),
            explainer=MockExplainer("numbers"),
            simulator=_simulator(),
            scorers=[BadScorer()],
        )


def test_a_result_needs_a_score_and_correlation_needs_its_simulation() -> None:
    good = explain_neuron(_record(), explainer=MockExplainer("numbers"), simulator=_simulator())
    with pytest.raises(ValueError, match="needs its simulation"):
        ExplanationResult.model_validate({**good.model_dump(), "scored": None})
    with pytest.raises(ValueError, match="at least one score"):
        ExplanationResult.model_validate({**good.model_dump(), "scored": None, "scores": {}})


def test_detection_and_fuzzing_over_real_http(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuron_explainer.testing import OpenAITestServer

    key = "sk-test-SECRET-0123456789"
    judge = OracleJudge()
    with OpenAITestServer(api_key=key, responder=judge.respond) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
        registry = Registry(entry_points=False)
        result = explain_neuron(
            _record(),
            explainer=MockExplainer("numbers"),
            simulator="openai:judge-model",
            scorers=["detection", "fuzzing"],
            registry=registry,
        )
        chats = [r for r in server.requests if r.endpoint == "chat/completions"]
    assert result.scored is None and list(result.scores) == ["detection", "fuzzing"]
    for entry in result.scores.values():
        assert isinstance(entry, ClassificationScore)
        assert entry.value.value == pytest.approx(1.0) and entry.n_failed == 0
        assert all(j.p_yes is not None for j in entry.judgements)  # logprobs over the wire
    per = DEFAULT_PER_REQUEST
    assert len(chats) == sum(-(-len(e.judgements) // per) for e in result.scores.values())  # type: ignore[union-attr]
    assert result.usage.calls == len(chats)
    assert key not in result.model_dump_json()


def test_a_batch_takes_scorers_stores_them_and_refuses_others_on_resume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from neuron_explainer import explain_neurons
    from neuron_explainer.runs.store import RunStore
    from neuron_explainer.testing import NUMBER_UNIT

    record = _record()
    db = tmp_path / "run.sqlite"
    common = {
        "records": {NUMBER_UNIT: record},
        "units": [NUMBER_UNIT],
        "db": db,
        "explainer": MockExplainer("numbers"),
        "simulator": _simulator(),
    }
    dry = explain_neurons(**common, dry_run=True, scorers=[DetectionScorer(_judge())])
    judge = _judge()
    summary = explain_neurons(**common, scorers=[DetectionScorer(judge), "correlation"])
    assert summary.done == 1
    assert dry.requests == len(judge.requests) > 0  # the mocks call no LLM: the scorer's
    with RunStore(db) as store:
        (stored,) = list(store.results())
    assert list(stored.scores) == ["detection", "correlation"]
    assert stored.score == stored.scores["detection"].value.value
    with pytest.raises(InvalidInputError, match="another configuration"):
        explain_neurons(**common)  # the correlation score alone: another configuration


def test_rescore_adds_scorers_to_stored_explanations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from neuron_explainer import explain_neurons
    from neuron_explainer.runs import rescore
    from neuron_explainer.runs.store import RunStore
    from neuron_explainer.testing import NUMBER_UNIT

    records = {NUMBER_UNIT: _record()}
    db = tmp_path / "run.sqlite"
    explainer = MockExplainer("numbers")
    explain_neurons(
        records=records, units=[NUMBER_UNIT], db=db, explainer=explainer, simulator=_simulator()
    )
    judge = _judge()
    out = tmp_path / "judged.sqlite"
    summary = rescore(
        db,
        _simulator(),
        out_db=out,
        records=records,
        scorers=[DetectionScorer(judge), "correlation"],
    )
    assert summary.done == 1 and len(explainer.calls) == 1  # the explainer never ran again
    with RunStore(db) as before, RunStore(out) as after:
        (old,) = list(before.results())
        (new,) = list(after.results())
    assert new.explanation == old.explanation
    assert list(new.scores) == ["detection", "correlation"]
    assert new.scored is not None and new.scored.correlation == old.scored.correlation  # type: ignore[union-attr]
    judged = {j.record.tokens for j in new.scores["detection"].judgements}  # type: ignore[union-attr]
    assert judged <= {r.tokens for r in _record().top_records + _record().random_sample} | {
        r.tokens for b in _record().quantile_samples for r in b
    }
    only = tmp_path / "only.sqlite"
    rescore(db, _simulator(), out_db=only, records=records, scorers=[DetectionScorer(_judge())])
    with RunStore(only) as store:
        (detected,) = list(store.results())
    assert detected.scored is None and list(detected.scores) == ["detection"]
