"""Tools for testing code that uses neuron_explainer, with no network and no model.

* `MockSimulator`, `MockExplainer`: deterministic components that record their calls.
* `ScriptedLLM`, `make_response`, `FakeProvider`: a fake LLM provider answering from a script;
  `make_prompt_response` and `split_text` build scored prompts for its prompt-logprob script.
* `number_neuron_record`: a small synthetic record of a unit that fires on numbers.
* `OpenAITestServer`, `Reply`, `Fault`, `ReceivedRequest`: a real HTTP server on 127.0.0.1
  speaking the OpenAI protocol, with scripted answers and injected faults.
* `OracleJudge`: answers the classification scorers' (detection, fuzzing) requests by a rule
  on words, or always yes / no / at random, with logprobs (a `ScriptedLLM` answer).
* `OracleResponder`: a responder for that server that answers the built-in components' prompts
  correctly for a given rule (a whole pipeline over real HTTP).
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
    "PromptAnswer": "neuron_explainer.testing.llm",
    "PromptScriptItem": "neuron_explainer.testing.llm",
    "make_prompt_response": "neuron_explainer.testing.llm",
    "split_text": "neuron_explainer.testing.llm",
    "MockExplainer": "neuron_explainer.testing.mocks",
    "MockSimulator": "neuron_explainer.testing.mocks",
    "NUMBER_UNIT": "neuron_explainer.testing.records",
    "number_neuron_record": "neuron_explainer.testing.records",
    "Fault": "neuron_explainer.testing.server",
    "OpenAITestServer": "neuron_explainer.testing.server",
    "OracleResponder": "neuron_explainer.testing.oracle",
    "OracleJudge": "neuron_explainer.testing.judges",
    "ReceivedRequest": "neuron_explainer.testing.server",
    "Reply": "neuron_explainer.testing.server",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_CAPABILITIES",
    "NUMBER_UNIT",
    "Answer",
    "FakeProvider",
    "Fault",
    "MockExplainer",
    "MockSimulator",
    "OpenAITestServer",
    "OracleJudge",
    "OracleResponder",
    "PromptAnswer",
    "PromptScriptItem",
    "ReceivedRequest",
    "Reply",
    "ScriptExhaustedError",
    "ScriptItem",
    "ScriptedLLM",
    "make_prompt_response",
    "make_response",
    "number_neuron_record",
    "split_text",
]

if TYPE_CHECKING:
    from neuron_explainer.testing.judges import OracleJudge as OracleJudge
    from neuron_explainer.testing.llm import DEFAULT_CAPABILITIES as DEFAULT_CAPABILITIES
    from neuron_explainer.testing.llm import Answer as Answer
    from neuron_explainer.testing.llm import FakeProvider as FakeProvider
    from neuron_explainer.testing.llm import PromptAnswer as PromptAnswer
    from neuron_explainer.testing.llm import PromptScriptItem as PromptScriptItem
    from neuron_explainer.testing.llm import ScriptedLLM as ScriptedLLM
    from neuron_explainer.testing.llm import ScriptExhaustedError as ScriptExhaustedError
    from neuron_explainer.testing.llm import ScriptItem as ScriptItem
    from neuron_explainer.testing.llm import make_prompt_response as make_prompt_response
    from neuron_explainer.testing.llm import make_response as make_response
    from neuron_explainer.testing.llm import split_text as split_text
    from neuron_explainer.testing.mocks import MockExplainer as MockExplainer
    from neuron_explainer.testing.mocks import MockSimulator as MockSimulator
    from neuron_explainer.testing.oracle import OracleResponder as OracleResponder
    from neuron_explainer.testing.records import NUMBER_UNIT as NUMBER_UNIT
    from neuron_explainer.testing.records import number_neuron_record as number_neuron_record
    from neuron_explainer.testing.server import Fault as Fault
    from neuron_explainer.testing.server import OpenAITestServer as OpenAITestServer
    from neuron_explainer.testing.server import ReceivedRequest as ReceivedRequest
    from neuron_explainer.testing.server import Reply as Reply
