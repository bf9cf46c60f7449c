"""The built-in components, registered through the same hooks as any third-party plugin.

Each is named here by its import path and imported only when its name is first looked up, so
loading the registry imports neither torch nor any LLM client.
"""

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


def _llm_provider(path: str) -> Callable[..., Any]:
    """An LLM provider factory, ``factory(model, **options)``, importing ``module.Class`` only
    when called."""
    build = _lazy(path)

    def factory(model: str, **options: Any) -> Any:
        return build(model=model, **options)

    factory.__doc__ = f"Build a `{path}` for a model (imported on first use)."
    return factory


def _hf_subject(*, model: Any, corpus: Any = None, **options: Any) -> Any:
    """Build an `HFSubject` recording ``model`` over ``corpus`` (imported on first use).

    Raises:
        InvalidInputError: no corpus, or options `HFSubject` does not take.
    """
    if corpus is None:
        raise InvalidInputError(
            f"to explain a neuron of model {model!r}, give corpus= (text files, a folder, "
            "JSONL, a list of strings or a datasets.Dataset)"
        )
    return _lazy("neuron_explainer.subjects.hf.HFSubject")(model=model, corpus=corpus, **options)


def _collection_subject(*, model: Any, corpus: Any = None) -> Any:
    """Build a `CollectionSubject` reading the collection (or its folder) ``model``.

    Raises:
        InvalidInputError: a corpus was given (a collection holds its records already).
    """
    if corpus is not None:
        raise InvalidInputError(
            "a collection holds its records already: corpus= is for recording a model"
        )
    return _lazy("neuron_explainer.subjects.collection.CollectionSubject")(collection=model)


# kind → (name, factory, aliases, description)
_BUILTINS: dict[str, list[tuple[str, Callable[..., Any], tuple[str, ...], str]]] = {
    "llm_provider": [
        (
            "openai",
            _llm_provider("neuron_explainer.llm.openai.OpenAILLM"),
            (),
            "OpenAI and OpenAI-compatible servers (OPENAI_API_KEY, OPENAI_BASE_URL)",
        ),
        (
            "llamacpp",
            _llm_provider("neuron_explainer.llm.llamacpp.LlamaCppLLM"),
            (),
            "llama.cpp's server: OpenAI-compatible, plus prefix logprobs from its /completion",
        ),
        (
            "hf",
            _llm_provider("neuron_explainer.llm.hf.HFLLM"),
            (),
            "a Hugging Face causal LM run in-process (hub name, directory or .gguf file)",
        ),
    ],
    "subject": [
        (
            "hf",
            _hf_subject,
            (),
            "MLP neurons of a Hugging Face causal LM, recorded over a corpus in memory",
        ),
        (
            "collection",
            _collection_subject,
            (),
            "reads the records of a collection folder written by collect",
        ),
    ],
    "explainer": [
        (
            "token-table",
            _lazy("neuron_explainer.explainers.token_table.TokenTableExplainer"),
            (),
            "offline baseline: the tokens and contexts with the highest mean activation",
        ),
        (
            "llm",
            _lazy("neuron_explainer.explainers.llm.LLMExplainer"),
            (),
            "asks an LLM (named as provider:model) what the top excerpts have in common",
        ),
    ],
    "simulator": [
        (
            "token-table",
            _lazy("neuron_explainer.simulators.token_table.TokenTableSimulator"),
            (),
            "offline baseline: predicts from the token-table explainer's table",
        ),
        (
            "llm-json",
            _lazy("neuron_explainer.simulators.json_output.JSONSimulator"),
            ("json",),
            "asks an LLM (named as provider:model) for a JSON list of activations",
        ),
        (
            "llm-chat-logprob",
            _lazy("neuron_explainer.simulators.chat_logprob.ChatLogprobSimulator"),
            ("chat-logprob",),
            "expected activation from the chat logprobs of 0-10 digits (needs logprobs)",
        ),
        (
            "llm-prompt-logprob",
            _lazy("neuron_explainer.simulators.prompt_logprob.PromptLogprobSimulator"),
            ("all-at-once",),
            "the paper's all-at-once simulator from prompt logprobs (one call per excerpt)",
        ),
    ],
    "scorer": [
        (
            "correlation",
            _lazy("neuron_explainer.scorers.simulation_scorer.CorrelationScorer"),
            ("simulation",),
            "simulates the held-out excerpts and correlates the prediction with the truth",
        ),
        (
            "detection",
            _lazy("neuron_explainer.scorers.classification.DetectionScorer"),
            (),
            "asks an LLM whether the unit activates on each held-out excerpt (yes/no)",
        ),
        (
            "fuzzing",
            _lazy("neuron_explainer.scorers.classification.FuzzingScorer"),
            (),
            "asks an LLM whether the highlighted tokens are the ones the unit fires on",
        ),
    ],
}


def _registering(kind: str) -> Callable[[Register], None]:
    """The hook implementation that registers the built-in components of ``kind``."""

    def hook(register: Register) -> None:
        for name, factory, aliases, description in _BUILTINS[kind]:
            register(factory, name=name, aliases=aliases, description=description)

    return hookimpl(hook)


register_llm_providers = _registering("llm_provider")
register_subjects = _registering("subject")
register_explainers = _registering("explainer")
register_simulators = _registering("simulator")
register_scorers = _registering("scorer")
