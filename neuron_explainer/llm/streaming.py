"""Streamed answers: server-sent events, and the chunks of a streamed chat completion put back
together into the answer the same request gives without streaming.

With ``"stream": true`` an OpenAI-compatible server sends its answer as server-sent events,
one ``data: {...}`` line per ``chat.completion.chunk`` as tokens are generated, then
``data: [DONE]``; with ``stream_options: {"include_usage": true}`` a last chunk carries the
token usage. A client reading them sees bytes every few tokens, so a read timeout measures
how long the server stayed silent, not how long the answer takes.

* `read_event_stream` reads the events of an ``httpx`` response as they come, and `assemble`
  feeds them to a `StreamAssembler` afterwards;
* `ChatStream` is the assembler of chat completions: `ChatStream.result` is the
  ``chat.completion`` object (text, finish reason, token logprobs with their alternatives,
  usage, model) that `neuron_explainer.llm.protocol.parse_chat` reads, exactly as it reads a
  non-streamed answer, so the response cache stores the same object either way.

What goes wrong raises `StreamFailure`, which `neuron_explainer.llm.transport` turns into a
typed error: a stream that ends before ``[DONE]`` (a dropped connection, a server that died) is
an `LLMConnectionError`, retried; an event that is not JSON an `InvalidResponseError`, retried;
an error event from the server a `ServerError`, retried; a chunk not of the protocol's form an
`InvalidResponseError` naming the event and the field, not retried.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import httpx

from neuron_explainer.errors import (
    InvalidResponseError,
    LLMConnectionError,
    LLMError,
    ServerError,
)
from neuron_explainer.llm.protocol import error_message

__all__ = [
    "ChatStream",
    "StreamAssembler",
    "StreamFailure",
    "assemble",
    "is_event_stream",
    "read_event_stream",
    "sse_data",
]

_DONE = "[DONE]"


class StreamFailure(Exception):
    """A streamed answer that cannot be used.

    Attributes:
        error: the `LLMError` subclass to raise for it.
        reason: what went wrong.
        retry: whether sending the request again may help.
    """

    def __init__(self, error: type[LLMError], reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.retry = retry


class StreamAssembler(Protocol):
    """Collects the JSON events of one streamed answer (e.g. `ChatStream`)."""

    def add(self, event: dict[str, Any]) -> None:
        """Take one event (a JSON object).

        Raises:
            InvalidResponseError: the event is not of the protocol's form.
        """

    @property
    def complete(self) -> bool:
        """Whether the answer is whole even without a ``[DONE]`` event."""

    def result(self) -> dict[str, Any]:
        """The answer the events add up to."""


def is_event_stream(response: httpx.Response) -> bool:
    """Whether ``response`` is server-sent events (``Content-Type: text/event-stream``); a
    server that ignored ``"stream": true`` answers with plain JSON instead."""
    kind: str = response.headers.get("content-type", "")
    return kind.split(";")[0].strip().lower() == "text/event-stream"


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """The events of a server-sent-event stream as ``(field, data)`` pairs: ``("data", text)``
    for each event's data (its ``data:`` lines joined by newlines), ``("error", text)`` for
    llama.cpp's ``error:`` lines. Comments (``: keep-alive``) and the ``event``, ``id`` and
    ``retry`` fields are skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "data", "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "error":
            yield "error", value
    if data:
        yield "data", "\n".join(data)


async def read_event_stream(response: httpx.Response) -> tuple[list[tuple[str, str]], bool]:
    """Read the server-sent events of ``response`` until ``data: [DONE]``, an error event, or
    the end of the body. Only collected here, while the bytes come: they are parsed afterwards
    by `assemble`, in one go (with the garbage collector paused by the caller).

    Returns:
        The events (`sse_data`'s pairs, without ``[DONE]``) and whether ``[DONE]`` came.

    Raises:
        httpx.TransportError: the connection failed or stayed silent longer than its read
            timeout while the events were read.
    """
    events: list[tuple[str, str]] = []
    done = False
    try:
        async for kind, text in sse_data(response.aiter_lines()):
            if done:
                continue  # read to the end of the body, so the connection can be used again
            if kind == "data" and text.strip() == _DONE:
                done = True
                continue
            events.append((kind, text))
            if kind == "error" or text.lstrip().startswith('{"error"'):
                break  # what went wrong is in this event: no need to wait for more
    except httpx.TransportError:
        if not done:
            raise  # after [DONE] the answer is whole, however the body ends
    return events, done


def assemble(
    events: list[tuple[str, str]], done: bool, assembler: StreamAssembler
) -> dict[str, Any]:
    """Feed the ``events`` read by `read_event_stream` to ``assembler`` and return what they
    add up to.

    Raises:
        StreamFailure: an event is an error, or not a JSON object, or the assembler refused
            one; or the stream ended before ``[DONE]`` (``done`` false) and the answer is not
            complete.
    """
    for count, (kind, text) in enumerate(events, start=1):
        if kind == "error":
            message, _ = error_message(text)
            raise StreamFailure(ServerError, f"event {count} is an error: {message}", retry=True)
        try:
            assembler.add(_event(text, count))
        except InvalidResponseError as exc:
            raise StreamFailure(InvalidResponseError, str(exc), retry=False) from None
    if done or assembler.complete:
        return assembler.result()
    raise StreamFailure(
        LLMConnectionError,
        f"the stream ended after {len(events)} events without data: [DONE], before the answer "
        "was complete",
        retry=True,
    )


