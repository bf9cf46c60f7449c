"""The static HTML report: content and escaping checked on the HTML, behaviour in a real
headless Chromium (skipped only when no Chromium is installed)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from chromium import BROWSER_FLAGS, Chromium, ChromiumError, find_chromium

from neuron_explainer import (
    ActivationRecord,
    ExplanationResult,
    InvalidInputError,
    NeuronRecord,
    UnitId,
    UsageSummary,
    build_neuron_record,
    explain_neuron,
)
from neuron_explainer.report import DEFAULT_MAX_EXCERPTS, write_report
from neuron_explainer.report._stats import histogram_bin
from neuron_explainer.testing import MockExplainer, MockSimulator, number_neuron_record

MODEL = "test-model"
NASTY = (
    "<script>",
    "</script>",
    "&amp;",
    "\n",
    "\t",
    "\r",
    "\u202e",
    '"',
    "'",
    "</details>",
    "<!--",
    "]]>",
    "<img src=x onerror=window.pwned=1>",
    "\x00",
    "\u00a0",
    "",
    "  ",
)
NASTY_TITLE = '<b>"Report" & co</b>\u202e'
NASTY_REASON = 'SimulationError: bad <output> & "quotes"\n</td></tr></table><script>x</script>'


def numbers(layer: int, index: int, seed: int) -> NeuronRecord:
    record = number_neuron_record(seed=seed)
    return record.model_copy(update={"unit": UnitId(model=MODEL, layer=layer, index=index)})


def nasty_record() -> NeuronRecord:
    """A unit that fires on the nasty tokens (so they appear in its explanation too); every
    excerpt holds all of them."""
    rng = random.Random(3)
    words = (" the", " cat", " sat", ",")
    excerpts = []
    for _ in range(100):
        tokens = [*NASTY, *(rng.choice(words) for _ in range(8))]
        rng.shuffle(tokens)
        acts = [5.0 + rng.random() if t in NASTY else rng.gauss(0, 0.1) for t in tokens]
        excerpts.append(ActivationRecord(tokens=tokens, activations=acts))
    return build_neuron_record(UnitId(model=MODEL, layer=9, index=99), excerpts)


def build_results() -> list[ExplanationResult]:
    results = [explain_neuron(numbers(layer, 10 * layer + 1, layer)) for layer in range(3)]
    results.append(
        explain_neuron(
            numbers(3, 5, 7),
            explainer=MockExplainer("numbers such as 7 and 42"),
            simulator=MockSimulator.from_keywords(),
        )
    )
    results.append(
        explain_neuron(
            numbers(4, 2, 8),
            explainer=MockExplainer("nothing at all"),
            simulator=MockSimulator.from_function(lambda tokens: [1.0] * len(tokens)),
        )
    )
    noisy = numbers(5, 3, 9)
    results.append(
        explain_neuron(
            noisy,
            explainer=MockExplainer("numbers, noisily"),
            simulator=MockSimulator.from_truth(noisy, noise=4.0, seed=2),
        )
    )
    results.append(explain_neuron(nasty_record()))
    return results


FAILURES = [
    (UnitId(model=MODEL, layer=7, index=1), "LLMTimeoutError: no answer in 60 s"),
    (UnitId(model=MODEL, layer=7, index=2), NASTY_REASON),
]


@pytest.fixture(scope="module")
def results() -> list[ExplanationResult]:
    return build_results()


@pytest.fixture(scope="module")
def report(results: list[ExplanationResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    return write_report(iter(results), out, title=NASTY_TITLE, failures=FAILURES)


VOID = {"meta", "link", "input", "br", "img", "hr", "wbr", "col", "area", "base", "source"}


class Page(HTMLParser):
    """Parses the page and checks every element closes where it opened."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = defaultdict(list)  # by the id of any ancestor
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.feed(html)
        self.close()
        assert not self.stack, f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "script":
            self.scripts.append((attributes, ""))
        if tag not in VOID:
            self.stack.append((tag, attributes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1][0] == tag, f"</{tag}> closes <{self.stack[-1][0]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] == "script":
            attributes, text = self.scripts[-1]
            self.scripts[-1] = (attributes, text + data)
        if self.stack and self.stack[-1][0] == "style":
            self.styles.append(data)
        for _, attributes in self.stack:
            if attributes.get("id"):
                self.text[str(attributes["id"])].append(data)

    def text_of(self, element_id: str) -> str:
        return "".join(self.text[element_id])

    def find(self, tag: str, css_class: str | None = None) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.elements
            if t == tag and (css_class is None or css_class in (a.get("class") or "").split())
        ]


