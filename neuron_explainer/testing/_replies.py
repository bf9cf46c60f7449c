"""What the OpenAI test server's script is made of: scripted answers (`Reply`), injected
failures (`Fault`), the requests it records (`ReceivedRequest`), and its default tokenizer and
scorer. Import them from `neuron_explainer.testing` (or `neuron_explainer.testing.server`)."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
_ALTERNATIVES: tuple[str, ...] = (
    *(" the", " a", ",", ".", " and", " of", " to", " in", " is", "\n", " it", " that"),
    *(" for", " on", " with", " as", " was", " he", " be", " at", " by", " not"),
)


def simple_tokenize(text: str) -> list[str]:
    """Split ``text`` into word-like tokens that concatenate back to it: a word or one
    punctuation character with the whitespace before it, or a whitespace run at the end."""
    return _TOKEN.findall(text)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def default_prompt_logprob(tokens: Sequence[str], index: int) -> tuple[float, dict[str, float]]:
    """The default scorer of token ``index`` of ``tokens``: a deterministic logprob in
    [-3.05, -0.05] from the token's text and position, and 20 alternatives below it."""
    own = -(0.05 + (_crc(f"{index}:{tokens[index]}") % 300) / 100)
    alternatives = {
        alt: round(own - 0.5 - 0.25 * j, 4)
        for j, alt in enumerate(a for a in _ALTERNATIVES if a != tokens[index])
    }
    return own, {tokens[index]: own, **alternatives}


PromptLogprobFunction: TypeAlias = Callable[[Sequence[str], int], tuple[float, Mapping[str, float]]]
"""``f(tokens, i) -> (logprob of tokens[i], {alternative: logprob})``: how the server scores a
token given the ones before it (``i >= 1``)."""


@dataclass(frozen=True)
class Reply:
    """A scripted chat answer.

    Args:
        content: the message text of every choice, or one text per choice.
        tokens: the generated tokens (joining to ``content``) when logprobs are asked for;
            default `simple_tokenize` of the content.
        logprobs: the logprob of each token; default from ``top_logprobs`` or a fixed rule.
        top_logprobs: the alternatives at each token, ``{token: logprob}``.
        prompt_tokens: the prompt tokens to report; by default the request's messages are
            counted with `simple_tokenize`.
        completion_tokens: the completion tokens to report; by default counted likewise.
        cached_tokens: the cached prompt tokens to report.
        finish_reason: the finish reason of every choice.
        model: the model name to report (default: the request's).
    """

    content: str | Sequence[str] = ""
    tokens: Sequence[str] | None = None
    logprobs: Sequence[float] | None = None
    top_logprobs: Sequence[Mapping[str, float]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    finish_reason: str = "stop"
    model: str | None = None


FaultKind = Literal[
    "status", "timeout", "disconnect", "invalid_json", "truncated", "garbage", "stall", "cut"
]


@dataclass(frozen=True)
class Fault:
    """A failure to inject instead of an answer. Build one with the class methods."""

    kind: FaultKind
    status: int = 500
    message: str = "The server had an error while processing your request."
    error_type: str | None = "server_error"
    code: str | None = None
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    hold: float = 30.0
    text: str = "I'm sorry, but I can't help with that."
    after: int = 0

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "error",
        *,
        error_type: str | None = "invalid_request_error",
        code: str | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """HTTP ``status`` with an OpenAI-style body ``{"error": {"message", "type", "code"}}``
        and, if given, ``Retry-After`` (seconds, or an HTTP date as text) / ``retry-after-ms``."""
        return cls(
            "status",
            status=status,
            message=message,
            error_type=error_type,
            code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def rate_limit(
        cls,
        retry_after: float | str | None = None,
        *,
        retry_after_ms: float | None = None,
        code: str | None = "rate_limit_exceeded",
        message: str = "Rate limit reached for requests.",
    ) -> Fault:
        """HTTP 429, optionally with ``Retry-After`` / ``retry-after-ms``."""
        return cls.error(
            429,
            message,
            error_type="requests",
            code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def server_error(
        cls, status: int = 500, message: str = "The server had an error.", **headers: Any
    ) -> Fault:
        """HTTP ``status`` (500 by default; 502, 503, 504, ...) with an OpenAI-style body."""
        return cls.error(status, message, error_type="server_error", **headers)

    @classmethod
    def timeout(cls, hold: float = 30.0) -> Fault:
        """Read the request, then hold the connection for ``hold`` seconds (or until the server
        stops) and close it without answering: longer than the client's timeout."""
        return cls("timeout", hold=hold)

    @classmethod
    def stall(cls, after: int = 2, hold: float = 30.0) -> Fault:
        """A streamed answer that stops: its first ``after`` events, then nothing for ``hold``
        seconds (or until the server stops), then the connection closes before the stream's
        end. A request that is not streamed gets `timeout` instead."""
        return cls("stall", after=after, hold=hold)

    @classmethod
    def cut(cls, after: int = 2) -> Fault:
        """A streamed answer cut off: its first ``after`` events, then the connection closes in
        the middle of the body. A request that is not streamed gets `truncated` instead."""
        return cls("cut", after=after)

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without sending any response."""
        return cls("disconnect")

    @classmethod
    def invalid_json(cls) -> Fault:
        """HTTP 200 whose body is not JSON."""
        return cls("invalid_json")

    @classmethod
    def truncated(cls) -> Fault:
        """HTTP 200 whose ``Content-Length`` is larger than the body sent before the connection
        is closed."""
        return cls("truncated")

    @classmethod
    def garbage(cls, text: str = "I'm sorry, but I can't help with that.") -> Fault:
        """A well-formed completion whose content ignores the requested format."""
        return cls("garbage", text=text)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request the server received.

    Attributes:
        method: ``"POST"`` or ``"GET"``.
        path: the URL path, e.g. ``"/v1/chat/completions"``.
        query: the query string, without ``?``.
        headers: the headers, names in lower case.
        body: the JSON body, or ``None`` if it was not JSON.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)

    @property
    def endpoint(self) -> str:
        """``"chat/completions"``, ``"completions"``, ``"completion"`` (llama.cpp's native
        endpoint), ``"models"``, ``"props"``, ``"slots"`` or the path."""
        for name in ("chat/completions", "completions", "completion", "models", "props", "slots"):
            if self.path.rstrip("/").endswith("/" + name):
                return name
        return self.path


_Answer: TypeAlias = Reply | Fault | str | dict[str, Any]
Responder: TypeAlias = Callable[[ReceivedRequest], _Answer | None]
"""``responder(request)`` → a `Reply` or text (a chat answer, or the generated text of a
completion), a `Fault`, a whole JSON body (``dict``), or ``None`` for the default answer."""
