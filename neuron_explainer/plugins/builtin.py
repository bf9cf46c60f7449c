"""The built-in components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from typing import Any

from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.plugins.hookspecs import Register, hookimpl


def _token_table_explainer(**options: Any) -> Explainer:
    from neuron_explainer.explainers.token_table import TokenTableExplainer

    return TokenTableExplainer(**options)


def _token_table_simulator(**options: Any) -> Simulator:
    from neuron_explainer.simulators.token_table import TokenTableSimulator

    return TokenTableSimulator(**options)


def _llm_explainer(**options: Any) -> Explainer:
    from neuron_explainer.explainers.llm import LLMExplainer

    return LLMExplainer(**options)


def _json_simulator(**options: Any) -> Simulator:
    from neuron_explainer.simulators.json_output import JSONSimulator

    return JSONSimulator(**options)


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
