from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_record

from neuron_explainer import (
    DuplicateComponentError,
    InvalidInputError,
    NeuronRecord,
    PluginError,
    PluginWarning,
    Simulator,
    Subject,
    UnitId,
    UnknownComponentError,
    explain_neuron,
)
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.explainers.token_table import TokenTableExplainer
from neuron_explainer.llm import LLM, ChatRequest, ChatResponse, Choice
from neuron_explainer.plugins import Register, Registry, hookimpl
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.testing import number_neuron_record

QUIET: dict[str, str] = {}


class EchoLLM(LLM):
    provider = "echo"

    async def achat(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(choices=(Choice(text=request.messages[-1].content),))


class ProviderPlugin:
    __name__ = "echo-plugin"

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def register_llm_providers(self, register: Register) -> None:
        self.calls += 1
        register(EchoLLM, name="echo", description="echoes")


def plugin(name: str, **hooks: Callable[[Register], None]) -> object:
    """A plugin object called ``name`` implementing the given hooks."""
    namespace: dict[str, Any] = {"__name__": name}
    for hook, body in hooks.items():

        def impl(
            self: object, register: Register, _body: Callable[[Register], None] = body
        ) -> None:
            _body(register)

        impl.__name__ = hook
        namespace[hook] = hookimpl(impl)
    return type(name, (), namespace)()


def fresh(*plugins: object, **env: str) -> Registry:
    return Registry(plugins=plugins, entry_points=False, environ=env)


def test_builtins_register_through_the_hooks() -> None:
    names = {(c.kind, c.name, c.plugin) for c in fresh().components()}
    assert {
        ("explainer", "token-table", "builtin"),
        ("explainer", "llm", "builtin"),
        ("simulator", "token-table", "builtin"),
        ("simulator", "llm-json", "builtin"),
    } <= names
    assert fresh().components("simulator")[0].kind == "simulator"
    json_entry = fresh().entry("simulator", "json")  # an alias
    assert json_entry.name == "llm-json" and json_entry.aliases == ("json",)
    assert isinstance(fresh().explainer("token-table"), TokenTableExplainer)


def test_loading_is_lazy_and_cached() -> None:
    provider = ProviderPlugin()
    registry = fresh(provider)
    assert provider.calls == 0
    registry.llm("echo:a")
    registry.llm("echo:b")
    registry.components()
    assert provider.calls == 1


def test_provider_model_names() -> None:
    registry = fresh(ProviderPlugin())
    llm = registry.llm("echo:tiny-2")
    assert isinstance(llm, EchoLLM) and llm.model == "tiny-2" and llm.name == "echo:tiny-2"
    explainer = registry.explainer("echo:tiny-2")
    simulator = registry.simulator("echo:tiny-2", retries=0)
    assert isinstance(explainer, LLMExplainer) and explainer.llm.name == "echo:tiny-2"
    assert isinstance(simulator, JSONSimulator) and simulator.retries == 0
    with pytest.raises(InvalidInputError, match="named 'provider:model'"):
        registry.llm("echo")
    with pytest.raises(UnknownComponentError, match=r"unknown LLM provider 'nope'.*'echo'"):
        registry.llm("nope:x")


def test_unknown_names_list_what_is_available_and_loaded() -> None:
    with pytest.raises(UnknownComponentError) as info:
        fresh(ProviderPlugin()).explainer("gpt-9")
    message = str(info.value)
    assert "unknown explainer 'gpt-9'" in message
    assert "'llm', 'token-table'" in message
    assert "plugins loaded: builtin, echo-plugin" in message
    assert info.value.available == ["llm", "token-table"]


def test_components_needing_an_llm_say_how_to_name_one() -> None:
    with pytest.raises(InvalidInputError, match="explainer='openai:gpt-4o-mini'"):
        fresh().explainer("llm")
    with pytest.raises(InvalidInputError, match="does not accept these options"):
        fresh().explainer("token-table", colour="red")


class AlphaExplainer(TokenTableExplainer):
    name = "alpha-table"


class BetaExplainer(TokenTableExplainer):
    name = "beta-table"


def test_two_plugins_with_one_name_is_an_error_naming_both_and_qualified_names_work() -> None:
    registry = fresh(
        plugin("alpha", register_explainers=lambda r: r(AlphaExplainer, name="shared")),
        plugin("beta", register_explainers=lambda r: r(BetaExplainer, name="shared")),
    )
    with pytest.raises(
        DuplicateComponentError,
        match=r"plugin 'alpha'.*plugin 'beta'.*name one as 'alpha/shared' or 'beta/shared'",
    ):
        registry.explainer("shared")
    assert isinstance(registry.explainer("alpha/shared"), AlphaExplainer)
    assert isinstance(registry.explainer("beta/shared"), BetaExplainer)
    assert isinstance(registry.explainer("token-table"), TokenTableExplainer)  # rest works
    listed = {(c.name, c.plugin) for c in registry.components("explainer")}
    assert {("alpha/shared", "alpha"), ("beta/shared", "beta")} <= listed
    assert ("shared", "alpha") not in listed  # a plain name that selects nothing is not shown


class PluginTable(TokenTableExplainer):
    """A third party's explainer that wants the built-in's name."""


class PluginTableSimulator(Simulator):
    name = "plugin-table"

    async def asimulate(self, explanation: Any, tokens: Any) -> Any:
        raise NotImplementedError


class PluginSubject(Subject):
    def __init__(self, **options: Any) -> None:
        self.options = options

    @property
    def model_name(self) -> str:
        return "plugin-subject"

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        raise NotImplementedError


def squatter(name: str = "acme") -> object:
    """A plugin that registers a built-in's name for every kind (and as an alias)."""
    return plugin(
        name,
        register_explainers=lambda r: r(PluginTable, name="token-table"),
        register_simulators=lambda r: r(PluginTableSimulator, name="mine", aliases=("json",)),
        register_subjects=lambda r: r(PluginSubject, name="collection"),
        register_llm_providers=lambda r: r(EchoLLM, name="openai"),
    )


def test_a_plugin_cannot_take_a_builtin_name_but_its_component_stays_reachable() -> None:
    registry = fresh(squatter())
    with pytest.warns(PluginWarning) as warned:
        explainer = registry.explainer("token-table")
    messages = sorted(str(w.message) for w in warned)
    assert messages == [
        f"plugin 'acme' registers the {kind} name {name!r}, which stays the built-in {kind}'s; "
        f"choose the plugin's as 'acme/{name}'"
        for kind, name in sorted(
            [
                ("LLM provider", "openai"),
                ("explainer", "token-table"),
                ("simulator", "json"),
                ("subject", "collection"),
            ]
        )
    ]
    # The built-ins keep their names, for every kind ...
    assert type(explainer) is TokenTableExplainer
    assert type(registry.simulator("json", llm=EchoLLM("m"))) is JSONSimulator
    assert registry.entry("subject", "collection").plugin == "builtin"
    assert registry.entry("llm_provider", "openai").plugin == "builtin"
    # ... and the plugin's components are chosen by the qualified name, for every kind.
    assert type(registry.explainer("acme/token-table")) is PluginTable
    assert type(registry.explainer("builtin/token-table")) is TokenTableExplainer
    assert type(registry.simulator("acme/json")) is PluginTableSimulator  # by its alias
    assert type(registry.simulator("mine")) is PluginTableSimulator  # its own name is free
    assert type(registry.subject("acme/collection", corpus=None)) is PluginSubject
    assert type(registry.llm("acme/openai:m")) is EchoLLM
    llm_explainer = registry.explainer("acme/openai:m")
    assert isinstance(llm_explainer, LLMExplainer) and type(llm_explainer.llm) is EchoLLM
    listed = {(c.kind, c.name, c.aliases, c.plugin) for c in registry.components()}
    assert {
        ("explainer", "acme/token-table", (), "acme"),
        ("explainer", "token-table", (), "builtin"),
        ("simulator", "mine", ("acme/json",), "acme"),
        ("subject", "acme/collection", (), "acme"),
        ("llm_provider", "acme/openai", (), "acme"),
    } <= listed
    with pytest.raises(UnknownComponentError, match=r"unknown explainer 'nobody/token-table'"):
        registry.explainer("nobody/token-table")


def test_strict_mode_refuses_a_plugin_taking_a_builtin_name() -> None:
    registry = fresh(squatter(), NEURON_EXPLAINER_STRICT_PLUGINS="1")
    with pytest.raises(DuplicateComponentError, match=r"plugin 'acme' registers the"):
        registry.load()
    with pytest.raises(DuplicateComponentError):  # and again: a failed load is not half done
        registry.components()


def broken(register: Register) -> None:
    register(TokenTableExplainer, name="half-done")
    raise RuntimeError("boom")


def test_plugin_raising_while_registering_is_a_warning_and_the_rest_works() -> None:
    registry = fresh(plugin("flaky", register_explainers=broken), ProviderPlugin())
    with pytest.warns(
        PluginWarning, match=r"plugin 'flaky' .*failed to register: RuntimeError: boom"
    ):
        assert isinstance(registry.llm("echo:x"), EchoLLM)
    status = {p.name: p for p in registry.plugins()}
    assert status["flaky"].status == "failed" and "boom" in (status["flaky"].error or "")
    assert status["echo-plugin"].status == "loaded"
    with pytest.raises(UnknownComponentError):  # nothing of a failed plugin is half-registered
        registry.explainer("half-done")


def test_strict_mode_raises() -> None:
    registry = fresh(
        plugin("flaky", register_explainers=broken), NEURON_EXPLAINER_STRICT_PLUGINS="1"
    )
    with pytest.raises(PluginError, match=r"plugin 'flaky'.*boom"):
        registry.components()


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"register_explainer": lambda r: None}, "'register_explainer' is marked as a hook"),
        (
            {"register_llm_providers": lambda r: r(EchoLLM, name="bad:name")},
            "'bad:name' is not a valid LLM provider name",
        ),
        ({"register_simulators": lambda r: r("not callable", name="x")}, "is not callable"),
    ],
)
def test_plugin_mistakes_are_reported(hooks: dict[str, Any], message: str) -> None:
    registry = fresh(plugin("oops", **hooks), NEURON_EXPLAINER_STRICT_PLUGINS="yes")
    with pytest.raises(PluginError, match=message):
        registry.load()


