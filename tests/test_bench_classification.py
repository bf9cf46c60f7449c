"""The classification benchmark's own logic (benchmarks/bench_classification.py): its planted
units agree with the judge that reads them, its copy of delphi's prompts is intact, and its
real-judge run (``judged``, benchmarks/classification_judged.py) scores, resumes and tabulates
with a scripted judge. No corpus, tokenizer or model."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import bench_classification as bench  # noqa: E402
import classification_judged as judged  # noqa: E402

from neuron_explainer.llm import ChatRequest, ChatResponse, Message  # noqa: E402
from neuron_explainer.llm.base import Usage  # noqa: E402
from neuron_explainer.scorers import _judge  # noqa: E402
from neuron_explainer.testing import ScriptedLLM  # noqa: E402
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


# -- judged: a real judge, stood in for by a scripted one -----------------------------------

FILLER = (
    "the old man walked along a quiet road past stone walls and a dark river while people "
    "talked about light rain over the hills near town"
).split()
FIRING = ("42", "1999", "7", "red", "green", "blue", "black", "Monday", "June", "Friday", "could")


def corpus(n: int = 900, seed: int = 0) -> list[bench.Window]:
    """Windows of 16 words from made-up sentences: filler, and now and then a digit, a colour,
    a weekday or month, or a modal verb."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(10)]
        if rng.random() < 0.45:
            words.insert(rng.randrange(len(words)), rng.choice(FIRING))
        texts.append(" ".join(words) + ".")
    return bench.windows(texts, bench.split_words, length=16)


