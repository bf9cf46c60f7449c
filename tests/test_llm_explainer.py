"""The LLM explainer: few-shot prompt, zero-filtered repeat, escaping, samples, context rule;
and best-of-k selection on the calibration split."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from neuron_explainer import (
    ActivationRecord,
    Explanation,
    ExplanationError,
    InvalidInputError,
    NeuronRecord,
    PromptScale,
    SequenceSimulation,
    SimulationError,
    split_records,
)
from neuron_explainer.explainers.llm import (
    DEFAULT_CONTEXT_WINDOW,
    LLMExplainer,
    clean_explanation,
    context_window_for,
    estimate_tokens,
)
from neuron_explainer.interfaces import Simulator
from neuron_explainer.llm import ChatRequest, ChatResponse, Choice
from neuron_explainer.llm.few_shot import FEW_SHOT_EXAMPLES
from neuron_explainer.llm.prompts import unescape_token
from neuron_explainer.runs.best_of import CandidateExplainer, abest_of_k
from neuron_explainer.scorers.correlation import correlation
from neuron_explainer.testing import MockExplainer, ScriptedLLM, number_neuron_record

HEADER = "Same activations, but with all zeros filtered out:"


def record(tokens: Sequence[str], activations: Sequence[float]) -> ActivationRecord:
    return ActivationRecord(tokens=list(tokens), activations=list(activations))


def blocks(text: str) -> list[list[tuple[str, str]]]:
    """The ``<start>``..``<end>`` blocks of a rendered listing, lines split at their tab."""
    found: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] | None = None
    for line in text.split("\n"):
        if line == "<start>":
            current = []
        elif line == "<end>" and current is not None:
            found.append(current)
            current = None
        elif current is not None:
            assert line.count("\t") == 1, f"a rendered line has one tab: {line!r}"
            token, _, value = line.partition("\t")
            current.append((unescape_token(token), value))
    return found


def last_user(llm: ScriptedLLM, index: int = -1) -> str:
    return llm.requests[index].messages[-1].content


# -- the prompt ------------------------------------------------------------------------------------


def test_an_attention_heads_prompt_says_where_it_looked_from_each_top_token() -> None:
    from neuron_explainer.records import AttendedToken

    looked = AttendedToken(position=2, source=0, source_token=" Paris", weight=0.875)
    head = ActivationRecord(
        tokens=[" Paris", " is", " big", "\n"], activations=[0.0, 0.0, 4.0, 1.0], attended=looked
    )
    first = AttendedToken(position=1, source=None, source_token="<|endoftext|>", weight=0.5)
    other = ActivationRecord(tokens=[" a", " b"], activations=[1.0, 3.0], attended=first)
    llm = ScriptedLLM(default="capitals.")
    LLMExplainer(llm).explain([head, other])
    user = last_user(llm)
    heading = "Where the head looked from each excerpt's top token:"
    assert heading in user
    section = user.split(heading, 1)[1].split("\n\n", 1)[0].strip().split("\n")
    assert section == [
        '1. from "big" (token 3) it attended most to "Paris" (token 1, weight 0.88)',
        '2. from "b" (token 2) it attended most to "<|endoftext|>" '
        "(before the excerpt, weight 0.50)",
    ]
    assert user.index(heading) < user.index("Explanation of neuron behavior")
    llm = ScriptedLLM(default="capitals.")
    LLMExplainer(llm).explain([record(head.tokens, head.activations)])
    assert heading not in last_user(llm)  # no attention: the prompt as it always was


def test_few_shot_examples_come_first_as_chat_turns() -> None:
    llm = ScriptedLLM(default="cats.")
    records = [record([" the", " cat", " sat"], [0.0, 4.0, 1.0])]
    LLMExplainer(llm).explain(records)
    (request,) = llm.requests
    roles = [m.role for m in request.messages]
    assert roles == ["system"] + ["user", "assistant"] * len(FEW_SHOT_EXAMPLES) + ["user"]
    for i, example in enumerate(FEW_SHOT_EXAMPLES):
        user, answer = request.messages[1 + 2 * i], request.messages[2 + 2 * i]
        assert user.content.startswith(f"Neuron {i + 1}\nActivations:\n<start>\n")
        assert user.content.endswith("the main thing this neuron does is find")
        assert answer.content == f"{example.explanation}."
        shown = blocks(user.content.split(HEADER)[0])
        assert shown == [[(t, str(v)) for t, v in r] for r in example.records]
    final = request.messages[-1].content
    assert final.startswith(f"Neuron {len(FEW_SHOT_EXAMPLES) + 1}\n")
    assert blocks(final) == [[(" the", "0"), (" cat", "10"), (" sat", "3")]]
    assert HEADER not in final, "1 of 3 tokens is non-zero: not sparse"
    assert any(HEADER in m.content for m in request.messages[1:-1]), "an example shows it"

    LLMExplainer(llm, few_shot=False).explain(records)
    assert [m.role for m in llm.requests[-1].messages] == ["system", "user"]


def test_sparse_records_are_repeated_with_zeros_filtered_out() -> None:
    sparse = [
        record([f" w{i}" for i in range(10)], [0.0] * 9 + [2.0]),
        record([" a", " b", " c", " d", " e"], [0.0, 4.0, 0.0, 0.0, 0.04]),
    ]
    llm = ScriptedLLM(default="x")
    LLMExplainer(llm).explain(sparse)
    full, repeat = last_user(llm).split(HEADER)
    assert blocks(full) == [
        [*((f" w{i}", "0") for i in range(9)), (" w9", "5")],
        [(" a", "0"), (" b", "10"), (" c", "0"), (" d", "0"), (" e", "0")],
    ]
    assert blocks(repeat) == [[(" w9", "5")], [(" b", "10")]]
    assert repeat.endswith("the main thing this neuron does is find")

    # Exactly 20% non-zero is not sparse (the rule is "fewer than 20%").
    at_threshold = [record([" a", " b", " c", " d", " e"], [1.0, 0.0, 0.0, 0.0, 0.0])]
    LLMExplainer(llm).explain(at_threshold)
    assert HEADER not in last_user(llm)


NASTY = ["\t", "\n", "\\", "\x00", "\ufffd", " ", "<end>", "a<end>b", "\\t", "x\ty\nz"]


def test_nasty_tokens_are_escaped_and_round_trip() -> None:
    llm = ScriptedLLM(default="x")
    activations = [float(i) for i in range(len(NASTY))]
    LLMExplainer(llm).explain([record(NASTY, activations)])
    user = last_user(llm)
    listing = user.split("Activations:\n", 1)[1].split(HEADER)[0]
    levels = PromptScale.for_records([record(NASTY, activations)])
    assert levels is not None
    expected = [(t, str(v)) for t, v in zip(NASTY, levels.discretize(activations), strict=True)]
    assert blocks(listing) == [expected]
    assert "\x00" not in user and "\r" not in user


# -- answers and samples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (" The main thing this neuron does is find  numbers in dates. ", "numbers in dates"),
        ('"years"', "years"),
        ("'the main thing this neuron does is find cats.'", "cats"),
        ("`code`.", "code"),
        ("\n\n  years in dates.\n\nNeuron 5\nActivations:", "years in dates"),
        (
            "the main thing this neuron does is finding",
            "the main thing this neuron does is finding",
        ),
        ("   ", ""),
        ('"."', ""),
    ],
)
def test_cleaning(raw: str, clean: str) -> None:
    assert clean_explanation(raw) == clean


def choices(*texts: str) -> ChatResponse:
    return ChatResponse(choices=tuple(Choice(text=t) for t in texts))


def test_several_samples_in_one_request() -> None:
    llm = ScriptedLLM(script=[choices("  ", "years.", "dates")])
    records = [record([" 1999"], [1.0])]
    explainer = LLMExplainer(llm, n_candidates=3, candidate_temperature=0.7)
    explanation = explainer.explain(records)
    assert explanation.text == "years" and explanation.raw_output == "years."
    (request,) = llm.requests
    assert (request.n, request.temperature) == (3, 0.7)
    assert explainer.info.settings["n_candidates"] == 3

    llm.add(choices("a", "", "b."))
    candidates = asyncio.run(explainer.aexplain_candidates(records, 3))
    assert [c.text for c in candidates] == ["a", "b"]
    assert [c.raw_output for c in candidates] == ["a", "b."]
    assert all(c.scale == PromptScale(max_activation=1.0) for c in candidates)

    llm.add(choices("", "."))
    with pytest.raises(ExplanationError, match="returned no explanation"):
        asyncio.run(explainer.aexplain_candidates(records, 2))


def test_samples_without_n_support_or_when_the_backend_ignores_n() -> None:
    records = [record([" 1999"], [1.0])]
    counter = iter(range(100))

    def one_choice(request: ChatRequest) -> ChatResponse:
        return choices(f"answer {next(counter)}")  # ignores request.n

    llm = ScriptedLLM(default=one_choice)
    candidates = asyncio.run(LLMExplainer(llm).aexplain_candidates(records, 3))
    assert [c.text for c in candidates] == ["answer 0", "answer 1", "answer 2"]
    assert [r.n for r in llm.requests] == [3, 1, 1], "one n=3 request, then the missing two"

    llm.requests.clear()
    explainer = LLMExplainer(llm, supports_n=False)
    assert len(asyncio.run(explainer.aexplain_candidates(records, 3))) == 3
    assert [r.n for r in llm.requests] == [1, 1, 1]
    assert {r.temperature for r in llm.requests} == {1.0}
    with pytest.raises(ExplanationError, match="at least 1"):
        asyncio.run(explainer.aexplain_candidates(records, 0))


# -- the context window ----------------------------------------------------------------------------


def test_context_window_table() -> None:
    assert context_window_for("gpt-4o-mini-2024-07-18") == 128_000
    assert context_window_for("gpt-4.1-nano") == 1_047_576
    assert context_window_for("gpt-3.5-turbo-0125") == 16_385
    assert context_window_for("gpt-4-0613") == 8_192
    assert context_window_for("llama-3-8b") == DEFAULT_CONTEXT_WINDOW == 8_192
    assert LLMExplainer(ScriptedLLM("gpt-4o")).context_window == 128_000
    assert LLMExplainer(ScriptedLLM("gpt-4o"), context_window=1000).context_window == 1000
    assert estimate_tokens("x" * 7) == 2 and estimate_tokens("x" * 8) == 3
    with pytest.raises(InvalidInputError, match="must exceed max_tokens"):
        LLMExplainer(ScriptedLLM(), context_window=50, max_tokens=80)


def test_records_are_dropped_in_the_documented_order() -> None:
    records = [
        record([f" a{i}" for i in range(10)], [0.0] * 9 + [5.0]),
        record([f" b{i}" for i in range(10)], [0.0] * 9 + [4.0]),
        record([f" c{i}" for i in range(10)], [0.0] * 9 + [3.0]),
    ]
    llm = ScriptedLLM(default="x")
    probe = LLMExplainer(llm, count_tokens=len, max_tokens=10, context_window=10**6)
    scale = PromptScale.for_records(records)
    assert scale is not None

    def size(shown: Sequence[ActivationRecord], repeat: bool) -> int:
        return probe.prompt_tokens(probe.messages(shown, scale, zero_filtered_repeat=repeat))

    def explain(window: int) -> Explanation:
        explainer = LLMExplainer(llm, count_tokens=len, max_tokens=10, context_window=window)
        return explainer.explain(records)

    everything = explain(size(records, True) + 10)
    assert everything.data["prompt"] == {
        "records_shown": 3,
        "records_dropped": [],
        "zero_filtered_repeat": True,
        "zero_filtered_repeat_dropped": False,
        "estimated_tokens": size(records, True),
        "context_window": size(records, True) + 10,
    }
    assert HEADER in last_user(llm)

    no_repeat = explain(size(records, True) + 9)
    note = no_repeat.data["prompt"]
    assert isinstance(note, dict)
    assert note["zero_filtered_repeat_dropped"] is True and note["records_dropped"] == []
    assert HEADER not in last_user(llm) and " c9\t" in last_user(llm)

    two = explain(size(records[:2], False) + 10)
    assert two.data["prompt"] == {
        "records_shown": 2,
        "records_dropped": [2],
        "zero_filtered_repeat": False,
        "zero_filtered_repeat_dropped": True,
        "estimated_tokens": size(records[:2], False),
        "context_window": size(records[:2], False) + 10,
    }
    assert " c9\t" not in last_user(llm) and " b9\t" in last_user(llm)

    one = explain(size(records[:1], False) + 10)
    note = one.data["prompt"]
    assert isinstance(note, dict) and note["records_dropped"] == [1, 2]
    assert one.scale == PromptScale(max_activation=5.0)

    sent = len(llm.requests)
    with pytest.raises(ExplanationError, match="even one train record does not fit"):
        explain(size(records[:1], False) + 9)
    assert len(llm.requests) == sent, "nothing is sent when the prompt cannot fit"


# -- best of k -------------------------------------------------------------------------------------


class ExplanationSimulator(Simulator):
    """Predicts from the explanation's text: "numbers" fires on digits, "words" on the rest,
    "nothing" is constant; "broken..." fails. Records every excerpt it is asked about."""

    name = "by-explanation"

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[str, ...]]] = []

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        self.seen.append((explanation.text, tuple(tokens)))
        if explanation.text.startswith("broken"):
            raise SimulationError("broken on purpose")
        digit = [t.strip().isdigit() for t in tokens]
        values = {
            "numbers": [10.0 if d else 0.0 for d in digit],
            "numbers too": [10.0 if d else 0.0 for d in digit],
            "words": [0.0 if d else 10.0 for d in digit],
            "numbers, roughly": [8.0 if d else 1.0 for d in digit[:-1]] + [9.0],
        }.get(explanation.text, [3.0] * len(tokens))
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(values))


@pytest.fixture(scope="module")
def number_record() -> NeuronRecord:
    return number_neuron_record()


def run_best_of(
    number_record: NeuronRecord, answers: Sequence[str], k: int | None = None
) -> tuple[Explanation, list[tuple[Explanation, float | None]], ScriptedLLM, ExplanationSimulator]:
    splits = split_records(number_record)
    llm = ScriptedLLM(script=[choices(*answers)])
    simulator = ExplanationSimulator()
    best, scored = asyncio.run(
        abest_of_k(
            LLMExplainer(llm),
            simulator,
            splits.train,
            splits.calibration.records,
            k or len(answers),
        )
    )
    return best, scored, llm, simulator


def test_best_of_k_picks_the_best_on_calibration_and_never_sees_held_out(
    number_record: NeuronRecord,
) -> None:
    answers = ["nothing", "words", "numbers, roughly", "numbers", "broken"]
    best, scored, llm, simulator = run_best_of(number_record, answers)
    assert best.text == "numbers"
    assert [(e.text, s is None) for e, s in scored] == [
        ("nothing", True),
        ("words", False),
        ("numbers, roughly", False),
        ("numbers", False),
        ("broken", True),
    ]
    scores = {e.text: s for e, s in scored}
    assert scores["numbers"] == pytest.approx(1.0, abs=0.02)
    assert scores["words"] is not None and scores["words"] < 0
    candidates = best.data["candidates"]
    assert isinstance(candidates, list) and len(candidates) == 5
    assert candidates[0] == {
        "text": "nothing",
        "raw_output": "nothing",
        "samples": 1,
        "calibration_correlation": None,
        "reason": "simulation is constant (3 on every token)",
    }
    assert isinstance(candidates[4], dict)
    n = len(split_records(number_record).calibration.records)
    assert str(candidates[4]["reason"]) == (
        f"simulation failed: simulator 'by-explanation' could not simulate any of {n} "
        f"excerpts: other {n}; first: broken on purpose"
    )
    splits = split_records(number_record)
    assert best.data["best_of"] == {
        "k": 5,
        "chosen": 3,
        "scored_on": "calibration",
        "scoring": "plain",
        "calibration_records": len(splits.calibration.records),
        "compared_on": len(splits.calibration.records),
    }
    assert "prompt" in best.data, "the explainer's own notes are kept"

    # The explainer saw the train split only; the simulator the calibration split only.
    (request,) = llm.requests
    assert best.scale is not None
    assert request.messages == tuple(LLMExplainer(llm).messages(splits.train, best.scale))
    assert request.n == 5
    calibration = {r.tokens for r in splits.calibration.records}
    held_out = {r.tokens for r in (*splits.valid.records, *splits.test.records)}
    seen = {tokens for _, tokens in simulator.seen}
    assert seen == calibration and not seen & held_out
    assert len(simulator.seen) == 5 * len(splits.calibration.records)


class PartlyFailing(ExplanationSimulator):
    """`ExplanationSimulator` that fails, for an explanation, on the excerpts given for it."""

    def __init__(self, fail_on: dict[str, Sequence[tuple[str, ...]]]) -> None:
        super().__init__()
        self.fail_on = fail_on

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        if tuple(tokens) in self.fail_on.get(explanation.text, ()):
            raise SimulationError("lines do not match the tokens", reason="misaligned")
        return await super().asimulate(explanation, tokens)


def test_best_of_k_compares_candidates_on_the_excerpts_all_of_them_simulated(
    number_record: NeuronRecord,
) -> None:
    splits = split_records(number_record)
    records, train = splits.calibration.records, splits.train
    llm = ScriptedLLM(script=[choices("numbers, roughly", "numbers")])
    failing = PartlyFailing({"numbers": [records[0].tokens]})
    best, scored = asyncio.run(abest_of_k(LLMExplainer(llm), failing, train, records, 2))

    # "numbers" failed on the first excerpt: both candidates are scored on the others.
    assert best.data["best_of"]["compared_on"] == len(records) - 1  # type: ignore[index,call-overload]
    reference = ExplanationSimulator()
    for explanation, score in scored:
        predicted = [asyncio.run(reference.asimulate(explanation, r.tokens)) for r in records[1:]]
        expected = correlation(
            [a for r in records[1:] for a in r.activations],
            [a for p in predicted for a in p.expected_activations],
        )
        assert score == pytest.approx(expected.value)
    assert best.text == "numbers"

    # Failing on more than max_failed_fraction of them leaves a candidate out of the choice,
    # and out of the comparison.
    llm = ScriptedLLM(script=[choices("numbers, roughly", "numbers")])
    failing = PartlyFailing({"numbers": [r.tokens for r in records[:3]]})
    best, scored = asyncio.run(abest_of_k(LLMExplainer(llm), failing, train, records, 2))
    assert best.text == "numbers, roughly" and {e.text: s for e, s in scored}["numbers"] is None
    assert best.data["best_of"]["compared_on"] == len(records)  # type: ignore[index,call-overload]
    reason = best.data["candidates"][1]["reason"]  # type: ignore[index,call-overload]
    assert reason.startswith(
        f"simulation failed: simulator 'by-explanation' could not simulate 3 of {len(records)} "
        f"excerpts ({3 / len(records):.0%}, more than max_failed_fraction 10%): misaligned 3; "
        "first: lines do not match the tokens"
    )
    # With a threshold that allows it, the same candidate is compared on the rest.
    llm = ScriptedLLM(script=[choices("numbers, roughly", "numbers")])
    best, _ = asyncio.run(
        abest_of_k(LLMExplainer(llm), failing, train, records, 2, max_failed_fraction=0.5)
    )
    assert best.text == "numbers"
    assert best.data["best_of"]["compared_on"] == len(records) - 3  # type: ignore[index,call-overload]


def test_best_of_k_ties_duplicates_and_degenerate_cases(number_record: NeuronRecord) -> None:
    # Ties go to the earlier sample; duplicates are simulated once.
    best, scored, _, simulator = run_best_of(
        number_record, ["numbers too", "numbers", "numbers too"]
    )
    assert best.text == "numbers too" and len(scored) == 2
    assert best.data["candidates"][0]["samples"] == 2  # type: ignore[index,call-overload]
    assert {text for text, _ in simulator.seen} == {"numbers too", "numbers"}

    # One distinct candidate: nothing to choose, nothing simulated.
    best, scored, _, simulator = run_best_of(number_record, ["numbers", "numbers."])
    assert [(e.text, s) for e, s in scored] == [("numbers", None)] and not simulator.seen

    # No defined score: the first candidate.
    best, _, _, _ = run_best_of(number_record, ["nothing", "something else"])
    assert best.text == "nothing"

    with pytest.raises(SimulationError, match="every best-of-2 candidate failed"):
        run_best_of(number_record, ["broken", "broken again", "nothing"], k=2)


def test_best_of_k_argument_errors_and_plain_explainers(number_record: NeuronRecord) -> None:
    splits = split_records(number_record)
    llm = ScriptedLLM(script=[choices("numbers", "words")])
    with pytest.raises(InvalidInputError, match="no calibration records"):
        asyncio.run(abest_of_k(LLMExplainer(llm), ExplanationSimulator(), splits.train, [], 2))
    with pytest.raises(InvalidInputError, match="k >= 1"):
        asyncio.run(abest_of_k(LLMExplainer(llm), ExplanationSimulator(), splits.train, [], 0))

    plain = MockExplainer("numbers")
    assert not isinstance(plain, CandidateExplainer)
    assert isinstance(LLMExplainer(llm), CandidateExplainer)
    best, scored = asyncio.run(
        abest_of_k(plain, ExplanationSimulator(), splits.train, splits.calibration.records, 3)
    )
    assert best.text == "numbers" and len(scored) == 1
    assert best.data["candidates"][0]["samples"] == 3  # type: ignore[index,call-overload]
