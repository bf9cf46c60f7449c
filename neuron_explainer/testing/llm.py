"""A scripted stand-in for an LLM provider: canned answers, every request recorded.

* `ScriptedLLM`: an `LLM` that answers requests from a script, in order.
* `make_response`: build a `ChatResponse`, with canned token logprobs and usage if wanted.
* `make_prompt_response`: build a `PromptLogprobsResponse` for a prompt, split into tokens with
  their offsets, with canned top logprobs where wanted (for ``aprompt_logprobs`` scripts).
* `FakeProvider`: a plugin registering the LLM provider ``fake``, so that ``"fake:any-model"``
  resolves to views of one `ScriptedLLM` (one script, one request log).
* `ScriptExhaustedError`: a request arrived after the script ran out and there is no default.

The response builders (`make_response`, `make_prompt_response`, `split_text`) are defined in
``testing/_responses.py`` and import from here or from `neuron_explainer.testing`.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeAlias, TypeVar

from neuron_explainer.errors import CapabilityError, InvalidInputError, NeuronExplainerError
from neuron_explainer.llm.base import (
    CAPABILITIES,
    LLM,
    Capability,
    ChatRequest,
    ChatResponse,
    Choice,
    PromptLogprobsRequest,
    PromptLogprobsResponse,
    Usage,
)
from neuron_explainer.llm.usage import record_usage
from neuron_explainer.plugins.hookspecs import Register, hookimpl
from neuron_explainer.testing._responses import make_prompt_response as make_prompt_response
from neuron_explainer.testing._responses import make_response as make_response
from neuron_explainer.testing._responses import split_text as split_text

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_CAPABILITIES",
    "Answer",
    "FakeProvider",
    "PromptAnswer",
    "PromptScriptItem",
    "ScriptExhaustedError",
    "ScriptItem",
    "ScriptedLLM",
    "make_prompt_response",
    "make_response",
    "split_text",
]

DEFAULT_CAPABILITIES: frozenset[Capability] = frozenset({"chat", "chat_logprobs", "json_schema"})
"""What a `ScriptedLLM` offers unless told otherwise."""

Answer: TypeAlias = (
    str | ChatResponse | Callable[[ChatRequest], str | ChatResponse | Awaitable[str | ChatResponse]]
)
"""A completion text, a whole response, or a function of the request returning either."""

ScriptItem: TypeAlias = Answer | BaseException | type[BaseException]
"""One scripted answer; an exception (instance or class) is raised when its turn comes."""

PromptAnswer: TypeAlias = (
    PromptLogprobsResponse
    | Callable[[PromptLogprobsRequest], PromptLogprobsResponse | Awaitable[PromptLogprobsResponse]]
)
"""A scored prompt, or a function of the request returning one (see `make_prompt_response`)."""

PromptScriptItem: TypeAlias = PromptAnswer | BaseException | type[BaseException]
"""One scripted answer to ``aprompt_logprobs``; an exception is raised when its turn comes."""


class ScriptExhaustedError(NeuronExplainerError):
    """A `ScriptedLLM` got more requests than its script has answers, and it has no default."""


def _check_capabilities(capabilities: Iterable[str]) -> frozenset[Capability]:
    chosen = frozenset(capabilities)
    unknown = sorted(chosen - set(CAPABILITIES))
    if unknown:
        raise InvalidInputError(
            f"unknown capabilities {unknown}; choose from {', '.join(CAPABILITIES)}"
        )
    return chosen  # type: ignore[return-value]


async def _play(item: object, request: object, where: str) -> object:
    """What a script ``item`` answers to ``request``: a scripted exception (an instance or a
    class) is raised, a callable is called with the request (and awaited if it returns an
    awaitable), anything else is the answer as it is.

    Raises:
        InvalidInputError: ``item`` is a class that is not an exception.
        Exception: the scripted exception, or whatever the callable raised.
    """
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, type):
        if issubclass(item, BaseException):
            raise item()
        raise InvalidInputError(
            f"{where} item {item.__name__} is a class; give an answer, an exception or an "
            "exception class"
        )
    answer = item(request) if callable(item) else item
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


class _Script:
    """The state views of one `ScriptedLLM` share: answers left, default, request log."""

    def __init__(
        self,
        items: Iterable[ScriptItem],
        default: ScriptItem | None,
        capabilities: frozenset[Capability],
    ) -> None:
        self.items: deque[ScriptItem] = deque(items)
        self.default = default
        self.capabilities = capabilities
        self.requests: list[ChatRequest] = []
        self.answered = 0
        self.prompt_items: deque[PromptScriptItem] = deque()
        self.prompt_default: PromptScriptItem | None = None
        self.prompt_requests: list[PromptLogprobsRequest] = []
        self.lock = threading.Lock()


class _Shared(Generic[_T]):
    """An attribute of a `ScriptedLLM` kept in its script, so every view of the LLM (and every
    copy the registry hands out) reads and writes the same value."""

    def __init__(self, field: str, *, settable: bool = False) -> None:
        self.field, self.settable = field, settable

    def __get__(self, llm: Any, owner: Any = None) -> _T:
        if llm is None:
            return self  # type: ignore[return-value]  # the class attribute itself
        value: _T = getattr(llm._script, self.field)
        return value

    def __set__(self, llm: Any, value: _T) -> None:
        if not self.settable:
            raise AttributeError(f"ScriptedLLM.{self.field} cannot be assigned")
        setattr(llm._script, self.field, value)


class ScriptedLLM(LLM):
    """An `LLM` that answers each request with the next item of its script.

    Script items are used once each, in order:

    * a ``str``: a response with that text (repeated for ``n`` choices, no logprobs, zero usage);
    * a `ChatResponse`: returned as it is (build one with `make_response`);
    * a callable ``(ChatRequest) -> str | ChatResponse`` (or an ``async`` one): called with
      the request, its result used as above;
    * an exception instance (or class): raised, to test error handling.

    When the script is used up, ``default`` (any of the above, reused) answers every further
    request; with no default, a request raises `ScriptExhaustedError`.

    Prompt-logprob requests (`aprompt_logprobs`) are answered from a script of their own,
    ``prompt_script`` then ``prompt_default``: each item a `PromptLogprobsResponse` (build one
    with `make_prompt_response`), a callable of the `PromptLogprobsRequest` returning one (sync
    or async), or an exception. They are logged in `prompt_requests`.

    The LLM enforces its ``capabilities`` as a strict backend would: a request asking for
    ``logprobs`` without ``"chat_logprobs"``, or a ``response_format`` without
    ``"json_schema"``, or any request without ``"chat"``, raises `CapabilityError` (and
    consumes no script item), so a component that forgets `LLM.require` is caught.

    Every request received (refused ones included) is appended to `requests`, in the order
    the calls were made; the bookkeeping is done under a lock before any ``await``, so
    ``asyncio.gather`` and threads are safe.

    Args:
        model: the model name (the LLM's name is ``fake:<model>``).
        script: the answers, in order.
        default: the answer once the script is used up (``None``: raise instead).
        capabilities: what the LLM offers (default `DEFAULT_CAPABILITIES`, plus
            ``"prompt_logprobs"`` when a prompt script or default is given).
        prompt_script: the answers to prompt-logprob requests, in order.
        prompt_default: the answer to prompt-logprob requests once ``prompt_script`` is used up.

    Raises:
        InvalidInputError: an unknown capability.
    """

    provider = "fake"

    def __init__(
        self,
        model: str = "scripted",
        script: Iterable[ScriptItem] = (),
        *,
        default: ScriptItem | None = None,
        capabilities: Iterable[Capability] | None = None,
        prompt_script: Iterable[PromptScriptItem] = (),
        prompt_default: PromptScriptItem | None = None,
    ) -> None:
        super().__init__(model)
        prompt_items = list(prompt_script)
        if capabilities is None:
            scored = bool(prompt_items) or prompt_default is not None
            capabilities = DEFAULT_CAPABILITIES | ({"prompt_logprobs"} if scored else set())
        self._script = _Script(script, default, _check_capabilities(capabilities))
        self._script.prompt_items.extend(prompt_items)
        self._script.prompt_default = prompt_default

    response = staticmethod(make_response)
    """Same as `make_response`: ``ScriptedLLM.response("7", logprobs=[{"7": -0.1}])``."""

    prompt_response = staticmethod(make_prompt_response)
    """Same as `make_prompt_response`."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this LLM offers; assignable (``llm.capabilities = {"chat"}``), shared by views."""
        return self._script.capabilities

    @capabilities.setter
    def capabilities(self, value: Iterable[Capability]) -> None:
        self._script.capabilities = _check_capabilities(value)

    default = _Shared[ScriptItem | None]("default", settable=True)
    """The answer once the script is used up; assignable, shared by views."""

    requests = _Shared[list[ChatRequest]]("requests")
    """Every request received so far, in order (shared by all views)."""

    prompt_default = _Shared[PromptScriptItem | None]("prompt_default", settable=True)
    """The answer to prompt-logprob requests once their script is used up; assignable."""

    prompt_requests = _Shared[list[PromptLogprobsRequest]]("prompt_requests")
    """Every prompt-logprob request received so far, in order (shared by all views)."""

    def add_prompt(self, *items: PromptScriptItem) -> None:
        """Append ``items`` to the end of the prompt-logprob script."""
        with self._script.lock:
            self._script.prompt_items.extend(items)

    @property
    def remaining(self) -> int:
        """How many script items are still unused."""
        return len(self._script.items)

    def add(self, *items: ScriptItem) -> None:
        """Append ``items`` to the end of the script."""
        with self._script.lock:
            self._script.items.extend(items)

    def with_model(self, model: str) -> ScriptedLLM:
        """A view named ``model`` that shares this LLM's script, default, capabilities and
        request log (what `FakeProvider` returns for ``"fake:<model>"``)."""
        view = ScriptedLLM.__new__(ScriptedLLM)
        LLM.__init__(view, model)
        view.provider = self.provider
        view._script = self._script
        return view

    def _take(self, request: ChatRequest) -> ScriptItem:
        state = self._script
        with state.lock:
            state.requests.append(request)
            number = len(state.requests)
            self._refuse_unless_capable(request)
            if state.items:
                state.answered += 1
                return state.items.popleft()
            if state.default is not None:
                return state.default
            last = request.messages[-1].content
        raise ScriptExhaustedError(
            f"{self.name} got request {number} but its script has no answers left "
            f"({state.answered} scripted answers used) and no default; add answers with "
            f".add(...) or set .default. The request's last message began: {last[:120]!r}"
        )

    def _refuse_unless_capable(self, request: ChatRequest) -> None:
        needed: list[tuple[Capability, str]] = [("chat", "a chat completion")]
        if request.logprobs:
            needed.append(("chat_logprobs", "logprobs"))
        if request.response_format is not None:
            needed.append(("json_schema", "a response_format"))
        for capability, what in needed:
            if capability not in self.capabilities:
                raise CapabilityError(
                    f"the request asked {self.name} for {what}, which needs {capability!r}; "
                    f"it offers: {', '.join(sorted(self.capabilities)) or 'nothing'}. Call "
                    "LLM.require before relying on it."
                )

    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Answer ``request`` with the next script item (or the default).

        Raises:
            CapabilityError: the request needs a capability this LLM does not offer.
            ScriptExhaustedError: the script is used up and there is no default.
            InvalidInputError: a script item (or what a callable returned) is not an answer.
            Exception: a scripted exception instance, or whatever a callable raised.
        """
        answer = await _play(self._take(request), request, f"{self.name}: script")
        if isinstance(answer, ChatResponse):
            record_usage(answer.usage)
            return answer
        if isinstance(answer, str):
            choice = Choice(text=answer, finish_reason="stop")
            record_usage(Usage())
            return ChatResponse(choices=(choice,) * request.n, model=self.model)
        raise InvalidInputError(
            f"a {self.name} script answer must be a str, a ChatResponse, a callable returning "
            f"one, or an exception; got {type(answer).__name__}"
        )

    async def aprompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Answer ``request`` with the next prompt-script item (or the prompt default).

        Raises:
            CapabilityError: this LLM does not offer ``prompt_logprobs``.
            ScriptExhaustedError: the prompt script is used up and there is no prompt default.
            InvalidInputError: a script item (or what a callable returned) is not a
                `PromptLogprobsResponse`.
            Exception: a scripted exception, or whatever a callable raised.
        """
        state = self._script
        with state.lock:
            state.prompt_requests.append(request)
            number = len(state.prompt_requests)
            if "prompt_logprobs" not in self.capabilities:
                raise CapabilityError(
                    f"a prompt-logprob request was sent to {self.name}, which does not offer "
                    f"'prompt_logprobs' (it offers: {', '.join(sorted(self.capabilities))}). "
                    "Call LLM.require before relying on it."
                )
            item = state.prompt_items.popleft() if state.prompt_items else state.prompt_default
        if item is None:
            raise ScriptExhaustedError(
                f"{self.name} got prompt-logprob request {number} but its prompt script has no "
                "answers left and no prompt_default; add answers with .add_prompt(...) or set "
                f".prompt_default. The prompt began: {request.prompt[:120]!r}"
            )
        answer = await _play(item, request, f"{self.name}: prompt script")
        if not isinstance(answer, PromptLogprobsResponse):
            raise InvalidInputError(
                f"a {self.name} prompt script answer must be a PromptLogprobsResponse, a callable "
                f"returning one, or an exception; got {type(answer).__name__}"
            )
        record_usage(answer.usage)
        return answer


class FakeProvider:
    """A plugin that registers an LLM provider (``fake`` by default) backed by a `ScriptedLLM`.

    ``"fake:<model>"`` resolves to ``llm.with_model(<model>)``: a view with that name sharing
    ``llm``'s script and request log, so a test scripts ``llm`` and asserts on
    ``llm.requests`` whatever model names the code under test uses. Each view built is kept
    in `llms` (by model name) and the latest in `last`.

        llm = ScriptedLLM(default="numbers")
        registry = Registry(entry_points=False, plugins=[FakeProvider(llm)])
        explain_neuron(record, explainer="fake:m", simulator="fake:m", registry=registry)
        assert len(llm.requests) > 1

    Args:
        llm: the scripted LLM to serve (default: a new one with an empty script).
        name: the provider name to register.
    """

    def __init__(self, llm: ScriptedLLM | None = None, *, name: str = "fake") -> None:
        self.llm = llm if llm is not None else ScriptedLLM()
        self.name = name
        self.__name__ = f"neuron_explainer.testing.FakeProvider[{name}]"
        self.llms: dict[str, ScriptedLLM] = {}
        self.last: ScriptedLLM | None = None

    def build(self, model: str) -> ScriptedLLM:
        """The view of `llm` named ``model`` (what the registry calls for ``"<name>:model"``)."""
        view = self.llm.with_model(model)
        view.provider = self.name
        self.llms[model] = self.last = view
        return view

    @hookimpl
    def register_llm_providers(self, register: Register) -> None:
        """Register `build` under `name`."""
        register(self.build, name=self.name, description="scripted fake LLM for tests")
