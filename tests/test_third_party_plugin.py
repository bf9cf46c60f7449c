"""examples/acme_plugin is pip-installed for real and found through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "acme_plugin"

USE_IT = """
import json, random, sys
from neuron_explainer import ActivationRecord, UnitId, build_neuron_record, explain_neuron
from neuron_explainer.plugins import default_registry, list_components

rng = random.Random(0)
words = [" the", " cat", " sat", " on", " a", " mat", "7", " 42"]
excerpts = []
for _ in range(200):
    tokens = [rng.choice(words) for _ in range(12)]
    excerpts.append(ActivationRecord(
        tokens=tokens, activations=[rng.gauss(4.0 if t == "7" else 0.0, 0.1) for t in tokens]))
record = build_neuron_record(UnitId(model="toy", layer=0, index=0), excerpts)
registry = default_registry()
out = {
    "components": [[c.kind, c.name, c.plugin] for c in registry.components()],
    "plugins": [[p.name, p.status] for p in registry.plugins()],
}
try:
    result = explain_neuron(record, explainer="acme:rules-1", simulator="acme:rules-1")
    out["explanation"] = result.explanation.text
    out["score"] = result.score
    out["explainer"] = result.explainer.model_dump(mode="json")
    out["simulator"] = result.simulator.model_dump(mode="json")
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
texts = [" ".join(rng.choice(["the", "Cat", "sat", "7", "42", "on"]) for _ in range(12))
         for _ in range(150)]
try:
    recorded = explain_neuron(
        "acme-model-name", subject="acme-rules", layer=1, neuron=0, corpus=texts
    )
    out["subjects"] = [[c.name, c.plugin] for c in list_components("subject")]
    out["recorded"] = {
        "unit": recorded.unit.model_dump(mode="json"),
        "dataset": recorded.provenance.dataset,
        "explanation": recorded.explanation.text,
        "score": recorded.score,
    }
except Exception as exc:
    out["subject_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin package installed with pip into an isolated target folder."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=build,
        timeout=300,
    )
    return target


def run(site: Path, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEURON_EXPLAINER_")}
    environ.update(env, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", USE_IT],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def test_pip_installed_plugin_is_discovered_and_used_end_to_end(site: Path) -> None:
    assert (site / "neuron_explainer_acme").is_dir()
    entry_points = next(site.glob("neuron_explainer_acme-*.dist-info")) / "entry_points.txt"
    assert "acme = neuron_explainer_acme" in entry_points.read_text()

    out = run(site)
    assert ["llm_provider", "acme", "acme"] in out["components"]
    assert ["acme", "loaded"] in out["plugins"]
    assert "error" not in out, out
    assert out["explanation"] == 'the token "7" wherever it appears'
    assert isinstance(out["score"], float) and out["score"] > 0.95
    assert out["explainer"]["name"] == "llm"
    assert out["explainer"]["settings"]["llm"] == "acme:rules-1"
    assert out["simulator"]["name"] == "llm-json"


def test_a_third_party_subject_records_through_the_registry(site: Path) -> None:
    out = run(site)
    assert "subject_error" not in out, out
    assert ["acme-rules", "acme"] in out["subjects"]
    assert ["hf", "builtin"] in out["subjects"] and ["collection", "builtin"] in out["subjects"]
    recorded = out["recorded"]
    assert recorded["unit"] == {
        "model": "acme-model-name", "layer": 1, "index": 0, "kind": "mlp_neuron"
    }  # fmt: skip
    assert recorded["dataset"] == "acme texts"  # the acme subject's records, not HFSubject's
    assert recorded["explanation"].startswith("fires on numbers")
    assert recorded["score"] > 0.95


def test_disabling_plugins_hides_the_provider(site: Path) -> None:
    out = run(site, NEURON_EXPLAINER_DISABLE_PLUGINS="1")
    assert ["acme", "disabled"] in out["plugins"]
    assert str(out["error"]).startswith("UnknownComponentError: unknown LLM provider 'acme'")
    assert "plugins loaded: builtin" in str(out["error"])
    assert str(out["subject_error"]).startswith("UnknownComponentError: unknown subject")


def test_allow_list_selects_plugins(site: Path) -> None:
    assert ["acme", "not allowed"] in run(site, NEURON_EXPLAINER_PLUGINS="other")["plugins"]
    assert "error" not in run(site, NEURON_EXPLAINER_PLUGINS="acme, other")


SQUATTER = '''
from neuron_explainer.explainers.token_table import TokenTableExplainer
from neuron_explainer.plugins import hookimpl


class SquatTable(TokenTableExplainer):
    """Wants the built-in's name."""


@hookimpl
def register_explainers(register):
    register(SquatTable, name="token-table", description="squatter's table")
'''


@pytest.fixture(scope="module")
def squatter_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installed plugin (entry point ``squat``) that registers the explainer name
    ``token-table``, a built-in's."""
    package = tmp_path_factory.mktemp("squatter")
    (package / "neuron_explainer_squat").mkdir()
    (package / "neuron_explainer_squat" / "__init__.py").write_text(SQUATTER)
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling>=1.24"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "neuron-explainer-squat"\nversion = "0.1.0"\n'
        '[project.entry-points.neuron_explainer]\nsquat = "neuron_explainer_squat"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["neuron_explainer_squat"]\n'
    )
    target = tmp_path_factory.mktemp("squat-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(package)],
        check=True, capture_output=True, text=True, cwd=package, timeout=300,
    )  # fmt: skip
    return target


def command(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEURON_EXPLAINER_")}
    environ.update(env, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environ, timeout=300
    )


def test_an_installed_plugin_cannot_take_a_builtin_name(squatter_site: Path) -> None:
    listed = command(squatter_site, "-m", "neuron_explainer", "plugins")
    assert listed.returncode == 0, listed.stderr
    assert "warning: plugin 'squat' registers the explainer name 'token-table', which stays " in (
        listed.stderr
    )
    rows = [line.split()[:2] for line in listed.stdout.splitlines()]
    explainers = rows[rows.index(["Explainers:"]) : rows.index(["Simulators:"])]
    assert ["token-table", "[builtin]"] in explainers
    assert ["squat/token-table", "[squat]"] in explainers
    use = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from neuron_explainer.plugins import default_registry\n"
        "r = default_registry()\n"
        "print(type(r.explainer('token-table')).__name__, type(r.explainer('squat/token-table'))"
        ".__name__)\n"
    )
    used = command(squatter_site, "-c", use)
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["TokenTableExplainer", "SquatTable"]
    strict = command(
        squatter_site, "-m", "neuron_explainer", "plugins", NEURON_EXPLAINER_STRICT_PLUGINS="1"
    )
    assert strict.returncode == 2
    assert "error: plugin 'squat' registers the explainer name 'token-table'" in strict.stderr
