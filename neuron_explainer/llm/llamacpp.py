"""The ``llamacpp`` provider: `LlamaCppLLM`, an `OpenAILLM` that knows it talks to llama.cpp's
server (``llama-server``).

llama.cpp speaks the OpenAI protocol for chat, with logprobs, JSON-schema output (its grammar
sampler) and prefills (a final assistant message is continued), so `LlamaCppLLM` sends chat
requests exactly as `OpenAILLM` does. What it adds is a declared capability llama.cpp has and
the OpenAI protocol lacks: ``prefix_logprobs``, the top logprobs of the token after each prefix
of a prompt, from its native ``POST /completion`` with ``n_probs`` and ``cache_prompt`` (see
`neuron_explainer.llm._llamacpp`). That is what the paper's all-at-once simulator needs on a
server that cannot score a prompt.

Why a provider rather than detecting llama.cpp: components check capabilities when they are
built (`LLM.require`), before anything is sent, and results record them; a backend that found
out what it offers only at its first request (``GET /props``) would offer one thing when checked
and another when used. ``llamacpp:MODEL`` says it up front and sends nothing until asked.
`OpenAILLM(..., capabilities={..., "prefix_logprobs"})` pointed at a llama.cpp server does the
same.
"""

from __future__ import annotations

import inspect
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm._settings import environment_base_url
from neuron_explainer.llm.base import Capability
from neuron_explainer.llm.openai import OpenAILLM

__all__ = ["DEFAULT_LLAMACPP_BASE_URL", "LLAMACPP_CAPABILITIES", "LlamaCppLLM"]

DEFAULT_LLAMACPP_BASE_URL = "http://127.0.0.1:8080/v1"
"""Where requests go without ``base_url=`` or ``OPENAI_BASE_URL``: ``llama-server``'s default
address."""
LLAMACPP_CAPABILITIES: frozenset[Capability] = frozenset(
    {"chat", "chat_logprobs", "json_schema", "prefill", "prefix_logprobs"}
)
"""What a `LlamaCppLLM` offers unless told otherwise."""


class LlamaCppLLM(OpenAILLM):
    """A model behind llama.cpp's server (provider ``"llamacpp"``): an `OpenAILLM` offering
    `LLAMACPP_CAPABILITIES`, ``prefix_logprobs`` among them (`aprefix_logprobs`).

    ``default_registry().llm("llamacpp:qwen")`` builds one; every option of `OpenAILLM` is
    accepted. Without ``base_url=`` the server is ``OPENAI_BASE_URL``, else
    `DEFAULT_LLAMACPP_BASE_URL`; a server on this machine or a private network needs no key
    and is asked for its slot count (``GET /props``) before the first request.

    Raises:
        InvalidInputError: as for `OpenAILLM`, or an option it does not take.
    """

    provider = "llamacpp"

    def __init__(
        self,
        model: str,
        *,
        capabilities: frozenset[Capability] | set[Capability] | None = None,
        **options: Any,
    ) -> None:
        try:
            inspect.signature(OpenAILLM).bind(model, **options)
        except TypeError as exc:
            raise InvalidInputError(f"LlamaCppLLM does not accept these options: {exc}") from None
        offered = LLAMACPP_CAPABILITIES if capabilities is None else frozenset(capabilities)
        super().__init__(model, capabilities=offered, **options)

    def __repr__(self) -> str:
        return super().__repr__().replace("OpenAILLM", "LlamaCppLLM", 1)

    @property
    def base_url(self) -> str:
        """The base URL requests go to: ``base_url=``, else ``OPENAI_BASE_URL`` (unless empty),
        else `DEFAULT_LLAMACPP_BASE_URL` (the environment is read each time).

        Raises:
            InvalidInputError: ``OPENAI_BASE_URL`` holds an unusable URL.
        """
        if self._base_url is not None:
            return self._base_url
        return environment_base_url() or DEFAULT_LLAMACPP_BASE_URL
