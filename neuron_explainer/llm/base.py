"""The contract between LLM-backed components and LLM providers.

A provider plugin registers a factory that builds an `LLM` for a model name; explainers and
simulators talk to it only through `LLM.achat`, with a `ChatRequest` in and a `ChatResponse`
out (the OpenAI chat-completions shape, which most servers speak). An LLM declares what it can
do in `capabilities`; a component that needs more calls `LLM.require`, which raises
`CapabilityError` naming what is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, JsonValue, model_validator

from neuron_explainer._aio import run_sync
from neuron_explainer.errors import CapabilityError, InvalidInputError
from neuron_explainer.results import ComponentInfo

__all__ = [
    "CAPABILITIES",
    "LLM",
    "Capability",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "Message",
    "PrefixLogprobs",
    "PrefixLogprobsRequest",
    "PrefixLogprobsResponse",
    "PromptLogprobsRequest",
    "PromptLogprobsResponse",
    "PromptToken",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "required_llm",
]

Capability = Literal[
    "chat", "chat_logprobs", "prompt_logprobs", "json_schema", "prefix_logprobs", "prefill"
]
CAPABILITIES: tuple[Capability, ...] = (
    "chat",
    "chat_logprobs",
    "prompt_logprobs",
    "json_schema",
    "prefix_logprobs",
    "prefill",
)
"""What an LLM can offer: chat completions; logprobs (with top alternatives) on generated
tokens; logprobs on prompt tokens; structured output constrained by a JSON schema; the top
logprobs of the token that follows each of several prefixes of a prompt (`LLM.aprefix_logprobs`:
one short generation per prefix, e.g. llama.cpp's ``/completion`` with ``n_probs``); chat
requests whose last message is the assistant's partial text, continued rather than answered
(``prefill``: llama.cpp, vLLM and ``hf`` do it; OpenAI's API does not)."""

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Message(BaseModel):
    """One chat message."""

    model_config = _FROZEN

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """A chat-completion request, provider-neutral.

    ``logprobs``/``top_logprobs`` ask for log probabilities of the generated tokens;
    ``response_format`` is a JSON schema the output must follow (needs ``json_schema``).
    A last message with role ``"assistant"`` is a prefill (needs ``prefill``): the model
    continues that text, without an end of turn after it, and each choice's text (and its
    logprobs) holds only what it generated after it.
    """

    model_config = _FROZEN

    messages: tuple[Message, ...] = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    temperature: FiniteFloat = Field(default=0.0, ge=0.0)
    max_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, JsonValue] | None = None
    stop: tuple[str, ...] | None = None


class TopLogprob(BaseModel):
    """An alternative token at one position, with its log probability."""

    model_config = _FROZEN

    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """A generated token, its log probability and the most likely alternatives."""

    model_config = _FROZEN

    token: str
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


class Choice(BaseModel):
    """One completion of a request (there are ``n``)."""

    model_config = _FROZEN

    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


class Usage(BaseModel):
    """Tokens a call consumed."""

    model_config = _FROZEN

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)


class _Answer(BaseModel):
    """What every provider answer carries: the tokens it cost and the model that answered."""

    model_config = _FROZEN

    usage: Usage = Usage()
    model: str | None = None


class ChatResponse(_Answer):
    """The provider's answer: ``n`` choices and the token usage."""

    choices: tuple[Choice, ...] = Field(min_length=1)


class PromptLogprobsRequest(BaseModel):
    """Score a raw prompt without generating: the log probability of every prompt token and its
    most likely alternatives (the old completions API's ``echo`` + ``logprobs``, vLLM's
    ``prompt_logprobs``). Needs the ``prompt_logprobs`` capability."""

    model_config = _FROZEN

    prompt: str = Field(min_length=1)
    top_logprobs: int = Field(default=15, ge=1, le=20)


class PromptToken(BaseModel):
    """One token of a scored prompt.

    ``offset`` is the character offset of the token's text in the prompt; ``logprob`` and
    ``top_logprobs`` are the model's prediction *for this position* given every earlier token
    (``None``/empty for the first token, which has no context).
    """

    model_config = _FROZEN

    token: str
    offset: int = Field(ge=0)
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


class PromptLogprobsResponse(_Answer):
    """The prompt's tokens in order (their texts concatenate to the prompt) and the usage."""

    tokens: tuple[PromptToken, ...] = Field(min_length=1)


class PrefixLogprobsRequest(BaseModel):
    """Read the model's next-token distribution after several prefixes of one raw prompt: for
    each character offset, the top ``top_logprobs`` alternatives of the token that would follow
    ``prompt[:offset]`` (generated, not scored: a server answers one short generation per
    prefix, e.g. llama.cpp's ``/completion`` with ``n_probs``, reusing its cache of the prompt
    before). Needs the ``prefix_logprobs`` capability.

    ``offsets`` are strictly increasing and within ``1..len(prompt)``, so each prefix extends
    the one before (which is what lets a server's prompt cache evaluate only the new tokens).

    Raises:
        ValidationError: offsets that are empty, not increasing or outside the prompt.
    """

    model_config = _FROZEN

    prompt: str = Field(min_length=1)
    offsets: tuple[int, ...] = Field(min_length=1)
    top_logprobs: int = Field(default=15, ge=1, le=20)

    @model_validator(mode="after")
    def _check_offsets(self) -> PrefixLogprobsRequest:
        previous = 0
        for offset in self.offsets:
            if not previous < offset <= len(self.prompt):
                raise ValueError(
                    f"offsets must increase strictly within 1..{len(self.prompt)} (the prompt's "
                    f"length); got {offset} after {previous}"
                )
            previous = offset
        return self


