"""What a chat request needs of its LLM, and prefills: a last message that is the assistant's
partial text, which the model continues.

`check_chat_request` is the check every built-in provider runs before a chat request: chat
itself, ``chat_logprobs`` for logprobs, ``json_schema`` for a ``response_format``, and
``prefill`` for a request whose last message has role ``"assistant"``. OpenAI's own API (and
Azure OpenAI) answer such a request with a new message instead of continuing it, so it is
refused there even when ``prefill`` was declared.

`without_prefill` reads an answer back: llama.cpp repeats the prefill at the start of a
non-streamed answer's text (its streamed deltas, and vLLM's answers, hold only the new text),
so the text is the continuation only, as the contract says.
"""

from __future__ import annotations

import httpx

from neuron_explainer.errors import CapabilityError
from neuron_explainer.llm.base import LLM, ChatRequest, TokenLogprob

__all__ = ["check_chat_request", "prefill_of", "without_prefill"]

_NO_PREFILL_HOSTS = ("api.openai.com",)
_NO_PREFILL_SUFFIXES = (".openai.azure.com",)


def prefill_of(request: ChatRequest) -> str | None:
    """The assistant's partial text that ``request`` ends with, or ``None``."""
    last = request.messages[-1]
    return last.content if last.role == "assistant" else None


def _continues_assistant_messages(base_url: str) -> bool:
    host = (httpx.URL(base_url).host or "").lower()
    return host not in _NO_PREFILL_HOSTS and not host.endswith(_NO_PREFILL_SUFFIXES)


def check_chat_request(llm: LLM, request: ChatRequest, base_url: str | None = None) -> None:
    """Raise unless ``llm`` (sending to ``base_url``, if it is a server) can answer
    ``request``.

    Raises:
        CapabilityError: it lacks ``chat``; or the request asks for logprobs without
            ``chat_logprobs``, a ``response_format`` without ``json_schema``, or ends with an
            assistant message without ``prefill``, or toward OpenAI's own API, which has none.
    """
    llm.require("chat", by="a chat request")
    if request.logprobs:
        llm.require("chat_logprobs", by="a chat request with logprobs")
    if request.response_format is not None:
        llm.require("json_schema", by="a chat request with a response_format")
    if prefill_of(request) is None:
        return
    by = "a chat request ending with the assistant's partial text (a prefill)"
    llm.require("prefill", by=by)
    if base_url is not None and not _continues_assistant_messages(base_url):
        host = httpx.URL(base_url).host
        raise CapabilityError(
            f"{by} cannot be sent to {llm.name} at {host}: OpenAI's API answers a final "
            "assistant message with a new message instead of continuing it; use a server that "
            "continues it (llama.cpp, vLLM) or the hf provider, or a simulator that needs no "
            "prefill"
        )


def without_prefill(
    text: str, logprobs: tuple[TokenLogprob, ...] | None, prefill: str | None, *, streamed: bool
) -> str:
    """The text a choice generated after ``prefill``: ``text`` without a repeated prefill.

    A streamed answer's text is what was generated. A whole one that starts with the prefill
    repeats it (llama.cpp) unless its logprobs say otherwise: when they spell ``text`` itself,
    nothing was repeated; when they spell the rest, the prefill is dropped. Without logprobs a
    text starting with the prefill is taken to repeat it.
    """
    if not prefill or streamed or not text.startswith(prefill):
        return text
    if logprobs is not None:
        generated = "".join(p.token for p in logprobs)
        if generated != text[len(prefill) :]:
            return text
    return text[len(prefill) :]