@pytest.fixture(scope="module")
def page(report: Path) -> Page:
    return Page(report.read_text(encoding="utf-8"))


def section_ids(page: Page) -> list[str]:
    return [str(a["id"]) for a in page.find("details", "unit")]


def shown(text: str) -> str:
    """``text`` as the page shows free text: invisible characters as escapes."""
    return "".join(
        c
        if c in " \n\t" or c.isprintable()
        else f"\\u{ord(c):04x}"
        if ord(c) > 0xFF
        else f"\\x{ord(c):02x}"
        for c in text
    )


# -- content -------------------------------------------------------------------------------


def test_every_unit_has_a_row_linking_to_its_section(
    page: Page, results: list[ExplanationResult]
) -> None:
    ids = section_ids(page)
    assert len(ids) == len(results) == len(set(ids))
    links = [a["href"] for a in page.find("a") if (a.get("href") or "").startswith("#u-")]
    assert links == [f"#{i}" for i in ids]
    table = page.text_of("units")
    for uid, result in zip(ids, results, strict=True):
        assert f"-{result.unit.layer}-mlp_neuron-{result.unit.index}" in uid
        section = page.text_of(uid)
        assert f"layer {result.unit.layer} neuron {result.unit.index}" in section
        assert shown(result.explanation.text) in section
        assert shown(result.explanation.text) in table


def test_every_score_is_shown_and_undefined_ones_give_their_reason(
    page: Page, results: list[ExplanationResult]
) -> None:
    undefined = 0
    for uid, result in zip(section_ids(page), results, strict=True):
        section = page.text_of(uid)
        s = result.scored
        for score in (
            s.correlation,
            s.random_correlation,
            s.top_correlation,
            s.rsquared,
            s.absolute_dev_explained,
        ):
            if score.value is None:
                assert f"undefined {score.reason}" in section
            else:
                assert f"{score.value:.3f}" in section
        undefined += s.correlation.value is None
        assert result.explainer.name in section and result.simulator.name in section
    assert undefined == 1  # the constant simulator


def test_overview_counts_and_averages(page: Page, results: list[ExplanationResult]) -> None:
    overview = page.text_of("overview")
    scores = [r.score for r in results if r.score is not None]
    assert f"Explained{len(results)}" in overview
    assert f"Failed{len(FAILURES)}" in overview
    assert f"Mean score{statistics.fmean(scores):.3f}" in overview
    assert f"Median score{statistics.median(scores):.3f}" in overview
    assert "Undefined score1" in overview
    assert "LLM tokens" not in overview  # offline components: no usage to show


def test_histogram_bars_count_the_scores(page: Page, results: list[ExplanationResult]) -> None:
    bars = page.find("rect", "bar")
    binned = [b for b in bars if "data-undefined" not in b]
    (undefined,) = [b for b in bars if "data-undefined" in b]
    assert len(binned) == 20
    scores = [r.score for r in results if r.score is not None]
    for i, bar in enumerate(binned):
        lo, hi = float(bar["data-lo"] or ""), float(bar["data-hi"] or "")
        last = i == len(binned) - 1
        expected = sum(lo <= s < hi or (last and s == hi) for s in scores)
        assert int(bar["data-count"] or "") == expected, (lo, hi)
    assert sum(int(b["data-count"] or "") for b in binned) == len(scores)
    assert int(undefined["data-count"] or "") == len(results) - len(scores)


@pytest.mark.parametrize(
    ("score", "expected"),
    [(-1.0, 0), (-0.95, 0), (0.0, 10), (0.3, 13), (0.29999, 12), (0.999, 19), (1.0, 19)],
)
def test_histogram_bins_are_half_open(score: float, expected: int) -> None:
    assert histogram_bin(score) == expected


def test_failures_are_listed_with_their_reasons(page: Page) -> None:
    failures = page.text_of("failures")
    assert f"Failures ({len(FAILURES)})" in failures
    for unit, reason in FAILURES:
        assert f"layer {unit.layer} neuron {unit.index}" in failures
        assert reason in failures