def _event(text: str, count: int) -> dict[str, Any]:
    """The JSON object of event number ``count``."""
    try:
        event = json.loads(text)
    except ValueError as exc:
        reason = f"event {count} is not valid JSON ({exc}; it begins {text[:60]!r})"
        raise StreamFailure(InvalidResponseError, reason, retry=True) from None
    if not isinstance(event, dict):
        reason = f"event {count} is JSON {type(event).__name__}, not an object"
        raise StreamFailure(InvalidResponseError, reason, retry=True)
    if "error" in event and "choices" not in event:
        message, _ = error_message(text)
        raise StreamFailure(ServerError, f"event {count} is an error: {message}", retry=True)
    return event


# -- chat completions ------------------------------------------------------------------------


@dataclass
class _ChoiceParts:
    """What the chunks said so far about one choice."""

    text: list[str] = field(default_factory=list)
    logprobs: list[Any] | None = None
    finish_reason: str | None = None
    role: str = "assistant"


class ChatStream:
    """Puts the ``chat.completion.chunk`` events of one streamed chat completion back together
    (a `StreamAssembler`).

    Each chunk's ``choices`` carry a ``delta`` (``role``, a piece of ``content``), the
    ``logprobs.content`` entries of the tokens in that piece and, at the end, a
    ``finish_reason``; chunks of several choices (``n > 1``) may come interleaved and are told
    apart by their ``index``. A chunk with ``usage`` (and usually no choices) comes last.
    `result` is the ``chat.completion`` object a non-streamed request gets: ``choices`` in
    ``index`` order, each with its ``message``, ``logprobs`` (``None`` when no chunk had any)
    and ``finish_reason``, the ``usage``, the ``model`` and the ``id``.
    """

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceParts] = {}
        self._events = 0
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None
        self._id: str | None = None

    def _bad(self, what: str) -> NoReturn:
        raise InvalidResponseError(
            f"the server's streamed answer does not follow the protocol: event {self._events} "
            f"(a chat.completion.chunk): {what}"
        )

    def add(self, event: dict[str, Any]) -> None:
        """Take one ``chat.completion.chunk``.

        Raises:
            InvalidResponseError: ``choices`` is not a list, or a choice, its ``index``,
                ``delta``, ``delta.content``, ``logprobs`` or ``finish_reason`` is not of the
                protocol's form (the message names the event and the field).
        """
        self._events += 1
        if self._model is None and isinstance(event.get("model"), str):
            self._model = event["model"]
        if self._id is None and isinstance(event.get("id"), str):
            self._id = event["id"]
        usage = event.get("usage")
        if usage is not None:
            if not isinstance(usage, dict):
                self._bad(f"usage is {type(usage).__name__}, not an object")
            self._usage = usage
        choices = event.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            self._bad(f"choices is {type(choices).__name__}, not a list")
        for position, choice in enumerate(choices):
            self._add_choice(position, choice)

    def _add_choice(self, position: int, choice: Any) -> None:
        where = f"choices[{position}]"
        if not isinstance(choice, dict):
            self._bad(f"{where} is {type(choice).__name__}, not an object")
        index = choice.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            self._bad(f"{where}.index is {index!r}, not a count")
        parts = self._choices.setdefault(index, _ChoiceParts())
        delta = choice.get("delta")
        if delta is not None:
            if not isinstance(delta, dict):
                self._bad(f"{where}.delta is {type(delta).__name__}, not an object")
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                self._bad(f"{where}.delta.content is {type(content).__name__}, not text")
            if content:
                parts.text.append(content)
            if isinstance(delta.get("role"), str):
                parts.role = delta["role"]
        self._add_logprobs(parts, choice.get("logprobs"), where)
        reason = choice.get("finish_reason")
        if reason is not None:
            if not isinstance(reason, str):
                self._bad(f"{where}.finish_reason is {type(reason).__name__}, not text")
            parts.finish_reason = reason

    def _add_logprobs(self, parts: _ChoiceParts, logprobs: Any, where: str) -> None:
        if logprobs is None:
            return
        if not isinstance(logprobs, dict):
            self._bad(f"{where}.logprobs is {type(logprobs).__name__}, not an object")
        content = logprobs.get("content")
        if content is None:
            return
        if not isinstance(content, list):
            self._bad(f"{where}.logprobs.content is {type(content).__name__}, not a list")
        if parts.logprobs is None:
            parts.logprobs = []
        parts.logprobs.extend(content)

    @property
    def complete(self) -> bool:
        """Whether every choice has its finish reason and the usage came: a whole answer, for
        servers that end the stream without ``[DONE]``."""
        finished = all(parts.finish_reason is not None for parts in self._choices.values())
        return bool(self._choices) and finished and self._usage is not None

    def result(self) -> dict[str, Any]:
        """The ``chat.completion`` object the chunks add up to, marked ``"streamed": true``."""
        choices = [
            {
                "index": index,
                "message": {"role": parts.role, "content": "".join(parts.text)},
                "logprobs": None if parts.logprobs is None else {"content": parts.logprobs},
                "finish_reason": parts.finish_reason,
            }
            for index, parts in sorted(self._choices.items())
        ]
        # "streamed": the texts are what was generated (a server that repeats a prefill in a
        # whole answer sends only the new text as deltas): see protocol.parse_chat.
        answer: dict[str, Any] = {"object": "chat.completion", "choices": choices, "streamed": True}
        if self._id is not None:
            answer["id"] = self._id
        if self._model is not None:
            answer["model"] = self._model
        if self._usage is not None:
            answer["usage"] = self._usage
        return answer
