"""The OpenAI-compatible backend: chat completions and prompt logprobs over HTTP.

`OpenAILLM` (provider ``"openai"``) speaks the OpenAI REST protocol, which OpenAI, Azure OpenAI
and most local servers (vLLM, llama.cpp, Ollama, LM Studio, TGI, ...) offer:

* `achat`: ``POST {base_url}/chat/completions``;
* `aprompt_logprobs`: ``POST {base_url}/completions`` with ``echo: true, logprobs: k,
  max_tokens: 0`` (or vLLM's ``prompt_logprobs: k``), checked token by token against the prompt.

Configuration is read lazily, at the first request: ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``
(default ``https://api.openai.com/v1``) unless given to the constructor, and
``NEURON_EXPLAINER_CACHE`` (a path) for the response cache unless ``cache=`` says otherwise. A
local server (``localhost``, ``127.x.x.x``, ``::1``) needs no key.

Every call goes through one pooled ``httpx.AsyncClient`` per event loop, a concurrency limit,
optional requests/tokens-per-minute limits, retries with jittered exponential backoff (honouring
``Retry-After``), the usage meters of `neuron_explainer.llm.usage` (cost recorded, budget checked
before sending) and the optional persistent `ResponseCache`. The API key never appears in a
repr, a log line, an exception or the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gc
import json
import logging
import math
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from neuron_explainer._aio import run_sync
from neuron_explainer._version import __version__
from neuron_explainer.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidInputError,
    InvalidResponseError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from neuron_explainer.llm.base import (
    CAPABILITIES,
    LLM,
    Capability,
    ChatRequest,
    ChatResponse,
    Choice,
    PromptLogprobsRequest,
    PromptLogprobsResponse,
    PromptToken,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from neuron_explainer.llm.cache import ResponseCache, cache_key, public_url
from neuron_explainer.llm.limits import RateLimiter
from neuron_explainer.llm.usage import (
    Price,
    estimate_cost,
    price_for,
    record_usage,
    reserve_budget,
)
from neuron_explainer.results import ComponentInfo

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CAPABILITIES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_CACHE",
    "OpenAILLM",
]

logger = logging.getLogger(__name__)

ENV_API_KEY = "OPENAI_API_KEY"
"""The environment variable holding the API key (read at the first request)."""
ENV_BASE_URL = "OPENAI_BASE_URL"
"""The environment variable holding the server's base URL (read at the first request)."""
ENV_CACHE = "NEURON_EXPLAINER_CACHE"
"""The environment variable naming a response-cache file, used when ``cache=None``."""
DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""Where requests go without ``base_url=`` or ``OPENAI_BASE_URL``."""
DEFAULT_CAPABILITIES: frozenset[Capability] = frozenset({"chat", "chat_logprobs", "json_schema"})
"""What an `OpenAILLM` offers unless told otherwise: api.openai.com's chat models have no prompt
logprobs, so pass ``capabilities=`` including ``"prompt_logprobs"`` for servers that do (vLLM)."""

_WORST_CASE_COMPLETION = 4096  # completion tokens assumed when a request sets no max_tokens
_MESSAGE_OVERHEAD = 4  # tokens per chat message beyond its text (role, separators)
_NOT_RETRIED = "not retried"
_T = TypeVar("_T")

Sleep = Callable[[float], Awaitable[None]]


class _Secret:
    """A string that never shows itself in a repr."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


@dataclass
class _LoopState:
    """What one event loop needs: its client, its concurrency limit and the generator that
    closes the client when the loop shuts down."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    closer: AsyncGenerator[None, None] | None = None


@dataclass
class _Failure:
    """One failed attempt: the error class to raise, what went wrong, and the status."""

    error: type[LLMError]
    reason: str
    status: int | None = None
    retry_after: float | None = None


def _is_local(url: str) -> bool:
    host = (httpx.URL(url).host or "").lower()
    return (
        host in ("localhost", "::1", "0.0.0.0")
        or host.endswith(".localhost")
        or host.startswith("127.")
    )


def _join(base_url: str, endpoint: str) -> str:
    """``base_url`` + ``/endpoint``, keeping the base URL's query (Azure's ``api-version``)."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/" + endpoint))


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After`` as seconds
    or as an HTTP date; ``None`` if neither is usable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value) and value >= 0:
                return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


