"""The report's template files: shipped as package resources, parsed as documented, inlined
exactly as the Content-Security-Policy hashes them, values escaped unless marked as markup."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from neuron_explainer import ComponentInfo, explain_neuron
from neuron_explainer.report import write_report
from neuron_explainer.report._assets import CSP, SCRIPT, STYLE, csp_hash
from neuron_explainer.report._templates import (
    TEMPLATES,
    Html,
    fragment_names,
    parse_fragments,
    render,
    write_fragment,
)
from neuron_explainer.report._tokens import LEVELS
from neuron_explainer.testing import MockExplainer, MockSimulator, number_neuron_record

FILES = ("page.html", "unit.html", "scores.html", "histogram.html", "style.css", "script.js")


def template_text(name: str) -> str:
    folder = resources.files("neuron_explainer.report").joinpath(TEMPLATES)
    return folder.joinpath(name).read_text(encoding="utf-8")


def test_templates_are_package_resources() -> None:
    folder = resources.files("neuron_explainer.report").joinpath(TEMPLATES)
    assert {entry.name for entry in folder.iterdir()} >= set(FILES)
    for name in FILES[:4]:
        assert parse_fragments(template_text(name)), name
    assert {"page", "unit", "histogram", "row", "failures"} <= fragment_names()
    assert {"classification", "plugin", "judgement", "judged-tokens"} <= fragment_names()


def test_style_and_script_are_the_template_files_inlined_as_hashed(tmp_path: Path) -> None:
    style, script = template_text("style.css"), template_text("script.js")
    before, _, after = style.partition("${shades}")
    assert STYLE.startswith(before) and STYLE.endswith(after)
    assert ".a10{" in STYLE and ".n1{" in STYLE and "$" not in STYLE
    assert script.replace("${levels}", str(LEVELS)) == SCRIPT
    assert f"style-src {csp_hash(STYLE)};" in CSP and f"script-src {csp_hash(SCRIPT)};" in CSP
    html = write_report([], tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<style>{STYLE}</style>" in html and f"<script>{SCRIPT}</script>" in html
    assert f'content="{CSP}"' in html


def test_fragments_are_exact_with_backslash_continuations_joined() -> None:
    text = (
        "<!-- ignored -->\n"
        '<template id="a">one \\\ntwo\n</template>\n'
        '<template id="b"><b>$x</b></template>'
    )
    assert parse_fragments(text) == {"a": "one two\n", "b": "<b>$x</b>"}
    with pytest.raises(ValueError, match="'a' is defined twice"):
        parse_fragments(text + '<template id="a"></template>')


def test_render_escapes_plain_strings_but_not_html() -> None:
    nasty = "<script>'&\"</script>"
    assert render("stat", name=nasty, value=Html("<i>x</i>")) == (
        "<div><dt>&lt;script&gt;&#x27;&amp;&quot;&lt;/script&gt;</dt>"
        '<dd class="num"><i>x</i></dd></div>'
    )
    with pytest.raises(KeyError, match="value"):
        render("stat", name="only the name")


def test_write_fragment_streams_its_parts_in_place() -> None:
    out: list[str] = []
    write_fragment(
        out.append, "failures", {"rows": lambda: out.append("<tr>streamed</tr>")}, count="<2>"
    )
    text = "".join(out)
    assert text.startswith('<section id="failures"><h2>Failures (&lt;2&gt;)</h2>')
    assert "<tbody>\n<tr>streamed</tr></tbody>" in text
    assert len(out) == 3  # before the stream, the stream, after it


def test_component_versions_are_escaped_once(tmp_path: Path) -> None:
    """A version with ``<`` and ``&`` reads as written (it used to be escaped twice)."""
    info = ComponentInfo(name="mock", version="1<2 & 3", prompt_version='"v"')
    result = explain_neuron(
        number_neuron_record(seed=1),
        explainer=MockExplainer("numbers"),
        simulator=MockSimulator.from_keywords(),
    )
    result = result.model_copy(update={"explainer": info})
    html = write_report([result], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "(version 1&lt;2 &amp; 3, prompt &quot;v&quot;)" in html
    assert not re.search("&amp;(lt|amp|quot);", html)
