"""The docs stay true: their example code runs, every public name is documented, and every
snippet they include exists. (The mkdocs build itself is the `docs` nox session.)"""

from __future__ import annotations

import importlib
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

import neuron_explainer
from neuron_explainer.plugins import hookspecs
from neuron_explainer.plugins import registry as registry_module

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CUSTOM_EXAMPLE = ROOT / "examples" / "custom_components.py"
PLUGINS_PAGE = DOCS / "plugins.md"

# `--8<-- "path"`, `--8<-- "path:section"` or `--8<-- "path:1:20"`; a leading `;` escapes it.
SNIPPET = re.compile(r"""^\s*(?P<escape>;*)-+8<-+\s+(?P<quote>["'])(?P<target>.+?)(?P=quote)\s*$""")
TARGET = re.compile(r"(?i)^(?P<path>.+?)(?::(?P<section>[a-z][-_0-9a-z]*)|(?::-?\d*){1,2})?$")
MARKER = re.compile(r"-+8<-+\s+\[\s*(?P<type>start|end)\s*:\s*(?P<name>[a-z][-_0-9a-z]*)\s*\]")
DIRECTIVE = re.compile(r"^:::\s+(?P<identifier>\S+)\s*$", re.MULTILINE)


def snippet_targets(page: Path) -> list[tuple[int, str, str | None]]:
    """(line number, path, section or None) of every snippet ``page`` includes."""
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = SNIPPET.match(line)
        if match and not match["escape"]:
            target = TARGET.match(match["target"])
            assert target, f"{page.name}:{number}: unreadable snippet {match['target']!r}"
            found.append((number, target["path"], target["section"]))
    return found


def section_markers(path: Path) -> list[tuple[str, str]]:
    """(type, name) of every section marker in ``path``, in order."""
    return [(m["type"], m["name"]) for m in MARKER.finditer(path.read_text(encoding="utf-8"))]


def expanded(page: Path) -> str:
    """``page`` with the files it includes (whole-file snippets) appended."""
    text = page.read_text(encoding="utf-8")
    for _, path, section in snippet_targets(page):
        if section is None and (ROOT / path).is_file():
            text += "\n" + (ROOT / path).read_text(encoding="utf-8")
    return text


def api_entries() -> dict[str, list[str] | None]:
    """Every ``::: identifier`` of the API page, with its ``members`` option (None if absent)."""
    entries: dict[str, list[str] | None] = {}
    lines = expanded(DOCS / "api.md").splitlines()
    for i, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if not match:
            continue
        members: list[str] | None = None
        options = []
        for option in lines[i + 1 :]:
            if not option.startswith("    "):
                break
            options.append(option.strip())
        for j, option in enumerate(options):
            if option.startswith("members:"):
                inline = option.removeprefix("members:").strip()
                if inline.startswith("["):
                    members = [m.strip() for m in inline.strip("[]").split(",") if m.strip()]
                else:
                    items = itertools.takewhile(lambda o: o.startswith("- "), options[j + 1 :])
                    members = [o.removeprefix("- ").strip() for o in items]
        entries[match["identifier"]] = members
    return entries


def is_module(identifier: str) -> bool:
    """Whether ``identifier`` names a module (rather than an object inside one)."""
    try:
        importlib.import_module(identifier)
    except ModuleNotFoundError as exc:
        if exc.name != identifier:
            raise
        return False
    return True