def test_factory_returning_the_wrong_type_is_a_plugin_error() -> None:
    registry = fresh(plugin("wrong", register_simulators=lambda r: r(lambda: 42, name="odd")))
    with pytest.raises(PluginError, match="simulator 'odd' from plugin 'wrong' built a int"):
        registry.simulator("odd")


def test_explain_neuron_resolves_names_through_the_registry() -> None:
    def custom(register: Register) -> None:
        register(lambda: TokenTableExplainer(max_listed=1), name="short-table")

    registry = fresh(plugin("mine", register_explainers=custom))
    result = explain_neuron(make_record(16, 9), explainer="short-table", registry=registry)
    assert result.explainer.settings["max_listed"] == 1
    with pytest.raises(UnknownComponentError, match="short-table"):
        explain_neuron(make_record(16, 9), explainer="short-table")  # not in the default one


# -- entry points, with real distribution metadata on sys.path ---------------------------------


def install_fake_dist(root: Path, name: str, module_source: str) -> None:
    """Write a module and a ``.dist-info`` declaring it as a neuron_explainer entry point."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[neuron_explainer]\n{name} = {name}\n")


GOOD = """
from neuron_explainer.plugins import hookimpl
from neuron_explainer.explainers.token_table import TokenTableExplainer

@hookimpl
def register_explainers(register):
    register(TokenTableExplainer, name="from-entry-point")
