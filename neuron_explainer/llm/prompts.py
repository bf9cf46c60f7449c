"""Prompt pieces shared by LLM-backed explainers and simulators."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from neuron_explainer.interfaces import current_unit
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import PromptScale

__all__ = [
    "UNIT_NOUNS",
    "digit_value",
    "escape_token",
    "extract_json_object",
    "render_blocks",
    "render_records",
    "reworded",
    "shown_word",
    "unescape_token",
    "unit_noun",
]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2})")
_DIGITS = re.compile(r"10|[0-9]")
_SIMPLE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_NEURON = re.compile(r"\b(?:([Aa]) )?([Nn])euron")

UNIT_NOUNS: dict[str, str] = {
    "mlp_neuron": "neuron",
    "attention_head": "attention head",
    "sae_latent": "SAE latent",
    "transcoder_latent": "transcoder latent",
    "direction": "direction",
}
"""What a prompt calls a unit of each kind (`neuron_explainer.records.UNIT_KINDS`; another
kind is a "neuron"). The prompts of an MLP neuron are unchanged; for another kind the word
"neuron" in the prompts' own wording (never in excerpts or explanations) becomes its noun."""


def unit_noun(kind: str | None = None) -> str:
    """What a prompt calls a unit of ``kind`` (`UNIT_NOUNS`); by default the kind of the unit
    being explained (`neuron_explainer.interfaces.current_unit`; "neuron" outside a run)."""
    if kind is None:
        unit = current_unit()
        kind = None if unit is None else unit.kind
    return "neuron" if kind is None else UNIT_NOUNS.get(kind, "neuron")


def reworded(text: str, noun: str) -> str:
    """``text`` (prompt wording, never excerpts or explanations) with "neuron" as ``noun``:
    "neurons" become its plural, "Neuron" is capitalised, and "a neuron" / "A neuron" take
    the article ``noun`` needs ("an SAE latent", "an attention head")."""
    if noun == "neuron":
        return text
    an = noun[0] in "aeiouAEIOU" or noun.startswith("SAE")

    def swap(match: re.Match[str]) -> str:
        article, n = match.group(1), match.group(2)
        word = noun if n == "n" else noun[0].upper() + noun[1:]
        if article is None:
            return word
        return f"{article}{'n' if an else ''} {word}"

    return _NEURON.sub(swap, text)


def escape_token(token: str) -> str:
    """Render a token on one line: backslash, tab, newline, return and other control characters
    are escaped, so no token can break a ``token<TAB>activation`` line."""
    escaped = (
        token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped)


def shown_word(token: str) -> str:
    """A token as a prompt names it in running text: `escape_token` without surrounding white
    space (a token of white space only keeps it, escaped)."""
    shown = escape_token(token)
    return shown.strip() or shown


def unescape_token(text: str) -> str:
    """Invert `escape_token`: ``unescape_token(escape_token(t)) == t`` for every string."""
    return _ESCAPE.sub(
        lambda m: _SIMPLE.get(m.group(1)) or chr(int(m.group(1)[1:], 16)),
        text,
    )


def render_blocks(blocks: Sequence[Sequence[tuple[str, int | str]]]) -> str:
    """Each block as ``<start>``, one ``escaped-token<TAB>value`` line per pair, ``<end>``;
    blocks separated by a blank line."""
    return "\n\n".join(
        "<start>\n" + "".join(f"{escape_token(t)}\t{v}\n" for t, v in block) + "<end>"
        for block in blocks
    )


def render_records(records: Sequence[ActivationRecord], scale: PromptScale) -> str:
    """Each record as ``<start>``, one ``token<TAB>level`` line per token, ``<end>``."""
    return render_blocks(
        [list(zip(r.tokens, scale.discretize(r.activations), strict=True)) for r in records]
    )


def extract_json_object(text: str) -> object:
    """Parse the JSON object in ``text``, tolerating code fences and prose around it.

    Raises:
        ValueError: no parsable JSON object is present.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the output contains no JSON object")
    return json.loads(text[start : end + 1])


def digit_value(token: str) -> int | None:
    """The activation a generated token stands for: ``"7"``, ``" 7"``, ``"\\t7"`` or ``"7\\n"``
    give 7, ``"10"`` gives 10; anything else (``"unknown"``, ``"07"``, ``"11"``) ``None``."""
    text = token.strip()
    return int(text) if _DIGITS.fullmatch(text) else None
