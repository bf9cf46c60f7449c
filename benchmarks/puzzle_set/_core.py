"""The pieces every puzzle is made of: the tokenizer, the sentence markup, the `Puzzle` record
and the rule helpers the family modules build their rules from.

A rule is a function ``rule(tokens, i) -> activation`` of the sentence's tokens and a position;
it is the puzzle's ground truth. Independently of the rule, each sentence is written with its
firing tokens marked (``⟦...⟧``, by reading the true explanation); the tests check that the two
agree on every token, so a rule that drifts from its explanation cannot go unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CLOSE",
    "OPEN",
    "FalseExplanation",
    "Kind",
    "Puzzle",
    "Rule",
    "any_of",
    "inside",
    "lexicon",
    "parse_marked",
    "phrases",
    "puzzle",
    "sense",
    "tokenize",
    "word",
]

_TOKEN = re.compile(r"\s?(?:\$|\w+(?:[.,']\w+)*|[^\w\s])")
OPEN, CLOSE = "⟦", "⟧"
"""The marks around firing text in the sentences as written (never part of the text)."""

Rule = Callable[[Sequence[str], int], float]
Kind = Literal["decoy", "near_miss", "other"]


def tokenize(text: str) -> list[str]:
    """Words with their leading space; numbers with separators whole; punctuation alone.

    The same tokenizer as ``benchmarks/puzzles.py``: ``"It's 2,500."`` gives ``["It's",
    " 2,500", "."]``; ``"<div>"`` gives ``["<", "div", ">"]``.

    Raises:
        ValueError: the text has characters the tokens do not cover (e.g. two spaces in a row).
    """
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != text:
        raise ValueError(f"tokenize would lose text in {text!r} (double spaces or newlines?)")
    return tokens


def word(token: str) -> str:
    """A token without its leading space, lower-cased."""
    return token.strip().lower()


def parse_marked(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """The text of a marked sentence and the character spans that were marked.

    Raises:
        ValueError: unbalanced or nested marks.
    """
    text: list[str] = []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for char in marked:
        if char == OPEN:
            if start is not None:
                raise ValueError(f"nested {OPEN} in {marked!r}")
            start = len(text)
        elif char == CLOSE:
            if start is None:
                raise ValueError(f"{CLOSE} without {OPEN} in {marked!r}")
            spans.append((start, len(text)))
            start = None
        else:
            text.append(char)
    if start is not None:
        raise ValueError(f"{OPEN} never closed in {marked!r}")
    return "".join(text), spans


def marked_tokens(marked: str) -> tuple[list[str], list[bool]]:
    """The tokens of a marked sentence and whether each was marked as firing (a token is marked
    when a mark covers any of its characters other than its leading space)."""
    text, spans = parse_marked(marked)
    tokens = tokenize(text)
    flags = []
    offset = 0
    for token in tokens:
        start = offset + len(token) - len(token.lstrip())
        end = offset + len(token)
        flags.append(any(a < end and start < b for a, b in spans))
        offset = end
    return tokens, flags


@dataclass(frozen=True)
class FalseExplanation:
    """A wrong explanation and what kind of wrong it is.

    ``decoy``: names surface words of the sentences that never fire; ``near_miss``: the right
    family with the wrong scope (broader, narrower or shifted by a token); ``other``: a plausible
    rule about something else in the sentences.
    """

    kind: Kind
    text: str


@dataclass(frozen=True)
class Puzzle:
    """A rule-made unit: its sentences, its rule, the true explanation and the false ones.

    Attributes:
        id: unique, stable (the split hashes it).
        family: the phenomenon (``"numbers"``, ``"code"``, ...).
        rule: each token's activation from the tokens and the position.
        true: the true explanation, phrased as an explainer would.
        false: the false explanations, each with its kind.
        marked: the sentences as written, firing text inside ``⟦...⟧``.
        decoy_words: the words the decoy names; each occurs in the sentences and never fires.
        near_miss_silent: words the near-miss covers that occur and stay silent at least once.
        near_miss_firing: words the near-miss leaves out that fire at least once.
    """

    id: str
    family: str
    rule: Rule
    true: str
    false: tuple[FalseExplanation, ...]
    marked: tuple[str, ...]
    decoy_words: tuple[str, ...]
    near_miss_silent: tuple[str, ...] = ()
    near_miss_firing: tuple[str, ...] = ()

    @property
    def sentences(self) -> tuple[str, ...]:
        """The sentences without their marks."""
        return tuple(parse_marked(m)[0] for m in self.marked)

    @property
    def explanations(self) -> tuple[str, ...]:
        """The true explanation first, then the false ones in their order."""
        return (self.true, *(f.text for f in self.false))

    @property
    def kinds(self) -> tuple[str, ...]:
        """``"true"`` then each false explanation's kind, aligned with `explanations`."""
        return ("true", *(f.kind for f in self.false))

    def records(self) -> list[tuple[list[str], list[float]]]:
        """Each sentence's tokens and their activations under the rule."""
        out = []
        for sentence in self.sentences:
            tokens = tokenize(sentence)
            out.append((tokens, [float(self.rule(tokens, i)) for i in range(len(tokens))]))
        return out


