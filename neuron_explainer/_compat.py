"""Module paths of 0.1 that moved in 0.2, kept importable with a `DeprecationWarning`.

``import neuron_explainer.batch`` (and every other path in `MOVED`) still works: it gives a
module whose names are looked up in the modules that now define them, and warns once per import
saying where to import from instead. The alias is a module of its own, so patching an attribute
on it (``monkeypatch.setattr("neuron_explainer.batch.X", ...)``) does not reach the code; patch
the new path. These aliases go away in 0.4.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MOVED", "install"]

MOVED: dict[str, tuple[str, ...]] = {
    "neuron_explainer.batch": ("neuron_explainer.runs",),
    "neuron_explainer.pipeline": (
        "neuron_explainer.runs.explain",
        "neuron_explainer.scorers.simulation",
    ),
    "neuron_explainer.runstore": ("neuron_explainer.runs.store",),
    "neuron_explainer.estimate": ("neuron_explainer.runs.estimate",),
    "neuron_explainer.best_of": ("neuron_explainer.runs.best_of",),
    "neuron_explainer.scoring": ("neuron_explainer.scorers.correlation",),
    "neuron_explainer.splits": ("neuron_explainer.records.splits",),
    "neuron_explainer.building": ("neuron_explainer.records.building",),
    "neuron_explainer.token_table": ("neuron_explainer.records.lookup",),
    "neuron_explainer.subjects.models": ("neuron_explainer.models.loading",),
    "neuron_explainer.subjects.architectures": ("neuron_explainer.models.architectures",),
    "neuron_explainer.explainers.few_shot": ("neuron_explainer.llm.few_shot",),
    "neuron_explainer.plugins.builtin": ("neuron_explainer.plugins._builtin",),
    "neuron_explainer.subjects.collect_state": ("neuron_explainer.subjects._collect_state",),
}
"""Old module path → the modules its names now live in, searched in order."""


def _alias(name: str, targets: Sequence[str]) -> types.ModuleType:
    module = types.ModuleType(name, f"Deprecated alias of {', '.join(targets)}.")

    def __getattr__(attr: str) -> Any:
        for target in targets:
            found = importlib.import_module(target)
            if hasattr(found, attr):
                return getattr(found, attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    def __dir__() -> list[str]:
        names: set[str] = set()
        for target in targets:
            names.update(getattr(importlib.import_module(target), "__all__", ()))
        return sorted(names)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    return module


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _alias(spec.name, MOVED[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(MOVED[module.__name__])}; import from "
            "there (the public names also from neuron_explainer itself). The old path goes "
            "away in 0.4.",
            DeprecationWarning,
            stacklevel=2,
        )


_FINDER = _Finder()


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