"""


def test_entry_point_plugins_load_fail_and_are_controlled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_dist(tmp_path, "ne_good_plugin", GOOD)
    install_fake_dist(tmp_path, "ne_bad_plugin", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = Registry(environ={})
    with pytest.warns(PluginWarning, match="'ne_bad_plugin'.*failed to import.*missing dependency"):
        assert isinstance(registry.explainer("from-entry-point"), TokenTableExplainer)
    assert {(p.name, p.status) for p in registry.plugins()} >= {
        ("ne_good_plugin", "loaded"),
        ("ne_bad_plugin", "failed"),
    }

    only_good = Registry(environ={"NEURON_EXPLAINER_PLUGINS": "ne_good_plugin"})
    assert only_good.entry("explainer", "from-entry-point").plugin == "ne_good_plugin"
    assert ("ne_bad_plugin", "not allowed") in {(p.name, p.status) for p in only_good.plugins()}

    off = Registry(environ={"NEURON_EXPLAINER_DISABLE_PLUGINS": "1"})
    with pytest.raises(UnknownComponentError):
        off.explainer("from-entry-point")
    with pytest.raises(PluginError, match="missing dependency xyz"):
        Registry(environ={"NEURON_EXPLAINER_STRICT_PLUGINS": "1"}).load()


def test_import_does_not_load_plugins(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    install_fake_dist(tmp_path, "ne_marker_plugin", f"open({str(marker)!r}, 'w').close()\n")
    code = (
        "import neuron_explainer, neuron_explainer.plugins, os, sys\n"
        f"print(os.path.exists({str(marker)!r}))\n"
        "neuron_explainer.plugins.default_registry().load()\n"
        f"print(os.path.exists({str(marker)!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.split() == ["False", "True"]


def test_a_bug_inside_a_factory_is_not_reported_as_bad_options() -> None:
    def buggy(**options: Any) -> TokenTableExplainer:
        return len(3)  # type: ignore[arg-type,return-value]

    registry = fresh(plugin("bugs", register_explainers=lambda r: r(buggy, name="buggy")))
    with pytest.raises(TypeError, match="has no len"):
        registry.explainer("buggy")
    with pytest.raises(InvalidInputError, match="does not accept these options"):
        fresh(ProviderPlugin()).llm("echo:m", temperature=3)


def test_one_llm_per_name_is_shared_and_plugin_name_clashes_are_plugin_errors() -> None:
    registry = fresh(ProviderPlugin())
    assert registry.llm("echo:m") is registry.llm("echo:m")
    assert registry.llm("echo:m") is not registry.llm("echo:other")
    explainer, simulator = registry.explainer("echo:m"), registry.simulator("echo:m")
    assert isinstance(explainer, LLMExplainer) and isinstance(simulator, JSONSimulator)
    assert explainer.llm is simulator.llm
    with pytest.raises(PluginError, match="cannot register plugin 'echo-plugin'"):
        fresh(ProviderPlugin(), ProviderPlugin()).load()


# --- subjects ------------------------------------------------------------------------------


class RuleSubject(Subject):
    """A plugin subject: a synthetic number unit per neuron, over the texts it was given."""

    def __init__(self, model: str, corpus: list[str] | None, *, scale: float = 1.0) -> None:
        if corpus is None:
            raise InvalidInputError("rule-subject needs corpus=")
        self.model, self.corpus, self.scale = model, corpus, scale

    @property
    def model_name(self) -> str:
        return self.model

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        record = number_neuron_record(seed=unit.index)
        scaled = [
            r.model_copy(update={"activations": tuple(self.scale * a for a in r.activations)})
            for r in record.top_records
        ]
        provenance = record.provenance.model_copy(update={"dataset": " ".join(self.corpus)})
        return record.model_copy(
            update={"unit": unit, "top_records": tuple(scaled), "provenance": provenance}
        )


def rule_plugin() -> object:
    return plugin("rules", register_subjects=lambda r: r(RuleSubject, name="rule-subject"))


def test_explain_neuron_builds_a_named_subject_through_the_registry() -> None:
    registry = fresh(rule_plugin())
    result = explain_neuron(
        "toy-model",
        subject="rule-subject",
        layer=2,
        neuron=1,
        corpus=["some", "texts"],
        subject_options={"scale": 3.0},
        registry=registry,
    )
    assert result.unit == UnitId(model="toy-model", layer=2, index=1)
    assert result.provenance.dataset == "some texts"  # the corpus reached the factory
    assert max(s.record.max_activation for s in result.scored.sequences) > 10  # scale 3
    names = {(c.kind, c.name, c.plugin) for c in registry.components("subject")}
    assert names == {
        ("subject", "rule-subject", "rules"),
        ("subject", "hf", "builtin"),
        ("subject", "collection", "builtin"),
    }


def test_subject_mistakes_are_clear() -> None:
    registry = fresh(rule_plugin())
    record = number_neuron_record()
    with pytest.raises(UnknownComponentError, match=r"unknown subject 'nope'.*'rule-subject'"):
        explain_neuron("m", subject="nope", layer=0, neuron=0, corpus=["x"], registry=registry)
    with pytest.raises(InvalidInputError, match="a NeuronRecord is explained as it is"):
        explain_neuron(record, subject="rule-subject", registry=registry)
    with pytest.raises(InvalidInputError, match=r"subject_options cannot set \['corpus'\]"):
        explain_neuron("m", layer=0, neuron=0, corpus=["x"], subject_options={"corpus": "y"})
    with pytest.raises(
        InvalidInputError, match=r"subject 'rule-subject' \(from plugin 'rules'\) does not accept"
    ):
        explain_neuron(
            "m",
            subject="rule-subject",
            layer=0,
            neuron=0,
            corpus=["x"],
            subject_options={"colour": "red"},
            registry=registry,
        )
    with pytest.raises(InvalidInputError, match="rule-subject needs corpus="):
        explain_neuron("m", subject="rule-subject", layer=0, neuron=0, registry=registry)
    subject = RuleSubject("m", ["x"])
    with pytest.raises(InvalidInputError, match="RuleSubject has its corpus and options"):
        explain_neuron(subject, subject="rule-subject", layer=0, neuron=0, registry=registry)
    assert explain_neuron(subject, layer=0, neuron=4).unit == UnitId(model="m", layer=0, index=4)


def test_the_collection_subject_reads_a_collection_folder(tmp_path: Path) -> None:
    folder = tmp_path / "collection"
    shutil.copytree(Path(__file__).parent / "data" / "v1" / "collection", folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a format migration may say what it did
        result = explain_neuron(str(folder), subject="collection", layer=0, neuron=2)
        with pytest.raises(InvalidInputError, match="a collection holds its records already"):
            explain_neuron(str(folder), subject="collection", layer=0, neuron=2, corpus=["x"])
    assert (result.unit.layer, result.unit.index) == (0, 2)
    assert result.unit.model == json.loads((folder / "meta.json").read_text())["model"]
