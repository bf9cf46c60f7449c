"""Resolve explainer and simulator names to objects.

Built-in components are listed here until the plugin registry takes over name resolution; every
place that accepts a component name goes through `resolve_explainer` /
`resolve_simulator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from neuron_explainer.errors import InvalidInputError, UnknownComponentError
from neuron_explainer.interfaces import Explainer, Simulator

__all__ = ["available_explainers", "available_simulators", "resolve_explainer", "resolve_simulator"]


def _token_table_explainer() -> Explainer:
    from neuron_explainer.explainers.token_table import TokenTableExplainer

    return TokenTableExplainer()


def _token_table_simulator() -> Simulator:
    from neuron_explainer.simulators.token_table import TokenTableSimulator

    return TokenTableSimulator()


_EXPLAINERS: dict[str, Callable[[], Explainer]] = {"token-table": _token_table_explainer}
_SIMULATORS: dict[str, Callable[[], Simulator]] = {"token-table": _token_table_simulator}


def available_explainers() -> list[str]:
    """Names of the explainers that can be resolved."""
    return sorted(_EXPLAINERS)


def available_simulators() -> list[str]:
    """Names of the simulators that can be resolved."""
    return sorted(_SIMULATORS)


T = TypeVar("T", Explainer, Simulator)


def _resolve(kind: str, spec: object, cls: type[object], table: dict[str, Callable[[], T]]) -> T:
    if isinstance(spec, cls):
        return cast(T, spec)
    if not isinstance(spec, str):
        raise InvalidInputError(
            f"{kind} must be an object of type {cls.__name__} or a registered name, "
            f"got {type(spec).__name__}"
        )
    factory = table.get(spec)
    if factory is None:
        raise UnknownComponentError(kind, spec, list(table))
    return factory()


def resolve_explainer(spec: Explainer | str) -> Explainer:
    """Return ``spec`` if it is an `Explainer`, else build the one registered under it.

    Raises:
        UnknownComponentError: no explainer has that name.
        InvalidInputError: ``spec`` is neither a name nor an Explainer.
    """
    return _resolve("explainer", spec, Explainer, _EXPLAINERS)


def resolve_simulator(spec: Simulator | str) -> Simulator:
    """Return ``spec`` if it is a `Simulator`, else build the one registered under it.

    Raises:
        UnknownComponentError: no simulator has that name.
        InvalidInputError: ``spec`` is neither a name nor a Simulator.
    """
    return _resolve("simulator", spec, Simulator, _SIMULATORS)
