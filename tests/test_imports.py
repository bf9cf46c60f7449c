from __future__ import annotations

import subprocess
import sys

import neuron_explainer


def test_import_does_not_load_torch_or_transformers() -> None:
    code = (
        "import sys, neuron_explainer, neuron_explainer.explainers, neuron_explainer.simulators\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
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
