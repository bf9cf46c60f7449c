"""The built-in components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.plugins.hookspecs import Register, hookimpl


def _lazy(path: str) -> Callable[..., Any]:
    """A factory that imports ``module.Class`` only when called and checks the options first."""
    module, _, attr = path.rpartition(".")

    def factory(**options: Any) -> Any:
        cls = getattr(importlib.import_module(module), attr)
        try:
            inspect.signature(cls).bind(**options)
        except TypeError as exc:
            raise InvalidInputError(f"{attr} does not accept these options: {exc}") from None
        return cls(**options)

    factory.__doc__ = f"Build a `{path}` (imported on first use)."
    return factory


def _lazy_llm(path: str) -> Callable[..., Any]:
    """An LLM provider factory, ``factory(model, **options)``, importing ``module.Class`` only
    when called and checking the options first."""
    build = _lazy(path)

    def factory(model: str, **options: Any) -> Any:
        return build(model=model, **options)

    factory.__doc__ = f"Build a `{path}` for a model (imported on first use)."
    return factory


_openai_llm = _lazy_llm("neuron_explainer.llm.openai.OpenAILLM")
_hf_llm = _lazy_llm("neuron_explainer.llm.hf.HFLLM")
_token_table_explainer = _lazy("neuron_explainer.explainers.token_table.TokenTableExplainer")
_token_table_simulator = _lazy("neuron_explainer.simulators.token_table.TokenTableSimulator")
_llm_explainer = _lazy("neuron_explainer.explainers.llm.LLMExplainer")
_json_simulator = _lazy("neuron_explainer.simulators.json_output.JSONSimulator")
_chat_logprob_simulator = _lazy("neuron_explainer.simulators.chat_logprob.ChatLogprobSimulator")
_prompt_logprob_simulator = _lazy(
    "neuron_explainer.simulators.prompt_logprob.PromptLogprobSimulator"
)


@hookimpl
def register_llm_providers(register: Register) -> None:
    register(
        _openai_llm,
        name="openai",
        description="OpenAI and OpenAI-compatible servers (OPENAI_API_KEY, OPENAI_BASE_URL)",
    )
    register(
        _hf_llm,
        name="hf",
        description="a Hugging Face causal LM run in-process (hub name, directory or .gguf file)",
    )


@hookimpl
def register_explainers(register: Register) -> None:
    register(
        _token_table_explainer,
        name="token-table",
        description="offline baseline: the tokens and contexts with the highest mean activation",
    )
    register(
        _llm_explainer,
        name="llm",
        description="asks an LLM (named as provider:model) what the top excerpts have in common",
    )


@hookimpl
def register_simulators(register: Register) -> None:
    register(
        _token_table_simulator,
        name="token-table",
        description="offline baseline: predicts from the token-table explainer's table",
    )
    register(
        _json_simulator,
        name="llm-json",
        aliases=("json",),
        description="asks an LLM (named as provider:model) for a JSON list of activations",
    )
    register(
        _chat_logprob_simulator,
        name="llm-chat-logprob",
        aliases=("chat-logprob",),
        description="expected activation from the chat logprobs of 0-10 digits (needs logprobs)",
    )
    register(
        _prompt_logprob_simulator,
        name="llm-prompt-logprob",
        aliases=("all-at-once",),
        description="the paper's all-at-once simulator from prompt logprobs (one call per excerpt)",
    )
