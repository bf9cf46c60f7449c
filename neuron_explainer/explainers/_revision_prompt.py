"""The turns `neuron_explainer.explainers.llm.LLMExplainer` adds after its explanation: the
disagreements to revise from (`revision_turn`), and the request for test sentences
(`tests_turn`, answered as `parse_test_sentences` reads)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from neuron_explainer.explainers.revising import Disagreement
from neuron_explainer.llm.prompts import escape_token, reworded

REVISION_REQUEST = (
    "A simulator predicted this neuron's activations from that explanation. Where it went "
    "wrong on these excerpts (the token in [[ ]], its true activation and the predicted one):"
)
REVISION_ASK = (
    "Write a better single-sentence explanation: one that predicts the misses and not the "
    "false alarms. Don't list examples of words."
)
TESTS_ASK = (
    "Write {n} new sentences to test that explanation, one per line, nothing else: about half "
    "on which the neuron should fire by your explanation, and half that look alike but on "
    "which it should stay silent."
)
_HEADINGS = {
    ("train", "miss"): "Missed (the neuron fired, the explanation did not predict it):",
    ("train", "false_positive"): (
        "False alarms (the explanation predicted activation, the neuron was silent):"
    ),
    ("test", "miss"): "Missed in your test sentences (the neuron fired, not predicted):",
    ("test", "false_positive"): (
        "False alarms in your test sentences (predicted, the neuron was silent):"
    ),
}
_BULLET = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.):]|\[\d{1,2}\])\s*")
MAX_TEST_CHARS = 300
"""A test sentence longer than this is cut at a word boundary."""


def _revision_line(d: Disagreement) -> str:
    text = "".join(d.before) + f"[[{d.token}]]" + "".join(d.after)
    shown = " ".join(escape_token(text).split())
    return f"- {shown} (true {d.true_level}, predicted {d.predicted:.0f})"


def revision_turn(
    disagreements: Sequence[Disagreement], answer_line: str, noun: str = "neuron"
) -> str:
    """The user turn that shows ``disagreements`` (train ones first, then the test
    sentences'; misses before false alarms) and asks for a better explanation; its own
    wording calls the unit ``noun`` (`neuron_explainer.llm.prompts.reworded`)."""
    parts = [reworded(REVISION_REQUEST, noun), ""]
    for key, heading in _HEADINGS.items():
        mine = [d for d in disagreements if (d.source, d.kind) == key]
        if mine:
            parts += [reworded(heading, noun), *(_revision_line(d) for d in mine), ""]
    return "\n".join([*parts, REVISION_ASK, "", answer_line])


def tests_turn(n: int, noun: str) -> str:
    """The user turn that asks for ``n`` test sentences about the unit called ``noun``."""
    return reworded(TESTS_ASK, noun).format(n=n)


def parse_test_sentences(raw: str, n: int) -> list[str]:
    """The first ``n`` distinct sentences of an answer to `tests_turn`: one per line, list
    bullets, numbers and surrounding quotes removed, blank lines and headings (lines ending
    in ``:``) skipped, each cut to `MAX_TEST_CHARS`."""
    found: list[str] = []
    for line in raw.splitlines():
        text = _BULLET.sub("", line).strip().strip("\"'“”").strip()
        if not text or text.endswith(":") or text in found:
            continue
        if len(text) > MAX_TEST_CHARS:
            text = text[:MAX_TEST_CHARS].rsplit(" ", 1)[0]
        found.append(text)
        if len(found) == n:
            break
    return found
