"""The shared puzzle benchmark (benchmarks/puzzle_set/): its data checks itself, and the runner's
table maths (benchmarks/bench_simulators.py) is right on synthetic piece files. No model."""

from __future__ import annotations

import dataclasses
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
