"""Sending components to the workers: `ship` pickles them (with cloudpickle) so that each worker
rebuilds its own copy; `unship` reads them back.

Most components pickle as they are. LLM objects do not travel as they are; each is rebuilt on
the worker from its settings:

* an `OpenAILLM` (or `LlamaCppLLM`) with its options: the base URL as the driver resolves it
  (``base_url=``, else ``OPENAI_BASE_URL`` here), the API key only if it was given as
  ``api_key=`` (else each worker reads ``OPENAI_API_KEY`` from its own environment), rate
  limits, timeout, retries, price, capabilities, cache file, transport;
* an `HFLLM` from its model path (``HFLLM.model``) and options, loaded once per worker and run
  on the worker's own device (its CUDA device when it has one).
"""

from __future__ import annotations

import asyncio
import io
import pickle
import sys
from collections.abc import Callable, Mapping
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm.cache import ResponseCache
from neuron_explainer.llm.openai import OpenAILLM

__all__ = ["Reducer", "ship", "unship"]

Reducer = Callable[[Any], tuple[Any, ...]]
"""``obj -> (callable, args)``: how an object of some type is rebuilt (as ``__reduce__``)."""


def _rebuild(cls: type, model: str, options: dict[str, Any]) -> Any:
    return cls(model, **options)


def _openai(llm: OpenAILLM) -> tuple[Any, ...]:
    client = llm.client
    limiter = client.limiter
    given = llm.settings.given
    cache: Any = llm._cache_option
    if isinstance(cache, ResponseCache):
        cache = str(cache.path)
    options = {
        "api_key": None if llm._api_key is None else llm._api_key.value,
        "base_url": llm.base_url,
        "timeout": client.timeout if "timeout" in given else None,
        "max_concurrency": client.max_concurrency if "max_concurrency" in given else None,
        "requests_per_minute": limiter.requests.rate_per_minute if limiter.requests else None,
        "tokens_per_minute": limiter.tokens.rate_per_minute if limiter.tokens else None,
        "max_retries": client.retry.max_retries,
        "retry_max_wait": client.retry.max_wait,
        "retry_base_wait": client.retry.base_wait,
        "timeout_retries": client.retry.timeout_retries,
        "stream": llm.stream,
        "detect_slots": llm.settings.detect_slots,
        "cache": cache,
        "price": llm.price,
        "capabilities": llm.capabilities,
        "organization": llm.organization,
        "context_window": llm.context_window,
        "extra_headers": llm.extra_headers,
        "prompt_logprobs_style": llm.prompt_logprobs_style,
        "prompt_logprobs_max_tokens": llm.prompt_logprobs_max_tokens,
        "sleep": None if client.sleep is asyncio.sleep else client.sleep,
        "transport": client._transport,
    }
    return _rebuild, (type(llm), llm.model, options)


def _hf(llm: Any) -> tuple[Any, ...]:
    options = {
        "dtype": llm.dtype,
        "max_batch_tokens": llm.max_batch_tokens,
        "max_new_tokens": llm.max_new_tokens,
        "seed": llm.seed,
        "top_p": llm.top_p,
        "top_k": llm.top_k,
        "chat_template": getattr(llm.tokenizer, "chat_template", None),
        "prefix_cache": llm.engine.prefix_cache,
    }
    return _rebuild, (type(llm), llm.model, options)


def _dump(obj: Any, file: io.BytesIO, reducers: Mapping[type, Reducer]) -> None:
    import cloudpickle  # type: ignore[import-untyped]

    class Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]
        def reducer_override(self, value: Any) -> Any:
            for kind, reduce in reducers.items():
                if isinstance(value, kind):
                    return reduce(value)
            return super().reducer_override(value)

    Pickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)


def _reducers(extra: Mapping[type, Reducer] | None) -> dict[type, Reducer]:
    found: dict[type, Reducer] = {OpenAILLM: _openai}
    hf = sys.modules.get("neuron_explainer.llm.hf")  # an HFLLM exists only if it was imported
    if hf is not None:
        found[hf.HFLLM] = _hf
    found.update(extra or {})
    return found


def ship(obj: Any, *, what: str, reducers: Mapping[type, Reducer] | None = None) -> bytes:
    """``obj`` pickled for the workers, LLMs as their settings (see the module).

    Args:
        obj: what to send.
        what: what it is, for the error message (``"the explainer"``).
        reducers: more ``{type: reducer}`` rules, tried first.

    Raises:
        InvalidInputError: ``obj`` cannot be pickled (the message names ``what`` and the
            cause, and suggests giving components by name).
    """
    buffer = io.BytesIO()
    try:
        _dump(obj, buffer, _reducers(reducers))
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{what} cannot be sent to the workers ({type(exc).__name__}: {exc}); give "
            "components by their registered names (each worker builds its own), or make "
            "them picklable"
        ) from exc
    return buffer.getvalue()


def unship(data: bytes) -> Any:
    """What `ship` packed, rebuilt in this process (LLMs built anew)."""
    return pickle.loads(data)
