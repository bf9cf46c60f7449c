"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists ``{public name: defining module}``; a name's module is imported on first
attribute access, so ``import neuron_explainer`` stays cheap (no pydantic models, numpy or
pluggy until they are used). Type checkers see the same names through a ``TYPE_CHECKING``
import block in the package, which a test keeps in step with the mapping.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` serving ``exports`` lazily."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__
