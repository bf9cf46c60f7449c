"""The *firing* answer of the JSON simulator: only the tokens the neuron activates on, named by
their text, each with its activation 1-10 (``{"cat": 8}``; ``{}`` when none fires).

Asked where no logprobs are read: greedy integers from a small model asked for every token's
value are mostly zeros (0 is each token's likeliest value even where the model gives a firing
token real weight), and copying a word is easier for a small model than copying its number.

Placing the answer: a name is a token's text as shown (escaped, without surrounding white
space); it gives its value to *every* token with that text (a word that occurs twice fires
twice, as a token-level neuron would). A name that matches no token exactly is matched without
regard to case; a name that still matches none, a value that is not an integer 0..10, or an
answer without a JSON object makes the excerpt unusable (a `Problem`, retried, then a counted
failure), never zeros. Every token not named is 0: that is the question asked.

With a backend that offers ``json_schema`` the schema lists the excerpt's distinct token texts
as optional properties (in order of first occurrence), so the model can name only real tokens.
Several excerpts in one request nest one object per excerpt under ``"excerpt_<i>"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from neuron_explainer.llm.prompts import extract_json_object
from neuron_explainer.simulators._common import (
    EXAMPLE_INTRO,
    EXAMPLE_LEVELS,
    EXAMPLE_TOKENS,
    TASK,
    Problem,
)
from neuron_explainer.simulators._keyed import response_format, word

__all__ = ["SYSTEM", "parse", "retry_message", "schema", "user_message"]


def _listing(tokens: Sequence[str]) -> str:
    return " | ".join(word(t) for t in tokens)


SYSTEM = (
    f"{TASK}\n\nAnswer with a JSON object that names only the tokens the neuron activates on, "
    "copied exactly, each with its activation from 1 to 10. Leave out every token with "
    "activation 0; answer {} if there is none. Write nothing else.\n\n"
    f"{EXAMPLE_INTRO}{_listing(EXAMPLE_TOKENS)}\nanswer:\n"
    + json.dumps({word(t): v for t, v in zip(EXAMPLE_TOKENS, EXAMPLE_LEVELS, strict=True) if v})
)
"""The system message of the firing answer."""


def _object(tokens: Sequence[str]) -> dict[str, object]:
    names = list(dict.fromkeys(word(t) for t in tokens))
    return {
        "type": "object",
        "properties": {n: {"type": "integer", "minimum": 1, "maximum": 10} for n in names},
        "additionalProperties": False,
    }


def schema(excerpts: Sequence[Sequence[str]]) -> dict[str, object]:
    """The ``response_format`` (a strict JSON schema) of the firing answer for ``excerpts``:
    each excerpt's distinct token texts as optional properties."""
    return response_format("firing", [_object(e) for e in excerpts])


def user_message(explanation: str, excerpts: Sequence[Sequence[str]], noun: str = "neuron") -> str:
    """The user message asking which tokens of ``excerpts`` fire under ``explanation``,
    calling the unit ``noun``."""
    head = f"Explanation: the {noun} finds {explanation}\n\n"
    ask = f"the tokens the {noun} that finds {explanation} activates on, each with how strongly"
    if len(excerpts) == 1:
        return (
            f"{head}Tokens: {_listing(excerpts[0])}\n\nAnswer with the JSON object of {ask} "
            "(1 to 10); {} if none."
        )
    parts = [f"Excerpt {i}: {_listing(e)}" for i, e in enumerate(excerpts, start=1)]
    names = ", ".join(f'"excerpt_{i}": {{...}}' for i in range(1, len(excerpts) + 1))
    return (
        head
        + "\n\n".join(parts)
        + f"\n\nAnswer with a JSON object {{{names}}}: for each excerpt, the object of {ask} "
        "(1 to 10); {} if none."
    )


def _value(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise Problem(f"the value of {name[:40]!r} is {value!r}, not a number 0..10", "unparseable")
    return float(value)


def _values(data: object, tokens: Sequence[str], where: str) -> list[float]:
    if not isinstance(data, dict):
        raise Problem(f"{where} is not a JSON object", "unparseable")
    words = [word(t) for t in tokens]
    values = [0.0] * len(tokens)
    for name, raw in data.items():
        wanted = name.strip()
        hits = [i for i, w in enumerate(words) if w == wanted] or [
            i for i, w in enumerate(words) if w.lower() == wanted.lower()
        ]
        if not hits:
            raise Problem(f"{where} names {name[:40]!r}, which is not one of its tokens")
        value = _value(raw, name)
        for i in hits:
            values[i] = value
    return values


def parse(text: str, excerpts: Sequence[Sequence[str]]) -> list[list[float] | Problem]:
    """Each excerpt's values from the firing answer in ``text`` (see the module docstring), or
    the `Problem` that makes it unusable."""
    try:
        data = extract_json_object(text)
    except ValueError as exc:
        return [Problem(f"{exc} (the answer began {text[:60]!r})", "unparseable")] * len(excerpts)
    out: list[list[float] | Problem] = []
    for j, tokens in enumerate(excerpts, start=1):
        where = "the answer" if len(excerpts) == 1 else f'"excerpt_{j}"'
        part = data if len(excerpts) == 1 else None
        if len(excerpts) > 1:
            if not isinstance(data, dict) or f"excerpt_{j}" not in data:
                out.append(Problem(f'the answer has no "excerpt_{j}" object'))
                continue
            part = data[f"excerpt_{j}"]
        try:
            out.append(_values(part, tokens, where))
        except Problem as problem:
            out.append(problem)
    return out


def retry_message(problem: object, noun: str = "neuron") -> str:
    """The user message that asks again for a firing answer after an answer with ``problem``,
    calling the unit ``noun``."""
    return (
        f"That answer could not be used: {problem}. Answer again with only the JSON object of "
        f"the tokens the {noun} activates on, each copied exactly from the tokens with an "
        "integer from 1 to 10; {} if none."
    )
