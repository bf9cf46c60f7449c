"""Reading an answer of `neuron_explainer.llm.openai.OpenAILLM`: from the response cache (a hit
is counted in the usage meters), or as the server sent it, with a parse failure turned into one
`InvalidResponseError` that names the request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from neuron_explainer.errors import InvalidResponseError
from neuron_explainer.llm.base import ChatResponse, PrefixLogprobsResponse, PromptLogprobsResponse
from neuron_explainer.llm.cache import ResponseCache
from neuron_explainer.llm.transport import gc_paused
from neuron_explainer.llm.usage import record_usage

_R = TypeVar("_R", ChatResponse, PromptLogprobsResponse, PrefixLogprobsResponse)

logger = logging.getLogger("neuron_explainer.llm.openai")


async def cached_answer(
    cache: ResponseCache, key_id: str, parse: Callable[[dict[str, Any]], _R], name: str
) -> _R | None:
    """The stored answer under ``key_id``, parsed and counted as a hit, if there is a usable
    one (an entry that no longer parses is ignored)."""
    stored = await cache.aget(key_id)
    if stored is None:
        return None
    try:
        parsed = parse(stored)
    except (InvalidResponseError, ValidationError):
        logger.debug("ignoring an unusable cached answer for %s", name)
        return None
    logger.debug("cache hit for %s", name)
    record_usage(parsed.usage, cached=True)
    return parsed


def parse_answer(
    data: dict[str, Any], parse: Callable[[dict[str, Any]], _R], where: str, attempts: int
) -> _R:
    """``parse(data)`` with the garbage collector paused.

    Raises:
        InvalidResponseError: the answer is not of the protocol's form; the message starts with
            ``where`` (``"openai:m: POST <url>"``), and ``attempts`` is recorded.
    """
    try:
        with gc_paused():
            return parse(data)
    except ValidationError as exc:
        name = where.partition(": POST")[0]
        raise InvalidResponseError(
            f"{name}: the server's answer does not follow the protocol: {exc}",
            status_code=200,
            attempts=attempts,
        ) from None
    except InvalidResponseError as exc:
        raise InvalidResponseError(f"{where}: {exc}", status_code=200, attempts=attempts) from None