def _server_message(response: httpx.Response) -> tuple[str, str | None]:
    """The server's error message and its error code or type, from an OpenAI-style body
    ``{"error": {"message": ..., "type": ..., "code": ...}}`` or the common variants."""
    text = response.text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return (text[:300] or response.reason_phrase or "no message"), None
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


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's garbage collector off while a response is decoded and parsed (synchronous
    code, no await inside): a logprob answer is thousands of small objects that all stay
    alive, and collecting while they are made promotes them into the old generations, whose
    full collections then cost more than the parsing (measured: 15 ms of GC per request with
    10 excerpts per request, 5 ms with the pause). Left as it was if the caller turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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


def _parse_usage(data: Any) -> Usage:
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
    """The chat logprobs ``content`` items, parsed as `_parse_chat`'s checked path parses
    them (alternatives most likely first; strings for tokens, numbers but no booleans for
    logprobs), or ``None`` when one is not of that form: then the checked path runs and names
    the problem. One strict validation of the whole list instead of one per token keeps a
    logprob answer (hundreds of tokens and alternatives) cheap on the client's CPU."""
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


def _parse_chat(data: dict[str, Any], n: int) -> ChatResponse:
    raw = _field(data, "choices", list, "the response")
    if not raw:
        _bad("the response has no choices")
    if len(raw) != n:
        _bad(f"{n} completion(s) were asked for (n={n}) but the server returned {len(raw)}")

    def position(item: tuple[int, Any]) -> int:
        index = item[1].get("index") if isinstance(item[1], dict) else None
        return index if isinstance(index, int) else item[0]

    ordered = sorted(enumerate(raw), key=position)
    choices = []
    for i, choice in ordered:
        where = f"choices[{i}]"
        message = _field(choice, "message", dict, where)
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):  # content parts
            text = "".join(
                part.get("text", "") if isinstance(part, dict) else str(part) for part in content
            )
        else:
            _bad(f"{where}.message.content is {type(content).__name__}, not text")
        logprobs = None
        raw_logprobs = choice.get("logprobs")
        if isinstance(raw_logprobs, dict) and raw_logprobs.get("content") is not None:
            items = _field(raw_logprobs, "content", list, f"{where}.logprobs")
            logprobs = _well_formed_logprobs(items)
            if logprobs is None:  # the checked path names what is wrong
                logprobs = tuple(
                    TokenLogprob(
                        token=_field(item, "token", str, f"{where}.logprobs.content[{j}]"),
                        logprob=_number(
                            item.get("logprob"), f"{where}.logprobs.content[{j}].logprob"
                        ),
                        top_logprobs=_top(
                            item.get("top_logprobs"), None, f"{where}.logprobs.content[{j}]"
                        ),
                    )
                    for j, item in enumerate(items)
                )
        elif raw_logprobs is not None and not isinstance(raw_logprobs, dict):
            _bad(f"{where}.logprobs is {type(raw_logprobs).__name__}, not an object")
        reason = choice.get("finish_reason")
        choices.append(
            Choice(
                text=text,
                logprobs=logprobs,
                finish_reason=reason if isinstance(reason, str) else None,
            )
        )
    return ChatResponse(choices=tuple(choices), usage=_parse_usage(data), model=_model_of(data))


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