def puzzle(
    id: str,
    family: str,
    rule: Rule,
    *,
    true: str,
    decoy: str,
    near_miss: str,
    other: str | Sequence[str],
    sentences: Sequence[str],
    decoy_words: Sequence[str],
    silent: Sequence[str] = (),
    firing: Sequence[str] = (),
) -> Puzzle:
    """A `Puzzle` from keyword arguments (false explanations in the order decoy, near-miss,
    other; ``silent``/``firing`` are the near-miss's witnesses)."""
    others = (other,) if isinstance(other, str) else tuple(other)
    false = (
        FalseExplanation("decoy", decoy),
        FalseExplanation("near_miss", near_miss),
        *(FalseExplanation("other", text) for text in others),
    )
    return Puzzle(
        id=id,
        family=family,
        rule=rule,
        true=true,
        false=false,
        marked=tuple(sentences),
        decoy_words=tuple(decoy_words),
        near_miss_silent=tuple(silent),
        near_miss_firing=tuple(firing),
    )


# Rule helpers -----------------------------------------------------------------------------


def lexicon(
    entries: Mapping[str, float] | Iterable[str], value: float = 10.0, *, case: bool = False
) -> Rule:
    """Fires on the listed words (lower-cased unless ``case``): ``entries`` maps each word to
    its activation, or lists words that all get ``value``."""
    table = dict(entries) if isinstance(entries, Mapping) else dict.fromkeys(entries, value)
    if not case:
        table = {k.lower(): v for k, v in table.items()}

    def rule(tokens: Sequence[str], i: int) -> float:
        key = tokens[i].strip() if case else word(tokens[i])
        return float(table.get(key, 0.0))

    return rule


def phrases(texts: Iterable[str], head: float = 10.0, rest: float = 10.0) -> Rule:
    """Fires on every token of any listed phrase (case-insensitive): ``head`` on its first
    token, ``rest`` on the others."""
    patterns = [tuple(word(t) for t in tokenize(text)) for text in texts]

    def rule(tokens: Sequence[str], i: int) -> float:
        best = 0.0
        for pattern in patterns:
            n = len(pattern)
            for start in range(max(0, i - n + 1), min(i, len(tokens) - n) + 1):
                if tuple(word(t) for t in tokens[start : start + n]) == pattern:
                    best = max(best, head if i == start else rest)
        return best

    return rule


def inside(opening: str, closing: str, value: float = 10.0, edge: float = 0.0) -> Rule:
    """Fires ``value`` on the tokens between an opening and a closing delimiter (``opening ==
    closing`` toggles, as quotes do), ``edge`` on the delimiters themselves."""

    def rule(tokens: Sequence[str], i: int) -> float:
        depth = 0
        for j, token in enumerate(tokens[: i + 1]):
            text = token.strip()
            is_open = text == opening and (opening != closing or depth == 0)
            is_close = not is_open and text == closing and depth > 0
            if j == i:
                return edge if is_open or is_close else (value if depth > 0 else 0.0)
            depth += 1 if is_open else -1 if is_close else 0
        return 0.0  # pragma: no cover - the loop always reaches i

    return rule


def sense(words: Iterable[str], cues: Iterable[str], value: float = 10.0) -> Rule:
    """Fires on the listed words only in a sentence holding one of the cue words (one sense of
    an ambiguous word, told by its context)."""
    targets, context = {w.lower() for w in words}, {c.lower() for c in cues}

    def rule(tokens: Sequence[str], i: int) -> float:
        if word(tokens[i]) not in targets:
            return 0.0
        return value if any(word(t) in context for t in tokens) else 0.0

    return rule


def any_of(*rules: Rule) -> Rule:
    """The largest activation any of ``rules`` gives."""
    return lambda tokens, i: max(rule(tokens, i) for rule in rules)
