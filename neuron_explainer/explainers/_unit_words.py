"""The explainer's prompt pieces that name the unit being explained: "neuron" for an MLP neuron
(the prompts as they always were), the kind's noun for other units (`UNIT_NOUNS`, `unit_noun`
and `reworded`, shared with the simulators in `neuron_explainer.llm.prompts`)."""

from __future__ import annotations

from collections.abc import Sequence

from neuron_explainer.llm.prompts import UNIT_NOUNS as UNIT_NOUNS
from neuron_explainer.llm.prompts import render_blocks, shown_word
from neuron_explainer.llm.prompts import reworded as reworded
from neuron_explainer.llm.prompts import unit_noun as unit_noun
from neuron_explainer.records import ActivationRecord

__all__ = [
    "ANSWER_PREFIX",
    "EXPLANATION_LINE",
    "UNIT_NOUNS",
    "ZERO_FILTER_HEADER",
    "attention_lines",
    "explanation_line",
    "reworded",
    "unit_noun",
    "unit_turn",
]

ZERO_FILTER_HEADER = "Same activations, but with all zeros filtered out:"
ANSWER_PREFIX = "the main thing this neuron does is find"
EXPLANATION_LINE = f"Explanation of neuron behavior: {ANSWER_PREFIX}"


def explanation_line(noun: str = "neuron") -> str:
    """The line the answer continues (`EXPLANATION_LINE` for a neuron)."""
    return reworded(EXPLANATION_LINE, noun)


def attention_lines(records: Sequence[ActivationRecord]) -> str:
    """What an attention head's excerpts say about where it looked: for each excerpt whose
    record carries `ActivationRecord.attended`, its number, its top token and the source token
    the head attended to most from there (with the attention weight), one line each, under a
    heading; ``""`` when no record carries it (every other unit kind)."""
    lines = []
    for number, record in enumerate(records, start=1):
        seen = record.attended
        if seen is None:
            continue
        top, source = shown_word(record.tokens[seen.position]), shown_word(seen.source_token)
        where = "before the excerpt" if seen.source is None else f"token {seen.source + 1}"
        lines.append(
            f'{number}. from "{top}" (token {seen.position + 1}) it attended most to '
            f'"{source}" ({where}, weight {seen.weight:.2f})'
        )
    if not lines:
        return ""
    return "Where the head looked from each excerpt's top token:\n" + "\n".join(lines) + "\n\n"


def unit_turn(
    number: int,
    blocks: Sequence[Sequence[tuple[str, int]]],
    zero_filtered_repeat: bool,
    noun: str = "neuron",
    looked: str = "",
) -> str:
    """The user turn that shows one unit's excerpts (``blocks`` of token and 0-10 level),
    numbered ``number``: the excerpts, their zero-filtered repeat when asked, ``looked``
    (`attention_lines`), and the line the answer continues."""
    text = f"{reworded('Neuron', noun)} {number}\nActivations:\n{render_blocks(blocks)}\n\n"
    if zero_filtered_repeat:
        nonzero = [[(t, v) for t, v in block if v > 0] for block in blocks]
        text += f"{ZERO_FILTER_HEADER}\n{render_blocks([b for b in nonzero if b])}\n\n"
    return text + looked + explanation_line(noun)
