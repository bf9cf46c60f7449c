"""The classification benchmark's own logic (benchmarks/bench_classification.py): its planted
units agree with the judge that reads them, and its copy of delphi's prompts is intact. No
corpus, tokenizer or model."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import bench_classification as bench  # noqa: E402

from neuron_explainer.llm import ChatRequest, Message  # noqa: E402
from neuron_explainer.scorers import _judge  # noqa: E402
from neuron_explainer.testing.judges import _WORD, OracleJudge  # noqa: E402

SENTENCES = (
    "On Monday my mother paid 42 dollars for a red hat; you'd never guess why.",
    "Thinking quickly, the extraordinary cat ate bread and drank coffee at night?",
    "Will you love God, or money! Not tonight: the question is the decision.",
    "Nothing happened here at all, said the old man to the sea.",
)


def subwords(text: str) -> list[str]:
    """Words cut into pieces of at most 3 characters (as BPE cuts rare words), so a word
    often spans several tokens."""
    out: list[str] = []
    for token in bench.split_words([text])[0]:
        out.extend(token[i : i + 3] for i in range(0, len(token), 3))
    return out


def test_words_are_read_as_the_oracle_judge_reads_them() -> None:
    assert bench.WORD.pattern == _WORD.pattern


@pytest.mark.parametrize("split", [lambda t: bench.split_words([t])[0], subwords])
def test_windows_map_each_word_to_the_tokens_it_overlaps(split) -> None:  # type: ignore[no-untyped-def]
    for text in SENTENCES:
        tokens = split(" " + text)
        assert "".join(tokens) == " " + text
        window = bench.Window.of(tokens)
        assert [w for w, _, _ in window.words] == _WORD.findall(text)
        for word, first, after in window.words:
            assert word in "".join(tokens[first:after])
            assert word not in "".join(tokens[first + 1 : after]) or after - first == 1
            assert word not in "".join(tokens[first : after - 1]) or after - first == 1


@pytest.mark.parametrize("unit", bench.UNITS, ids=[u.name for u in bench.UNITS])
@pytest.mark.parametrize("split", [lambda t: bench.split_words([t])[0], subwords])
def test_planted_units_fire_exactly_where_their_rule_and_the_oracle_say(unit, split) -> None:  # type: ignore[no-untyped-def]
    judge = OracleJudge(fires=unit.fires)
    for text in SENTENCES:
        tokens = split(" " + text)
        values = unit.activations(tokens)
        window = bench.Window.of(tokens)
        firing = {i for w, a, b in window.words if unit.fires(w) for i in range(a, b)}
        assert {i for i, v in enumerate(values) if v >= 0.35} == firing
        for i, v in enumerate(values):
            if i in firing:
                assert 0.35 <= v <= 1
            elif window.keys[i] in unit.negative:
                assert v == unit.negative_value < 0
            else:
                assert unit.noise[0] <= v <= unit.noise[1]
                assert abs(v) < 0.2 * 0.75  # silent once the unit's maximum is >= 0.75
        assert judge.answer(_judge.render(tokens)) == bool(firing)
        assert unit.activations(tokens) == values  # the noise is seeded by the text


def test_every_unit_is_named_once_and_some_are_dense_or_signed() -> None:
    assert len({u.name for u in bench.UNITS}) == len(bench.UNITS) >= 12
    kinds = {u.kind for u in bench.UNITS}
    assert {"sparse", "dense", "signed", "dense signed"} <= kinds


def test_highlights_are_shown_as_the_scorers_show_them() -> None:
    tokens = ["A", " red", " hat", " and", " a", " blue", " one"]
    for highlight in ([], [1], [1, 2], [0, 5, 6]):
        assert bench.marked(tokens, highlight) == _judge.render(tokens, highlight)


def _request(n: int) -> ChatRequest:
    lines = "\n".join(f"{i}. text {i}" for i in range(1, n + 1))
    return ChatRequest(messages=(Message(role="user", content=f"Excerpts:\n{lines}\n\nQ?"),))


def test_content_blind_judges_answer_by_position_and_by_request() -> None:
    position = bench.judge_for(bench.UNITS[0], "position", 0)
    assert [position.answer("x") for _ in range(4)] == [True, False, True, False]
    answers = [position(_request(4)).choices[0].text for _ in range(2)]
    assert answers[0] == answers[1] == '{"1": 1, "2": 0, "3": 1, "4": 0}'
    by_request = bench.judge_for(bench.UNITS[0], "by-request", 0)
    texts = [by_request(_request(2)).choices[0].text for _ in range(3)]
    assert texts == ['{"1": 1, "2": 1}', '{"1": 0, "2": 0}', '{"1": 1, "2": 1}']


def test_verdicts_follow_the_issue_targets() -> None:
    ok = {"units": 12, "undefined": 0, "min": 0.96, "mean": 0.99}
    assert bench.verdict("oracle", ok)
    assert not bench.verdict("oracle", ok | {"min": 0.9})
    assert not bench.verdict("oracle", ok | {"units": 9})
    assert bench.verdict("random", ok | {"mean": 0.54})
    assert not bench.verdict("yes", ok | {"mean": 0.56})
    repeats = bench.coin_repeats([[0.5, 0.6], [0.5, 0.6]])
    assert repeats["within_0.05"] == 1 and repeats["means"] == pytest.approx([0.5, 0.6])


def test_the_quoted_delphi_prompts_are_intact() -> None:
    assert bench.delphi_digest() == bench.DELPHI_DIGEST


@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
def test_delphi_prompts_have_its_shape(kind: str) -> None:
    texts = [f"excerpt {i}" for i in range(12)]
    requests = bench.delphi_requests(kind, "colours", texts, [i % 3 == 0 for i in range(12)])
    assert len(requests) == math.ceil(12 / bench.DELPHI_PER_PROMPT) == 3
    shown = []
    for messages, answer in requests:
        roles = [m["role"] for m in messages]
        assert roles == ["system", *["user", "assistant"] * 3, "user"]
        last = messages[-1]["content"]
        assert last.startswith("Latent explanation: colours\n\nText examples:\n\nExample 0: ")
        lines = [line for line in last.splitlines() if line.startswith("Example ")]
        assert [line.split(":")[0] for line in lines] == [f"Example {i}" for i in range(len(lines))]
        shown += [line.split(": ", 1)[1] for line in lines]
        assert (
            answer
            == "["
            + ",".join(str(int(int(t.split()[1]) % 3 == 0)) for t in shown[-len(lines) :])
            + "]"
        )
    assert sorted(shown) == sorted(texts)
    assert shown != texts  # shuffled, as delphi's classifier does


def test_token_totals_and_ratio() -> None:
    def unit(ours: int, delphi: int) -> dict[str, dict[str, object]]:
        side = {"requests": 1, "excerpts": 10, "completion": 5}
        return {
            kind: {
                "ours": side | {"prompt": ours},
                "delphi": side | {"prompt": delphi},
                "excerpt_tokens": 100,
            }
            for kind in bench.SCORERS
        }

    totals = bench.token_totals([unit(200, 1000), unit(300, 1000)])
    assert totals["both"]["ratio"] == pytest.approx(0.25)
    assert totals["both"]["pass"]
    assert totals["detection"]["ratio_range"] == pytest.approx([0.2, 0.3])
    assert totals["both"]["ours"]["overhead_per_request"] == pytest.approx((500 - 200) / 2)