def test_custom_components_example_runs_and_scores() -> None:
    run = subprocess.run(
        [sys.executable, str(CUSTOM_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    match = re.search(r"score \(top-and-random correlation\):\s+(-?[0-9.]+)", run.stdout)
    assert match, f"the example printed no score:\n{run.stdout}"
    assert float(match.group(1)) > 0.5


@pytest.mark.parametrize(
    "page_path", [DOCS / "index.md", ROOT / "README.md"], ids=["docs", "readme"]
)
def test_quickstart_runs(page_path: Path) -> None:
    page = page_path.read_text(encoding="utf-8")
    quickstart = page.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", quickstart, re.DOTALL)
    assert code, "the quickstart has no python code block"
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code.group(1)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    score = float(run.stdout.splitlines()[1])
    assert score > 0.9, run.stdout
    claims = printed_claims(code.group(1))
    printed = run.stdout.splitlines()
    assert len(claims) == len(printed), (
        f"a print without a comment saying what it prints:\n{code[1]}"
    )
    for claim, line in zip(claims, printed, strict=True):
        pattern = ".*?".join(re.escape(part) for part in claim.split("..."))
        assert re.fullmatch(pattern, line), f"the quickstart says {claim!r} but prints {line!r}"


def printed_claims(code: str) -> list[str]:
    """What each ``print(...)`` line of ``code`` is said to print: its trailing comment, or
    the comment line right below it, up to an em dash (what follows explains it)."""
    lines = code.splitlines()
    claims = []
    for i, line in enumerate(lines):
        if not line.startswith("print("):
            continue
        comment = line.partition("  # ")[2]
        below = lines[i + 1] if i + 1 < len(lines) else ""
        if not comment and below.startswith("# "):
            comment = below[2:]
        assert comment, f"the quickstart does not say what {line!r} prints"
        claims.append(comment.split(" — ")[0].strip())
    return claims


@pytest.mark.parametrize("name", sorted(neuron_explainer.__all__))
def test_public_name_has_an_api_entry(name: str) -> None:
    documented = set(api_entries())
    assert f"neuron_explainer.{name}" in documented, (
        f"neuron_explainer.{name} is public but has no API entry: add "
        f"'::: neuron_explainer.{name}' to docs/api.md"
    )


def test_module_entries_list_every_public_name() -> None:
    """A module entry that picks its members must pick every name in the module's ``__all__``
    that is not already documented at the top level."""
    top_level = [getattr(neuron_explainer, n) for n in neuron_explainer.__all__]
    checked = 0
    for identifier, listed in api_entries().items():
        if listed is None or not is_module(identifier):
            continue
        module = importlib.import_module(identifier)
        missing = [
            name
            for name in getattr(module, "__all__", ())
            if name not in listed and not any(getattr(module, name) is o for o in top_level)
        ]
        assert not missing, f"docs/api.md: add {missing} to the members of '::: {identifier}'"
        checked += 1
    assert checked, "no module entry with a members list was found; the scan is broken"


def test_api_entries_point_at_real_objects() -> None:
    for identifier in api_entries():
        assert identifier.split(".")[0] == "neuron_explainer", identifier
        if not is_module(identifier):
            module, _, name = identifier.rpartition(".")
            assert hasattr(importlib.import_module(module), name), f"{identifier} does not exist"


def test_snippets_referenced_from_docs_exist() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    referenced = [(page, *ref) for page in pages for ref in snippet_targets(page)]
    assert referenced, "no page includes a snippet; the scan is broken"
    for page, number, path, section in referenced:
        where = f"{page.relative_to(ROOT)}:{number}"
        file = ROOT / path
        assert file.is_file(), f"{where}: snippet file {path} does not exist"
        if section is None:
            continue
        markers = section_markers(file)
        assert ("start", section) in markers, f"{where}: no [start:{section}] marker in {path}"
        assert ("end", section) in markers, f"{where}: no [end:{section}] marker in {path}"
        start = markers.index(("start", section))
        assert ("end", section) in markers[start:], (
            f"{where}: [end:{section}] comes before [start:{section}] in {path}"
        )


def test_custom_components_page_shows_all_three_components() -> None:
    page = DOCS / "custom-components.md"
    included = {
        section
        for _, path, section in snippet_targets(page)
        if path == "examples/custom_components.py"
    }
    assert {"subject", "explainer", "simulator"} <= included


def hookspec_reference() -> str:
    """The "Hookspec reference" section of the plugins page."""
    page = PLUGINS_PAGE.read_text(encoding="utf-8")
    assert "\n## Hookspec reference\n" in page, "docs/plugins.md has no '## Hookspec reference'"
    return page.split("\n## Hookspec reference\n", 1)[1].split("\n## ", 1)[0]


def test_every_hookspec_is_in_hooks() -> None:
    marker = f"{hookspecs.PROJECT}_spec"
    specs = {name for name, obj in vars(hookspecs).items() if hasattr(obj, marker)}
    assert specs == set(hookspecs.HOOKS.values()), "hookspecs.HOOKS must list every hookspec"


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOKS.values()))
def test_hookspec_is_documented(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    assert (spec.__doc__ or "").strip(), f"hookspec {hook} has no docstring"
    rendered = DIRECTIVE.findall(hookspec_reference())
    assert f"neuron_explainer.plugins.hookspecs.{hook}" in rendered, (
        f"docs/plugins.md: add '::: neuron_explainer.plugins.hookspecs.{hook}' to the "
        "Hookspec reference"
    )


def test_plugin_environment_variables_are_documented() -> None:
    names = [value for key, value in vars(registry_module).items() if key.startswith("ENV_")]
    assert names, "no ENV_* constant found in neuron_explainer.plugins.registry"
    page = PLUGINS_PAGE.read_text(encoding="utf-8")
    missing = [name for name in names if name not in page]
    assert not missing, f"docs/plugins.md does not mention {missing}"