class ExplainedJudge(OracleJudge):
    """Answers by the rule of the planted unit whose explanation the request gives (a true
    explanation is judged right, a false one by the other unit's rule), and reports usage as
    a provider does (1 prompt token per 4 characters, 5 completion tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.rules = {u.explanation: u.fires for u in bench.UNITS}

    def __call__(self, request: ChatRequest) -> ChatResponse:
        user = next(m.content for m in reversed(request.messages) if m.role == "user")
        self.fires = self.rules[user.split("Explanation: ", 1)[1].split("\n\n", 1)[0]]
        usage = Usage(prompt_tokens=len(user) // 4, completion_tokens=5)
        return super().__call__(request).model_copy(update={"usage": usage})


@pytest.fixture(scope="module")
def cases() -> list[judged.Case]:
    return bench.judged_cases(corpus(), 3, top_k=40, n_random=60)


def test_judged_cases_pair_each_unit_with_the_next_units_explanation(cases, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert [c.name for c in cases] == [u.name for u in bench.UNITS[:3]]
    for case, unit, other in zip(cases, bench.UNITS, bench.UNITS[1:], strict=False):
        assert (case.true, case.false, case.false_of) == (
            unit.explanation,
            other.explanation,
            other.name,
        )
        assert case.firing > 0
    monkeypatch.setattr(bench, "UNITS", bench.UNITS[:3])  # the last unit's is the first's
    last = bench.judged_cases(corpus(), 3, top_k=40, n_random=60)[-1]
    assert (last.false, last.false_of) == (bench.UNITS[0].explanation, bench.UNITS[0].name)


def test_settings_are_parsed_scorer_by_scorer_smallest_first() -> None:
    settings = judged.parse_settings("fuzzing,detection", "20,5,10")
    assert [s.label for s in settings] == [
        *(f"fuzzing@{k}" for k in (5, 10, 20)),
        *(f"detection@{k}" for k in (5, 10, 20)),
    ]
    for scorers, sizes in (("detection,simulation", "5"), ("detection", "0,5"), ("", "5")):
        with pytest.raises(SystemExit):
            judged.parse_settings(scorers, sizes)


def test_judged_run_scores_estimates_resumes_and_tabulates(cases, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = judged.parse_settings("detection,fuzzing", "5,10")
    out = tmp_path / "pieces"
    jobs = judged.plan_jobs(cases, settings, out, "llamacpp", "/models/judge.gguf")
    assert len({j.path for j in jobs}) == len(jobs) == 12
    assert all(j.path.name.startswith("llamacpp_judge.gguf_") for j in jobs)
    lines = judged.estimate_lines(jobs, jobs, seconds_per_request=2.0)
    total = sum(j.plan["estimate"]["requests"] for j in jobs)
    assert f"0 of 12 pieces done; left: {total} requests" in lines[-1]
    assert f"{total * 2 / 60:.0f} min at 2 s per request" in lines[-1]
    for job in jobs:  # two explanations, no retries
        assert job.plan["estimate"]["requests"] == 2 * len(job.plan["requests"])
        assert max(job.plan["requests"]) <= job.setting.per_request

    judge = ExplainedJudge()
    llm = ScriptedLLM(default=judge)
    written = asyncio.run(judged.run_jobs(jobs, llm, "llamacpp", "/models/judge.gguf"))
    assert written == [j.path for j in jobs]
    assert len(judge.requests) == total
    assert not list(out.glob("*.partial"))
    for job in jobs:
        piece = judged.read_piece(job.path)
        assert piece is not None and piece["key"] == job.key and piece["same_excerpts"]
        true, false = piece["true"], piece["false"]
        assert true["balanced_accuracy"] == 1.0 > false["balanced_accuracy"]
        assert true["failed"] == false["failed"] == 0
        assert true["requests"] + false["requests"] == job.plan["estimate"]["requests"]
        assert true["prompt_tokens"] > 0 and true["completion_tokens"] == 5 * true["requests"]
        assert false["of"] == job.case.false_of

    rows = judged.table(jobs)
    assert [(r["scorer"], r["per_request"]) for r in rows] == [
        ("detection", 5),
        ("detection", 10),
        ("fuzzing", 5),
        ("fuzzing", 10),
    ]
    for row in rows:
        assert row["units"] == 3 and row["ba_true"]["value"] == 1.0
        assert row["ba_false"]["value"] < 1.0
        assert row["true_above_false"]["value"] == 1.0 and row["tied"] == 0
        assert row["failed"]["value"] == 0 and row["failure_reasons"] == {}
        assert row["auroc_true"] == 1.0 and row["hit_rate_true"] == 1.0
        assert row["rejection_rate_true"] == 1.0
        planned = [
            j.plan["estimate"]["requests"]
            for j in jobs
            if j.setting.label == f"{row['scorer']}@{row['per_request']}"
        ]
        assert row["requests_per_unit"]["value"] == pytest.approx(sum(planned) / 3)
        assert ("change_ba_true" in row) == (row["per_request"] == 10)
    assert rows[1]["vs_per_request"] == 5 and rows[1]["change_ba_true"]["value"] == 0.0
    text = judged.markdown(rows)
    assert "| detection | 5 | 3 | 1.00 [1.00, 1.00] |" in text and "(base)" in text

    # a killed run: the piece in progress is missing; a rerun of the command starts the
    # backend (stood in for) and does that piece only
    opened: list[str] = []

    @contextlib.contextmanager
    def backend(name, model, args):  # type: ignore[no-untyped-def]
        opened.append(name)
        yield llm, model, {"startup_seconds": 0.0}

    monkeypatch.setattr(judged.sims, "open_backend", backend)
    args = argparse.Namespace(
        scorers="detection,fuzzing",
        per_request="5,10",
        model="/models/judge.gguf",
        backend="llamacpp",
        out=out,
        seconds_per_request=2.5,
    )
    lost = jobs[4]
    lost.path.unlink()
    before = len(judge.requests)
    summary = judged.main(args, cases)
    assert opened == ["llamacpp"]
    assert len(judge.requests) - before == lost.plan["estimate"]["requests"]
    assert judged.read_piece(lost.path)["llm"]["startup_seconds"] == 0.0  # type: ignore[index]
    assert summary is not None and summary.parent == tmp_path
    saved = json.loads(summary.read_text())
    assert len(saved["pieces"]) == 12 and saved["rows"][0]["ba_true"]["value"] == 1.0

    # nothing left: the command reports without starting a backend
    judged.main(args, cases)
    assert opened == ["llamacpp"] and len(judge.requests) - before == len(lost.plan["requests"]) * 2


def test_rows_count_ties_failures_and_paired_changes() -> None:
    def piece(unit: str, k: int, true: float | None, false: float | None, **extra: object) -> Any:
        outcome = {
            "ok": True,
            "judgements": 10,
            "failed": 0,
            "failure_reasons": {},
            "requests": 2,
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "answers": [[1, 1, None], [0, 1, None], [0, None, None]],
        }
        sides = {
            "true": outcome | {"balanced_accuracy": true} | extra,
            "false": outcome | {"balanced_accuracy": false},
        }
        return (
            {"unit": {"name": unit}, "per_request": k, "same_excerpts": True}
            | sides
            | {"wall_seconds": 3.0}
        )

    base = [piece("a", 5, 0.9, 0.5), piece("b", 5, 0.8, 0.6)]
    failing = {"failed": 2, "failure_reasons": {"unparseable": 2}}
    raised = {"ok": False, "error_type": "InsufficientRecordsError", "failed": 0}
    rows = judged.summarize(
        judged.Setting("detection", 10),
        [piece("a", 10, 0.7, 0.7, **failing), piece("b", 10, None, 0.5, **raised)],
        base,
    )
    assert rows["true_above_false"]["k"] == 0 and rows["tied"] == 1
    assert rows["change_ba_true"]["n"] == 1
    assert rows["change_ba_true"]["value"] == pytest.approx(-0.2)
    assert rows["change_gap"]["value"] == pytest.approx(-0.4)
    assert rows["failure_reasons"] == {"unparseable": 2, "score raised InsufficientRecordsError": 1}
    assert rows["failed"]["k"] == 2 and rows["scores_raised"] == 1
    assert rows["hit_rate_true"] == 1.0 and rows["rejection_rate_true"] == 0.0
    assert rows["requests_per_unit"]["value"] == 4 and rows["seconds_per_unit"]["value"] == 3
