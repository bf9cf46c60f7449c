"""The detection and fuzzing scorers: what they judge, how they ask, how they score."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from neuron_explainer.errors import (
    AuthenticationError,
    InsufficientRecordsError,
    InvalidInputError,
    InvalidResponseError,
)
from neuron_explainer.plugins import Registry
from neuron_explainer.records import ActivationRecord, WindowId
from neuron_explainer.records.building import build_neuron_record
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ClassificationScore, ComponentInfo, Explanation
from neuron_explainer.scorers import _judge
from neuron_explainer.scorers._examples import FiringRule, rng_for, wrong_highlight
from neuron_explainer.scorers.base import ScoringData
from neuron_explainer.scorers.classification import DetectionScorer, FuzzingScorer
from neuron_explainer.testing import NUMBER_UNIT, ScriptedLLM, make_response, number_neuron_record
from neuron_explainer.testing.judges import OracleJudge

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))


def _data(split: str = "valid", seed: int = 0) -> ScoringData:
    record = number_neuron_record(seed=seed, silent_fraction=0.5)
    return ScoringData(record, split_records(record), split)  # type: ignore[arg-type]


def _judge_llm(**options: object) -> tuple[ScriptedLLM, OracleJudge]:
    judge = OracleJudge(**options)  # type: ignore[arg-type]
    return ScriptedLLM(default=judge), judge


def _judged_windows(score: ClassificationScore) -> set[tuple[str, ...]]:
    return {j.record.tokens for j in score.judgements}


# -- what is judged -------------------------------------------------------------------------


def test_detection_judges_only_the_held_out_split_and_both_classes() -> None:
    data = _data()
    llm, _ = _judge_llm()
    score = DetectionScorer(llm).score(EXPLANATION, data)
    assert isinstance(score, ClassificationScore)
    judged = _judged_windows(score)
    train = {r.tokens for r in data.splits.train}
    held = {r.tokens for r in data.splits.valid.all_records}
    assert judged and judged <= held
    assert not judged & train
    for other in ("calibration", "test"):
        others = {r.tokens for r in data.splits.held_out(other).all_records}  # type: ignore[arg-type]
        assert not judged & (others - held)
    labels = [j.label for j in score.judgements]
    assert any(labels) and not all(labels)
    rule = FiringRule(score.firing_fraction, data.record.max_activation)
    for j in score.judgements:
        assert j.label == rule.fires(j.record)
        if not j.label:
            assert rule.silent(j.record)


def test_positives_spread_across_activation_levels_not_only_the_top() -> None:
    data = _data()
    llm, _ = _judge_llm()
    score = DetectionScorer(llm, n_positives=3).score(EXPLANATION, data)
    positives = [j.record.max_activation for j in score.judgements if j.label]
    rule = FiringRule(score.firing_fraction, data.record.max_activation)
    pool = sorted(
        (r.max_activation for r in data.splits.valid.all_records if rule.fires(r)), reverse=True
    )
    assert len(positives) == 3
    assert max(positives) == pool[0] and min(positives) == pool[-1]


def test_oracle_judge_scores_near_one_and_trivial_judges_score_one_half() -> None:
    data = _data()
    oracle, _ = _judge_llm()
    best = DetectionScorer(oracle).score(EXPLANATION, data)
    assert best.value.value == pytest.approx(1.0)
    assert best.metrics.auroc.value == pytest.approx(1.0)
    for policy in ("yes", "no"):
        llm, _ = _judge_llm(policy=policy)
        assert DetectionScorer(llm).score(EXPLANATION, data).value.value == pytest.approx(0.5)


def test_random_judge_averages_one_half_over_units() -> None:
    values = []
    for seed in range(12):
        llm, _ = _judge_llm(policy="random", seed=seed)
        values.append(DetectionScorer(llm).score(EXPLANATION, _data(seed=seed)).value.value)
    assert all(v is not None for v in values)
    mean = sum(values) / len(values)  # type: ignore[arg-type]
    assert abs(mean - 0.5) < 0.1


def test_several_excerpts_per_request_all_requests_concurrent() -> None:
    data = _data()
    llm, judge = _judge_llm()
    score = DetectionScorer(llm, excerpts_per_request=4).score(EXPLANATION, data)
    n = len(score.judgements)
    assert len(judge.requests) == -(-n // 4)
    assert all(r.logprobs and r.response_format for r in judge.requests)
    schema = judge.requests[0].response_format["json_schema"]["schema"]  # type: ignore[index]
    assert schema["required"] == ["1", "2", "3", "4"]  # type: ignore[index]
    # each request holds both classes
    groups = [score.judgements[i : i + 4] for i in range(0, n, 4)]
    assert all({j.label for j in g} == {True, False} for g in groups if len(g) > 1)


def test_probabilities_are_read_from_logprobs_and_missing_without_them() -> None:
    data = _data()
    llm, _ = _judge_llm(confidence=0.8)
    score = DetectionScorer(llm).score(EXPLANATION, data)
    for j in score.judgements:
        assert j.p_yes == pytest.approx(0.8 if j.answer else 0.2)
    plain, _ = _judge_llm()
    plain.capabilities = {"chat"}
    bare = DetectionScorer(plain).score(EXPLANATION, data)
    assert all(j.p_yes is None for j in bare.judgements)
    assert bare.metrics.auroc.value is None and bare.metrics.auroc.reason
    assert bare.value.value == pytest.approx(1.0)


def test_unparseable_answers_are_retried_then_counted_never_dropped() -> None:
    data = _data()
    oracle = OracleJudge()
    calls = {"n": 0}

    def flaky(request):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            return "I think they all look fine."
        return oracle(request)

    llm = ScriptedLLM(default=flaky)
    score = DetectionScorer(llm, excerpts_per_request=100, retries=1).score(EXPLANATION, data)
    assert calls["n"] == 2
    assert score.n_failed == 0
    assert score.value.value == pytest.approx(1.0)
    broken = ScriptedLLM(default="no idea")
    failed = DetectionScorer(broken, retries=1).score(EXPLANATION, data)
    assert failed.n_failed == len(failed.judgements) > 0
    assert {j.failure.reason for j in failed.judgements} == {"unparseable"}  # type: ignore[union-attr]
    assert failed.metrics.failed_positives + failed.metrics.failed_negatives == failed.n_failed
    assert failed.value.value is None


def test_an_answer_missing_some_excerpts_retries_only_those() -> None:
    data = _data()
    oracle = OracleJudge()
    sent: list[int] = []

    def partial(request):  # type: ignore[no-untyped-def]
        sent.append(len(re.findall(r"^\d+\. ", request.messages[-1].content, re.MULTILINE)))
        full = json.loads(oracle(request).choices[0].text)
        if len(sent) == 1:
            full.pop("2")
        return json.dumps(full)

    llm = ScriptedLLM(default=partial, capabilities={"chat", "json_schema"})
    score = DetectionScorer(llm, excerpts_per_request=100).score(EXPLANATION, data)
    assert sent[1] == 1
    assert score.n_failed == 0


def test_request_failures_fail_their_excerpts_other_errors_propagate() -> None:
    data = _data()
    llm = ScriptedLLM(default=InvalidResponseError("garbled"))
    score = DetectionScorer(llm, retries=0).score(EXPLANATION, data)
    assert {j.failure.reason for j in score.judgements} == {"invalid_response"}  # type: ignore[union-attr]
    denied = ScriptedLLM(default=AuthenticationError("bad key"))
    with pytest.raises(AuthenticationError):
        DetectionScorer(denied).score(EXPLANATION, data)


def test_hard_negatives_contain_top_tokens_and_are_recorded() -> None:
    data = _data()
    llm, _ = _judge_llm()
    hard = DetectionScorer(llm, negatives="hard", n_negatives=3).score(EXPLANATION, data)
    easy = DetectionScorer(llm, negatives="random", n_negatives=3).score(EXPLANATION, data)
    assert hard.negatives == "hard" and easy.negatives == "random"
    assert hard.hard_negatives >= easy.hard_negatives


def test_no_activating_excerpt_is_a_clear_error() -> None:
    data = _data()
    llm, _ = _judge_llm()
    with pytest.raises(InsufficientRecordsError, match="activating"):
        DetectionScorer(llm, firing_fraction=0.999999).score(EXPLANATION, data)


@pytest.mark.parametrize(
    "options",
    [{"n_positives": 0}, {"excerpts_per_request": 0}, {"firing_fraction": 1.5}, {"retries": -1}],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        DetectionScorer(ScriptedLLM(), **options)  # type: ignore[arg-type]


def test_a_scorer_needs_an_llm() -> None:
    with pytest.raises(InvalidInputError):
        DetectionScorer()


# -- fuzzing --------------------------------------------------------------------------------


def test_fuzzing_shows_each_excerpt_right_and_wrong_never_in_one_request() -> None:
    data = _data()
    llm, judge = _judge_llm()
    score = FuzzingScorer(llm, excerpts_per_request=4).score(EXPLANATION, data)
    rule = FiringRule(score.firing_fraction, data.record.max_activation)
    right = [j for j in score.judgements if j.label]
    wrong = [j for j in score.judgements if not j.label]
    assert len(right) == len(wrong) > 0
    assert {j.record.tokens for j in right} == {j.record.tokens for j in wrong}
    for j in right:
        assert list(j.highlighted or ()) == rule.firing_positions(j.record)
    for j in wrong:
        assert j.highlighted and not set(j.highlighted) & set(rule.firing_positions(j.record))
        assert len(j.highlighted) == len(rule.firing_positions(j.record))
    for request in judge.requests:
        shown = request.messages[-1].content
        lines = [line for line in shown.splitlines() if line[:1].isdigit()]
        texts = [line.split(". ", 1)[1].replace("<<", "").replace(">>", "") for line in lines]
        assert len(texts) == len(set(texts))
    assert score.value.value == pytest.approx(1.0)
    assert score.negatives == "wrong_highlight"


def test_fuzzing_highlights_are_seeded_per_excerpt_and_unit_and_reproducible() -> None:
    data = _data()
    rule = FiringRule(0.2, data.record.max_activation)
    records = [r for r in data.splits.valid.top if rule.firing_positions(r)]
    assert len(records) >= 2
    unit = data.record.unit
    first = [wrong_highlight(rule, r, rng_for(unit, r, 0)) for r in records]
    again = [wrong_highlight(rule, r, rng_for(unit, r, 0)) for r in records]
    assert first == again
    other_unit = unit.model_copy(update={"index": unit.index + 1})
    moved = [wrong_highlight(rule, r, rng_for(other_unit, r, 0)) for r in records]
    assert moved != first
    # different excerpts do not share one stream: the draw is not the same offset everywhere
    same = ActivationRecord(tokens=records[0].tokens, activations=records[0].activations)
    assert wrong_highlight(rule, same, rng_for(unit, same, 1)) is not None


def test_wrong_highlight_avoids_copies_of_firing_words() -> None:
    rule = FiringRule(0.5, 10.0)
    record = ActivationRecord(
        tokens=(" 7", " cat", " 7", " dog", " sat"), activations=(10.0, 0.0, 0.0, 0.0, 0.0)
    )
    for seed in range(20):
        drawn = wrong_highlight(rule, record, rng_for(NUMBER_UNIT, record, seed))
        assert drawn is not None and 2 not in drawn and 0 not in drawn


# -- registry, estimate, rendering ----------------------------------------------------------


def test_registry_builds_scorers_by_name_with_an_llm() -> None:
    llm, _ = _judge_llm()
    registry = Registry(entry_points=False)
    assert isinstance(registry.scorer("detection", llm=llm), DetectionScorer)
    assert isinstance(registry.scorer("fuzzing", llm=llm), FuzzingScorer)
    names = {e.name for e in registry.components("scorer")}
    assert {"correlation", "detection", "fuzzing"} <= names


def test_estimate_counts_the_requests_score_sends() -> None:
    data = _data()
    llm, judge = _judge_llm()
    scorer = DetectionScorer(llm, excerpts_per_request=3)
    estimate = scorer.estimate(EXPLANATION, data)
    scorer.score(EXPLANATION, data)
    assert estimate.requests == len(judge.requests)
    assert estimate.role == "scorer" and estimate.prompt_tokens > 0


def test_render_marks_runs_and_escapes_newlines() -> None:
    assert _judge.render(["a", " b", " c", "\n", "d"], [1, 2, 4]) == "a<< b c>>\\n<<d>>"


def test_read_takes_the_first_value_per_number_and_ignores_others() -> None:
    choice = make_response('{"1": 1, "1": 0, "3": "no", "9": 1}').choices[0]
    verdicts = _judge.read(choice, 3)
    assert verdicts[1].answer is True and verdicts[3].answer is False and 2 not in verdicts
    assert 9 not in verdicts


def test_judging_runs_requests_concurrently() -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def slow(request):  # type: ignore[no-untyped-def]
        started.append(1)
        if len(started) == 3:
            release.set()
        await asyncio.wait_for(release.wait(), 5)
        return OracleJudge()(request)

    llm = ScriptedLLM(default=slow)

    async def go() -> list[_judge.Verdict]:
        return await _judge.ask(
            llm,
            system="s",
            explanation="numbers",
            question="q",
            groups=[["a 1"], ["b"], ["c 2"]],
            retries=0,
        )

    verdicts = asyncio.run(go())
    assert [v.answer for v in verdicts] == [True, False, True]


def test_no_window_the_explainer_saw_is_ever_judged_by_identity() -> None:
    base = number_neuron_record(seed=3, silent_fraction=0.5)
    excerpts = [
        ActivationRecord(
            tokens=r.tokens, activations=r.activations, window_id=WindowId(document=i, start=0)
        )
        for i, r in enumerate(
            [*base.top_records, *base.random_sample, *(q for b in base.quantile_samples for q in b)]
        )
    ]
    record = build_neuron_record(base.unit, excerpts, top_k=40, n_random=30, seed=3)
    assert any(record.quantile_samples)
    splits = split_records(record)
    splits.check_disjoint()
    train = splits.windows("train")
    llm, _ = _judge_llm()
    for split in ("valid", "test"):
        data = ScoringData(record, splits, split)  # type: ignore[arg-type]
        held = splits.windows(split)  # type: ignore[arg-type]
        for scorer in (DetectionScorer(llm), FuzzingScorer(llm)):
            judged = {j.record.window_id for j in scorer.score(EXPLANATION, data).judgements}
            assert None not in judged
            assert judged <= held
            assert not judged & train
    sources = {
        j.source
        for j in DetectionScorer(llm, n_positives=40).score(EXPLANATION, _data()).judgements
    }
    assert "quantile" in sources


def _requests_of(score: ClassificationScore, size: int) -> list[list[bool]]:
    labels = [j.label for j in score.judgements]
    return [labels[i : i + size] for i in range(0, len(labels), size)]


def test_an_excerpts_number_says_nothing_about_its_class() -> None:
    data = _data()
    llm, _ = _judge_llm()
    for scorer in (DetectionScorer(llm, excerpts_per_request=10), FuzzingScorer(llm)):
        requests = _requests_of(scorer.score(EXPLANATION, data), 10)
        odd = [label for request in requests for label in request[0::2]]
        even = [label for request in requests for label in request[1::2]]
        assert any(odd) and not all(odd) and any(even) and not all(even)

    class ByPosition(OracleJudge):
        def answer(self, text: str) -> bool:  # yes on odd numbers, ignoring the excerpt
            self.count = getattr(self, "count", 0) + 1
            return self.count % 2 == 1

    values = []
    for seed in range(8):
        gamed = ScriptedLLM(default=ByPosition())
        values.append(DetectionScorer(gamed, seed=seed).score(EXPLANATION, data).value.value)
    assert all(v is not None for v in values)
    assert 0.35 < sum(values) / len(values) < 0.65  # type: ignore[arg-type]


def test_every_fuzzing_request_holds_both_classes() -> None:
    data = _data()
    llm, _ = _judge_llm()
    score = FuzzingScorer(llm, excerpts_per_request=6).score(EXPLANATION, data)
    requests = _requests_of(score, 6)
    assert len(requests) >= 2
    assert all(set(r) == {True, False} for r in requests if len(r) > 1)


# -- one excerpt, a yes or no answer (small local judges) -----------------------------------


@pytest.mark.parametrize("scorer_class", [DetectionScorer, FuzzingScorer])
def test_yesno_asks_one_plain_question_per_excerpt(scorer_class) -> None:  # type: ignore[no-untyped-def]
    data = _data()
    llm, judge = _judge_llm(confidence=0.8)
    scorer = scorer_class(llm, answer="yesno")
    estimate = scorer.estimate(EXPLANATION, data)
    score = scorer.score(EXPLANATION, data)
    assert score.excerpts_per_request == 1
    assert len(judge.requests) == len(score.judgements) == estimate.requests
    for request in judge.requests:
        (message,) = request.messages
        assert message.content.startswith("Text: ") and "numbers?" in message.content
        assert message.content.endswith("Answer yes or no.")
        assert request.response_format is None and request.logprobs
    assert score.value.value == pytest.approx(1.0)
    assert all(j.p_yes == pytest.approx(0.8 if j.answer else 0.2) for j in score.judgements)
    assert score.scorer.settings["answer"] == "yesno"


def test_yesno_answers_that_are_neither_are_retried_then_failed() -> None:
    data = _data()
    llm = ScriptedLLM(default="Maybe, it depends.")
    score = DetectionScorer(llm, answer="yesno", retries=1, n_positives=2, n_negatives=2).score(
        EXPLANATION, data
    )
    assert score.n_failed == len(score.judgements) == 4
    assert {j.failure.reason for j in score.judgements} == {"unparseable"}  # type: ignore[union-attr]
    assert len(llm.requests) == 8  # each excerpt asked twice


def test_read_yesno_takes_the_first_word_and_its_probability() -> None:
    yes = _judge.read_yesno(
        make_response(
            tokens=["Yes", "."], logprobs=[{"Yes": -0.2, "No": -1.8}, {".": 0.0}]
        ).choices[0]
    )
    assert yes is not None and yes.answer is True
    assert yes.p_yes == pytest.approx(0.8187 / (0.8187 + 0.1653), abs=1e-3)
    no = _judge.read_yesno(make_response(" no, it does not").choices[0])
    assert no is not None and no.answer is False and no.p_yes is None
    assert _judge.read_yesno(make_response("Not sure").choices[0]) is None


@pytest.mark.parametrize(
    "options", [{"answer": "xml"}, {"answer": "yesno", "excerpts_per_request": 5}]
)
def test_bad_answer_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        DetectionScorer(ScriptedLLM(), **options)  # type: ignore[arg-type]


def test_the_headline_is_the_ranking_when_a_biased_judge_gives_probabilities() -> None:
    """A judge that says "yes" to everything but is surer on the right excerpts: its answers
    are worth 0.5, its probabilities rank perfectly; the headline reads the ranking."""
    oracle = OracleJudge()

    def biased(request):  # type: ignore[no-untyped-def]
        text = request.messages[-1].content.split("Text: ", 1)[1].split("\n\n", 1)[0]
        sure = {"Yes": -0.05, "No": -3.0} if oracle.answer(text) else {"Yes": -0.4, "No": -1.1}
        if not request.logprobs:
            return make_response("Yes")
        return make_response(tokens=["Yes"], logprobs=[sure])

    data = _data()
    score = DetectionScorer(ScriptedLLM(default=biased), answer="yesno").score(EXPLANATION, data)
    assert score.metrics.balanced_accuracy.value == pytest.approx(0.5)
    assert score.headline == "auroc" and score.value.value == pytest.approx(1.0)
    assert score.headline_score == score.metrics.auroc
    plain = ScriptedLLM(default=biased)
    plain.capabilities = {"chat"}  # no logprobs: the answers are all there is
    bare = DetectionScorer(plain, answer="yesno").score(EXPLANATION, data)
    assert bare.headline == "balanced_accuracy" and bare.value.value == pytest.approx(0.5)


def test_the_judge_is_told_what_kind_of_unit_it_judges() -> None:
    from neuron_explainer.interfaces import unit_context
    from neuron_explainer.records import UnitId
    from neuron_explainer.scorers.classification import DETECTION_SYSTEM

    data = _data()
    llm, judge = _judge_llm()
    DetectionScorer(llm).score(EXPLANATION, data)  # no unit: a neuron, as the version names
    assert judge.requests[0].messages[0].content == DETECTION_SYSTEM
    assert DETECTION_SYSTEM.startswith("A neuron activates on the tokens")
    latent = UnitId(model="m", layer=1, index=3, kind="sae_latent", site="blocks.1.hook_resid_pre")
    llm, judge = _judge_llm()
    with unit_context(latent):
        score = DetectionScorer(llm).score(EXPLANATION, data)
    system = judge.requests[0].messages[0].content
    assert system == DETECTION_SYSTEM.replace("A neuron", "An SAE latent", 1)
    assert score.value.value == pytest.approx(1.0)
