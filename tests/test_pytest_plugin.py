"""The pytest plugin: registered through ``pytest11``, and the worked example of docs/testing.md
(a user's test file using the ``ne_*`` fixtures) passes when pytest runs it."""

from __future__ import annotations

import importlib.metadata
import io
import re
import subprocess
import sys
import unittest
from pathlib import Path

import pytest

from neuron_explainer import NeuronRecord, explain_neuron
from neuron_explainer.llm import ChatRequest, Message
from neuron_explainer.plugins import Registry
from neuron_explainer.testing import MockExplainer, MockSimulator, ScriptedLLM

pytest_plugins = ["pytester"]

PAGE = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
EXAMPLE = re.compile(
    r"<!-- user-test-example:start -->\n```python\n(?P<code>.*?)```\n"
    r"<!-- user-test-example:end -->",
    re.DOTALL,
)
PYTHON_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


def worked_example() -> str:
    match = EXAMPLE.search(PAGE.read_text(encoding="utf-8"))
    assert match, "docs/testing.md has no python block between the user-test-example markers"
    return match["code"]


def test_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "neuron_explainer"
    ]
    assert entry.value == "neuron_explainer.testing.pytest_plugin"
    module = entry.load()
    assert set(module.__all__) == {
        "ne_fake_llm",
        "ne_mock_explainer",
        "ne_mock_simulator",
        "ne_number_record",
        "ne_oracle_judge",
        "ne_registry",
    }


def test_plugin_import_pulls_no_heavy_dependencies() -> None:
    code = (
        "import sys, neuron_explainer.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_the_documented_user_tests_pass(pytester: pytest.Pytester) -> None:
    code = worked_example()
    pytester.makepyfile(test_user=code)
    result = pytester.runpytest_inprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(re.findall(r"^def test_", code, re.MULTILINE)))
    assert result.parseoutcomes()["passed"] >= 4


def test_a_failing_user_test_fails(pytester: pytest.Pytester) -> None:
    """The fixtures are real: a wrong assertion about them fails."""
    pytester.makepyfile(
        test_wrong="""
        def test_score(ne_number_record, ne_mock_explainer, ne_mock_simulator):
            from neuron_explainer import explain_neuron
            sim = ne_mock_simulator.from_truth(ne_number_record, noise=5.0)
            assert explain_neuron(ne_number_record, explainer=ne_mock_explainer,
                                  simulator=sim).score == 1.0
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)


def test_the_plugin_can_be_switched_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="def test_uses(ne_fake_llm):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:neuron_explainer", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'ne_fake_llm' not found*"])


def test_fixtures_are_fresh_and_wired(
    ne_fake_llm: ScriptedLLM,
    ne_registry: Registry,
    ne_mock_explainer: MockExplainer,
    ne_mock_simulator: type[MockSimulator],
    ne_number_record: NeuronRecord,
) -> None:
    assert ne_fake_llm.requests == [] and ne_fake_llm.remaining == 0
    assert ne_fake_llm.default is None
    ne_fake_llm.add("hello")
    built = ne_registry.llm("fake:abc")
    assert built.name == "fake:abc"
    assert built.chat(request_for("hi")).choices[0].text == "hello"
    assert len(ne_fake_llm.requests) == 1
    assert [p.name for p in ne_registry.plugins() if p.source.startswith("entry point")] == []
    assert ne_mock_explainer.seen == [] and ne_mock_explainer.text == "numbers"
    assert ne_mock_simulator is MockSimulator
    result = explain_neuron(
        ne_number_record,
        explainer=ne_mock_explainer,
        simulator=ne_mock_simulator.from_function(
            lambda tokens: [10.0 if t.strip().isdigit() else 0.0 for t in tokens]
        ),
    )
    assert result.score is not None and result.score > 0.95
    assert ne_mock_explainer.seen, "the fixture's explainer is the one explain_neuron used"


def request_for(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),))


def test_the_other_code_blocks_of_the_page_run() -> None:
    page = PAGE.read_text(encoding="utf-8")
    example = worked_example()
    blocks = [m["code"] for m in PYTHON_BLOCK.finditer(page) if m["code"] != example]
    assert len(blocks) == 5, (
        "expected the logprobs, registry, test-server, oracle and unittest snippets"
    )
    unittest_cases = 0
    for code in blocks:
        namespace: dict[str, object] = {"__name__": "docs_testing_snippet"}
        exec(compile(code, str(PAGE), "exec"), namespace)
        cases = [
            v
            for v in namespace.values()
            if isinstance(v, type) and issubclass(v, unittest.TestCase)
        ]
        for case in cases:
            unittest_cases += 1
            outcome = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(
                unittest.defaultTestLoader.loadTestsFromTestCase(case)
            )
            assert outcome.wasSuccessful() and outcome.testsRun == 1, outcome.failures
    assert unittest_cases == 1


def test_the_oracle_judge_fixture_judges_a_scorer_right(ne_oracle_judge) -> None:  # type: ignore[no-untyped-def]
    from neuron_explainer.records.splits import split_records
    from neuron_explainer.results import ComponentInfo, Explanation
    from neuron_explainer.scorers.base import ScoringData
    from neuron_explainer.scorers.classification import DetectionScorer
    from neuron_explainer.testing import number_neuron_record

    record = number_neuron_record(silent_fraction=0.5)
    data = ScoringData(record, split_records(record), "valid")
    text = Explanation(text="numbers", explainer=ComponentInfo(name="t"))
    assert DetectionScorer(ne_oracle_judge).score(text, data).value.value == 1.0
    assert ne_oracle_judge.requests
