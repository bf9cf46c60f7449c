"""llama.cpp's native ``POST /completion``: the top logprobs of the token that follows each
prefix of a prompt (the ``prefix_logprobs`` capability, `LLM.aprefix_logprobs`).

llama.cpp's server scores no prompt (it ignores ``echo`` and has no ``prompt_logprobs``), but
its native endpoint returns, with ``n_probs: k``, the top ``k`` alternatives of each generated
token, computed from the model's full softmax before sampling. So each prefix is one request
generating one token (``n_predict: 1``, greedy), and ``cache_prompt: true`` keeps the prompt
evaluated so far in the server's slot: the prefix up to offset ``k + 1`` starts with the one up
to offset ``k``, so each request evaluates only the tokens added since the last.

The prefixes of one request are sent one after another (the next reuses the cache the previous
one left). Each call to `prefix_logprobs` holds a place in a per-backend gate as wide as its
concurrency (the server's slot count, when it said), so no more sequences run at once than the
server has slots: a slot serves one sequence's prefixes in a row, and a sequence sent in between
would evict them from its cache.

Answers of three forms are read, newest first: ``completion_probabilities[0].top_logprobs``
(``{"token", "logprob"}``), ``top_probs`` (with ``post_sampling_probs``, ``{"token",
"prob"}``) and the older ``probs`` (``{"tok_str", "prob"}``). Usage comes from the answer's
``tokens_evaluated``, ``tokens_predicted`` and ``timings.cache_n`` (the tokens taken from the
cache).
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import BadRequestError
from neuron_explainer.llm._answers import cached_answer, parse_answer
from neuron_explainer.llm._settings import request_headers, server_root
from neuron_explainer.llm.base import (
    PrefixLogprobs,
    PrefixLogprobsRequest,
    PrefixLogprobsResponse,
    TopLogprob,
    Usage,
)
from neuron_explainer.llm.cache import cache_key, public_url
from neuron_explainer.llm.protocol import _bad, _field, _model_of, _number
from neuron_explainer.llm.usage import estimate_cost, price_for, record_usage, reserve_budget

if TYPE_CHECKING:
    from neuron_explainer.llm.openai import OpenAILLM

__all__ = ["ENDPOINT", "completion_body", "native_usage", "parse_completion", "prefix_logprobs"]

ENDPOINT = "completion"
"""llama.cpp's native completion endpoint, at the server's root (not under ``/v1``)."""

_gates: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
_gates_lock = threading.Lock()


def completion_body(model: str, prompt: str, k: int) -> dict[str, Any]:
    """The body asking for the top ``k`` alternatives of the one token after ``prompt``
    (greedy, the prompt kept in the server's cache)."""
    return {
        "model": model,
        "prompt": prompt,
        "n_predict": 1,
        "n_probs": k,
        "temperature": 0.0,
        "cache_prompt": True,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def native_usage(data: Any) -> Usage:
    """The usage of a native answer: ``tokens_evaluated`` (the prompt's tokens, cached ones
    included), ``timings.cache_n`` (those taken from the cache) and ``tokens_predicted``;
    missing or odd fields count as 0."""
    if not isinstance(data, dict):
        return Usage()
    timings = data.get("timings")
    cached = _count(timings.get("cache_n")) if isinstance(timings, dict) else 0
    prompt = _count(data.get("tokens_evaluated"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_count(data.get("tokens_predicted")),
        cached_tokens=min(cached, prompt),
    )


_FORMS = (
    ("top_logprobs", "token", "logprob"),
    ("top_probs", "token", "prob"),
    ("probs", "tok_str", "prob"),
)


def _alternatives(first: Any, k: int) -> tuple[TopLogprob, ...]:
    """The alternatives of the first generated token, in whichever form the build sends."""
    where = "completion_probabilities[0]"
    form = next((f for f in _FORMS if isinstance(first, dict) and f[0] in first), None)
    if form is None:
        _bad(f"{where} has none of top_logprobs, top_probs or probs")
    name, token_key, value_key = form
    items = _field(first, name, list, where)
    pairs = []
    for j, item in enumerate(items):
        token = _field(item, token_key, str, f"{where}.{name}[{j}]")
        value = _number(item.get(value_key), f"{where}.{name}[{j}].{value_key}")
        if value_key == "prob":
            if value <= 0:
                continue  # a token the model rules out
            value = math.log(min(value, 1.0))
        pairs.append((token, value))
    if not pairs:
        _bad(f"{where}.{name} is empty")
    pairs.sort(key=lambda pair: -pair[1])
    return tuple(TopLogprob(token=t, logprob=v) for t, v in pairs[:k])


def parse_completion(data: dict[str, Any], offset: int, k: int) -> PrefixLogprobsResponse:
    """The alternatives after one prefix (ending at ``offset``) from a native answer to
    `completion_body`.

    Raises:
        InvalidResponseError: the answer has no ``completion_probabilities`` (a server that
            does not know ``n_probs``) or they are not of a known form.
    """
    probabilities = data.get("completion_probabilities")
    if not isinstance(probabilities, list) or not probabilities:
        _bad(
            "no completion_probabilities in the answer to /completion with n_probs: the server "
            "does not return token probabilities (llama.cpp's server does)"
        )
    top = _alternatives(probabilities[0], k)
    return PrefixLogprobsResponse(
        prefixes=(PrefixLogprobs(offset=offset, top_logprobs=top),),
        usage=native_usage(data),
        model=_model_of(data),
    )


def _gate(llm: OpenAILLM) -> asyncio.Semaphore:
    """This backend's gate on the running event loop, as wide as its settled concurrency."""
    loop = asyncio.get_running_loop()
    with _gates_lock:
        gates = _gates.setdefault(llm, weakref.WeakKeyDictionary())
        gate = gates.get(loop)
        if gate is None:
            gate = gates[loop] = asyncio.Semaphore(max(1, int(llm.max_concurrency)))
        return gate


async def _one(llm: OpenAILLM, base_url: str, prompt: str, offset: int, k: int) -> Any:
    """One native request (from the response cache when it holds the answer)."""
    url = server_root(base_url) + "/" + ENDPOINT
    body = completion_body(llm.model, prompt, k)
    cache = llm.cache
    key_id = cache_key(ENDPOINT, base_url, llm.model, body) if cache is not None else ""

    def parse(data: dict[str, Any]) -> PrefixLogprobsResponse:
        return parse_completion(data, offset, k)

    if cache is not None:
        hit = await cached_answer(cache, key_id, parse, llm.name)
        if hit is not None:
            return hit
    price = llm.price if llm.price is not None else price_for(llm.model)
    estimate = math.ceil(len(prompt) / 4)
    worst = estimate_cost(llm.model, Usage(prompt_tokens=estimate, completion_tokens=1), price)
    async with reserve_budget(worst, what=f"a request to {llm.name} (/{ENDPOINT})"):
        key = llm._key()
        headers = request_headers(llm, base_url, key)
        try:
            data, attempts = await llm.client.post(
                url, body, headers=headers, tokens=estimate + 1, secret=key
            )
        except BadRequestError as exc:
            if exc.status_code not in (404, 405):
                raise
            raise BadRequestError(
                f"{llm.name}: the server at {public_url(server_root(base_url))} has no llama.cpp "
                f"/{ENDPOINT} endpoint (HTTP {exc.status_code}), which prefix logprobs read: "
                "point the backend at a llama.cpp server, or use prompt logprobs on a server "
                "that scores prompts (vLLM: capabilities including 'prompt_logprobs')",
                status_code=exc.status_code,
                attempts=exc.attempts,
            ) from None
        usage = native_usage(data)
        record_usage(usage, cost_usd=estimate_cost(llm.model, usage, price))
    parsed = parse_answer(data, parse, f"{llm.name}: POST {public_url(url)}", attempts)
    if cache is not None:
        await cache.aput(key_id, data, endpoint=ENDPOINT, model=llm.model)
    return parsed


async def prefix_logprobs(llm: OpenAILLM, request: PrefixLogprobsRequest) -> PrefixLogprobsResponse:
    """`OpenAILLM.aprefix_logprobs`: one native ``/completion`` request per offset, in order,
    each generating one token with ``n_probs`` and ``cache_prompt`` (see the module docstring).

    Raises:
        CapabilityError: the backend does not offer ``prefix_logprobs``.
        BadRequestError: the server has no ``/completion`` endpoint (not llama.cpp), or
            refused the request.
        InvalidResponseError: an answer without token probabilities.
        LLMError: as for `OpenAILLM.achat`.
    """
    llm.require("prefix_logprobs", by="a prefix-logprob request")
    base_url = llm.base_url
    await llm.settings.settle(base_url, request_headers(llm, base_url, llm._key()))
    answers: list[PrefixLogprobsResponse] = []
    async with _gate(llm):
        for offset in request.offsets:
            prompt = request.prompt[:offset]
            answers.append(await _one(llm, base_url, prompt, offset, request.top_logprobs))
    usage = Usage(
        prompt_tokens=sum(a.usage.prompt_tokens for a in answers),
        completion_tokens=sum(a.usage.completion_tokens for a in answers),
        cached_tokens=sum(a.usage.cached_tokens for a in answers),
    )
    return PrefixLogprobsResponse(
        prefixes=tuple(p for a in answers for p in a.prefixes),
        usage=usage,
        model=answers[-1].model,
    )
