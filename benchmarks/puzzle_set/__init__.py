"""The frozen puzzle benchmark shared by issues 15, 16 and 17 (see README.md in this folder).

Each puzzle is a rule-made unit: sentences, a rule that gives every token's activation, a true
explanation and at least three false ones (a lexical decoy, a near-miss and another plausible
rule). The set is frozen: `digest` hashes a canonical JSON dump of every puzzle (ids, families,
halves, sentences, tokens, activations, explanations and their kinds), and ``frozen.json`` next
to this file records that digest and the dev/test split. A change to any puzzle changes the
digest, and the tests fail until ``frozen.json`` is rewritten on purpose
(``python -m puzzle_set --freeze`` from ``benchmarks/``).

Tune on the dev half, report the test half.

Plain data and the standard library only; import it with ``benchmarks/`` on ``sys.path``::

    from puzzle_set import PUZZLES, puzzles
    for p in puzzles("dev"):
        for tokens, activations in p.records(): ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from . import grammar, lexical, meaning, symbols
from ._core import FalseExplanation, Puzzle, tokenize

__all__ = [
    "FROZEN",
    "PUZZLES",
    "FalseExplanation",
    "Half",
    "Puzzle",
    "canonical",
    "compute_split",
    "digest",
    "frozen",
    "half_of",
    "puzzles",
    "tokenize",
]

Half = Literal["dev", "test"]
FROZEN = Path(__file__).with_name("frozen.json")
"""The committed digest and split."""
SCHEMA = 1
"""The version of the canonical dump (part of what is hashed)."""

PUZZLES: tuple[Puzzle, ...] = (
    *lexical.PUZZLES,
    *grammar.PUZZLES,
    *meaning.PUZZLES,
    *symbols.PUZZLES,
)
"""Every puzzle, in a fixed order (the order the runner's ``--puzzles`` ranges index within a
half)."""


def _id_hash(puzzle_id: str) -> str:
    return hashlib.sha256(puzzle_id.encode("utf-8")).hexdigest()


def compute_split(items: Iterable[Puzzle]) -> dict[str, Half]:
    """Each puzzle's half, decided by a hash of its id and balanced across families.

    Within a family (families taken in sorted order), puzzles sorted by the SHA-256 of their id
    alternate between the halves; a family with an odd count gives its extra puzzle to the half
    that got the previous odd family's extra one least recently, so the halves differ by at most
    one puzzle overall and per family.
    """
    families: dict[str, list[str]] = {}
    for item in items:
        families.setdefault(item.family, []).append(item.id)
    split: dict[str, Half] = {}
    first: Half = "dev"
    for family in sorted(families):
        ordered = sorted(families[family], key=_id_hash)
        second: Half = "test" if first == "dev" else "dev"
        for k, puzzle_id in enumerate(ordered):
            split[puzzle_id] = first if k % 2 == 0 else second
        if len(ordered) % 2:
            first = second
    return split


def frozen() -> dict[str, Any]:
    """The committed ``frozen.json``: ``sha256``, ``count`` and the ``dev`` and ``test`` ids."""
    data: dict[str, Any] = json.loads(FROZEN.read_text(encoding="utf-8"))
    return data


def half_of(puzzle_id: str) -> Half:
    """The recorded half of a puzzle.

    Raises:
        KeyError: an id the frozen split does not know.
    """
    data = frozen()
    for half in ("dev", "test"):
        if puzzle_id in data[half]:
            return half  # type: ignore[return-value]
    raise KeyError(f"{puzzle_id!r} is not in the frozen split")


def puzzles(half: Half | None = None) -> list[Puzzle]:
    """The puzzles of one recorded half (all of them for ``None``), in `PUZZLES` order."""
    if half is None:
        return list(PUZZLES)
    if half not in ("dev", "test"):
        raise ValueError(f"half must be 'dev' or 'test', got {half!r}")
    ids = set(frozen()[half])
    return [p for p in PUZZLES if p.id in ids]


def canonical(items: Iterable[Puzzle], split: dict[str, Half]) -> str:
    """The canonical JSON dump the digest is taken over (sorted keys, no spaces, UTF-8)."""
    dump = []
    for item in items:
        dump.append(
            {
                "id": item.id,
                "family": item.family,
                "half": split[item.id],
                "sentences": [
                    {"text": text, "tokens": tokens, "activations": activations}
                    for text, (tokens, activations) in zip(
                        item.sentences, item.records(), strict=True
                    )
                ],
                "explanations": [
                    {"kind": kind, "text": text}
                    for kind, text in zip(item.kinds, item.explanations, strict=True)
                ],
                "decoy_words": list(item.decoy_words),
                "near_miss_silent": list(item.near_miss_silent),
                "near_miss_firing": list(item.near_miss_firing),
            }
        )
    return json.dumps(
        {"schema": SCHEMA, "puzzles": dump},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def digest(items: Iterable[Puzzle] = PUZZLES, split: dict[str, Half] | None = None) -> str:
    """SHA-256 (hex) of `canonical` for ``items`` with ``split`` (default: the recorded one)."""
    items = list(items)
    if split is None:
        data = frozen()
        split = {**dict.fromkeys(data["dev"], "dev"), **dict.fromkeys(data["test"], "test")}
    return hashlib.sha256(canonical(items, split).encode("utf-8")).hexdigest()


def freeze() -> dict[str, Any]:
    """Write ``frozen.json`` from the puzzles as they are now (a deliberate act: the diff shows
    the new digest) and return what was written."""
    split = compute_split(PUZZLES)
    data = {
        "sha256": digest(PUZZLES, split),
        "count": len(PUZZLES),
        "dev": [p.id for p in PUZZLES if split[p.id] == "dev"],
        "test": [p.id for p in PUZZLES if split[p.id] == "test"],
    }
    FROZEN.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data
