"""The puzzle benchmark of the classification scorers (benchmarks/bench_detection.py): the
records it builds, the requests every explanation sees, and the table's statistics, on a tiny
fake half and on the real set with scripted judges. No model."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import bench_detection as bench  # noqa: E402
import bench_simulators as sims  # noqa: E402
import puzzle_set  # noqa: E402
from puzzle_set._core import Puzzle, lexicon, puzzle, sense  # noqa: E402

from neuron_explainer.llm.base import ChatRequest, ChatResponse  # noqa: E402
from neuron_explainer.testing import ScriptedLLM  # noqa: E402
from neuron_explainer.testing.judges import _WORD, OracleJudge  # noqa: E402

FAST = {"n_resamples": 20}
"""Scorer arguments that keep the tests fast (the bootstrap intervals are not under test)."""


def _digits(tokens: Sequence[str], i: int) -> float:
    return 10.0 if tokens[i].strip().isdigit() else 0.0


COLOURS = puzzle(
    "fake-colours",
    "fake",
    lexicon(["red", "blue", "green"]),
    true="colour words",
    decoy="the word 'car'",
    near_miss="adjectives",
    other="vehicles",
    sentences=(
        "The ⟦red⟧ car stopped.",
        "A ⟦blue⟧ sky over the car park.",
        "She painted it ⟦green⟧ and ⟦red⟧.",
        "The car was fast.",
        "Nothing happened here.",
        "He bought a ⟦blue⟧ hat.",
    ),
    decoy_words=("car",),
)
NUMBERS = puzzle(
    "fake-numbers",
    "fake",
    _digits,
    true="numbers",
    decoy="the word 'apples'",
    near_miss="prices",
    other="fruit",
    sentences=(
        "I ate ⟦3⟧ apples today.",
        "She has ⟦12⟧ cats.",
        "Apples are sweet.",
        "We left at ⟦5⟧ sharp.",
        "No numbers in this one.",
        "The apples fell down.",
    ),
    decoy_words=("apples",),
)
RIVER = puzzle(
    "fake-river-bank",
    "fake",
    sense(["bank"], ["river", "water"]),
    true="'bank' meaning the side of a river",
    decoy="the word 'money'",
    near_miss="the word 'bank'",
    other="places",
    sentences=(
        "We sat on the river ⟦bank⟧ all day.",
        "The ⟦bank⟧ by the water was muddy.",
        "The bank lent him money.",
        "She walked to the bank with money.",
        "Fish swim near the ⟦bank⟧ of the river.",
        "Money is tight this year.",
    ),
    decoy_words=("money",),
)
FAKE_HALF = [COLOURS, NUMBERS, RIVER]


def word_oracle(p: Puzzle) -> Callable[[str], bool] | None:
    """A rule on words (as `OracleJudge` reads them) that fires exactly where the puzzle
    does, or ``None`` when the puzzle's rule is not one (a word fires in one sentence and not
    in another, or a firing token has no word)."""
    records = p.records()
    threshold = 0.2 * max(max(a) for _, a in records)
    words = {
        w.lower()
        for tokens, acts in records
        for token, a in zip(tokens, acts, strict=True)
        if a >= threshold
        for w in _WORD.findall(token)
    }
    for tokens, acts in records:
        for token, a in zip(tokens, acts, strict=True):
            found = _WORD.findall(token)
            if (a >= threshold and not found) or (
                found and any(w.lower() in words for w in found) != (a >= threshold)
            ):
                return None
    return lambda w: w.lower() in words


def in_words(items: Sequence[str]) -> Callable[[str], bool]:
    listed = {w.lower() for item in items for w in _WORD.findall(item)}
    return lambda w: w.lower() in listed


class ByExplanation:
    """A judge that reads the request's explanation and answers as the judge given for it
    (an `OracleJudge`, or any `ScriptedLLM` answer), else as ``default``."""

    def __init__(self, judges: dict[str, Any], default: Any) -> None:
        self.judges, self.default = judges, default
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: ChatRequest) -> ChatResponse | str:
        user = next(m.content for m in reversed(request.messages) if m.role == "user")
        match = re.search(r"^Explanation: (.*)$", user, re.MULTILINE)
        assert match, user
        self.requests.append((match.group(1), user))
        judge = self.judges.get(match.group(1), self.default)
        if isinstance(judge, BaseException):
            raise judge
        return judge(request) if callable(judge) else judge


def oracle_judges(p: Puzzle) -> dict[str, Any]:
    """The truth judged by its rule on words (when it is one), the decoy by its words; the
    other false explanations get the default."""
    judges: dict[str, Any] = {}
    fires = word_oracle(p)
    if fires is not None:
        judges[p.true] = OracleJudge(fires=fires)
    judges[p.explanations[p.kinds.index("decoy")]] = OracleJudge(fires=in_words(p.decoy_words))
    return judges


def oracle_llm(puzzles: Sequence[Puzzle], **extra: Any) -> ScriptedLLM:
    judges = {k: v for p in puzzles for k, v in oracle_judges(p).items()}
    return ScriptedLLM(default=ByExplanation({**judges, **extra}, OracleJudge(policy="yes")))


def combos(*sizes: int, scorers: Sequence[str] = ("detection", "fuzzing")) -> list[bench.Combo]:
    return [bench.Combo(name, dict(FAST), k) for name in scorers for k in sizes]


def run(
    puzzles: Sequence[Puzzle],
    llm: Any,
    out: Path,
    backend: str = "fake",
    sizes: Sequence[int] = (5,),
) -> list[Path]:
    options = bench.RunOptions(
        half="test",
        chosen=list(puzzles),
        combos=combos(*sizes),
        concurrency=2,
        out=out,
        digest=puzzle_set.frozen()["sha256"],
    )
    return asyncio.run(bench.run_backend(backend, llm, "/models/judge.gguf", options, {}))


def rows(out: Path, half_size: int = len(FAKE_HALF)) -> dict[tuple[str, str, int], dict[str, Any]]:
    pieces, _ = bench.read_pieces(out, "test", puzzle_set.frozen()["sha256"])
    table = bench.table(bench.merge(pieces), half_size)
    return {(r["scorer"].split("[")[0], r["backend"], r["per_request"]): r for r in table}


# Records ------------------------------------------------------------------------------------


def test_every_puzzle_of_the_set_has_both_classes_under_the_firing_rule() -> None:
    for p in puzzle_set.PUZZLES:
        counts = bench.check_puzzle(p)
        assert counts["activating"] >= 3 and counts["silent"] >= 2, p.id
        assert counts["activating"] + counts["silent"] == counts["sentences"] == len(p.sentences)


def test_a_puzzle_without_silent_sentences_is_refused() -> None:
    loud = puzzle(
        "fake-loud",
        "fake",
        lexicon(["a"]),
        true="the word 'a'",
        decoy="the word 'b'",
        near_miss="letters",
        other="words",
        sentences=("⟦a⟧ b", "b ⟦a⟧"),
        decoy_words=("b",),
    )
    with pytest.raises(ValueError, match="silent"):
        bench.check_puzzle(loud)


def test_the_valid_split_holds_every_sentence_and_detection_judges_each_once() -> None:
    data = bench.puzzle_data(COLOURS)
    excerpts = bench.puzzle_excerpts(COLOURS)
    assert data.split == "valid" and data.splits.valid.random == excerpts
    assert data.splits.train == () and data.splits.valid.top == ()
    assert not data.splits.calibration.all_records and not data.splits.test.all_records
    assert data.record.max_activation == 10.0
    assert str(data.record.unit).startswith("puzzle:fake-colours ")
    llm = oracle_llm([COLOURS])
    for per_request in (1, 4, 10):
        detection = bench.build_scorer("detection", llm, per_request, FAST)
        score = detection.score(bench.Explanation(text="colour words", explainer=INFO), data)
        judged = Counter(j.record.tokens for j in score.judgements)
        assert judged == Counter(e.tokens for e in excerpts)  # every sentence, once
        assert [j.label for j in score.judgements].count(True) == 4
        assert score.value.value == 1.0
        fuzzing = bench.build_scorer("fuzzing", llm, per_request, FAST)
        score = fuzzing.score(bench.Explanation(text="colour words", explainer=INFO), data)
        assert len(score.judgements) == 2 * 4 and score.value.value == 1.0


INFO = bench.ComponentInfo(name="test")


def test_every_explanation_of_a_puzzle_sees_the_same_requests() -> None:
    judge = ByExplanation({}, OracleJudge(policy="random"))
    entry = asyncio.run(
        bench.run_puzzle(NUMBERS, combos(1, 3, 10), ScriptedLLM(default=judge), concurrency=4)
    )
    assert all(run["same_excerpts"] for run in entry["runs"])
    by_text: dict[str, Counter[str]] = {text: Counter() for text in NUMBERS.explanations}
    for text, user in judge.requests:
        by_text[text][user.replace(f"Explanation: {text}\n", "")] += 1
    shown = list(by_text.values())
    assert all(requests == shown[0] for requests in shown[1:])
    plans = {(r["scorer"], r["per_request"]): r["plan"] for r in entry["runs"]}
    assert plans["detection", 1]["requests"] == [1] * 6
    assert plans["detection", 3]["requests"] == [3, 3]
    assert plans["detection", 10]["requests"] == [6]
    assert plans["fuzzing", 10]["requests"] == [3, 3]  # never both versions in one request
    fingerprints = {r["explanations"][0]["judged_fingerprint"] for r in entry["runs"]}
    assert len(fingerprints) > 1  # the judged order differs between settings


def test_an_oracle_that_can_express_the_rule_puts_the_truth_first() -> None:
    expressible = 0
    for p in puzzle_set.puzzles("test"):
        if word_oracle(p) is None:
            continue
        expressible += 1
        llm = oracle_llm([p])
        entry = asyncio.run(bench.run_puzzle(p, combos(10), llm, concurrency=4))
        for run in entry["runs"]:
            scores = bench.PuzzleScores.from_run(entry, run)
            assert scores.balanced_accuracy[0] == 1.0, (p.id, run["scorer"])
            assert scores.first(scores.balanced_accuracy), (p.id, run["scorer"], scores)
            assert scores.above("decoy") and scores.failed == 0
    assert expressible >= 20  # most rules of the test half are rules on words


# The table on a tiny fake half ---------------------------------------------------------------


def test_the_table_counts_truth_first_ties_and_decoys(tmp_path: Path) -> None:
    run(FAKE_HALF, oracle_llm(FAKE_HALF), tmp_path, "oracle", sizes=(5, 10))
    run(FAKE_HALF, ScriptedLLM(default=OracleJudge(policy="yes")), tmp_path, "yes")
    table = rows(tmp_path)
    # colours and numbers: the rule is a rule on words; river: the oracle cannot tell the
    # senses of "bank" apart, so the truth (judged "yes") ties the near-miss; it is above the
    # decoy ("money") in detection (which says yes on the money-bank sentences), not in fuzzing
    # (where "no" to every highlight is as good as "yes")
    for scorer, above_decoy in (("detection", 3), ("fuzzing", 2)):
        oracle = table[scorer, "oracle", 5]
        assert oracle["truth_first"] == sims._share(2, 3)
        assert oracle["truth_first"]["lo"] == pytest.approx(sims.wilson(2, 3)[1])
        assert oracle["truth_tied"]["k"] == 1
        assert oracle["above_decoy"]["k"] == above_decoy
        assert oracle["above_near_miss"]["k"] == 2
        assert oracle["mean_ba_true"]["value"] == pytest.approx((1 + 1 + 0.5) / 3)
        assert oracle["failed"]["k"] == 0 and oracle["errors"] == 0
        assert oracle["verdict"] == {"truth_first": "FAIL", "failed": "PASS"}  # 67 % < 70 %
        assert oracle["excerpts_differ"] == 0
        yes = table[scorer, "yes", 5]
        assert yes["truth_first"]["k"] == 0 and yes["truth_tied"]["k"] == 3
        assert yes["truth_first_auroc"]["k"] == 0
        assert yes["mean_ba_true"]["value"] == yes["mean_ba_false"]["value"] == 0.5
    assert table["detection", "oracle", 5]["requests_per_puzzle"]["value"] == 4 * 2
    assert table["detection", "oracle", 10]["requests_per_puzzle"]["value"] == 4 * 1
    assert table["fuzzing", "oracle", 10]["requests_per_puzzle"]["value"] == 4 * 2
    text = bench.markdown(list(table.values()))
    assert text.count("\n| detection[n_resamples=20] | oracle | 5 |") == 2
    assert "67 % [21, 94]" in text


def test_failed_judgements_and_scores_that_raise_are_counted(tmp_path: Path) -> None:
    llm = oracle_llm(
        [COLOURS],
        **{COLOURS.explanations[1]: "I cannot tell.", COLOURS.explanations[3]: RuntimeError("x")},
    )
    run([COLOURS], llm, tmp_path)
    detection = rows(tmp_path, half_size=1)["detection", "fake", 5]
    # the decoy's 6 judgements failed (no answer in 3 tries); the "other" explanation's
    # score raised: its 6 planned judgements count as failed
    assert detection["failed"]["k"] == 12 and detection["judgements"] == 24
    assert detection["errors"] == 1
    assert detection["truth_first"]["k"] == 1  # an unscored explanation ranks below
    assert detection["verdict"] == {"truth_first": "PASS", "failed": "FAIL"}
    pieces, _ = bench.read_pieces(tmp_path, "test", None)
    outcomes = pieces[0]["puzzle"]["runs"][0]["explanations"]
    assert outcomes[1]["failure_reasons"] == {"unparseable": 6}
    assert outcomes[3]["error_type"] == "RuntimeError"


def test_a_rerun_skips_puzzles_done_and_a_broken_file_is_skipped(tmp_path: Path) -> None:
    first = ScriptedLLM(default=OracleJudge(policy="yes"))
    assert len(run(FAKE_HALF[:2], first, tmp_path)) == 2
    (tmp_path / "test_x_fake_1.json.partial").write_text("{")  # a run killed mid-write
    (tmp_path / "test_y_fake_2.json").write_text("{")
    second = ScriptedLLM(default=OracleJudge(policy="yes"))
    assert len(run(FAKE_HALF, second, tmp_path)) == 1  # only the river puzzle
    asked = {r.messages[-1].content.split("\n", 1)[0] for r in second.requests}
    assert asked == {f"Explanation: {text}" for text in RIVER.explanations}
    assert len(run(FAKE_HALF, second, tmp_path, "other")) == 3  # another backend: all
    pieces, notes = bench.read_pieces(tmp_path, "test", puzzle_set.frozen()["sha256"])
    assert len(pieces) == 6 and len(notes) == 1 and "test_y_fake_2.json" in notes[0]
    assert rows(tmp_path)["detection", "fake", 5]["puzzles"] == 3


def test_settings_that_send_the_same_requests_are_noted(tmp_path: Path) -> None:
    run(FAKE_HALF[:1], ScriptedLLM(default=OracleJudge(policy="yes")), tmp_path, sizes=(1, 8, 20))
    pieces, _ = bench.read_pieces(tmp_path, "test", None)
    notes = bench.same_requests(bench.merge(pieces))
    assert notes == [
        f"{name}[n_resamples=20] on fake at 20 per request sent the same requests as at 8 on "
        "every puzzle both cover (1)"
        for name in ("detection", "fuzzing")
    ]
    lines = bench.plan_summary(FAKE_HALF, combos(1, 8, 20, scorers=("detection",)))
    assert lines[0] == "detection[n_resamples=20] at 1 per request: 24.0 requests per puzzle"
    assert lines[2].endswith("(the same requests as 8 per request)")


def test_the_command_line_checks_its_settings() -> None:
    def args(**kw: Any) -> Any:
        base = {"scorers": "detection", "per_request": "5,10", "kw": []}
        return type("Args", (), {**base, **kw})()

    parsed = bench.parse_combos(args(kw=["detection.seed=3"]))
    assert [(c.label, c.per_request) for c in parsed] == [
        ("detection[seed=3]", 5),
        ("detection[seed=3]", 10),
    ]
    with pytest.raises(SystemExit, match="unknown scorer"):
        bench.parse_combos(args(scorers="detection,simulation"))
    with pytest.raises(SystemExit, match=">= 1"):
        bench.parse_combos(args(per_request="0"))
    with pytest.raises(SystemExit, match="unknown backend"), sims.open_backend("nope", "m", None):
        pass


def test_the_table_command_prints_and_writes_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(FAKE_HALF, oracle_llm(FAKE_HALF), tmp_path)
    capsys.readouterr()
    out = tmp_path / "rows.json"
    assert bench.main(["table", "--half", "test", "--dir", str(tmp_path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "detection[n_resamples=20] at 5 per request on fake (judge.gguf): 3/34 puzzles" in printed
    )
    assert "FAIL (partial: 3/34)" in printed and "PASS (partial: 3/34)" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["truth_first"]["k"] for r in rows] == [2, 2]
