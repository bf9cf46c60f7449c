"""pytest fixtures for testing code built on neuron_explainer (loaded through the ``pytest11``
entry point whenever the package is installed).

pytest imports this module at the start of every run in the environment, and with it its parent
packages ``neuron_explainer`` and ``neuron_explainer.testing``: the cost of
``import neuron_explainer``, never torch or transformers. The module itself imports nothing
else from the library; each fixture imports what it needs when it is used.

* ``ne_fake_llm``: a fresh `ScriptedLLM` (model ``"model"``, empty script, no default).
* ``ne_registry``: a fresh `Registry` without entry-point plugins, where ``"fake:<model>"``
  resolves to a view of ``ne_fake_llm``.
* ``ne_mock_explainer``: a fresh ``MockExplainer("numbers")``.
* ``ne_mock_simulator``: the `MockSimulator` class; call a constructor
  (``ne_mock_simulator.from_truth(record)``) for a fresh simulator.
* ``ne_number_record``: `number_neuron_record()`, a synthetic unit that fires on numbers
  (built once per session; records are immutable).
* ``ne_oracle_judge``: a fresh `ScriptedLLM` answered by `OracleJudge()` (right about numbers),
  the judge for a detection or fuzzing scorer in a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from neuron_explainer.plugins.registry import Registry
    from neuron_explainer.records import NeuronRecord
    from neuron_explainer.testing.llm import ScriptedLLM
    from neuron_explainer.testing.mocks import MockExplainer, MockSimulator

__all__ = [
    "ne_fake_llm",
    "ne_mock_explainer",
    "ne_mock_simulator",
    "ne_number_record",
    "ne_oracle_judge",
    "ne_registry",
]


@pytest.fixture
def ne_fake_llm() -> ScriptedLLM:
    """A fresh `ScriptedLLM` named ``fake:model`` with an empty script and no default.

    Script it with ``ne_fake_llm.add(...)`` or ``ne_fake_llm.default = ...``; read what it was
    asked in ``ne_fake_llm.requests``.
    """
    from neuron_explainer.testing.llm import ScriptedLLM

    return ScriptedLLM("model")


@pytest.fixture
def ne_registry(ne_fake_llm: ScriptedLLM) -> Registry:
    """A fresh registry (built-in components only, no entry-point plugins) with the provider
    ``fake`` serving views of ``ne_fake_llm``, so ``explainer="fake:m"`` works offline."""
    from neuron_explainer.plugins.registry import Registry
    from neuron_explainer.testing.llm import FakeProvider

    return Registry(entry_points=False, plugins=[FakeProvider(ne_fake_llm)])


@pytest.fixture
def ne_mock_explainer() -> MockExplainer:
    """A fresh ``MockExplainer("numbers")``; its ``seen`` lists the records it was shown."""
    from neuron_explainer.testing.mocks import MockExplainer

    return MockExplainer("numbers")


@pytest.fixture
def ne_mock_simulator() -> type[MockSimulator]:
    """The `MockSimulator` class: ``ne_mock_simulator.from_truth(record)``,
    ``.from_keywords([...])`` or ``.from_function(fn)`` each build a fresh simulator."""
    from neuron_explainer.testing.mocks import MockSimulator

    return MockSimulator


@pytest.fixture(scope="session")
def ne_number_record() -> NeuronRecord:
    """`number_neuron_record()`: 40 top and 30 random excerpts of a unit firing on numbers."""
    from neuron_explainer.testing.records import number_neuron_record

    return number_neuron_record()


@pytest.fixture
def ne_oracle_judge() -> ScriptedLLM:
    """A fresh `ScriptedLLM` answered by `OracleJudge()`: it judges every detection or fuzzing
    request right for a unit that fires on numbers (``number_neuron_record(silent_fraction=0.5)``
    gives such a unit with silent excerpts); its ``requests`` lists what it was asked."""
    from neuron_explainer.testing.judges import OracleJudge
    from neuron_explainer.testing.llm import ScriptedLLM

    return ScriptedLLM("judge", default=OracleJudge())
