"""The numbered JSON answer the LLM simulators ask for: one property per token, named by the
token's number and its text (``"2 cat"``), whose value is the token's activation 0-10.

With a backend that offers ``json_schema``, the schema fixes every property name in order, so
the model writes only the values: the token text it reads just before each value is supplied,
and nothing can drift. Without one, the model writes the names itself, and values are matched
to tokens by the number that starts each name (`locate`, `parse_values`): the text after the
number is not checked, the first value for a number counts, numbers outside the excerpt are
ignored, and a token left without a value makes the excerpt unusable (never a zero).

Several excerpts in one request nest one such object per excerpt under ``"excerpt_<i>"``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from neuron_explainer.llm.prompts import extract_json_object, shown_word
from neuron_explainer.simulators._common import (
    EXAMPLE_INTRO,
    EXAMPLE_LEVELS,
    EXAMPLE_TOKENS,
    TASK,
    Problem,
    check_count,
    numbered,
)

_VALUE = re.compile(r'"\s*(\d+)(?![0-9])(?:[^"\\\n]|\\.)*"\s*:\s*(10|[0-9])(?![0-9.eE])')
_EXCERPT = re.compile(r'"excerpt_(\d+)"\s*:')
_INDEX = re.compile(r"\s*(\d+)(?![0-9])")


word = shown_word
"""A token as named in an answer (`shown_word`)."""


def key(i: int, token: str) -> str:
    """The property name of token ``i`` (from 1): its number, a space, its `word`."""
    return f"{i} {word(token)}"


def _object(tokens: Sequence[str]) -> dict[str, object]:
    names = [key(i, t) for i, t in enumerate(tokens, start=1)]
    return {
        "type": "object",
        "properties": {n: {"type": "integer", "minimum": 0, "maximum": 10} for n in names},
        "required": names,
        "additionalProperties": False,
    }


def response_format(name: str, objects: Sequence[dict[str, object]]) -> dict[str, object]:
    """A strict JSON-schema ``response_format`` named ``name`` whose body is the one excerpt's
    object, or, for several, one required ``"excerpt_<i>"`` property per object."""
    if len(objects) == 1:
        body = objects[0]
    else:
        names = [f"excerpt_{i}" for i in range(1, len(objects) + 1)]
        body = {
            "type": "object",
            "properties": dict(zip(names, objects, strict=True)),
            "required": names,
            "additionalProperties": False,
        }
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": body}}


def schema(excerpts: Sequence[Sequence[str]]) -> dict[str, object]:
    """The ``response_format`` (a strict JSON schema) of the answer for ``excerpts``."""
    return response_format("activations", [_object(e) for e in excerpts])


SYSTEM = (
    f"{TASK}\n\nAnswer with a JSON object that has one property per token, in order: its name "
    'is the token\'s number and the token (such as "9 cat"), its value the activation. Write '
    f"nothing else.\n\n{EXAMPLE_INTRO}{numbered(EXAMPLE_TOKENS)}\nanswer:\n"
    + json.dumps(
        {
            key(i, t): v
            for i, (t, v) in enumerate(zip(EXAMPLE_TOKENS, EXAMPLE_LEVELS, strict=True), start=1)
        }
    )
)
"""The system message of the numbered JSON answer."""


def user_message(explanation: str, excerpts: Sequence[Sequence[str]], noun: str = "neuron") -> str:
    """The user message asking for ``excerpts`` under ``explanation``, calling the unit
    ``noun``."""
    head = f"Explanation: the {noun} finds {explanation}\n\n"
    if len(excerpts) == 1:
        (tokens,) = excerpts
        return (
            f"{head}Tokens ({len(tokens)}), numbered:\n{numbered(tokens)}\n\nAnswer with the JSON "
            f"object: for each token, how strongly the {noun} that finds {explanation} "
            "activates on it."
        )
    parts = [
        f"Excerpt {i} ({len(tokens)} tokens), numbered:\n{numbered(tokens)}"
        for i, tokens in enumerate(excerpts, start=1)
    ]
    names = ", ".join(f'"excerpt_{i}": {{...}}' for i in range(1, len(excerpts) + 1))
    return (
        head
        + "\n\n".join(parts)
        + f"\n\nAnswer with a JSON object {{{names}}}: for each excerpt, one property per token "
        f"as above, giving how strongly the {noun} that finds {explanation} activates on it."
    )


def _missing(found: dict[int, object], n: int) -> Problem | None:
    missing = [i for i in range(1, n + 1) if i not in found]
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
    return Problem(f"no value for token{'s' if len(missing) > 1 else ''} {shown} of {n}")


def _regions(text: str, n_excerpts: int) -> list[tuple[int, int] | None]:
    """Where each excerpt's object is in ``text`` (the whole text for one excerpt)."""
    if n_excerpts == 1:
        return [(0, len(text))]
    marks = [(int(m[1]), m.end()) for m in _EXCERPT.finditer(text)]
    regions: list[tuple[int, int] | None] = [None] * n_excerpts
    for j, (number, start) in enumerate(marks):
        end = marks[j + 1][1] if j + 1 < len(marks) else len(text)
        if 1 <= number <= n_excerpts and regions[number - 1] is None:
            regions[number - 1] = (start, end)
    return regions