def _parse_echo(data: dict[str, Any], prompt: str, k: int) -> PromptLogprobsResponse:
    """Prompt tokens from a completions-echo answer, checked against the prompt (see
    `OpenAILLM.aprompt_logprobs` for the policy)."""
    choices = _field(data, "choices", list, "the response")
    if not choices:
        _bad("the response has no choices")
    logprobs = _field(choices[0], "logprobs", dict, "choices[0]")
    where = "choices[0].logprobs"
    if "tokens" not in logprobs and "content" in logprobs:
        _bad(
            "the server sent logprobs of generated tokens only: it ignores `echo`, so it cannot "
            "score a prompt (llama.cpp's server does this); remove 'prompt_logprobs' from this "
            "LLM's capabilities, or use a server that echoes (vLLM)"
        )
    tokens = _field(logprobs, "tokens", list, where)
    values = _field(logprobs, "token_logprobs", list, where)
    tops = logprobs.get("top_logprobs")
    tops = [None] * len(tokens) if tops is None else tops
    offsets = logprobs.get("text_offset")
    if not isinstance(tops, list) or (offsets is not None and not isinstance(offsets, list)):
        _bad(f"{where}.top_logprobs and text_offset must be lists")
    lengths = {len(tokens), len(values), len(tops), len(tokens if offsets is None else offsets)}
    if len(lengths) != 1:
        _bad(
            f"{where} lists differ in length (tokens {len(tokens)}, token_logprobs "
            f"{len(values)}, top_logprobs {len(tops)}, text_offset "
            f"{'absent' if offsets is None else len(offsets)})"
        )
    # The echoed prompt tokens are the shortest prefix of `tokens` that spells the prompt; any
    # after it were generated (max_tokens > 0) and are dropped.
    position, count = 0, 0
    while position < len(prompt):
        if count == len(tokens):
            _bad(
                f"the echoed tokens spell only the first {position} of the prompt's "
                f"{len(prompt)} characters"
            )
        token = tokens[count]
        if not isinstance(token, str):
            _bad(f"{where}.tokens[{count}] is {token!r}, not text")
        if not prompt.startswith(token, position):
            _bad(
                f"the echoed tokens do not spell the prompt: token {count} is {token!r} but the "
                f"prompt has {prompt[position : position + len(token) + 5]!r} at character "
                f"{position} (byte-level tokens such as 'bytes:\\xe2' are not supported)"
            )
        position += len(token)
        count += 1
    texts = [str(t) for t in tokens[:count]]
    if offsets is not None:
        note = _fix_offsets(offsets[:count], texts)
        if note:
            logger.debug("%s", note)
    values = [
        None if v is None else _number(v, f"{where}.token_logprobs[{i}]")
        for i, v in enumerate(values)
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
    result: list[PromptToken] = []
    offset = 0
    for i, text in enumerate(texts):
        if not result and not text:
            continue  # an empty special token (BOS) before the prompt's first token
        value = values[i]
        top = () if i == 0 else _top(tops[i], k, f"{where}.top_logprobs[{i}]")
        if i > 0 and value is not None:
            listed = {alt.token: alt.logprob for alt in top}
            if text in listed and abs(listed[text] - value) > 1e-3 * (1 + abs(value)):
                _bad(
                    f"token {i} ({text!r}) has logprob {value} in token_logprobs but "
                    f"{listed[text]} in top_logprobs: the lists are misaligned"
                )
        # The first token has no context: a value there (a model that prepends a BOS token
        # scores it) is dropped, as the contract says.
        first = not result
        result.append(
            PromptToken(
                token=text,
                offset=offset,
                logprob=None if first else value,
                top_logprobs=() if first else top,
            )
        )
        offset += len(text)
    return PromptLogprobsResponse(
        tokens=tuple(result), usage=_parse_usage(data), model=_model_of(data)
    )


@dataclass(frozen=True)
class _Candidate:
    text: str
    logprob: float


def _parse_vllm(data: dict[str, Any], prompt: str, k: int) -> PromptLogprobsResponse:
    """Prompt tokens from vLLM's ``prompt_logprobs`` (one ``{token_id: {logprob, rank,
    decoded_token}}`` per prompt token, ``null`` first). Which entry is the prompt's own token
    is found by lining the decoded texts up with the prompt; if more than one way fits, or
    none, it raises rather than guess."""
    choices = _field(data, "choices", list, "the response")
    if not choices or not isinstance(choices[0], dict):
        _bad("the response has no choices")
    entries = choices[0].get("prompt_logprobs", data.get("prompt_logprobs"))
    if not isinstance(entries, list) or not entries:
        _bad("choices[0] has no prompt_logprobs list (is this a vLLM server?)")
    ids = choices[0].get("prompt_token_ids", data.get("prompt_token_ids"))
    if not (isinstance(ids, list) and len(ids) == len(entries)):
        ids = None
    where = "choices[0].prompt_logprobs"
    options: list[list[_Candidate]] = [[]]
    alternatives: list[tuple[TopLogprob, ...]] = [()]
    for i, entry in enumerate(entries[1:], start=1):
        if not isinstance(entry, dict) or not entry:
            _bad(f"{where}[{i}] is {entry!r}, not an object of token logprobs")
        ranked = []
        for token_id, info in entry.items():
            text = _field(info, "decoded_token", str, f"{where}[{i}][{token_id!r}]")
            value = _number(info.get("logprob"), f"{where}[{i}][{token_id!r}].logprob")
            rank = info.get("rank")
            ranked.append((rank if isinstance(rank, int) else math.inf, -value, token_id, text))
        ranked.sort()
        alternatives.append(tuple(TopLogprob(token=t, logprob=-v) for _, v, _, t in ranked[:k]))
        own = [c for c in ranked if ids is not None and str(c[2]) == str(ids[i])]
        pool = own or [c for c in ranked if c[3]]
        options.append([_Candidate(text=t, logprob=-v) for _, v, _, t in pool])
    # Line the tokens up with the prompt from its end: `reach[end]` counts the ways (capped at
    # 2) tokens i.. can spell prompt[start:] when token i - 1 ends at `end`.
    reach: dict[int, tuple[int, _Candidate | None, int]] = {len(prompt): (1, None, -1)}
    steps: list[dict[int, tuple[int, _Candidate | None, int]]] = [reach]
    for i in range(len(entries) - 1, 0, -1):
        nxt: dict[int, tuple[int, _Candidate | None, int]] = {}
        for end, (ways, _, _) in reach.items():
            for candidate in options[i]:
                if prompt.endswith(candidate.text, 0, end):
                    start = end - len(candidate.text)
                    before = nxt.get(start, (0, None, -1))[0]
                    nxt[start] = (min(2, before + ways), candidate, end)
        if not nxt:
            _bad(f"the tokens of {where} cannot be lined up with the prompt (at token {i})")
        reach = nxt
        steps.append(reach)
    total = sum(ways for ways, _, _ in reach.values())
    if total != 1:
        _bad(
            f"the tokens of {where} line up with the prompt in more than one way; ask the "
            "server for prompt_token_ids (vLLM: return_token_ids) or use the echo style"
        )
    ((start, (_, _, _)),) = reach.items()
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
        tokens=tuple(tokens), usage=_parse_usage(data), model=_model_of(data)
    )


