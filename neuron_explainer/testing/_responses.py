"""Canned answers for a scripted LLM: `make_response` (a `ChatResponse` with token logprobs and
usage) and `make_prompt_response` (a scored prompt, split by `split_text`). Import them from
`neuron_explainer.testing`."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm.base import (
    ChatResponse,
    Choice,
    PromptLogprobsResponse,
    PromptToken,
    TokenLogprob,
    TopLogprob,
    Usage,
)

_PIECES = re.compile(r" ?[^\W\d_]+| ?\d| ?[^\w\s]+| ?_+|\s", re.DOTALL)


def split_text(text: str) -> list[str]:
    """Split ``text`` roughly as a BPE tokenizer would: words with their leading space, single
    digits, runs of punctuation, and every other whitespace character alone (so a tab and the
    word after it are separate tokens). The pieces concatenate to ``text``."""
    pieces = _PIECES.findall(text)
    if "".join(pieces) != text:  # pragma: no cover - the pattern covers every character
        raise InvalidInputError("split_text lost characters")
    return pieces


def make_prompt_response(
    prompt: str,
    *,
    top_logprobs: Mapping[int, Mapping[str, float]]
    | Callable[[int, str], Mapping[str, float] | None]
    | None = None,
    split: Callable[[str], Sequence[str]] = split_text,
    prompt_tokens: int | None = None,
    model: str | None = None,
) -> PromptLogprobsResponse:
    """A `PromptLogprobsResponse` scoring ``prompt``: its tokens (``split(prompt)``) with their
    character offsets, and the top logprobs given for some positions.

    Args:
        prompt: the prompt that was scored.
        top_logprobs: the alternatives at a token, keyed by the token's character offset, or a
            function ``(offset, token) -> mapping or None``. Each mapping goes from alternative
            to log probability; a token's own ``logprob`` is its entry in the mapping (else
            ``None``). Positions without a mapping get no alternatives.
        split: splits the prompt into tokens (default `split_text`); the pieces must
            concatenate to the prompt.
        prompt_tokens: the usage to report (default: the number of tokens).
        model: the model name the response reports.

    Raises:
        InvalidInputError: the pieces do not concatenate to the prompt, or a logprob is not a
            finite number <= 0.
    """
    pieces = list(split(prompt))
    if "".join(pieces) != prompt:
        raise InvalidInputError("split(prompt) must return pieces that concatenate to the prompt")
    tokens, offset = [], 0
    for piece in pieces:
        if callable(top_logprobs):
            alternatives = top_logprobs(offset, piece)
        else:
            alternatives = (top_logprobs or {}).get(offset)
        ranked = sorted((alternatives or {}).items(), key=lambda item: -item[1])
        for token, value in ranked:
            if not math.isfinite(value) or value > 0:
                raise InvalidInputError(
                    f"logprob of {token!r} at offset {offset} is {value}; a log probability is "
                    "finite and <= 0"
                )
        tokens.append(
            PromptToken(
                token=piece,
                offset=offset,
                logprob=(alternatives or {}).get(piece),
                top_logprobs=tuple(TopLogprob(token=t, logprob=lp) for t, lp in ranked),
            )
        )
        offset += len(piece)
    return PromptLogprobsResponse(
        tokens=tuple(tokens),
        usage=Usage(prompt_tokens=len(tokens) if prompt_tokens is None else prompt_tokens),
        model=model,
    )


def make_response(
    text: str | None = None,
    *,
    logprobs: Sequence[Mapping[str, float]] | None = None,
    tokens: Sequence[str] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached_tokens: int = 0,
    finish_reason: str | None = "stop",
    model: str | None = None,
) -> ChatResponse:
    """A `ChatResponse` with one choice, optional token logprobs and the given usage.

    Args:
        text: the completion text; by default the generated tokens joined (or ``""``).
        logprobs: one mapping per generated token, from each alternative token to its log
            probability, e.g. ``[{"7": -0.1, "8": -2.4}]``. Each becomes a `TokenLogprob`
            whose ``top_logprobs`` list the alternatives, most likely first.
        tokens: the generated token at each position; by default the most likely alternative.
        prompt_tokens / completion_tokens / cached_tokens: the usage to report.
        finish_reason: the choice's finish reason.
        model: the model name the response reports.

    Raises:
        InvalidInputError: ``tokens`` without ``logprobs`` or of another length, an empty
            mapping, a generated token missing from its mapping, or a logprob that is not a
            finite number <= 0.
    """
    positions: tuple[TokenLogprob, ...] | None = None
    if tokens is not None and logprobs is None:
        raise InvalidInputError("tokens= needs logprobs=: give one mapping per token")
    if logprobs is not None:
        if tokens is not None and len(tokens) != len(logprobs):
            raise InvalidInputError(
                f"{len(tokens)} tokens but {len(logprobs)} logprob mappings; give one per token"
            )
        built = []
        for i, alternatives in enumerate(logprobs):
            if not alternatives:
                raise InvalidInputError(f"logprobs[{i}] is empty; give at least one token")
            for token, value in alternatives.items():
                if not math.isfinite(value) or value > 0:
                    raise InvalidInputError(
                        f"logprobs[{i}][{token!r}] is {value}; a log probability is finite and <= 0"
                    )
            ranked = sorted(alternatives.items(), key=lambda item: -item[1])
            chosen = ranked[0][0] if tokens is None else tokens[i]
            if chosen not in alternatives:
                raise InvalidInputError(
                    f"generated token {chosen!r} at position {i} has no logprob in logprobs[{i}]"
                )
            built.append(
                TokenLogprob(
                    token=chosen,
                    logprob=alternatives[chosen],
                    top_logprobs=tuple(TopLogprob(token=t, logprob=lp) for t, lp in ranked),
                )
            )
        positions = tuple(built)
    if text is None:
        text = "".join(p.token for p in positions or ())
    return ChatResponse(
        choices=(Choice(text=text, logprobs=positions, finish_reason=finish_reason),),
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        ),
        model=model,
    )
