"""Reading the answers that score a prompt: the completions API's ``echo`` + ``logprobs``, and
vLLM's ``prompt_logprobs``, lined up with the prompt (the request bodies are
`neuron_explainer.llm.protocol.CompletionBody`).

The answer is checked against the prompt before it is used, and anything ambiguous raises
`InvalidResponseError` rather than being guessed:

* echo: the tokens must spell the prompt exactly (tokens after it, generated ones, are
  dropped); ``text_offset`` must be the running character position of each token (offsets all
  shifted by one constant, or counting UTF-8 bytes, are recomputed from the tokens: the fix is
  unambiguous; any other mismatch raises); only the first token may lack a logprob (values
  shifted by one position, the first token having one and the last none, raise, and so does a
  token whose logprob differs from its own entry in ``top_logprobs``);
* vLLM: which entry of each position is the prompt's own token is found by lining the decoded
  texts up with the prompt (by ``prompt_token_ids`` when the server sends them); more than one
  way to do it, or none, raises;
* a logprob on the first token (a server that prepends a BOS token) is dropped, and an empty
  first token (the BOS itself) too: the first token has no context in this contract.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuron_explainer.llm.base import PromptLogprobsResponse, PromptToken, TopLogprob
from neuron_explainer.llm.protocol import (
    _bad,
    _choices,
    _field,
    _model_of,
    _number,
    _top,
    parse_usage,
)

__all__ = ["parse_echo", "parse_vllm"]

logger = logging.getLogger(__name__)


# -- prompt logprobs: echo ---------------------------------------------------------------------


def _fix_offsets(offsets: Sequence[Any], texts: Sequence[str]) -> str | None:
    """Check the server's ``text_offset`` against the token texts.

    Returns ``None`` when they agree, a note when they are off in a way that can be undone
    unambiguously (all shifted by one constant, or UTF-8 byte offsets), and raises otherwise.
    """
    chars, utf8, char, byte = [], [], 0, 0
    for text in texts:
        chars.append(char)
        utf8.append(byte)
        char += len(text)
        byte += len(text.encode("utf-8"))
    given = []
    for i, offset in enumerate(offsets):
        if isinstance(offset, bool) or not isinstance(offset, int):
            _bad(f"text_offset[{i}] is {offset!r}, not an integer")
        given.append(offset)
    if given == chars:
        return None
    for expected, unit in ((chars, "character"), (utf8, "UTF-8 byte")):
        shifts = {g - e for g, e in zip(given, expected, strict=True)}
        if len(shifts) == 1:
            (shift,) = shifts
            extra = f", shifted by {shift}" if shift else ""
            return f"the server's text_offset are {unit} offsets{extra}; recomputed from the tokens"
    first = next(i for i, (g, e) in enumerate(zip(given, chars, strict=True)) if g != e)
    _bad(
        f"text_offset[{first}] is {given[first]} but token {first} ({texts[first]!r}) starts at "
        f"character {chars[first]} of the prompt, and the offsets are not a constant shift of "
        "the character or byte positions"
    )


_ECHO = "choices[0].logprobs"


@dataclass(frozen=True)
class _EchoLists:
    """The parallel lists of a completions ``logprobs`` object, of one length."""

    tokens: list[Any]
    values: list[Any]
    tops: list[Any]
    offsets: list[Any] | None


def _echo_lists(data: dict[str, Any]) -> _EchoLists:
    """``choices[0].logprobs`` of a completions answer, checked to hold lists of one length."""
    logprobs = _field(_choices(data)[0], "logprobs", dict, "choices[0]")
    if "tokens" not in logprobs and "content" in logprobs:
        _bad(
            "the server sent logprobs of generated tokens only: it ignores `echo`, so it cannot "
            "score a prompt (llama.cpp's server does this); remove 'prompt_logprobs' from this "
            "LLM's capabilities, or use a server that echoes (vLLM)"
        )
    tokens = _field(logprobs, "tokens", list, _ECHO)
    values = _field(logprobs, "token_logprobs", list, _ECHO)
    tops = logprobs.get("top_logprobs")
    tops = [None] * len(tokens) if tops is None else tops
    offsets = logprobs.get("text_offset")
    if not isinstance(tops, list) or (offsets is not None and not isinstance(offsets, list)):
        _bad(f"{_ECHO}.top_logprobs and text_offset must be lists")
    lengths = {len(tokens), len(values), len(tops), len(tokens if offsets is None else offsets)}
    if len(lengths) != 1:
        _bad(
            f"{_ECHO} lists differ in length (tokens {len(tokens)}, token_logprobs "
            f"{len(values)}, top_logprobs {len(tops)}, text_offset "
            f"{'absent' if offsets is None else len(offsets)})"
        )
    return _EchoLists(tokens, values, tops, offsets)


def _echoed_prompt(tokens: list[Any], prompt: str) -> list[str]:
    """The shortest prefix of ``tokens`` that spells ``prompt``: the echoed prompt (any tokens
    after it were generated, with ``max_tokens > 0``, and are dropped)."""
    position, count = 0, 0
    while position < len(prompt):
        if count == len(tokens):
            _bad(
                f"the echoed tokens spell only the first {position} of the prompt's "
                f"{len(prompt)} characters"
            )
        token = tokens[count]
        if not isinstance(token, str):
            _bad(f"{_ECHO}.tokens[{count}] is {token!r}, not text")
        if not prompt.startswith(token, position):
            _bad(
                f"the echoed tokens do not spell the prompt: token {count} is {token!r} but the "
                f"prompt has {prompt[position : position + len(token) + 5]!r} at character "
                f"{position} (byte-level tokens such as 'bytes:\\xe2' are not supported)"
            )
        position += len(token)
        count += 1
    return tokens[:count]


def _echo_values(raw: list[Any], count: int) -> list[float | None]:
    """The ``token_logprobs`` as numbers, where only the first of the ``count`` prompt tokens
    may lack one; values shifted by one position are refused."""
    values = [
        None if v is None else _number(v, f"{_ECHO}.token_logprobs[{i}]") for i, v in enumerate(raw)
    ]
    missing = [i for i, v in enumerate(values) if v is None]
    if values[0] is not None and missing == [len(values) - 1] and len(values) > 1:
        _bad(
            "token_logprobs are shifted by one position: the first token has a logprob and the "
            "last has none, so each value belongs to the next token (the server's convention is "
            "off by one); refusing to guess"
        )
    unscored = [i for i in missing if 0 < i < count]
    if unscored:
        _bad(f"token_logprobs has no value for token {unscored[0]} (only the first may be null)")
    return values


def _echo_alternatives(
    text: str, value: float | None, alternatives: Any, k: int, i: int
) -> tuple[TopLogprob, ...]:
    """The top ``k`` alternatives at token ``i``, checked to agree with its own logprob."""
    top = _top(alternatives, k, f"{_ECHO}.top_logprobs[{i}]")
    listed = {alt.token: alt.logprob for alt in top}
    if value is not None and text in listed and abs(listed[text] - value) > 1e-3 * (1 + abs(value)):
        _bad(
            f"token {i} ({text!r}) has logprob {value} in token_logprobs but "
            f"{listed[text]} in top_logprobs: the lists are misaligned"
        )
    return top


def parse_echo(data: dict[str, Any], prompt: str, k: int) -> PromptLogprobsResponse:
    """Prompt tokens from a completions answer to ``echo: true, logprobs: k``, checked against
    ``prompt`` as the module's docstring says.

    Raises:
        InvalidResponseError: the answer is not of that form, or does not line up with the
            prompt.
    """
    lists = _echo_lists(data)
    texts = _echoed_prompt(lists.tokens, prompt)
    if lists.offsets is not None:
        note = _fix_offsets(lists.offsets[: len(texts)], texts)
        if note:
            logger.debug("%s", note)
    values = _echo_values(lists.values, len(texts))
    result: list[PromptToken] = []
    offset = 0
    for i, text in enumerate(texts):
        if not result and not text:
            continue  # an empty special token (BOS) before the prompt's first token
        top = () if i == 0 else _echo_alternatives(text, values[i], lists.tops[i], k, i)
        # The first token has no context: a value there (a model that prepends a BOS token
        # scores it) is dropped, as the contract says.
        first = not result
        result.append(
            PromptToken(
                token=text,
                offset=offset,
                logprob=None if first else values[i],
                top_logprobs=() if first else top,
            )
        )
        offset += len(text)
    return PromptLogprobsResponse(
        tokens=tuple(result), usage=parse_usage(data), model=_model_of(data)
    )


# -- prompt logprobs: vLLM -----------------------------------------------------------------------

_VLLM = "choices[0].prompt_logprobs"


@dataclass(frozen=True)
class _Candidate:
    text: str
    logprob: float


# ways (capped at 2) to spell the rest of the prompt, the token chosen here, where it ends
_Step = tuple[int, _Candidate | None, int]


def _vllm_entries(data: dict[str, Any]) -> tuple[list[Any], list[Any] | None]:
    """vLLM's ``prompt_logprobs`` (one entry per prompt token) and, if the server sent them
    and they match, the ``prompt_token_ids``."""
    choice = _choices(data)[0]
    if not isinstance(choice, dict):
        _bad("the response has no choices")
    entries = choice.get("prompt_logprobs", data.get("prompt_logprobs"))
    if not isinstance(entries, list) or not entries:
        _bad("choices[0] has no prompt_logprobs list (is this a vLLM server?)")
    ids = choice.get("prompt_token_ids", data.get("prompt_token_ids"))
    return entries, ids if isinstance(ids, list) and len(ids) == len(entries) else None


def _vllm_position(
    entry: Any, i: int, own_id: Any, k: int
) -> tuple[list[_Candidate], tuple[TopLogprob, ...]]:
    """For prompt token ``i``: the entries that may be the prompt's own token (the one with
    ``own_id`` when the ids are known, else every non-empty text) and the top ``k``."""
    if not isinstance(entry, dict) or not entry:
        _bad(f"{_VLLM}[{i}] is {entry!r}, not an object of token logprobs")
    ranked = []
    for token_id, info in entry.items():
        text = _field(info, "decoded_token", str, f"{_VLLM}[{i}][{token_id!r}]")
        value = _number(info.get("logprob"), f"{_VLLM}[{i}][{token_id!r}].logprob")
        rank = info.get("rank")
        ranked.append((rank if isinstance(rank, int) else math.inf, -value, token_id, text))
    ranked.sort()
    top = tuple(TopLogprob(token=t, logprob=-v) for _, v, _, t in ranked[:k])
    own = [c for c in ranked if own_id is not None and str(c[2]) == str(own_id)]
    pool = own or [c for c in ranked if c[3]]
    return [_Candidate(text=t, logprob=-v) for _, v, _, t in pool], top


def _line_up(prompt: str, options: list[list[_Candidate]]) -> tuple[int, list[dict[int, _Step]]]:
    """Line the candidates of tokens 1.. up with the prompt from its end. Returns where token
    1 starts and, for each token from the last back, ``{end of the previous token: step}``.

    Raises:
        InvalidResponseError: no way, or more than one way, to spell the prompt.
    """
    reach: dict[int, _Step] = {len(prompt): (1, None, -1)}
    steps = [reach]
    for i in range(len(options) - 1, 0, -1):
        nxt: dict[int, _Step] = {}
        for end, (ways, _, _) in reach.items():
            for candidate in options[i]:
                if prompt.endswith(candidate.text, 0, end):
                    start = end - len(candidate.text)
                    before = nxt.get(start, (0, None, -1))[0]
                    nxt[start] = (min(2, before + ways), candidate, end)
        if not nxt:
            _bad(f"the tokens of {_VLLM} cannot be lined up with the prompt (at token {i})")
        reach = nxt
        steps.append(reach)
    if sum(ways for ways, _, _ in reach.values()) != 1:
        _bad(
            f"the tokens of {_VLLM} line up with the prompt in more than one way; ask the "
            "server for prompt_token_ids (vLLM: return_token_ids) or use the echo style"
        )
    ((start, _),) = reach.items()
    return start, steps


def parse_vllm(data: dict[str, Any], prompt: str, k: int) -> PromptLogprobsResponse:
    """Prompt tokens from vLLM's ``prompt_logprobs`` (one ``{token_id: {logprob, rank,
    decoded_token}}`` per prompt token, ``null`` first). Which entry is the prompt's own token
    is found by lining the decoded texts up with the prompt.

    Raises:
        InvalidResponseError: the answer is not of that form, or the entries line up with the
            prompt in more than one way, or in none (it does not guess).
    """
    entries, ids = _vllm_entries(data)
    options: list[list[_Candidate]] = [[]]
    alternatives: list[tuple[TopLogprob, ...]] = [()]
    for i, entry in enumerate(entries[1:], start=1):
        candidates, top = _vllm_position(entry, i, None if ids is None else ids[i], k)
        options.append(candidates)
        alternatives.append(top)
    start, steps = _line_up(prompt, options)
    tokens: list[PromptToken] = []
    if start > 0:
        tokens.append(PromptToken(token=prompt[:start], offset=0))
    position = start
    for i in range(1, len(entries)):
        _, chosen, end = steps[len(entries) - i][position]
        assert chosen is not None
        first = not tokens  # the first token (after a dropped empty BOS) has no context
        tokens.append(
            PromptToken(
                token=chosen.text,
                offset=position,
                logprob=None if first else chosen.logprob,
                top_logprobs=() if first else alternatives[i],
            )
        )
        position = end
    return PromptLogprobsResponse(
        tokens=tuple(tokens), usage=parse_usage(data), model=_model_of(data)
    )
