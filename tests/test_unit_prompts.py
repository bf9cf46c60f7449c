"""The simulators' and the revision's prompts name the unit's kind ("SAE latent", "attention
head", "direction"), while a neuron's prompts stay byte-identical to what the library wrote
before (tests/data/neuron_prompts, written by the previous code)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _batch_worker import unit_record
from test_revision import keyword_simulator

from neuron_explainer import explain_neuron
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.interfaces import unit_context
from neuron_explainer.llm.prompts import UNIT_NOUNS, reworded, unit_noun
from neuron_explainer.options import DEFAULT_NEUTRAL_EXPLANATION
from neuron_explainer.records import UnitId
from neuron_explainer.runs import explain_neurons, rescore
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.testing import MockExplainer, ScriptedLLM

FIXTURE = Path(__file__).parent / "data" / "neuron_prompts"


def fixture_module() -> ModuleType:
    """tests/data/neuron_prompts/make_fixture.py: the same calls, run on the current library."""
    spec = importlib.util.spec_from_file_location("neuron_prompts", FIXTURE / "make_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prompts(*, no_neuron_token: bool = False) -> dict[str, Any]:
    """The fixture's prompts, built now; ``no_neuron_token``: with the excerpts' " neuron"
    token as " neutron" (so that any "neuron" left is the prompt's own wording)."""
    made = fixture_module()
    if no_neuron_token:
        made.EXCERPTS = tuple(
            tuple(" neutron" if t == " neuron" else t for t in e) for e in made.EXCERPTS
        )
    return json.loads(json.dumps({**made.simulator_prompts(), **made.revision_prompts()}))


def texts(prompt: Any) -> list[str]:
    """The texts of a prompt: each message's content, or the completion prompt."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], list):
        return [content for _, content in prompt]
    return []  # offsets


NEURON = UnitId(model="m", layer=1, index=3)
KINDS = {
    "sae_latent": UnitId(
        model="m", layer=1, index=3, kind="sae_latent", site="blocks.1.hook_resid_post"
    ),
    "transcoder_latent": UnitId(
        model="m", layer=1, index=3, kind="transcoder_latent", site="blocks.1.ln2.hook_normalized"
    ),
    "attention_head": UnitId(model="m", layer=1, index=3, kind="attention_head"),
    "direction": UnitId(
        model="m", layer=1, index=0, kind="direction", site="blocks.1.hook_resid_pre"
    ),
}


@pytest.mark.parametrize("unit", [None, NEURON, NEURON.model_copy(update={"kind": "plugin_kind"})])
def test_a_neurons_prompts_are_byte_identical_to_the_previous_librarys(
    unit: UnitId | None,
) -> None:
    before = json.loads((FIXTURE / "prompts.json").read_text(encoding="utf-8"))
    if unit is None:
        now = prompts()
    else:
        with unit_context(unit):
            now = prompts()
    assert now.keys() == before.keys()
    for name in before:
        assert now[name] == before[name], name


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_other_kinds_prompts_name_the_kind_and_leave_excerpts_alone(kind: str) -> None:
    noun = UNIT_NOUNS[kind]
    with unit_context(KINDS[kind]):
        now = prompts()
        plain = prompts(no_neuron_token=True)
    for name, prompt in plain.items():
        assert all("neuron" not in text for text in texts(prompt)), name
        assert (
            any(noun in text for text in texts(prompt))
            or name.endswith("retry")
            or (name.endswith("offsets"))
        ), name
    # exact wording where it matters
    system, user = (m[1] for m in now["chat-logprob/lines/one"])
    article = "an" if noun[0] in "aeiou" or noun.startswith("SAE") else "a"
    assert system.startswith(f"We're studying {noun}s in a neural network. Each {noun} looks")
    assert f"for {article} {noun} that finds animals" in system
    assert user.startswith(f"Explanation: the {noun} finds animals, especially dogs and\tcats")
    assert "\t neuron\n" in user  # the excerpt's token
    header = f"{noun[0].upper()}{noun[1:]} 3\nExplanation of {noun} 3 behavior: the main thing"
    for examples in ("contrasting", "paper"):
        prompt, offsets = (
            now[f"prompt-logprob/{examples}"],
            now[f"prompt-logprob/{examples}/offsets"],
        )
        assert f"{header} this {noun} does is find" in prompt or examples == "paper"
        assert all(prompt[o : o + len("unknown")] == "unknown" for o in offsets)
    assert now["json/firing/retry"].endswith(
        f"the tokens the {noun} activates on, each copied exactly from the tokens with an "
        "integer from 1 to 10; {} if none."
    )
    revision = now["revision"][-1][1]
    assert revision.startswith(f"A simulator predicted this {noun}'s activations")
    assert f"(the {noun} fired, the explanation did not predict it)" in revision
    assert revision.endswith(
        f"Explanation of {noun} behavior: the main thing this {noun} does is find"
    )
    assert f"on which the {noun} should fire" in now["tests"][-1][1]


def test_reworded_takes_the_article_and_case_the_noun_needs() -> None:
    text = "A neuron fires; a neuron's neurons. Neuron 3, the neuron, neural nets."
    assert reworded(text, "neuron") is text
    assert reworded(text, "SAE latent") == (
        "An SAE latent fires; an SAE latent's SAE latents. SAE latent 3, the SAE latent, "
        "neural nets."
    )
    assert reworded(text, "attention head").startswith("An attention head fires; an attention")
    assert reworded(text, "direction").startswith("A direction fires; a direction's directions.")
    assert unit_noun() == "neuron"
    assert unit_noun("sae_latent") == "SAE latent" and unit_noun("unknown") == "neuron"
    with unit_context(KINDS["attention_head"]):
        assert unit_noun() == "attention head"


def _asked(llm: ScriptedLLM) -> list[str]:
    return [m.content for request in llm.requests for m in request.messages]


def firing_llm() -> ScriptedLLM:
    """An LLM for the JSON simulator's firing answer: no token fires."""
    return ScriptedLLM(default="{}", capabilities={"chat"})


def test_a_run_asks_the_simulator_about_the_units_kind(tmp_path: Path) -> None:
    latent = KINDS["sae_latent"].model_copy(update={"index": 0})
    record = unit_record(latent)
    llm = firing_llm()
    simulator = JSONSimulator(llm)
    explain_neuron(record, explainer=MockExplainer("numbers"), simulator=simulator)
    asked = _asked(llm)
    assert asked and all("neuron" not in text for text in asked)
    assert any("the tokens the SAE latent that finds numbers activates on" in t for t in asked)

    # a rescore asks about the kind too
    db = tmp_path / "run.sqlite"
    explain_neurons(
        records={latent: record},
        units=[latent],
        db=db,
        explainer=MockExplainer("numbers"),
        simulator=keyword_simulator(),
    )
    again = firing_llm()
    rescore(
        db,
        out_db=tmp_path / "rescored.sqlite",
        records={latent: record},
        simulator=JSONSimulator(again),
    )
    asked = _asked(again)
    assert asked and all("neuron" not in text for text in asked)
    assert any("Explanation: the SAE latent finds numbers" in text for text in asked)


def test_revision_asks_about_the_units_kind() -> None:
    head = KINDS["attention_head"].model_copy(update={"index": 0})
    llm = ScriptedLLM("m", ["articles like the.", "numbers written as digits."])
    explain_neuron(
        unit_record(head),
        explainer=LLMExplainer(llm),
        simulator=keyword_simulator(),
        revise=True,
        test_sentences=0,
    )
    revision = llm.requests[-1].messages[-1].content
    assert revision.startswith("A simulator predicted this attention head's activations")
    assert "neuron" not in revision


def test_a_batch_shares_neutral_simulations_only_between_units_of_one_noun(
    tmp_path: Path,
) -> None:
    neuron = UnitId(model="m", layer=0, index=0)
    kinds = [
        neuron,
        neuron.model_copy(update={"index": 1}),
        KINDS["sae_latent"].model_copy(update={"index": 0}),
    ]
    shared_random = unit_record(kinds[0]).random_sample
    records = {u: unit_record(u).model_copy(update={"random_sample": shared_random}) for u in kinds}
    simulator = keyword_simulator()
    summary = explain_neurons(
        records=records,
        units=kinds,
        db=tmp_path / "run.sqlite",
        explainer=MockExplainer("numbers"),
        simulator=simulator,
        explain_options={"scoring": "contrastive"},
    )
    assert summary.done == 3
    neutral = Counter(t for text, t in simulator.calls if text == DEFAULT_NEUTRAL_EXPLANATION)
    random = {tuple(r.tokens) for r in shared_random}
    # a shared random excerpt: once for the two neurons, once for the latent
    assert {neutral[t] for t in random if t in neutral} == {2}
