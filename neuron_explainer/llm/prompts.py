"""Prompt pieces shared by LLM-backed explainers and simulators."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import PromptScale

__all__ = ["escape_token", "extract_json_object", "render_records"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape_token(token: str) -> str:
    """Render a token on one line: backslash, tab, newline, return and other control characters
    are escaped, so no token can break a ``token<TAB>activation`` line."""
    escaped = (
        token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped)


def render_records(records: Sequence[ActivationRecord], scale: PromptScale) -> str:
    """Each record as ``<start>``, one ``token<TAB>level`` line per token, ``<end>``."""
    blocks = []
    for record in records:
        levels = scale.discretize(record.activations)
        lines = [
            f"{escape_token(t)}\t{level}" for t, level in zip(record.tokens, levels, strict=True)
        ]
        blocks.append("<start>\n" + "\n".join(lines) + "\n<end>")
    return "\n\n".join(blocks)


def extract_json_object(text: str) -> object:
    """Parse the JSON object in ``text``, tolerating code fences and prose around it.

    Raises:
        ValueError: no parsable JSON object is present.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the output contains no JSON object")
    return json.loads(text[start : end + 1])