class PrefixLogprobs(BaseModel):
    """The next-token alternatives after ``prompt[:offset]``, most likely first."""

    model_config = _FROZEN

    offset: int = Field(ge=1)
    top_logprobs: tuple[TopLogprob, ...] = Field(min_length=1)


class PrefixLogprobsResponse(_Answer):
    """One `PrefixLogprobs` per requested offset, in order, and the usage (``prompt_tokens``
    counts every prefix's tokens; ``cached_tokens`` those the server took from its cache)."""

    prefixes: tuple[PrefixLogprobs, ...] = Field(min_length=1)


class LLM(ABC):
    """A chat model behind some provider. Implement `achat`.

    Attributes:
        provider: the provider's registry name (``"openai"``, ``"acme"``, ...).
        model: the model name within the provider.
        capabilities: what the model offers (see `CAPABILITIES`).
    """

    provider: str = ""
    capabilities: frozenset[Capability] = frozenset({"chat"})

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` and return the response.

        Raises:
            LLMError: the call failed (network, server, authentication, rate limit); providers
                translate their client's errors into it or a subclass.
        """

    def chat(self, request: ChatRequest) -> ChatResponse:
        """Sync twin of `achat`."""
        return run_sync(self.achat(request))

    async def aprompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Score ``request.prompt`` token by token without generating (see
        `PromptLogprobsRequest`). Override it and add ``"prompt_logprobs"`` to `capabilities`.

        Raises:
            CapabilityError: this LLM does not offer ``prompt_logprobs`` (the default).
            LLMError: the call failed.
        """
        self.require("prompt_logprobs", by="a prompt-logprob request")
        raise NotImplementedError  # pragma: no cover - a provider that claims it overrides this

    async def aprefix_logprobs(self, request: PrefixLogprobsRequest) -> PrefixLogprobsResponse:
        """The top logprobs of the token that follows each prefix ``request.prompt[:offset]``
        (see `PrefixLogprobsRequest`). Override it and add ``"prefix_logprobs"`` to
        `capabilities`.

        Raises:
            CapabilityError: this LLM does not offer ``prefix_logprobs`` (the default).
            LLMError: the call failed.
        """
        self.require("prefix_logprobs", by="a prefix-logprob request")
        raise NotImplementedError  # pragma: no cover - a provider that claims it overrides this

    def prefix_logprobs(self, request: PrefixLogprobsRequest) -> PrefixLogprobsResponse:
        """Sync twin of `aprefix_logprobs`."""
        return run_sync(self.aprefix_logprobs(request))

    async def acomplete(self, messages: Sequence[Message], **options: Any) -> ChatResponse:
        """Shortcut for ``achat(ChatRequest(messages=messages, **options))``."""
        return await self.achat(ChatRequest(messages=tuple(messages), **options))

    def require(self, capability: Capability, *, by: str) -> None:
        """Raise `CapabilityError` unless this LLM offers ``capability``.

        Args:
            capability: what is needed.
            by: who needs it, for the message (e.g. ``"the JSON simulator"``).
        """
        if capability not in self.capabilities:
            offered = ", ".join(sorted(self.capabilities)) or "nothing"
            raise CapabilityError(
                f"{by} needs {capability!r}, which {self.name} does not offer (it offers: "
                f"{offered}); choose another simulator or a model that supports it"
            )

    @property
    def name(self) -> str:
        """``provider:model``."""
        return f"{self.provider or type(self).__name__}:{self.model}"

    @property
    def info(self) -> ComponentInfo:
        """Recorded in results that this LLM helped produce."""
        return ComponentInfo(name=self.name, settings={"capabilities": sorted(self.capabilities)})


def required_llm(llm: LLM | None, *, by: str, kind: str, offering: str = "") -> LLM:
    """``llm``, checked to be there: what an LLM-backed component's constructor calls first.

    Args:
        llm: the ``llm=`` the component was given.
        by: the component, for the message (``"the 'llm-json' simulator"``).
        kind: ``"explainer"`` or ``"simulator"``: how users name one (``simulator=...``).
        offering: what the LLM must offer, for the message (``"chat logprobs"``).

    Raises:
        InvalidInputError: ``llm`` is ``None``; the message says how to name or pass one.
    """
    if llm is None:
        one = f" (one that offers {offering})" if offering else ""
        raise InvalidInputError(
            f"{by} needs an LLM: name it as 'provider:model' (e.g. {kind}='openai:gpt-4o-mini') "
            f"or pass llm=...{one}"
        )
    return llm
