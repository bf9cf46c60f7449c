"""The package's layer order (docs/architecture.md) holds, for imports written as statements and
for modules named by string (plugin registrations, lazy exports), and the old module paths still
import with a deprecation warning."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "neuron_explainer"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
LAYERS: list[list[str]] = [
    [part.strip() for part in layer.split("|")]
    for layer in next(c for c in CONFIG["contracts"] if c["id"] == "layers")["layers"]
]
DOTTED = re.compile(r"^neuron_explainer(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_of(module: str) -> tuple[int, str] | None:
    for depth, layer in enumerate(LAYERS):
        for container in layer:
            if module == container or module.startswith(container + "."):
                return depth, container
    return None


def _named_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """Modules named by whole string constants (not docstrings), e.g. ``"pkg.mod.Class"``."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and DOTTED.match(node.value)
        ):
            found.append((node.lineno, node.value))
    return found


def _resolve(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package."""
    parts = dotted.split(".")
    for end in range(len(parts), 1, -1):
        candidate = ROOT.joinpath(*parts[:end])
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts[:end])
    return None


def test_import_statements_follow_the_layers() -> None:
    # In a subprocess: import-linter configures logging with dictConfig, which would disable
    # every logger this test session created before it (and so the tests that read our logs).
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module in ("neuron_explainer", "neuron_explainer.__main__"):
            continue  # the facade re-exports everything lazily; __main__ runs the CLI
        assert _layer_of(module) is not None, f"{module} is in no layer of [tool.importlinter]"


def test_modules_named_by_string_follow_the_layers() -> None:
    """A plugin registration ("neuron_explainer.explainers.llm.LLMExplainer") or a lazy export is
    an import that runs later; it must point down (or sideways within the same container)."""
    problems = []
    for path in PACKAGE.rglob("*.py"):
        importer = _module_name(path)
        own = _layer_of(importer)
        if own is None:
            continue
        for line, dotted in _named_modules(ast.parse(path.read_text(encoding="utf-8"))):
            target = _resolve(dotted)
            theirs = _layer_of(target) if target else None
            if theirs is None or theirs[1] == own[1]:
                continue
            if theirs[0] <= own[0]:
                problems.append(f"{importer}:{line} names {dotted} (layer {theirs[1]})")
    assert problems == []


MAX_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    long = {
        _module_name(path): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (docs/architecture.md): {long}"


def test_the_string_check_sees_a_registration_that_points_up() -> None:
    tree = ast.parse('FACTORY = "neuron_explainer.runs.batch.explain_neurons"\n')
    assert _named_modules(tree) == [(1, "neuron_explainer.runs.batch.explain_neurons")]
    assert _resolve("neuron_explainer.runs.batch.explain_neurons") == "neuron_explainer.runs.batch"
    runs, plugins = _layer_of("neuron_explainer.runs.batch"), _layer_of("neuron_explainer.plugins")
    assert runs is not None and plugins is not None and runs[0] < plugins[0]


OLD_PATHS = {
    "neuron_explainer.batch": ["EXPLAIN_OPTIONS", "RunStore", "explain_neurons", "rescore"],
    "neuron_explainer.pipeline": ["explain_neuron", "ascore_explanation", "simulate_records"],
    "neuron_explainer.runstore": ["SCHEMA_VERSION", "RunStore", "config_mismatch"],
    "neuron_explainer.estimate": ["CallEstimate", "estimate_neuron", "estimate_run"],
    "neuron_explainer.best_of": ["CandidateExplainer", "abest_of_k", "calibration_score"],
    "neuron_explainer.scoring": ["correlation", "fit_calibration", "score_simulations"],
    "neuron_explainer.splits": ["HeldOutOverlapWarning", "Splits", "split_records"],
    "neuron_explainer.building": ["build_neuron_record", "moments"],
    "neuron_explainer.token_table": ["TokenTable", "build_token_table", "token_shape"],
    "neuron_explainer.subjects.models": ["GPT2_HUB_IDS", "load_model", "model_shape"],
    "neuron_explainer.subjects.architectures": ["SITES", "MLPSite", "site_for"],
    "neuron_explainer.explainers.few_shot": ["FEW_SHOT_EXAMPLES", "FewShotExample"],
    "neuron_explainer.plugins.builtin": ["register_explainers", "register_simulators"],
    "neuron_explainer.subjects.collect_state": ["LayerState"],
}


@pytest.mark.parametrize(("old", "names"), OLD_PATHS.items())
def test_old_module_paths_import_with_a_deprecation_warning(old: str, names: list[str]) -> None:
    from neuron_explainer._compat import MOVED

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(old) + " moved to") as caught:
        __import__(old)  # as an import statement does, so the warning names this file
    module = sys.modules[old]
    assert caught[0].filename == __file__  # the warning points at the importer
    for name in names:
        new = next(
            importlib.import_module(t)
            for t in MOVED[old]
            if hasattr(importlib.import_module(t), name)
        )
        assert getattr(module, name) is getattr(new, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = module.nope
    sys.modules.pop(old, None)


def test_new_paths_import_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in PACKAGE.rglob("*.py"):
            module = _module_name(path)
            if module != "neuron_explainer.__main__":  # runs the CLI
                importlib.import_module(module)
