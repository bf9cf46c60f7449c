"""Explainer revision (issue 16): the explainer sees where the simulation of its explanation
went wrong on the train split and revises; the revision is kept only if it scores better on
calibration, and both are reported."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from neuron_explainer import (
    ActivationRecord,
    Explanation,
    InvalidInputError,
    PromptScale,
    SequenceSimulation,
    explain_neuron,
)
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.explainers.revising import Disagreement
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ComponentInfo, SimulationFailure
from neuron_explainer.runs.estimate import estimate_neuron
from neuron_explainer.runs.revision import (
    arevise_explanation,
    describe_revision,
    find_disagreements,
)
from neuron_explainer.testing import MockSimulator, ScriptedLLM, number_neuron_record


def keyword_simulator(habit: float = 0.0) -> MockSimulator:
    """Predicts 8 on number tokens when the explanation mentions numbers, 8 on ``the`` when it
    mentions articles, else ``habit`` times the token's length (0: nothing): it follows its
    explanation."""

    def predict(explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
        text = explanation.text
        return [
            8.0
            if ("number" in text and t.strip().isdigit())
            or ("article" in text and t.strip() == "the")
            else habit * len(t)
            for t in tokens
        ]

    return MockSimulator(predict, mode="keywords")


def test_find_disagreements_ranks_misses_and_false_positives() -> None:
    tokens = ["a", " the", " 42", " cat", " 7", " the"]
    record = ActivationRecord(tokens=tokens, activations=[0, 0, 10, 0, 6, 0])
    simulation = SequenceSimulation(tokens=tuple(tokens), expected_activations=(0, 9, 1, 1, 5, 3))
    failed = SimulationFailure(reason="no_answer", message="x")
    found = find_disagreements(
        [record, record], [simulation, failed], PromptScale(max_activation=10.0)
    )
    assert [(d.kind, d.position, d.true_level) for d in found] == [
        ("miss", 2, 10),  # 10 vs 1
        ("false_positive", 1, 0),  # 9 vs 0
        ("false_positive", 5, 0),  # 3 vs 0; " 7" (6 vs 5) and " cat" (0 vs 1) agree
    ]
    miss = found[0]
    assert miss.before == ("a", " the") and miss.token == " 42"
    assert miss.after == (" cat", " 7", " the")
    assert all(d.record == 0 for d in found)  # the failed simulation is skipped


def test_a_better_revision_is_kept_and_both_are_reported() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", "numbers written as digits."])
    simulator = keyword_simulator()
    result = explain_neuron(record, explainer=LLMExplainer(llm), simulator=simulator, revise=True)
    assert result.explanation.text == "numbers written as digits"
    note = result.explanation.data["revision"]
    assert isinstance(note, dict)
    assert note["original"] == "articles like the" and note["kept"] == "revised"
    scores = note["calibration_correlation"]
    assert isinstance(scores, dict)
    assert isinstance(scores["revised"], float) and isinstance(scores["original"], float)
    assert scores["revised"] > scores["original"]
    kinds = {d["kind"] for d in note["disagreements"]}  # type: ignore[index,union-attr]
    assert kinds == {"miss", "false_positive"}
    # the revision prompt showed the original as the answer, then the disagreements
    revision_request = llm.requests[1].messages
    assert revision_request[-2].role == "assistant"
    assert revision_request[-2].content == "articles like the."
    ask = revision_request[-1].content
    assert "Missed (the neuron fired" in ask and "False alarms" in ask
    assert "[[ the]]" in ask and "(true 0, predicted 8)" in ask
    assert ask.endswith("the main thing this neuron does is find")
    # only train records were shown, simulated or asked about
    splits = split_records(record)
    train = {tuple(r.tokens) for r in splits.train}
    held = {tuple(r.tokens) for r in (*splits.valid.records, *splits.test.records)}
    revision_sims = [t for text, t in simulator.calls if text == "articles like the"]
    assert not held & set(revision_sims)
    assert train <= set(revision_sims)
    line = describe_revision(result.explanation)
    assert line and line.startswith("kept the revised: original 'articles like the'")


def test_a_worse_revision_is_not_kept() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["numbers.", "articles like the."])
    result = explain_neuron(
        record, explainer=LLMExplainer(llm), simulator=keyword_simulator(), revise=True
    )
    assert result.explanation.text == "numbers"
    note = result.explanation.data["revision"]
    assert isinstance(note, dict)
    assert note["kept"] == "original" and note["revised"] == "articles like the"
    assert note["reason"] == "the revision does not score better on calibration"


def test_revision_compares_contrastively_with_the_shared_baseline() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", "numbers written as digits."])
    simulator = keyword_simulator()
    result = explain_neuron(
        record,
        explainer=LLMExplainer(llm),
        simulator=simulator,
        revise=True,
        scoring="contrastive",
    )
    note = result.explanation.data["revision"]
    assert isinstance(note, dict) and note["scoring"] == "contrastive"
    neutral_calls = [t for text, t in simulator.calls if text == "an unknown pattern"]
    assert len(neutral_calls) == len(set(neutral_calls))  # once per excerpt


def test_nothing_to_revise_and_unusable_revisions_keep_the_original() -> None:
    record = number_neuron_record()
    splits = split_records(record)
    explanation = Explanation(
        text="numbers", explainer=ComponentInfo(name="llm"), scale=PromptScale(max_activation=5)
    )

    def truth(explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
        return [10.0 if t.strip().isdigit() else 0.0 for t in tokens]

    agreeing = MockSimulator(truth)
    llm = ScriptedLLM("m", [])  # asked nothing
    kept = asyncio.run(
        arevise_explanation(
            LLMExplainer(llm), agreeing, explanation, splits.train, splits.calibration.records
        )
    )
    assert kept.text == "numbers" and not llm.requests
    assert kept.data["revision"]["reason"] == (  # type: ignore[index,call-overload]
        "the simulation agrees with every train record"
    )
    empty = ScriptedLLM("m", ["   "])
    kept = asyncio.run(
        arevise_explanation(
            LLMExplainer(empty),
            keyword_simulator(),
            explanation.model_copy(update={"text": "articles"}),
            splits.train,
            splits.calibration.records,
        )
    )
    assert kept.text == "articles"
    reason = kept.data["revision"]["reason"]  # type: ignore[index,call-overload]
    assert str(reason).startswith("no usable revision")


def test_an_explainer_that_cannot_revise_is_refused_before_anything_runs() -> None:
    simulator = keyword_simulator()
    with pytest.raises(InvalidInputError, match="'token-table' cannot revise"):
        explain_neuron(number_neuron_record(), simulator=simulator, revise=True)
    assert not simulator.calls


def test_the_estimate_counts_the_revision() -> None:
    from neuron_explainer.llm.openai import OpenAILLM
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator

    llm = OpenAILLM("gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    record = number_neuron_record(seed=3)
    splits = split_records(record)
    explainer, simulator = LLMExplainer(llm), ChatLogprobSimulator(llm)
    plain = estimate_neuron(record, explainer, simulator)
    revised = estimate_neuron(record, explainer, simulator, revise=True, test_sentences=0)
    assert len(revised.parts) == 3 and revised.parts[1].note == "revision"
    # the first text on the train split, the revised one on calibration (the first text's
    # calibration simulations are the ones the final score fits on, or compares with)
    extra = len(splits.train) + len(splits.calibration.records)
    assert revised.parts[2].requests - plain.parts[1].requests == extra
    # test sentences: one more explaining request, and each sentence simulated
    tested = estimate_neuron(record, explainer, simulator, revise=True, test_sentences=4)
    assert [p.note for p in tested.parts[1:3]] == ["revision", "test sentences"]
    assert tested.parts[2].requests == 1
    assert tested.parts[3].requests - revised.parts[2].requests == 4


def test_disagreement_lines_escape_tabs_and_newlines() -> None:
    llm = ScriptedLLM("m", ["x."])
    explainer = LLMExplainer(llm)
    record = ActivationRecord(tokens=["a", "\t", "b"], activations=[0.0, 5.0, 0.0])
    d = Disagreement(
        kind="miss",
        record=0,
        position=1,
        true_level=10,
        predicted=0.0,
        before=("a\n",),
        token="\t",
        after=("b",),
    )
    explanation = Explanation(text="tabs", explainer=ComponentInfo(name="llm"))
    ask = explainer.revision_messages([record], explanation, [d])[-1].content
    assert "- a\\n[[\\t]]b (true 10, predicted 0)" in ask


# --- test sentences the explainer writes -----------------------------------------------------


def digit_probe(calls: list[list[str]]):  # type: ignore[no-untyped-def]
    """A probe of a unit that fires (8) on digit tokens, splitting text on spaces."""

    async def probe(texts: Sequence[str]) -> list[ActivationRecord]:
        calls.append(list(texts))
        out = []
        for text in texts:
            tokens = [("" if i == 0 else " ") + w for i, w in enumerate(text.split())]
            values = [8.0 if t.strip().isdigit() else 0.0 for t in tokens]
            out.append(ActivationRecord(tokens=tokens, activations=values))
        return out

    return probe


TESTS_ANSWER = (
    "Here are sentences:\n"
    "1. The cat sat on the mat\n"
    "2. She paid 42 dollars for the book\n"
    '- "The the the"\n'
    "3) Call me at 7 tonight\n"
    "2. She paid 42 dollars for the book\n"
)


def test_parse_test_sentences_strips_lists_and_keeps_distinct_sentences() -> None:
    from neuron_explainer.explainers._revision_prompt import parse_test_sentences

    assert parse_test_sentences(TESTS_ANSWER, 10) == [
        "The cat sat on the mat",
        "She paid 42 dollars for the book",
        "The the the",
        "Call me at 7 tonight",
    ]
    assert parse_test_sentences(TESTS_ANSWER, 2) == [
        "The cat sat on the mat",
        "She paid 42 dollars for the book",
    ]
    assert parse_test_sentences("\n\nSentences:\n", 3) == []
    long = parse_test_sentences("word " * 200, 1)[0]
    assert len(long) <= 300 and long.endswith("word")


def test_revision_shows_where_the_explainers_own_test_sentences_disagree() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", TESTS_ANSWER, "numbers written as digits."])
    simulator = keyword_simulator()
    calls: list[list[str]] = []
    result = explain_neuron(
        record,
        explainer=LLMExplainer(llm),
        simulator=simulator,
        revise=True,
        probe=digit_probe(calls),
        test_sentences=4,
    )
    assert result.explanation.text == "numbers written as digits"
    # the explainer was asked for 4 sentences after its explanation
    ask = llm.requests[1].messages
    assert ask[-2].content == "articles like the." and "Write 4 new sentences" in ask[-1].content
    assert calls == [
        [
            "The cat sat on the mat",
            "She paid 42 dollars for the book",
            "The the the",
            "Call me at 7 tonight",
        ]
    ]
    note = result.explanation.data["revision"]
    assert isinstance(note, dict)
    tests = note["tests"]
    assert isinstance(tests, dict)
    sentences = tests["sentences"]
    assert isinstance(sentences, list) and len(sentences) == 4
    call = sentences[3]
    assert isinstance(call, dict) and call["true_max"] == 10 and call["predicted_max"] == 0
    cat = sentences[0]
    assert isinstance(cat, dict) and cat["true_max"] == 0 and cat["predicted_max"] == 8
    shown = note["disagreements"]
    assert isinstance(shown, list)
    sources = {(d["source"], d["kind"]) for d in shown}  # type: ignore[index]
    assert ("test", "miss") in sources and ("test", "false_positive") in sources
    # the revision prompt shows them under their own headings, tokens marked in context
    revision_ask = llm.requests[2].messages[-1].content
    assert "Missed in your test sentences" in revision_ask
    assert "False alarms in your test sentences" in revision_ask
    assert "- She paid[[ 42]] dollars for the book (true 10, predicted 0)" in revision_ask
    # the test sentences were simulated under the first explanation only
    simulated = [t for text, t in simulator.calls if text == "articles like the"]
    assert ("She", " paid", " 42", " dollars", " for", " the", " book") in simulated


def test_revision_without_a_probe_or_with_no_sentences_says_why() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", "numbers written as digits."])
    result = explain_neuron(
        record, explainer=LLMExplainer(llm), simulator=keyword_simulator(), revise=True
    )
    note = result.explanation.data["revision"]
    assert isinstance(note, dict)
    assert note["tests"] == {"reason": "the unit's model was not given, so new text cannot be run"}
    assert len(llm.requests) == 2  # no test sentences asked for

    llm = ScriptedLLM("m", ["articles like the.", "Sentences:\n", "numbers written as digits."])
    calls: list[list[str]] = []
    result = explain_neuron(
        record,
        explainer=LLMExplainer(llm),
        simulator=keyword_simulator(),
        revise=True,
        probe=digit_probe(calls),
    )
    note = result.explanation.data["revision"]
    assert isinstance(note, dict) and isinstance(note["tests"], dict)
    assert str(note["tests"]["reason"]).startswith("no usable test sentence")
    assert not calls
    assert result.explanation.text == "numbers written as digits"  # revised from train alone

    with pytest.raises(InvalidInputError, match="test_sentences must be an integer from 0 to 20"):
        explain_neuron(record, explain_options={"test_sentences": 21})


def test_the_revision_drops_the_marks_a_small_model_copies() -> None:
    record = number_neuron_record()
    llm = ScriptedLLM("m", ["articles like the.", "digits such as [[42]] in text."])
    result = explain_neuron(
        record, explainer=LLMExplainer(llm), simulator=keyword_simulator(), revise=True
    )
    note = result.explanation.data["revision"]
    assert isinstance(note, dict) and note["revised"] == "digits such as 42 in text"