def locate(text: str, lengths: Sequence[int]) -> list[list[tuple[int, int]] | Problem]:
    """For each excerpt, where each token's value is written in ``text`` and what it is:
    ``(offset, number)`` per token, matched by the number that starts each property name
    (first match counts); or the `Problem` that leaves a token without a value."""
    out: list[list[tuple[int, int]] | Problem] = []
    for n, region in zip(lengths, _regions(text, len(lengths)), strict=True):
        if region is None:
            out.append(Problem(f'the answer has no "excerpt_{len(out) + 1}" object'))
            continue
        found: dict[int, tuple[int, int]] = {}
        for match in _VALUE.finditer(text, *region):
            index = int(match[1])
            if 1 <= index <= n:
                found.setdefault(index, (match.start(2), int(match[2])))
        problem = _missing(dict(found), n)
        out.append(problem if problem else [found[i] for i in range(1, n + 1)])
    return out


def _number(value: object, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Problem(f"the value of token {i} is {value!r}, not a number", "unparseable")
    if not 0 <= value <= 10:
        raise Problem(f"the value of token {i} is {value}, outside 0..10", "unparseable")
    return float(value)


def _values(data: object, n: int, where: str) -> list[float]:
    if isinstance(data, dict) and isinstance(data.get("activations"), list):
        data = data["activations"]  # a plain list of values, as the JSON simulator once asked
    if isinstance(data, list):
        try:
            check_count(len(data), n)
        except ValueError as exc:
            raise Problem(f"{where}: {exc}") from None
        return [_number(v, i) for i, v in enumerate(data, start=1)]
    if not isinstance(data, dict):
        raise Problem(f"{where} is not a JSON object", "unparseable")
    found: dict[int, object] = {}
    for name, value in data.items():
        match = _INDEX.match(name)
        if match and 1 <= int(match[1]) <= n:
            found.setdefault(int(match[1]), value)
    problem = _missing(found, n)
    if problem:
        raise problem
    return [_number(found[i], i) for i in range(1, n + 1)]


def parse_values(text: str, lengths: Sequence[int]) -> list[list[float] | Problem]:
    """Each excerpt's values from the JSON object in ``text`` (matched by the number that
    starts each property name; a list of exactly one value per token is also accepted), or the
    `Problem` with it."""
    try:
        data = extract_json_object(text)
    except ValueError as exc:
        return [Problem(f"{exc} (the answer began {text[:60]!r})", "unparseable")] * len(lengths)
    out: list[list[float] | Problem] = []
    for j, n in enumerate(lengths, start=1):
        part = (
            data
            if len(lengths) == 1
            else (data.get(f"excerpt_{j}") if isinstance(data, dict) else None)
        )
        try:
            out.append(_values(part, n, "the answer" if len(lengths) == 1 else f'"excerpt_{j}"'))
        except Problem as problem:
            out.append(problem)
    return out


def retry_message(problem: object, n: int) -> str:
    """The user message that asks again for the numbered JSON object of ``n`` tokens after an
    answer with ``problem``."""
    return (
        f"That answer could not be used: {problem}. Answer again with only the JSON "
        f'object: one property per token, "1 ..." to "{n} ...", each an integer from 0 '
        "to 10."
    )
