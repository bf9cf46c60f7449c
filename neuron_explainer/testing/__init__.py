"""Tools for testing code that uses neuron_explainer, with no network and no model.

* `MockSimulator`, `MockExplainer`: deterministic components that record their calls.
* `ScriptedLLM`, `make_response`, `FakeProvider`: a fake LLM provider answering from a script.
* `number_neuron_record`: a small synthetic record of a unit that fires on numbers.
* A pytest plugin (installed with the package) with the fixtures ``ne_fake_llm``,
  ``ne_registry``, ``ne_mock_explainer``, ``ne_mock_simulator`` and ``ne_number_record``.

See docs/testing.md.
"""

from typing import TYPE_CHECKING

from neuron_explainer._lazy import attach

_EXPORTS = {
    "DEFAULT_CAPABILITIES": "neuron_explainer.testing.llm",
    "Answer": "neuron_explainer.testing.llm",
    "FakeProvider": "neuron_explainer.testing.llm",
    "ScriptedLLM": "neuron_explainer.testing.llm",
    "ScriptExhaustedError": "neuron_explainer.testing.llm",
    "ScriptItem": "neuron_explainer.testing.llm",
    "make_response": "neuron_explainer.testing.llm",
    "MockExplainer": "neuron_explainer.testing.mocks",
    "MockSimulator": "neuron_explainer.testing.mocks",
    "NUMBER_UNIT": "neuron_explainer.testing.records",
    "number_neuron_record": "neuron_explainer.testing.records",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_CAPABILITIES",
    "NUMBER_UNIT",
    "Answer",
    "FakeProvider",
    "MockExplainer",
    "MockSimulator",
    "ScriptExhaustedError",
    "ScriptItem",
    "ScriptedLLM",
    "make_response",
    "number_neuron_record",
]

if TYPE_CHECKING:
    from neuron_explainer.testing.llm import DEFAULT_CAPABILITIES as DEFAULT_CAPABILITIES
    from neuron_explainer.testing.llm import Answer as Answer
    from neuron_explainer.testing.llm import FakeProvider as FakeProvider
    from neuron_explainer.testing.llm import ScriptedLLM as ScriptedLLM
    from neuron_explainer.testing.llm import ScriptExhaustedError as ScriptExhaustedError
    from neuron_explainer.testing.llm import ScriptItem as ScriptItem
    from neuron_explainer.testing.llm import make_response as make_response
    from neuron_explainer.testing.mocks import MockExplainer as MockExplainer
    from neuron_explainer.testing.mocks import MockSimulator as MockSimulator
    from neuron_explainer.testing.records import NUMBER_UNIT as NUMBER_UNIT
    from neuron_explainer.testing.records import number_neuron_record as number_neuron_record
