from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import neuron_explainer


def test_import_does_not_load_torch_transformers_or_numba() -> None:
    code = (
        "import sys, neuron_explainer, neuron_explainer.explainers, neuron_explainer.simulators\n"
        "import neuron_explainer.subjects._collect_state\n"
        "heavy = sorted(\n"
        "    m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numba')\n"
        ")\n"
        "print(repr(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported_and_documented() -> None:
    for name in neuron_explainer.__all__:
        obj = getattr(neuron_explainer, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_error_tree_has_one_root() -> None:
    errors = [getattr(neuron_explainer, n) for n in neuron_explainer.__all__ if n.endswith("Error")]
    assert len(errors) >= 9
    for error in errors:
        assert issubclass(error, neuron_explainer.NeuronExplainerError)
        assert error.__name__ in (neuron_explainer.errors.__doc__ or "")


@pytest.mark.parametrize("package", ["neuron_explainer", "neuron_explainer.testing"])
def test_lazy_exports_match_the_type_checking_imports(package: str) -> None:
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    typed = {
        alias.asname or alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == module._EXPORTS  # what mypy sees is what __getattr__ serves
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = module.nope


def test_importing_the_pytest_plugin_stays_cheap() -> None:
    code = (
        "import sys, neuron_explainer.testing.pytest_plugin\n"
        "heavy = ('numpy', 'pydantic', 'torch', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