class OpenAILLM(LLM):
    """A model behind an OpenAI-compatible server (provider ``"openai"``).

    ``default_registry().llm("openai:gpt-4o-mini")`` builds one from the environment; build it
    yourself for options. It is safe to share between tasks, threads and event loops: limits,
    the cache and the usage meters cover every caller.

    Args:
        model: the model name the server knows (``"gpt-4o-mini"``, a vLLM model path, ...).
        api_key: the API key; default ``OPENAI_API_KEY``, read at the first request. Servers
            on localhost need none.
        base_url: the server's base URL (``.../v1``); default ``OPENAI_BASE_URL``, else
            `DEFAULT_BASE_URL`. A query string (Azure's ``?api-version=...``) is kept on every
            request.
        timeout: seconds allowed for connecting, and between bytes of the answer.
        max_concurrency: most requests in flight at once (per event loop).
        requests_per_minute: client-side request limit (``None``: none).
        tokens_per_minute: client-side token limit; a request counts its prompt characters / 4
            plus ``max_tokens`` (times ``n``).
        max_retries: retries after the first attempt of a request that failed in a way worth
            retrying (HTTP 408, 409, 429, 5xx, timeouts, dropped connections, a body that is
            not JSON); ``0`` sends each request once.
        retry_max_wait: the longest wait before a retry, in seconds (caps ``Retry-After``).
        retry_base_wait: the first backoff; it doubles with each retry, with jitter.
        cache: a response-cache file (or a `ResponseCache`); ``False`` for none; ``None``
            (default) uses ``NEURON_EXPLAINER_CACHE`` if it is set, else no cache.
        price: the price used for cost and budgets; default from
            `neuron_explainer.llm.usage.price_for` (0 for unknown models).
        capabilities: what the model offers; default `DEFAULT_CAPABILITIES` (add
            ``"prompt_logprobs"`` for servers that echo prompt logprobs, such as vLLM;
            llama.cpp's server does not).
        organization: sent as the ``OpenAI-Organization`` header.
        context_window: the model's context length, for the worst-case cost of a request
            without ``max_tokens`` (default: 4,096 completion tokens are assumed).
        extra_headers: more headers for every request.
        prompt_logprobs_style: ``"echo"`` (``echo`` + ``logprobs``, the completions API's
            way) or ``"vllm"`` (vLLM's ``prompt_logprobs``).
        prompt_logprobs_max_tokens: ``max_tokens`` of a prompt-logprob request; default 0
            for ``"echo"`` and 1 for ``"vllm"`` (some servers refuse 0). Generated tokens
            are dropped.
        sleep: awaited for every wait (retries, rate limits); default `asyncio.sleep`.

    Raises:
        InvalidInputError: an option out of range, or an unknown capability.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 5,
        retry_max_wait: float = 60.0,
        retry_base_wait: float = 0.5,
        cache: str | os.PathLike[str] | ResponseCache | Literal[False] | None = None,
        price: Price | None = None,
        capabilities: Sequence[Capability] | frozenset[Capability] | None = None,
        organization: str | None = None,
        context_window: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        prompt_logprobs_style: Literal["echo", "vllm"] = "echo",
        prompt_logprobs_max_tokens: int | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        checks = [
            (timeout > 0, f"timeout must be > 0, got {timeout}"),
            (max_concurrency >= 1, f"max_concurrency must be >= 1, got {max_concurrency}"),
            (max_retries >= 0, f"max_retries must be >= 0, got {max_retries}"),
            (retry_max_wait >= 0, f"retry_max_wait must be >= 0, got {retry_max_wait}"),
            (retry_base_wait >= 0, f"retry_base_wait must be >= 0, got {retry_base_wait}"),
            (not requests_per_minute or requests_per_minute > 0, "requests_per_minute must be > 0"),
            (not tokens_per_minute or tokens_per_minute > 0, "tokens_per_minute must be > 0"),
            (context_window is None or context_window > 0, "context_window must be > 0"),
            (
                prompt_logprobs_style in ("echo", "vllm"),
                f"prompt_logprobs_style must be 'echo' or 'vllm', got {prompt_logprobs_style!r}",
            ),
            (
                prompt_logprobs_max_tokens is None or prompt_logprobs_max_tokens >= 0,
                "prompt_logprobs_max_tokens must be >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        offered = frozenset(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
        unknown = sorted(set(offered) - set(CAPABILITIES))
        if unknown:
            raise InvalidInputError(
                f"unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}"
            )
        super().__init__(model)
        self.capabilities = offered
        self._api_key = None if api_key is None else _Secret(api_key)
        self._base_url = base_url
        self.timeout = float(timeout)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.retry_max_wait = float(retry_max_wait)
        self.retry_base_wait = float(retry_base_wait)
        self.price = price
        self.organization = organization
        self.context_window = context_window
        self.extra_headers = dict(extra_headers or {})
        self.prompt_logprobs_style = prompt_logprobs_style
        self.prompt_logprobs_max_tokens = prompt_logprobs_max_tokens
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._cache_option = cache
        self._cache: ResponseCache | None = None
        self._cache_resolved = False
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute, sleep=self._sleep)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    # -- configuration -----------------------------------------------------------------------

    def __repr__(self) -> str:
        where = "" if self._base_url is None else f", base_url={public_url(self._base_url)!r}"
        return f"OpenAILLM({self.model!r}{where})"

    @property
    def base_url(self) -> str:
        """The base URL requests go to: ``base_url=``, else ``OPENAI_BASE_URL``, else
        `DEFAULT_BASE_URL` (the environment is read each time)."""
        return self._base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache in use, if any (``NEURON_EXPLAINER_CACHE`` is read on first use)."""
        with self._lock:
            if not self._cache_resolved:
                option = self._cache_option
                if option is None:
                    option = os.environ.get(ENV_CACHE) or False
                if isinstance(option, ResponseCache):
                    self._cache = option
                elif option is not False and option != "":
                    self._cache = ResponseCache(option)
                self._cache_resolved = True
            return self._cache

    @property
    def info(self) -> ComponentInfo:
        """Name, capabilities and the server (without credentials), recorded in results."""
        return ComponentInfo(
            name=self.name,
            settings={
                "capabilities": sorted(self.capabilities),
                "base_url": public_url(self.base_url),
            },
        )

    def _key(self) -> str | None:
        if self._api_key is not None:
            return self._api_key.value
        return os.environ.get(ENV_API_KEY) or None

    def _headers(self, base_url: str, key: str | None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"neuron-explainer/{__version__}",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
            if (httpx.URL(base_url).host or "").endswith(".azure.com"):
                headers["api-key"] = key
        elif not _is_local(base_url):
            raise AuthenticationError(
                f"no API key for {self.name} at {public_url(base_url)}: set the {ENV_API_KEY} "
                "environment variable or pass api_key= (servers on localhost need none)",
                attempts=0,
            )
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        headers.update(self.extra_headers)
        return headers

    # -- clients, one per event loop ---------------------------------------------------------

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is not None:
                return state
            if self._ssl_context is None:  # loading the CA bundle takes ~20 ms: do it once
                self._ssl_context = httpx.create_ssl_context()
            state = _LoopState(
                client=httpx.AsyncClient(
                    verify=self._ssl_context,
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(
                        max_connections=self.max_concurrency,
                        max_keepalive_connections=self.max_concurrency,
                    ),
                ),
                semaphore=asyncio.Semaphore(self.max_concurrency),
            )
            self._states[loop] = state
        # An async generator the loop finalizes at shutdown (asyncio.run calls
        # shutdown_asyncgens), so the client is closed inside the loop that owns it, even when
        # a sync wrapper ran the call in a loop of its own.
        state.closer = self._close_at_shutdown(loop, state)
        await anext(state.closer)
        return state

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._states.get(loop) is state:
                    del self._states[loop]
            await state.client.aclose()

    async def aclose(self) -> None:
        """Close this event loop's connections (a later call opens new ones). Clients of loops
        that ``asyncio.run`` ran are closed when those loops end."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.pop(loop, None)
        if state is not None and state.closer is not None:
            await state.closer.aclose()

    async def __aenter__(self) -> OpenAILLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sending -----------------------------------------------------------------------------

    def _completion_cap(self, max_tokens: int | None, prompt_tokens: int) -> int:
        if max_tokens is not None:
            return max_tokens
        if self.context_window is not None:
            return max(0, self.context_window - prompt_tokens)
        return _WORST_CASE_COMPLETION

    def _backoff(self, retry: int) -> float:
        ceiling = min(self.retry_max_wait, self.retry_base_wait * 2.0 ** (retry - 1))
        return ceiling * (0.5 + random.random() / 2)

    def _classify(self, response: httpx.Response) -> tuple[_Failure, bool]:
        """The failure an HTTP error status means, and whether it is worth retrying."""
        status = response.status_code
        message, code = _server_message(response)
        reason = f"HTTP {status}: {message}"
        if status in (401, 403):
            reason += f" (check {ENV_API_KEY} or api_key=)"
            return _Failure(AuthenticationError, reason, status), False
        if status == 429:
            if code in ("insufficient_quota", "billing_hard_limit_reached"):
                return _Failure(RateLimitError, reason + " (out of quota)", status), False
            return _Failure(RateLimitError, reason, status, _retry_after(response.headers)), True
        if status == 408:
            return _Failure(LLMTimeoutError, reason, status, _retry_after(response.headers)), True
        if status == 409 or status >= 500:
            return _Failure(ServerError, reason, status, _retry_after(response.headers)), True
        if 400 <= status < 500:
            return _Failure(BadRequestError, reason, status), False
        return _Failure(InvalidResponseError, f"unexpected {reason}", status), False

    async def _attempt(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any] | tuple[_Failure, bool]:
        """Send once: the JSON answer, or the failure and whether to retry it."""
        state = await self._state()
        try:
            async with state.semaphore:
                response = await state.client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            what = type(exc).__name__
            return _Failure(LLMTimeoutError, f"no answer within {self.timeout}s ({what})"), True
        except (httpx.TransportError, httpx.DecodingError) as exc:
            reason = f"{type(exc).__name__}: {exc or 'connection failed'}"
            if isinstance(exc, httpx.UnsupportedProtocol):
                return _Failure(LLMConnectionError, reason), False
            return _Failure(LLMConnectionError, reason), True
        if response.status_code != 200:
            return self._classify(response)
        try:
            with _gc_paused():
                data = json.loads(response.content)
        except ValueError as exc:
            start = response.content[:60].decode("utf-8", "replace")
            reason = f"the body is not valid JSON ({exc}; it begins {start!r})"
            return _Failure(InvalidResponseError, reason, 200), True
        if not isinstance(data, dict):
            reason = f"the body is JSON {type(data).__name__}, not an object"
            return _Failure(InvalidResponseError, reason, 200), True
        return data

    async def _send(
        self, endpoint: str, body: dict[str, Any], *, base_url: str, key: str | None, tokens: int
    ) -> tuple[dict[str, Any], int]:
        """POST ``body`` with retries: the JSON answer and the attempts it took, or the typed
        error of the last attempt."""
        url = _join(base_url, endpoint)
        shown = public_url(url)
        headers = self._headers(base_url, key)
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            if self.limiter.active:
                await self.limiter.acquire(tokens)
            logger.debug(
                "POST %s (model %s, attempt %d of %d)", shown, self.model, attempt, attempts
            )
            outcome = await self._attempt(url, body, headers)
            if isinstance(outcome, dict):
                return outcome, attempt
            failure, retry = outcome
            if not retry or attempt == attempts:
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                why = _NOT_RETRIED if not retry else "giving up"
                message = (
                    f"{self.name}: POST {shown} failed: {failure.reason} ({why} after {tries})"
                )
                raise failure.error(
                    _redact(message, key), status_code=failure.status, attempts=attempt
                )
            wait = failure.retry_after
            wait = self._backoff(attempt) if wait is None else min(wait, self.retry_max_wait)
            logger.info(
                "%s: %s; retrying in %.2fs (attempt %d of %d)",
                self.name,
                _redact(failure.reason, key),
                wait,
                attempt + 1,
                attempts,
            )
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self,
        endpoint: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], _T],
        usage_of: Callable[[_T], Usage],
        *,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> _T:
        base_url = self.base_url
        cache = self.cache
        key_id = cache_key(endpoint, base_url, self.model, body) if cache is not None else None
        if cache is not None and key_id is not None:
            stored = await cache.aget(key_id)
            if stored is not None:
                try:
                    parsed = parse(stored)
                except (InvalidResponseError, ValidationError):
                    logger.debug("ignoring an unusable cached answer for %s", self.name)
                else:
                    logger.debug("cache hit for %s at %s", self.name, endpoint)
                    record_usage(usage_of(parsed), cached=True)
                    return parsed
        price = self.price if self.price is not None else price_for(self.model)
        worst = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        worst_cost = estimate_cost(self.model, worst, price)
        # The worst case is held against every budget while the request is in flight, and
        # the real cost is recorded before it is released.
        async with reserve_budget(worst_cost, what=f"a request to {self.name} ({endpoint})"):
            key = self._key()
            data, attempts = await self._send(
                endpoint, body, base_url=base_url, key=key, tokens=prompt_tokens + completion_tokens
            )
            usage = _parse_usage(data)  # recorded even if the rest turns out unusable
            record_usage(usage, cost_usd=estimate_cost(self.model, usage, price))
        try:
            with _gc_paused():
                parsed = parse(data)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"{self.name}: the server's answer does not follow the protocol: {exc}",
                status_code=200,
                attempts=attempts,
            ) from None
        except InvalidResponseError as exc:
            raise InvalidResponseError(
                f"{self.name}: POST {public_url(_join(base_url, endpoint))}: {exc}",
                status_code=200,
                attempts=attempts,
            ) from None
        if cache is not None and key_id is not None:
            await cache.aput(key_id, data, endpoint=endpoint, model=self.model)
        return parsed

    # -- the LLM contract --------------------------------------------------------------------

    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` to ``{base_url}/chat/completions``.

        Raises:
            CapabilityError: the request asks for logprobs or a ``response_format`` this LLM
                was not configured to offer.
            BudgetExceededError: an open usage meter's budget could be exceeded (nothing sent).
            AuthenticationError: no API key for a remote server, or HTTP 401/403.
            BadRequestError: HTTP 400/404/422 and other 4xx (not retried).
            RateLimitError / ServerError / LLMTimeoutError / LLMConnectionError: that kind of
                failure on every attempt.
            InvalidResponseError: an answer that is not JSON on every attempt, or JSON that is
                not a chat completion.
        """
        self.require("chat", by="a chat request")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        if request.n != 1:
            body["n"] = request.n
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.logprobs:
            self.require("chat_logprobs", by="a chat request with logprobs")
            body["logprobs"] = True
            if request.top_logprobs is not None:
                body["top_logprobs"] = request.top_logprobs
        if request.response_format is not None:
            self.require("json_schema", by="a chat request with a response_format")
            body["response_format"] = request.response_format
        if request.stop:
            body["stop"] = list(request.stop)
        chars = sum(len(m.content) for m in request.messages)
        prompt_tokens = math.ceil(chars / 4) + _MESSAGE_OVERHEAD * len(request.messages)
        completion = self._completion_cap(request.max_tokens, prompt_tokens) * request.n
        return await self._call(
            "chat/completions",
            body,
            lambda data: _parse_chat(data, request.n),
            lambda response: response.usage,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )

    async def aprompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Score ``request.prompt`` through ``{base_url}/completions``.

        With ``prompt_logprobs_style="echo"`` the request is ``echo: true, logprobs: k,
        max_tokens: 0`` and the answer's ``logprobs`` (``tokens``, ``token_logprobs``,
        ``top_logprobs``, ``text_offset``) is checked against the prompt:

        * the tokens must spell the prompt exactly (tokens after it, generated ones, are
          dropped), else `InvalidResponseError`;
        * ``text_offset`` must be the running character position of each token. Offsets that
          are all shifted by one constant, or that count UTF-8 bytes, are recomputed from the
          tokens (the fix is unambiguous); any other mismatch raises;
        * only the first token may lack a logprob. Values shifted by one position (the first
          token has one, the last has none) raise rather than being moved, and so does a token
          whose logprob differs from its own entry in ``top_logprobs``;
        * a logprob on the first token (a server that prepends a BOS token) is dropped: the
          first token has no context in this contract.

        With ``"vllm"``, vLLM's ``prompt_logprobs`` are lined up with the prompt the same way;
        ambiguity raises.

        Raises:
            CapabilityError: ``"prompt_logprobs"`` is not in `capabilities`.
            InvalidResponseError: the answer does not line up with the prompt, as above.
            LLMError: as for `achat`.
        """
        self.require("prompt_logprobs", by="a prompt-logprob request")
        k = request.top_logprobs
        vllm = self.prompt_logprobs_style == "vllm"
        max_tokens = self.prompt_logprobs_max_tokens
        if max_tokens is None:
            max_tokens = 1 if vllm else 0
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if vllm:
            body["prompt_logprobs"] = k
        else:
            body.update(echo=True, logprobs=k)
        prompt = request.prompt
        return await self._call(
            "completions",
            body,
            lambda data: (_parse_vllm if vllm else _parse_echo)(data, prompt, k),
            lambda response: response.usage,
            prompt_tokens=math.ceil(len(prompt) / 4),
            completion_tokens=max_tokens,
        )

    def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Sync twin of `aprompt_logprobs`."""
        return run_sync(self.aprompt_logprobs(request))


def _redact(text: str, key: str | None) -> str:
    """``text`` with the API key (and any long enough piece of it) replaced by ``***``."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text
