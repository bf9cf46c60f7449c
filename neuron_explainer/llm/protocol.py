"""The OpenAI wire format: request bodies and the parsers of the answers.

Nothing here sends anything or imports an HTTP client; `neuron_explainer.llm.openai` builds a
body here, `neuron_explainer.llm.transport` posts it, and the JSON that comes back is read here
into the provider-neutral types of `neuron_explainer.llm.base`:

* `ChatCompletionBody`, `CompletionBody`: the request bodies, as pydantic models
  (``wire()`` gives the JSON object sent, without unset fields);
* `parse_chat`: a chat completion → `ChatResponse`;
* the completions answers that score a prompt are read by `neuron_explainer.llm.prompt_logprobs`
  (they must be lined up with the prompt);
* `parse_usage`: the ``usage`` object → `Usage`;
* `error_message`: the message and code of an error body.

Every parser raises `InvalidResponseError` naming the field that is wrong. Chat logprobs take a
fast path (one strict pydantic validation of the whole list) and fall back to the checked path,
which names the problem, only when that fails.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from neuron_explainer.errors import InvalidResponseError
from neuron_explainer.llm._prefill import without_prefill
from neuron_explainer.llm.base import (
    ChatRequest,
    ChatResponse,
    Choice,
    Message,
    PromptLogprobsRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
)

__all__ = [
    "ChatCompletionBody",
    "CompletionBody",
    "error_message",
    "parse_chat",
    "parse_usage",
]

_T = TypeVar("_T")
_WIRE = ConfigDict(extra="forbid", frozen=True)


# -- requests ------------------------------------------------------------------------------------


class ChatCompletionBody(BaseModel):
    """The body of ``POST {base_url}/chat/completions``. Fields left ``None`` are not sent."""

    model_config = _WIRE

    model: str
    messages: tuple[Message, ...]
    temperature: float
    n: int | None = None
    max_tokens: int | None = None
    logprobs: Literal[True] | None = None
    top_logprobs: int | None = None
    response_format: dict[str, JsonValue] | None = None
    stop: tuple[str, ...] | None = None
    continue_final_message: Literal[True] | None = None
    add_generation_prompt: Literal[False] | None = None

    @classmethod
    def of(cls, model: str, request: ChatRequest) -> ChatCompletionBody:
        """The body asking ``model`` for ``request`` (``n`` is sent only when it is not 1).

        A request ending with an assistant message (a prefill) also carries vLLM's
        ``continue_final_message: true`` and ``add_generation_prompt: false``, without which
        vLLM would start a new assistant message; llama.cpp continues a final assistant message
        either way and accepts both fields."""
        prefill = request.messages[-1].role == "assistant"
        return cls(
            continue_final_message=True if prefill else None,
            add_generation_prompt=False if prefill else None,
            model=model,
            messages=request.messages,
            temperature=request.temperature,
            n=None if request.n == 1 else request.n,
            max_tokens=request.max_tokens,
            logprobs=True if request.logprobs else None,
            top_logprobs=request.top_logprobs if request.logprobs else None,
            response_format=request.response_format,
            stop=request.stop or None,
        )

    def wire(self) -> dict[str, Any]:
        """The JSON object to send (also what the response cache's key is made from)."""
        return self.model_dump(mode="json", exclude_none=True)


class CompletionBody(BaseModel):
    """The body of ``POST {base_url}/completions`` that scores a prompt: ``echo`` +
    ``logprobs`` (the completions API's way) or vLLM's ``prompt_logprobs``."""

    model_config = _WIRE

    model: str
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    echo: Literal[True] | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    @classmethod
    def scoring(
        cls,
        model: str,
        request: PromptLogprobsRequest,
        *,
        style: Literal["echo", "vllm"],
        max_tokens: int,
    ) -> CompletionBody:
        """The body asking ``model`` for the top ``request.top_logprobs`` at every prompt token,
        in ``style``, generating ``max_tokens`` (dropped from the answer)."""
        k = request.top_logprobs
        if style == "vllm":
            return cls(model=model, prompt=request.prompt, max_tokens=max_tokens, prompt_logprobs=k)
        return cls(model=model, prompt=request.prompt, max_tokens=max_tokens, echo=True, logprobs=k)

    def wire(self) -> dict[str, Any]:
        """The JSON object to send (also what the response cache's key is made from)."""
        return self.model_dump(mode="json", exclude_none=True)


# -- checks ----------------------------------------------------------------------------------


def _bad(what: str) -> NoReturn:
    raise InvalidResponseError(f"the server's answer does not follow the protocol: {what}")


def _field(data: Any, name: str, kind: type[_T], where: str) -> _T:
    if not isinstance(data, dict) or name not in data:
        _bad(f"{where} has no {name!r}")
    value = data[name]
    if not isinstance(value, kind):
        _bad(f"{where}.{name} is {type(value).__name__}, not {kind.__name__}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _bad(f"{where} is {value!r}, not a number")
    return float(value)


def _choices(data: dict[str, Any]) -> list[Any]:
    raw = _field(data, "choices", list, "the response")
    if not raw:
        _bad("the response has no choices")
    return raw


def error_message(text: str, fallback: str = "no message") -> tuple[str, str | None]:
    """The server's message and its error code (or type) from an error body: OpenAI's
    ``{"error": {"message": ..., "type": ..., "code": ...}}`` or the common variants
    (``{"error": "..."}``, ``{"detail": ...}``); otherwise the start of the text, or
    ``fallback`` (e.g. the HTTP reason phrase) for an empty body."""
    text = text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return (text[:300] or fallback), None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error[:500], None
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or data.get("detail")
            code = error.get("code") or error.get("type")
            if message is not None:
                return str(message)[:500], None if code is None else str(code)
    return text[:300], None


def parse_usage(data: Any) -> Usage:
    """Token usage from a response (missing or odd fields count as 0)."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return Usage()

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=count(usage.get("prompt_tokens")),
        completion_tokens=count(usage.get("completion_tokens")),
        cached_tokens=count(cached),
    )


def _model_of(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    return model if isinstance(model, str) else None


def _top(alternatives: Any, k: int | None, where: str) -> tuple[TopLogprob, ...]:
    """Alternatives as `TopLogprob`s, most likely first, at most ``k``: from a list of
    ``{"token", "logprob"}`` (chat) or a mapping token → logprob (completions)."""
    if alternatives is None:
        return ()
    if isinstance(alternatives, dict):
        pairs = [(str(t), _number(lp, f"{where}[{t!r}]")) for t, lp in alternatives.items()]
    elif isinstance(alternatives, list):
        pairs = []
        for j, item in enumerate(alternatives):
            token = _field(item, "token", str, f"{where}[{j}]")
            pairs.append((token, _number(item.get("logprob"), f"{where}[{j}].logprob")))
    else:
        _bad(f"{where} is {type(alternatives).__name__}, not a list or an object")
    pairs.sort(key=lambda pair: -pair[1])
    return tuple(TopLogprob(token=t, logprob=lp) for t, lp in pairs[:k])


# -- chat completions ----------------------------------------------------------------------


@functools.cache
def _token_logprobs_adapter() -> TypeAdapter[tuple[TokenLogprob, ...]]:
    return TypeAdapter(tuple[TokenLogprob, ...])


def _sorted_alternatives(alternatives: Any) -> tuple[dict[str, Any], ...]:
    if alternatives is None:
        return ()
    pairs = [{"token": a["token"], "logprob": a["logprob"]} for a in alternatives]
    pairs.sort(key=lambda pair: -pair["logprob"])
    return tuple(pairs)


def _well_formed_logprobs(items: list[Any]) -> tuple[TokenLogprob, ...] | None:
    """The chat logprobs ``content`` items, parsed as `_checked_logprobs` parses them
    (alternatives most likely first; strings for tokens, numbers but no booleans for logprobs),
    or ``None`` when one is not of that form: then the checked path runs and names the
    problem. One strict validation of the whole list instead of one per token keeps a logprob
    answer (hundreds of tokens and alternatives) cheap on the client's CPU."""
    try:
        plain = tuple(
            {
                "token": item["token"],
                "logprob": item["logprob"],
                "top_logprobs": _sorted_alternatives(item.get("top_logprobs")),
            }
            for item in items
        )
        return _token_logprobs_adapter().validate_python(plain, strict=True)
    except (TypeError, KeyError, AttributeError, ValidationError):
        return None


def _checked_logprobs(items: list[Any], where: str) -> tuple[TokenLogprob, ...]:
    """The chat logprobs ``content`` items, each field checked: the slow path, which names
    what is wrong (`_well_formed_logprobs` is the fast one)."""
    return tuple(
        TokenLogprob(
            token=_field(item, "token", str, f"{where}[{j}]"),
            logprob=_number(item.get("logprob"), f"{where}[{j}].logprob"),
            top_logprobs=_top(item.get("top_logprobs"), None, f"{where}[{j}]"),
        )
        for j, item in enumerate(items)
    )


def _message_text(choice: Any, where: str) -> str:
    content = _field(choice, "message", dict, where).get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    _bad(f"{where}.message.content is {type(content).__name__}, not text")


def _chat_logprobs(choice: dict[str, Any], where: str) -> tuple[TokenLogprob, ...] | None:
    raw = choice.get("logprobs")
    if raw is not None and not isinstance(raw, dict):
        _bad(f"{where}.logprobs is {type(raw).__name__}, not an object")
    if raw is None or raw.get("content") is None:
        return None
    items = _field(raw, "content", list, f"{where}.logprobs")
    fast = _well_formed_logprobs(items)
    return fast if fast is not None else _checked_logprobs(items, f"{where}.logprobs.content")


def parse_chat(data: dict[str, Any], n: int, *, prefill: str | None = None) -> ChatResponse:
    """A chat completion answer with ``n`` choices (ordered by their ``index``). For a request
    that ends with the assistant's ``prefill``, each choice's text is what followed it (a
    server that repeats the prefill in a whole answer has it removed, as
    `neuron_explainer.llm._prefill.without_prefill` says).

    Raises:
        InvalidResponseError: no ``choices``, not ``n`` of them, or a choice, its message or its
            logprobs not of the protocol's form (the message names the field).
    """
    raw = _choices(data)
    if len(raw) != n:
        _bad(f"{n} completion(s) were asked for (n={n}) but the server returned {len(raw)}")

    def position(item: tuple[int, Any]) -> int:
        index = item[1].get("index") if isinstance(item[1], dict) else None
        return index if isinstance(index, int) else item[0]

    choices = []
    for i, choice in sorted(enumerate(raw), key=position):
        where = f"choices[{i}]"
        text = _message_text(choice, where)
        reason = choice.get("finish_reason")
        logprobs = _chat_logprobs(choice, where)
        if prefill:
            text = without_prefill(text, logprobs, prefill, streamed=data.get("streamed") is True)
        choices.append(
            Choice(
                text=text,
                logprobs=logprobs,
                finish_reason=reason if isinstance(reason, str) else None,
            )
        )
    return ChatResponse(choices=tuple(choices), usage=parse_usage(data), model=_model_of(data))
