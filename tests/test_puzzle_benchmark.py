"""The shared puzzle benchmark (benchmarks/puzzle_set/): its data checks itself, and the runner's
table maths (benchmarks/bench_simulators.py) is right on synthetic piece files. No model."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import puzzle_set  # noqa: E402
from puzzle_set import PUZZLES, canonical, compute_split, digest, frozen, puzzles  # noqa: E402
from puzzle_set._core import (  # noqa: E402
    inside,
    lexicon,
    marked_tokens,
    parse_marked,
    phrases,
    sense,
    tokenize,
    word,
)

IDS = [p.id for p in PUZZLES]


def _words(puzzle: puzzle_set.Puzzle) -> list[tuple[str, float]]:
    return [
        (word(t), a) for tokens, acts in puzzle.records() for t, a in zip(tokens, acts, strict=True)
    ]


# The set as a whole ------------------------------------------------------------------------


def test_at_least_64_puzzles_with_unique_ids_over_many_families() -> None:
    assert len(PUZZLES) >= 64
    assert len(set(IDS)) == len(IDS)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in IDS)
    families = Counter(p.family for p in PUZZLES)
    required = {"single_token", "word_family", "syntax", "position", "topic", "code", "numbers"}
    assert required | {"entity"} <= set(families)
    assert len(families) >= 12
    assert min(families.values()) >= 3


def test_the_tokenizer_is_the_one_of_benchmarks_puzzles() -> None:
    import puzzles as old

    for p in PUZZLES:
        for sentence in p.sentences:
            assert tokenize(sentence) == old.tokenize(sentence)
    assert tokenize("It's 2,500 <div>.") == ["It's", " 2,500", " <", "div", ">", "."]
    with pytest.raises(ValueError, match="lose text"):
        tokenize("two  spaces")


def test_no_sentence_is_reused_from_the_old_puzzles() -> None:
    import puzzles as old

    old_sentences = {s for p in old.PUZZLES for s in p.sentences}
    old_texts = {t for p in old.PUZZLES for t in p.explanations}
    for p in PUZZLES:
        assert not old_sentences & set(p.sentences), p.id
        assert p.true not in old_texts, p.id


# Each puzzle -------------------------------------------------------------------------------


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_rule_fires_exactly_on_the_marked_tokens(puzzle: puzzle_set.Puzzle) -> None:
    """The marks were written from the true explanation, the rule separately: they agree."""
    for marked, (tokens, activations) in zip(puzzle.marked, puzzle.records(), strict=True):
        marked_toks, flags = marked_tokens(marked)
        assert marked_toks == tokens
        fired = [a != 0 for a in activations]
        assert fired == flags, (marked, [t for t, f in zip(tokens, fired, strict=True) if f])


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_sentences_and_activations_are_in_range(puzzle: puzzle_set.Puzzle) -> None:
    records = puzzle.records()
    assert 6 <= len(records) <= 10
    for tokens, activations in records:
        assert 5 <= len(tokens) <= 40
        assert all(math.isfinite(a) and 0 <= a <= 10 for a in activations)
    firing = sum(any(a > 0 for a in acts) for _, acts in records)
    assert firing >= 3
    assert len(records) - firing >= 2
    assert len(set(puzzle.sentences)) == len(puzzle.sentences)


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_explanations_have_the_required_kinds(puzzle: puzzle_set.Puzzle) -> None:
    kinds = [f.kind for f in puzzle.false]
    assert len(kinds) >= 3
    assert {"decoy", "near_miss", "other"} <= set(kinds)
    assert puzzle.kinds[0] == "true"
    texts = [t.lower() for t in puzzle.explanations]
    assert len(set(texts)) == len(texts)
    assert all(t.strip() and t == t.strip() for t in puzzle.explanations)


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_decoy_words_occur_and_never_fire(puzzle: puzzle_set.Puzzle) -> None:
    decoy = next(f.text for f in puzzle.false if f.kind == "decoy")
    words = _words(puzzle)
    assert puzzle.decoy_words
    for w in puzzle.decoy_words:
        assert w.lower() in decoy.lower(), f"the decoy does not name {w!r}"
        seen = [a for t, a in words if t == w.lower()]
        assert seen, f"{w!r} does not occur"
        assert not any(seen), f"{w!r} fires"


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_near_miss_disagrees_with_the_truth_somewhere(puzzle: puzzle_set.Puzzle) -> None:
    assert puzzle.near_miss_silent or puzzle.near_miss_firing
    words = _words(puzzle)
    for w in puzzle.near_miss_silent:  # covered by the near-miss, silent at least once
        assert any(a == 0 for t, a in words if t == w.lower()), w
    for w in puzzle.near_miss_firing:  # left out by the near-miss, firing at least once
        assert any(a > 0 for t, a in words if t == w.lower()), w


@pytest.mark.parametrize("puzzle", PUZZLES, ids=IDS)
def test_words_quoted_in_the_true_explanation_fire(puzzle: puzzle_set.Puzzle) -> None:
    """A word the true explanation names in quotes ('just', 'bank') fires somewhere."""
    named = re.findall(r"'([A-Za-z]+)'", puzzle.true)
    words = _words(puzzle)
    for w in named:
        if w.lower() in {"new", "because", "to", "be"}:  # the context or the lemma, not a token
            continue
        assert any(a > 0 for t, a in words if t == w.lower()), w


# Split and freezing ------------------------------------------------------------------------


def test_split_is_recorded_balanced_and_stable() -> None:
    data = frozen()
    split = compute_split(PUZZLES)
    assert sorted(data["dev"]) == sorted(i for i, h in split.items() if h == "dev")
    assert sorted(data["test"]) == sorted(i for i, h in split.items() if h == "test")
    assert set(data["dev"]).isdisjoint(data["test"])
    assert set(data["dev"]) | set(data["test"]) == set(IDS)
    assert abs(len(data["dev"]) - len(data["test"])) <= 1
    for family in {p.family for p in PUZZLES}:
        halves = Counter(split[p.id] for p in PUZZLES if p.family == family)
        assert abs(halves["dev"] - halves["test"]) <= 1, family
    # Stable: the order the puzzles come in does not matter, only their ids and families.
    assert compute_split(list(reversed(PUZZLES))) == split
    assert [p.id for p in puzzles("dev")] == [i for i in IDS if split[i] == "dev"]
    with pytest.raises(ValueError, match="half"):
        puzzles("train")  # type: ignore[arg-type]


def test_digest_matches_the_frozen_record() -> None:
    data = frozen()
    assert data["count"] == len(PUZZLES)
    assert digest() == data["sha256"]
    readme = (ROOT / "benchmarks" / "puzzle_set" / "README.md").read_text(encoding="utf-8")
    assert data["sha256"] in readme


def test_any_change_to_a_puzzle_changes_the_digest() -> None:
    split = compute_split(PUZZLES)
    base = digest(PUZZLES, split)
    first = PUZZLES[0]
    changes = [
        dataclasses.replace(first, true=first.true + "s"),
        dataclasses.replace(first, marked=(*first.marked[:-1], first.marked[-1] + "!")),
        dataclasses.replace(first, rule=lambda tokens, i: 1.0 + first.rule(tokens, i)),
        dataclasses.replace(first, false=first.false[::-1]),
    ]
    for changed in changes:
        assert digest([changed, *PUZZLES[1:]], split) != base
    moved = {**split, first.id: "test" if split[first.id] == "dev" else "dev"}
    assert digest(PUZZLES, moved) != base
    assert '"tokens"' in canonical(PUZZLES[:1], split)


# Rule helpers ------------------------------------------------------------------------------


def test_rule_helpers() -> None:
    tokens = tokenize('He said "come in" to the New York office (in June).')
    quoted = inside('"', '"', edge=4.0)
    assert [quoted(tokens, i) for i in range(len(tokens))][2:7] == [4.0, 10.0, 10.0, 4.0, 0.0]
    bracket = inside("(", ")")
    assert [t for i, t in enumerate(tokens) if bracket(tokens, i)] == ["in", " June"]
    new_york = phrases(["New York"], head=6.0)
    assert [new_york(tokens, i) for i in range(len(tokens))][8:11] == [6.0, 10.0, 0.0]
    assert lexicon({"said": 7.0})(tokens, 1) == 7.0
    assert lexicon(["he"], case=True)(tokens, 0) == 0.0
    river = sense(["bank"], ["river"])
    assert river(tokenize("the river bank"), 2) == 10.0
    assert river(tokenize("the savings bank"), 2) == 0.0
    assert parse_marked("a ⟦b c⟧ d") == ("a b c d", [(2, 5)])
    for bad in ("a ⟦b", "a ⟧b", "⟦a ⟦b⟧⟧"):
        with pytest.raises(ValueError, match=r"never closed|without|nested"):
            parse_marked(bad)


# The runner's table maths (benchmarks/bench_simulators.py) on synthetic pieces ---------------

import bench_simulators as bench  # noqa: E402


def _ok(prediction: list[float], prompt: int = 100, completion: int = 10) -> dict[str, object]:
    return {
        "ok": True,
        "prediction": prediction,
        "seconds": 0.5,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "calls": 1,
    }


def _failed(message: str, error_type: str = "SimulationError") -> dict[str, object]:
    return {
        "ok": False,
        "error_type": error_type,
        "error": message,
        "seconds": 1.0,
        "prompt_tokens": 300,
        "completion_tokens": 30,
        "calls": 3,
    }


TRUTH = [[0.0, 10.0, 0.0], [0.0, 0.0, 0.0], [10.0, 0.0, 5.0]]
KINDS = ["true", "decoy", "near_miss", "other"]


def _entry(puzzle_id: str, rows: list[list[dict[str, object]]], wall: float = 6.0) -> dict:
    return {
        "id": puzzle_id,
        "family": "numbers",
        "kinds": KINDS,
        "explanations": ["t", "d", "n", "o"],
        "sentences": [{"tokens": ["a", "b", "c"], "activations": a} for a in TRUTH],
        "simulations": rows,
        "wall_seconds": wall,
    }


def _piece(entries: list[dict], finished: str, digest: str | None = None, **over: object) -> dict:
    piece = {
        "format": bench.FORMAT,
        "digest": digest or frozen()["sha256"],
        "half": "dev",
        "range": [0, len(entries) - 1],
        "simulator": {"name": "json", "label": "json", "kwargs": {}, "settings": {}},
        "backend": "hf",
        "model": "/cache/qwen.gguf",
        "llm": {"name": "hf:/cache/qwen.gguf", "class": "HFLLM"},
        "concurrency": 4,
        "git": {"commit": "abcdef1234567890", "dirty": False, "diff_sha256": None},
        "started": finished,
        "finished": finished,
        "puzzles": entries,
    }
    piece.update(over)
    return piece


def test_wilson_interval() -> None:
    p, lo, hi = bench.wilson(5, 10)
    assert p == 0.5
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)
    p, lo, hi = bench.wilson(0, 10)
    assert (p, lo) == (0.0, 0.0)
    assert hi == pytest.approx(0.2775, abs=1e-4)
    assert bench.wilson(20, 20)[2] == 1.0
    assert all(math.isnan(v) for v in bench.wilson(0, 0))


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    items = [0.0, 1.0, 2.0, 3.0, 10.0]
    first = bench.bootstrap(items, lambda xs: sum(xs) / len(xs))
    assert first == bench.bootstrap(items, lambda xs: sum(xs) / len(xs))
    estimate, lo, hi = first
    assert estimate == 3.2
    assert 0.0 <= lo < estimate < hi <= 10.0
    assert bench.bootstrap([4.0] * 6, lambda xs: sum(xs) / len(xs)) == (4.0, 4.0, 4.0)
    assert all(math.isnan(v) for v in bench.bootstrap(items, lambda xs: None))


def test_pearson() -> None:
    assert bench.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert bench.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert bench.pearson([1, 2, 3], [5, 5, 5]) is None
    assert bench.pearson([1], [1]) is None
    with pytest.raises(ValueError, match="lengths"):
        bench.pearson([1, 2], [1, 2, 3])


def test_scores_use_only_the_sentences_every_explanation_simulated() -> None:
    truth_rows = [_ok(a) for a in TRUTH]
    # The decoy fails on sentence 2; on sentences 0-1 it predicts the truth reversed.
    decoy = [_ok([10.0, 0.0, 10.0]), _ok([10.0, 10.0, 10.0]), _failed("x")]
    near = [_ok([0.0, 5.0, 0.0]), _ok([1.0, 0.0, 0.0]), _ok([0.0, 0.0, 0.0])]
    other = [_ok([3.0, 3.0, 3.0]), _ok([3.0, 3.0, 3.0]), _ok([3.0, 3.0, 3.0])]
    result = bench.PuzzleResult.from_json(_entry("p", [truth_rows, decoy, near, other]))
    assert result.common == [0, 1]
    true_r, decoy_r, near_r, other_r = result.scores
    assert true_r == pytest.approx(1.0)  # sentence 2 (where the decoy failed) is left out
    assert decoy_r == pytest.approx(-1.0)
    assert near_r == pytest.approx(bench.pearson([0, 10, 0, 0, 0, 0], [0, 5, 0, 1, 0, 0]))
    assert other_r is None  # constant prediction: no score
    assert result.rank == (0, 0)
    assert not result.beaten_by("decoy")
    # Sensitivity: r(true predictions, false predictions) over the common sentences; the
    # constant 'other' prediction is left out.
    assert result.sensitivities == pytest.approx([-1.0, near_r])


def test_rank_ties_and_unscored_explanations() -> None:
    same = [_ok(a) for a in TRUTH]
    flat = [_ok([0.0, 0.0, 0.0]) for _ in TRUTH]
    tied = bench.PuzzleResult.from_json(_entry("t", [same, same, flat, flat]))
    assert tied.scores[2] is None
    assert tied.rank == (0, 1)  # the decoy ties the truth; unscored ones rank below
    assert tied.sensitivities == [1.0]  # identical predictions; the flat ones are left out
    unscored = bench.PuzzleResult.from_json(_entry("u", [flat, same, flat, flat]))
    assert unscored.rank == (1, 2)  # below the scored decoy, tied with the other unscored
    assert unscored.beaten_by("decoy")
    assert not unscored.beaten_by("near_miss")


def test_a_puzzle_without_common_sentences_scores_nothing() -> None:
    failing = [_failed("x") for _ in TRUTH]
    good = [_ok(a) for a in TRUTH]
    result = bench.PuzzleResult.from_json(_entry("f", [good, failing, good, good]))
    assert result.common == []
    assert result.scores == [None, None, None, None]
    assert result.rank == (0, 3)
    assert result.sensitivities == []


def test_reason_classes_group_messages_that_differ_in_details() -> None:
    a = bench.reason_class(
        "SimulationError",
        "hf:/x/q.gguf gave no usable JSON simulation in 3 attempts: expected 12 values, got 9; "
        "the answer is not JSON",
        "hf:/x/q.gguf",
    )
    b = bench.reason_class(
        "SimulationError",
        "hf:/x/q.gguf gave no usable JSON simulation in 3 attempts: expected 7 values, got 30",
        "hf:/x/q.gguf",
    )
    assert a == b == "SimulationError: expected # values, got #"
    c = bench.reason_class("LLMTimeoutError", "request to 'http://h' timed out after 600.0 s")
    assert c == "LLMTimeoutError: request to … timed out after # s"


def test_table_from_piece_files(tmp_path: Path) -> None:
    good = [_ok(a) for a in TRUTH]
    reversed_ = [_ok([10.0 - v for v in a]) for a in TRUTH]
    flat = [_ok([0.0, 0.0, 0.0]) for _ in TRUTH]
    one_failure = [_ok(TRUTH[0]), _ok(TRUTH[1]), _failed("expected 3 values, got 2")]
    entries = [
        _entry("p1", [good, reversed_, flat, reversed_]),  # truth first
        _entry("p2", [reversed_, good, reversed_, reversed_]),  # the decoy wins
        _entry("p3", [one_failure, reversed_, flat, reversed_]),  # scored on sentences 0-1
    ]
    old = _piece([_entry("p1", [flat, good, good, good])], "2025-01-01T00:00:00+00:00")
    new = _piece(entries, "2025-01-02T00:00:00+00:00")
    other_digest = _piece(entries, "2025-01-03T00:00:00+00:00", digest="0" * 64)
    test_half = _piece(entries, "2025-01-03T00:00:00+00:00", half="test")
    for name, piece in [("a", old), ("b", new), ("c", other_digest), ("d", test_half)]:
        (tmp_path / f"{name}.json").write_text(json.dumps(piece))
    groups, notes = bench.load_pieces(sorted(tmp_path.glob("*.json")), "dev", frozen()["sha256"])
    assert len(notes) == 1
    assert "digest" in notes[0]
    assert list(groups) == [("json", "hf", "qwen.gguf")]
    group = groups["json", "hf", "qwen.gguf"]
    assert group.replaced == 1  # p1 of the older piece was replaced by the newer one
    (row,) = bench.table(groups)
    rel, dis = row["reliability"], row["discrimination"]
    assert rel["simulations"] == 36
    assert rel["failed"]["k"] == 1
    assert rel["failure_reasons"] == {"SimulationError: expected # values, got #": 1}
    # Sentences with a firing token: 0 and 2 of each puzzle; the flat predictions there are
    # constant (p1 near-miss: 2, p3 near-miss: 2), out of 24 - 1 failed = 23.
    assert (rel["constant_on_firing"]["k"], rel["constant_on_firing"]["n"]) == (4, 23)
    # All zero: the flat rows (3 + 3 sentences) and sentence 1 (silent) wherever the truth
    # itself was predicted (p1 true, p2 decoy, p3 true).
    assert rel["all_zero"]["k"] == 9
    assert rel["puzzles_with_failed_sentences"] == 1
    assert rel["wall_seconds_per_simulation"]["value"] == pytest.approx(18.0 / 36)
    assert rel["prompt_tokens_per_simulation"]["value"] == pytest.approx((35 * 100 + 300) / 36)
    assert dis["truth_first"]["k"] == 2  # p1 and p3
    assert dis["decoy_beats_truth"]["k"] == 1  # p2
    assert dis["near_miss_beats_truth"]["k"] == 0
    assert dis["top_2"]["k"] == 2
    assert dis["mean_rank"]["value"] == pytest.approx((1 + 3 + 1) / 3)  # p2: 1 above, 2 tied
    assert dis["mean_r_true"]["value"] == pytest.approx((1 - 1 + 1) / 3)
    text = bench.markdown([row])
    assert "| json | hf | 3 | 36 | 3 % [" in text
    assert "1 x SimulationError" in text


def test_neutral_rows_join_earlier_pieces_and_score_contrastively(tmp_path: Path) -> None:
    prior = [[1.0, 1.0, 5.0], [1.0, 1.0, 5.0], [1.0, 1.0, 5.0]]  # what it predicts untold
    # the true explanation adds 4 where the truth fires; the decoy doubles the prior
    added = [[4.0 if t > 0 else 0.0 for t in row] for row in TRUTH]
    true = [
        _ok([a + b for a, b in zip(p, d, strict=True)]) for p, d in zip(prior, added, strict=True)
    ]
    decoy = [_ok([a * 2 for a in p]) for p in prior]
    same = [_ok(p) for p in prior]
    plain = _piece([_entry("p1", [true, decoy, same, same])], "2025-01-02T00:00:00+00:00")
    neutral_only = _piece(
        [{**_entry("p1", []), "neutral": {"text": "x", "simulations": same, "wall_seconds": 3.0}}],
        "2025-01-03T00:00:00+00:00",
        neutral_only=True,
    )
    (tmp_path / "a.json").write_text(json.dumps(plain))
    (tmp_path / "b.json").write_text(json.dumps(neutral_only))
    groups, _ = bench.load_pieces(sorted(tmp_path.glob("*.json")), "dev", frozen()["sha256"])
    group = groups["json", "hf", "qwen.gguf"]
    assert list(group.puzzles) == ["p1"] and list(group.neutral) == ["x"]
    derived = bench.contrastive_groups(groups)
    (key,) = derived
    assert key == ('json contrastive vs "x"', "hf", "qwen.gguf")
    result = derived[key].puzzles["p1"]
    assert result.outcomes[2][0]["prediction"] == [0.0, 0.0, 0.0]  # same as neutral: zero
    flat_truth = [v for row in TRUTH for v in row]
    expected = bench.pearson(flat_truth, [v for row in added for v in row])
    assert result.scores[0] == pytest.approx(expected)  # only what the explanation added
    assert result.scores[2] is None  # an explanation that changes nothing has no score
    # costs: each outcome carries a quarter of the neutral simulation's
    assert result.outcomes[0][0]["prompt_tokens"] == pytest.approx(100 + 100 / 4)
    assert result.wall_seconds == pytest.approx(6.0 + 3.0)
    sens = group.puzzles["p1"].neutral_sensitivity(group.neutral["x"]["p1"][0])
    assert sens[2] == 0.0 and sens[3] == 0.0 and sens[0] is not None and sens[0] > 0
    (baseline,) = bench.baselines(group, threshold=0.1)
    assert baseline["true_flagged"]["k"] == 0 and baseline["puzzles"] == 1
    rows = bench.table({**groups, **derived})
    text = bench.markdown(rows, [baseline])
    assert '| json | hf | "x" | 1 |' in text
    assert 'json contrastive vs "x" | hf | 100 % [' in text
    other = {**rows[0], "model": "bigger.gguf"}
    assert "| json | hf, bigger.gguf | 1 |" in bench.markdown([rows[0], other])


def test_pieces_are_never_overwritten(tmp_path: Path) -> None:
    piece = _piece([], "2025-01-01T00:00:00+00:00")
    piece["simulator"]["label"] = 'json[retries=4,mode="sparse"]'
    first = bench.write_piece(tmp_path, piece)
    assert first.name.startswith("dev_00--1_json-retries=4,mode=-sparse-")
    with pytest.raises(FileExistsError):
        bench.write_piece(tmp_path, piece)
    assert json.loads(first.read_text())["digest"] == frozen()["sha256"]


def test_command_line_parsing() -> None:
    assert bench.parse_range("0-3", 34) == (0, 3)
    assert bench.parse_range("7", 34) == (7, 7)
    for bad in ("3-1", "0-34", "a-b"):
        with pytest.raises(ValueError, match="puzzles"):
            bench.parse_range(bad, 34)
    kwargs = bench.parse_kwargs(["json.retries=4", "json.mode=sparse", "all-at-once.digits=x"])
    assert kwargs == {"json": {"retries": 4, "mode": "sparse"}, "all-at-once": {"digits": "x"}}
    with pytest.raises(ValueError, match=r"NAME\.KEY=VALUE"):
        bench.parse_kwargs(["retries=4"])
    assert bench.label("json", {}) == "json"
    assert bench.label("json", {"retries": 4, "mode": "a"}) == 'json[mode="a",retries=4]'
    assert set(bench.SIMULATORS) >= {"all-at-once", "chat-logprob", "json"}


def test_simulators_are_built_by_name_or_import_path() -> None:
    from neuron_explainer.simulators.json_output import JSONSimulator
    from neuron_explainer.testing import ScriptedLLM

    llm = ScriptedLLM()
    built = bench.build_simulator("json", llm, {"retries": 5})
    assert isinstance(built, JSONSimulator)
    assert built.retries == 5
    by_path = bench.build_simulator(
        "neuron_explainer.simulators.json_output:JSONSimulator", llm, {}
    )
    assert isinstance(by_path, JSONSimulator)
    settings = bench.simulator_settings(built)
    assert settings["class"].endswith("JSONSimulator")
    assert settings["retries"] == 5
    with pytest.raises(SystemExit, match="unknown simulator"):
        bench.build_simulator("nope", llm, {})


def test_a_puzzle_run_records_predictions_failures_and_truth() -> None:
    import asyncio

    from neuron_explainer import SequenceSimulation, SimulationError

    class Flaky:
        """Fails on sentences holding 'rain'; predicts 1 on every token of the others."""

        async def asimulate(self, explanation: object, tokens: list[str]) -> SequenceSimulation:
            if " rain" in tokens:
                raise SimulationError("expected 9 values, got 8")
            return SequenceSimulation(
                tokens=tuple(tokens), expected_activations=(1.0,) * len(tokens)
            )

    puzzle = next(p for p in PUZZLES if p.id == "if")
    entry = asyncio.run(bench.run_puzzle(Flaky(), puzzle, concurrency=3))
    assert entry["kinds"] == list(puzzle.kinds)
    assert len(entry["simulations"]) == len(puzzle.explanations)
    first = entry["simulations"][0]
    assert [o["ok"] for o in first] == [" rain" not in t for t, _ in puzzle.records()]
    failed = next(o for o in first if not o["ok"])
    assert failed["error_type"] == "SimulationError"
    assert entry["sentences"][0]["activations"] == puzzle.records()[0][1]
    result = bench.PuzzleResult.from_json(entry)
    assert len(result.common) == sum(" rain" not in t for t, _ in puzzle.records())


def test_capped_client_caps_generated_tokens() -> None:
    import asyncio

    from neuron_explainer.llm.base import ChatRequest, Message

    class Echo:
        async def achat(self, request: ChatRequest) -> int | None:
            return request.max_tokens

    capped = bench.capped_client(Echo, 64)()
    messages = [Message(role="user", content="hi")]
    assert asyncio.run(capped.achat(ChatRequest(messages=messages))) == 64
    assert asyncio.run(capped.achat(ChatRequest(messages=messages, max_tokens=10))) == 10
    assert asyncio.run(capped.achat(ChatRequest(messages=messages, max_tokens=999))) == 64


def test_run_backend_writes_a_piece_the_table_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run without a model: a fake simulator that predicts the rule exactly, and one
    the backend cannot serve (skipped, no piece)."""
    import asyncio

    from neuron_explainer import SequenceSimulation
    from neuron_explainer.errors import CapabilityError
    from neuron_explainer.testing import ScriptedLLM

    class Oracle:
        """Predicts the rule of the puzzle whose true explanation it is given; 0 otherwise."""

        def __init__(self, retries: int = 1) -> None:
            self.retries = retries

        async def asimulate(self, explanation: object, tokens: list[str]) -> SequenceSimulation:
            text = getattr(explanation, "text", "")
            rule = next((p.rule for p in PUZZLES if p.true == text), None)
            values = [rule(tokens, i) if rule else 0.0 for i in range(len(tokens))]
            return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(values))

    def unavailable(llm: object, kwargs: dict) -> object:
        raise CapabilityError("needs 'prompt_logprobs'")

    monkeypatch.setitem(bench.SIMULATORS, "oracle", lambda llm, kw: Oracle(**kw))
    monkeypatch.setitem(bench.SIMULATORS, "unavailable", unavailable)
    options = bench.RunOptions(
        half="test",
        start=0,
        end=1,
        simulators=["oracle", "unavailable"],
        kwargs={"oracle": {"retries": 3}},
        concurrency=4,
        out=tmp_path,
        git={"commit": "abc", "dirty": True, "diff_sha256": "d"},
    )
    written = asyncio.run(bench.run_backend("hf", ScriptedLLM(), "m.gguf", options, {}))
    assert len(written) == 1
    piece = json.loads(written[0].read_text())
    assert piece["simulator"]["label"] == "oracle[retries=3]"
    assert piece["simulator"]["settings"]["retries"] == 3
    assert [p["id"] for p in piece["puzzles"]] == [p.id for p in puzzles("test")[:2]]
    assert piece["digest"] == frozen()["sha256"]
    groups, _ = bench.load_pieces(written, "test", frozen()["sha256"])
    (row,) = bench.table(groups)
    assert row["reliability"]["failed"]["k"] == 0
    assert row["discrimination"]["truth_first"]["k"] == 2
    assert row["discrimination"]["mean_r_true"]["value"] == pytest.approx(1.0)