def test_excerpts_are_capped_and_split_between_top_and_random(
    page: Page, report: Path, results: list[ExplanationResult]
) -> None:
    heads = iter(page.find("div", "excerpt"))
    blocks = iter(a for a, _ in page.scripts if a.get("type") == "application/json")
    for result in results:
        total = len(result.scored.sequences)
        n = min(DEFAULT_MAX_EXCERPTS, total)
        for _ in range(n):
            next(heads)
        next(blocks)
    assert next(heads, None) is None and next(blocks, None) is None
    sources = re.findall(r'<span class="src (top|random)">', report.read_text(encoding="utf-8"))
    assert sources[:DEFAULT_MAX_EXCERPTS] == ["top"] * 3 + ["random"] * 3


def test_max_excerpts_none_shows_all_and_negative_is_refused(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    one = results[:1]
    page = Page(write_report(one, tmp_path / "all.html", max_excerpts=None).read_text())
    assert len(page.find("div", "excerpt")) == len(one[0].scored.sequences)
    page = Page(write_report(one, tmp_path / "none.html", max_excerpts=0).read_text())
    assert not page.find("div", "excerpt")
    assert not [a for a, _ in page.scripts if a.get("type") == "application/json"]
    with pytest.raises(InvalidInputError, match="max_excerpts"):
        write_report(one, tmp_path / "bad.html", max_excerpts=-1)


def test_usage_and_cost_are_shown_when_recorded(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    usage = UsageSummary(prompt_tokens=1200, completion_tokens=34, calls=2, cost_usd=0.0123)
    paid = [r.model_copy(update={"usage": usage}) for r in results[:2]]
    text = write_report(paid, tmp_path / "paid.html").read_text()
    page = Page(text)
    overview = page.text_of("overview")
    assert "LLM tokens2,468" in overview and "Cost (est.)$0.0246" in overview
    assert "no-usage" not in (page.find("table", "units")[0]["class"] or "")
    assert "1,234 tokens (1,200 prompt + 34 completion), 2 calls, $0.0123" in text
    free = Page(write_report(results[:1], tmp_path / "free.html").read_text())
    assert "no-usage" in (free.find("table", "units")[0]["class"] or "")


# -- safety ----------------------------------------------------------------------------------


def test_nasty_tokens_and_texts_cannot_break_the_markup(
    page: Page, report: Path, results: list[ExplanationResult]
) -> None:
    # Page() already checked that every element closes where it opened.
    executable = [a for a, _ in page.scripts if a.get("type") != "application/json"]
    assert len(executable) == 1  # the page's own script, nothing a token smuggled in
    assert not page.find("img") and len(page.find("details")) == len(results)
    nasty = results[-1]
    data = [json.loads(text) for a, text in page.scripts if a.get("class") == "tokens"][-1]
    shown_tokens = [tuple(row[0]) for row in data["rows"]]
    top = [s for s in nasty.scored.sequences if s.source == "top"][:3]
    rnd = [s for s in nasty.scored.sequences if s.source == "random"][:3]
    assert shown_tokens == [s.record.tokens for s in (*top, *rnd)]  # exactly
    assert all(set(tokens) >= set(NASTY) for tokens in shown_tokens)
    for attributes, text in page.scripts:
        if attributes.get("type") == "application/json":
            assert not re.search("[<>&]", text)  # nothing can end the block or start markup
    html = report.read_text(encoding="utf-8")
    assert "<script>x</script>" not in html and "<img" not in html
    assert not [a for _, a in page.elements if any(k.startswith("on") for k in a)]
    assert "<title>&lt;b&gt;&quot;Report&quot; &amp; co&lt;/b&gt;\u202e</title>" in html
    assert page.text_of("title") == shown(NASTY_TITLE)
    assert shown(NASTY_REASON) in page.text_of("failures")
    assert shown(nasty.explanation.text) in page.text_of(section_ids(page)[-1])
    assert "\u202e" not in "".join(page.text_of(i) for i in section_ids(page))


def test_page_loads_nothing_and_allows_only_its_own_style_and_script(page: Page) -> None:
    (meta,) = [a for a in page.find("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    policy = meta["content"] or ""

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    (script,) = [text for a, text in page.scripts if "type" not in a]
    assert "default-src 'none'" in policy
    assert f"script-src 'sha256-{digest(script)}'" in policy
    assert f"style-src 'sha256-{digest(''.join(page.styles))}'" in policy
    for tag, attributes in page.elements:
        for name in ("src", "href", "action", "srcset"):
            value = attributes.get(name)
            assert value is None or value.startswith(("#", "data:")), (tag, name, value)
        assert "style" not in attributes, tag  # inline style attributes would break the CSP


def test_results_are_read_once_as_a_stream(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    consumed = []

    def stream() -> Iterator[ExplanationResult]:
        for result in results[:3]:
            consumed.append(result)
            yield result

    page = Page(write_report(stream(), tmp_path / "s.html").read_text())
    assert len(consumed) == 3 and len(section_ids(page)) == 3


def test_empty_run_still_writes_a_valid_page(tmp_path: Path) -> None:
    page = Page(write_report([], tmp_path / "empty.html").read_text())
    assert "No units." in page.text_of("units") and not section_ids(page)
    assert "Explained0" in page.text_of("overview")


def test_a_failing_stream_leaves_the_previous_page_untouched(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    out.write_text("previous")

    def broken() -> Iterator[ExplanationResult]:
        yield results[0]
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        write_report(broken(), out)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_the_same_unit_twice_gets_two_sections(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    page = Page(write_report([results[0], results[0]], tmp_path / "d.html").read_text())
    first, second = section_ids(page)
    assert second == f"{first}-2"


# -- in a real browser ---------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason=(
        "no Chromium binary, which the report's browser tests need: install it (Debian/Ubuntu: "
        "sudo apt-get install chromium, as .ci/run does) or set $CHROMIUM to a Chromium or "
        "Chrome binary"
    ),
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    with Chromium(CHROMIUM, width=1280, height=900) as chromium:
        yield chromium


def column(browser: Chromium, index: int) -> list[Any]:
    """The ``data-v`` sort keys of table column ``index`` (1-based), in displayed order."""
    return browser.evaluate(
        f"Array.from(document.querySelectorAll('#units tbody tr td:nth-child({index})'))"
        ".map(td => td.getAttribute('data-v'))"
    )


@needs_chromium
def test_browser_loads_the_page_without_errors_and_shows_the_explanations(
    browser: Chromium, report: Path, results: list[ExplanationResult]
) -> None:
    browser.open(report.as_uri())
    assert browser.console_errors() == []
    assert browser.evaluate("document.title") == NASTY_TITLE
    text = browser.evaluate("document.body.innerText")
    for result in results[:-1]:
        assert result.explanation.text in text
    assert browser.evaluate("document.querySelectorAll('details.unit[open]').length") == 0


@needs_chromium
def test_browser_clicking_a_header_sorts_the_table(
    browser: Chromium, report: Path, results: list[ExplanationResult]
) -> None:
    browser.open(report.as_uri())
    score = 5  # Model, Layer, Neuron, Explanation, Score
    defined = [r.score for r in results if r.score is not None]
    header = f"document.querySelector('#units thead th:nth-child({score})')"
    browser.click(f"#units thead th:nth-child({score}) button")
    browser.wait_for(f"{header}.getAttribute('aria-sort') === 'descending'")
    keys = column(browser, score)
    assert [float(k) for k in keys[: len(defined)]] == sorted(defined, reverse=True)
    assert keys[len(defined) :] == [""]  # undefined last
    browser.click(f"#units thead th:nth-child({score}) button")
    browser.wait_for(f"{header}.getAttribute('aria-sort') === 'ascending'")
    keys = column(browser, score)
    assert [float(k) for k in keys[: len(defined)]] == sorted(defined)
    assert keys[len(defined) :] == [""]
    browser.click("#units thead th:nth-child(4) button")  # explanations, alphabetically
    browser.wait_for("document.querySelector('#units thead th:nth-child(4)').ariaSort !== 'none'")
    texts = browser.evaluate(
        "Array.from(document.querySelectorAll('#units tbody td.ex')).map(td => td.textContent)"
    )
    assert texts == sorted(texts, key=str.lower)
    assert browser.console_errors() == []


@needs_chromium
def test_browser_row_link_opens_the_unit_and_draws_its_tokens_as_text(
    browser: Chromium, report: Path, results: list[ExplanationResult]
) -> None:
    browser.open(report.as_uri())
    scripts = browser.evaluate("document.scripts.length")
    browser.click("#units tbody tr:last-child td:nth-child(3) a")  # the nasty unit
    # The link sets the hash; the unit opens on the later hashchange event and is drawn on
    # the toggle event after that: wait for both rather than reading the page right away.
    browser.wait_for("location.hash.length > 1")
    uid = browser.evaluate("location.hash.slice(1)")
    unit = f"document.getElementById({json.dumps(uid)})"
    browser.wait_for(f"{unit}.open && {unit}.hasAttribute('data-drawn')")
    assert browser.evaluate(f"{unit}.open") is True
    drawn = browser.evaluate(
        f"Array.from({unit}.querySelectorAll('.toks')).map(box => box.textContent)"
    )
    assert len(drawn) == DEFAULT_MAX_EXCERPTS
    everything = "".join(drawn)
    assert "<script>" in everything and "</details>" in everything
    assert "↵" in everything and "⇥" in everything and "\\u202e" in everything
    assert "\\x00" in everything and "\\xa0" in everything and "∅" in everything
    assert "\n" not in everything and "\u202e" not in everything
    assert browser.evaluate("document.scripts.length") == scripts
    assert browser.evaluate("document.images.length") == 0
    assert browser.evaluate("window.pwned === undefined") is True
    first = browser.evaluate(f"{unit}.querySelector('.toks .k:not(.lab)').title")
    assert re.fullmatch(r"act \S+ · sim \S+ · cal \S+", first)
    shaded = browser.evaluate(f"{unit}.querySelectorAll('.toks i.a10').length")
    assert shaded > 0
    assert browser.console_errors() == []


def in_view(browser: Chromium, element: str) -> dict[str, Any]:
    """Where ``element`` (a JavaScript expression) is, against the window."""
    return browser.evaluate(
        f"(() => {{ const r = {element}.getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, height: innerHeight,"
        f" text: {element}.innerText}}; }})()"
    )


@needs_chromium
def test_browser_a_deep_link_opens_draws_and_shows_the_unit(
    browser: Chromium, report: Path, page: Page, results: list[ExplanationResult]
) -> None:
    last = section_ids(page)[-1]  # the nasty unit, at the bottom of a page taller than 900 px
    browser.open(f"{report.as_uri()}#{last}")
    unit = f"document.getElementById({json.dumps(last)})"
    browser.wait_for(f"{unit}.open && {unit}.hasAttribute('data-drawn')")
    where = in_view(browser, unit)
    assert -1 < where["top"] < where["height"] / 4 and where["bottom"] > where["top"]
    assert results[-1].explanation.text.split()[0] in where["text"]
    drawn = browser.evaluate(f"Array.from({unit}.querySelectorAll('.toks')).map(b => b.innerText)")
    assert len(drawn) == DEFAULT_MAX_EXCERPTS and all(box.strip() for box in drawn)
    # What a screenshot tool that clips at the top of the document captures: the unit, not a
    # blank area (the window itself is not scrolled; the page scrolls inside its body).
    assert browser.evaluate("[scrollY, document.documentElement.scrollTop]") == [0, 0]
    top = browser.screenshot_of_the_top()
    # A link followed afterwards opens and shows its unit in the same way.
    browser.click("#units tbody tr:first-child td:nth-child(3) a")
    first = f"document.getElementById({json.dumps(section_ids(page)[0])})"
    browser.wait_for(f"{first}.open && {first}.hasAttribute('data-drawn')")
    where = in_view(browser, first)
    assert -1 < where["top"] < where["height"] / 4
    # The keys that scroll a page still scroll it (last: the scroll is animated).
    scrolled = browser.evaluate("document.body.scrollTop")
    for kind in ("rawKeyDown", "keyUp"):
        browser.send(
            "Input.dispatchKeyEvent",
            {"type": kind, "key": "PageDown", "code": "PageDown", "windowsVirtualKeyCode": 34},
        )
    browser.wait_for(f"document.body.scrollTop > {scrolled}")
    assert browser.console_errors() == []
    assert browser.colours(top) > 50, "the top of the document is blank"


@needs_chromium
def test_browser_a_page_opened_without_a_link_scrolls_the_window(
    browser: Chromium, report: Path
) -> None:
    browser.open(report.as_uri())
    assert browser.evaluate("document.documentElement.classList.contains('at-link')") is False
    browser.evaluate("scrollTo(0, 400)")
    assert browser.evaluate("scrollY") == 400  # the usual page: nothing changes without a link


@needs_chromium
def test_chromium_screenshot_of_a_deep_link_is_not_blank(
    browser: Chromium, report: Path, page: Page, tmp_path: Path
) -> None:
    """The issue's own reproduction: ``chromium --headless --screenshot`` of report.html#u-..."""
    assert CHROMIUM is not None
    png = tmp_path / "deep.png"
    subprocess.run(
        [CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1024,700", f"--screenshot={png}",
         f"{report.as_uri()}#{section_ids(page)[-1]}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert browser.colours(png.read_bytes()) > 50


@needs_chromium
def test_browser_wait_for_polls_the_page_until_true_and_fails_clearly(
    browser: Chromium, tmp_path: Path
) -> None:
    later = tmp_path / "later.html"
    later.write_text(
        "<!DOCTYPE html><title>later</title><script>window.addEventListener('hashchange',"
        " () => { document.title = 'changed'; });</script>"
    )
    browser.open(later.as_uri())
    browser.evaluate("location.hash = 'x'")  # hashchange fires later, as a task
    browser.wait_for("document.title === 'changed'")
    assert browser.evaluate("document.title") == "changed"
    with pytest.raises(ChromiumError, match=r"'window\.never' still not true after 0\.2 s"):
        browser.wait_for("window.never", timeout=0.2)
    with pytest.raises(ChromiumError, match="nope is not defined"):
        browser.wait_for("nope()", timeout=0.2)


@needs_chromium
def test_browser_check_sees_console_errors(browser: Chromium, tmp_path: Path) -> None:
    """The error check above is not vacuous: a broken page is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><title>bad</title><script>console.error('oops');nope();</script>"
    )
    browser.open(bad.as_uri())
    errors = browser.console_errors()
    assert any("oops" in e for e in errors) and any("nope" in e for e in errors)


@needs_chromium
def test_screenshot_script_writes_a_png(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "screenshot_report.py"
    run = subprocess.run(
        [sys.executable, str(script), "--out-dir", str(tmp_path), "--height", "1200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert Page((tmp_path / "report.html").read_text(encoding="utf-8")).find("details", "unit")


def test_an_attention_heads_excerpt_says_where_the_head_looked(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    from neuron_explainer.records import AttendedToken

    result = results[0]
    assert result.scored is not None
    first, *rest = result.scored.sequences
    top = max(range(len(first.record.tokens)), key=first.record.activations.__getitem__)
    looked = AttendedToken(position=top, source=None, source_token="<b>bos</b>", weight=0.625)
    record = first.record.model_copy(update={"attended": looked})
    scored = result.scored.model_copy(
        update={"sequences": (first.model_copy(update={"record": record}), *rest)}
    )
    head = result.model_copy(update={"scored": scored})
    text = write_report([head], tmp_path / "head.html", max_excerpts=None).read_text()
    assert text.count("the head attended most to") == 1  # only the excerpt that carries it
    assert "&lt;b&gt;bos&lt;/b&gt;" in text and "<b>bos</b>" not in text
    assert f"(token {top + 1})" in text and "before the excerpt, weight 0.62" in text
    plain = write_report(results[:1], tmp_path / "plain.html", max_excerpts=None).read_text()
    assert "the head attended most to" not in plain


def test_two_saes_latent_of_the_same_index_are_labelled_apart() -> None:
    from neuron_explainer.report._neuron import unit_label

    site = "blocks.6.hook_resid_post"
    a, b = (
        UnitId(model="m", layer=6, index=7, kind="sae_latent", site=site, source=source)
        for source in ("sha256:0123456789abcdef", "sha256:fedcba9876543210")
    )
    assert unit_label(a) == "layer 6 sae latent 7 of sha256:0123456789abcdef"
    assert unit_label(a) != unit_label(b)
    assert unit_label(UnitId(model="m", layer=5, index=131)) == "layer 5 neuron 131"
