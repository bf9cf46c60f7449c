"""The report of results scored by other scorers than the simulation's: a column per scorer
(blank where a unit has none), a classification score's metrics and judged excerpts, a plugin
score's details, units that were not simulated, escaping; and in a real headless Chromium."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from chromium import Chromium, find_chromium
from test_report import NASTY, Page, section_ids

from neuron_explainer import ExplanationResult, InvalidInputError, UnitId, explain_neuron
from neuron_explainer.records import ActivationRecord
from neuron_explainer.records.splits import split_records
from neuron_explainer.report import write_report
from neuron_explainer.results import (
    ClassificationScore,
    ComponentInfo,
    Judgement,
    PluginScore,
    Score,
    ScoredSimulation,
    ScorerScore,
    SimulationFailure,
)
from neuron_explainer.scorers.base import ScoringData
from neuron_explainer.scorers.classification import DetectionScorer, FuzzingScorer
from neuron_explainer.testing import ScriptedLLM, number_neuron_record
from neuron_explainer.testing.judges import OracleJudge

MODEL = "scored-model"
NASTY_MESSAGE = 'no answer in <output> & "quotes"</td></tr><script>x</script>'
CORRELATION_ONLY = [
    "Model",
    "Layer",
    "Neuron",
    "Explanation",
    "Score",
    "Random-only",
    "R²",
    "Sensitivity",
    "Tokens",
    "Cost (USD)",
]


def _unit(layer: int) -> tuple[ExplanationResult, ScoringData]:
    record = number_neuron_record(seed=layer, silent_fraction=0.5)
    record = record.model_copy(update={"unit": UnitId(model=MODEL, layer=layer, index=layer)})
    return explain_neuron(record), ScoringData(record, split_records(record), "valid")


def _scores(
    layer: int, policy: str = "oracle"
) -> tuple[ExplanationResult, ClassificationScore, ClassificationScore]:
    result, data = _unit(layer)
    llm = ScriptedLLM(default=OracleJudge(policy=policy, seed=layer))  # type: ignore[arg-type]
    detection = DetectionScorer(llm, n_resamples=50).score(result.explanation, data)
    fuzzing = FuzzingScorer(llm, n_resamples=50).score(result.explanation, data)
    assert isinstance(detection, ClassificationScore) and isinstance(fuzzing, ClassificationScore)
    return result, detection, fuzzing


def with_scores(
    result: ExplanationResult, scores: dict[str, ScorerScore], scored: ScoredSimulation | None
) -> ExplanationResult:
    return ExplanationResult(**{**dict(result), "scores": scores, "scored": scored})


NASTY_RECORD = ActivationRecord(tokens=[*NASTY, " 7"], activations=[0.0] * len(NASTY) + [5.0])


def nasty_judgement(score: ClassificationScore) -> ClassificationScore:
    """``score`` with its first judgement's excerpt made of the nasty tokens, judged wrong (so
    it is shown first)."""
    first = score.judgements[0]
    nasty = first.model_copy(update={"record": NASTY_RECORD, "answer": not first.label})
    return score.model_copy(update={"judgements": (nasty, *score.judgements[1:])})


def nasty_failure(score: ClassificationScore) -> ClassificationScore:
    """``score`` with its first judgement failed with a nasty message."""
    failed = Judgement(
        record=NASTY_RECORD,
        source="random",
        label=False,
        answer=None,
        failure=SimulationFailure(reason="unparseable", message=NASTY_MESSAGE),
    )
    return score.model_copy(update={"judgements": (failed, *score.judgements[1:])})


PLUGIN = PluginScore(
    kind="plug",
    scorer=ComponentInfo(name="plug", version="2"),
    value=Score(value=0.25),
    details={"note": "<script>alert(1)</script> & co", "values": [1, 2]},
)


def undefined_detection(result: ExplanationResult, data: ScoringData) -> ClassificationScore:
    broken = ScriptedLLM(default="no idea")
    score = DetectionScorer(broken, retries=0, n_resamples=50).score(result.explanation, data)
    assert isinstance(score, ClassificationScore)
    return score


@pytest.fixture(scope="module")
def results() -> list[ExplanationResult]:
    """Unit 0: correlation + detection + fuzzing (a random judge, so some answers are wrong;
    nasty tokens in a judged excerpt); 1: detection only (oracle judge); 2: detection (its
    score undefined: every answer failed, one with a nasty message) + plugin, not simulated;
    3: correlation only."""
    mixed, detection, fuzzing = _scores(0, policy="random")
    scores: dict[str, ScorerScore] = {
        **mixed.scores,
        "detection": nasty_judgement(detection),
        "fuzzing": fuzzing,
    }
    first = with_scores(mixed, scores, mixed.scored)
    only, oracle, _ = _scores(1)
    detection_only = with_scores(only, {"detection": oracle}, None)
    plain, data = _unit(2)
    undefined = nasty_failure(undefined_detection(plain, data))
    plugin = with_scores(plain, {"detection": undefined, "plug": PLUGIN}, None)
    return [first, detection_only, plugin, explain_neuron(number_neuron_record(seed=3))]


@pytest.fixture(scope="module")
def report(results: list[ExplanationResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(results, tmp_path_factory.mktemp("scores") / "report.html")


@pytest.fixture(scope="module")
def page(report: Path) -> Page:
    return Page(report.read_text(encoding="utf-8"))


def header_names(html: str) -> list[str]:
    head = html.split("<thead>", 1)[1].split("</thead>", 1)[0]
    return re.findall(r"<button type=\"button\">([^<]*)</button>", head)


def rows(html: str) -> list[list[tuple[str, str, str]]]:
    """Every row of the units table: (data-v, text, title) of each cell."""
    body = html.split('<table id="units"', 1)[1].split("</tbody>", 1)[0]
    out = []
    for row in re.findall(r"<tr data-i=\"\d+\">(.*?)</tr>", body, re.DOTALL):
        cells = re.findall(r"<td([^>]*)>(.*?)</td>", row, re.DOTALL)
        out.append(
            [
                (
                    _attribute(attributes, "data-v"),
                    re.sub("<[^>]+>", "", text),
                    _attribute(attributes, "title"),
                )
                for attributes, text in cells
            ]
        )
    return out


def _attribute(attributes: str, name: str) -> str:
    match = re.search(f'{name}="([^"]*)"', attributes)
    return match.group(1) if match else ""


def by_header(html: str) -> list[dict[str, tuple[str, str, str]]]:
    names = header_names(html)
    return [dict(zip(names, row, strict=True)) for row in rows(html)]


def judged_blocks(page: Page) -> list[dict[str, Any]]:
    return [json.loads(text) for a, text in page.scripts if a.get("class") == "judged"]


# -- the units table -------------------------------------------------------------------------


def test_correlation_only_reports_keep_their_columns(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    html = write_report(results[3:], tmp_path / "plain.html").read_text(encoding="utf-8")
    assert header_names(html) == CORRELATION_ONLY
    assert "Headline score" not in html and "Scorers:" not in html
    assert 'class="scorer"' not in html and 'class="judged"' not in html
    empty = write_report([], tmp_path / "empty.html").read_text(encoding="utf-8")
    assert header_names(empty) == CORRELATION_ONLY


def test_a_column_per_scorer_blank_where_a_unit_has_no_such_score(
    report: Path, results: list[ExplanationResult]
) -> None:
    html = report.read_text(encoding="utf-8")
    assert header_names(html) == [
        *CORRELATION_ONLY[:4],
        "Correlation",
        "Random-only",
        "R²",
        "Sensitivity",
        "Detection",
        "Fuzzing",
        "Plug",
        "Tokens",
        "Cost (USD)",
    ]
    table = by_header(html)
    for row, result in zip(table, results, strict=True):
        for name, header in (("detection", "Detection"), ("fuzzing", "Fuzzing"), ("plug", "Plug")):
            value, text, _ = row[header]
            if name not in result.scores:
                assert (value, text) == ("", "–")  # blank, never zero
            elif (score := result.scores[name].value.value) is not None:
                assert float(value) == score and text == f"{score:.3f}"
        if result.scored is None:
            for header in ("Correlation", "Random-only", "R²", "Sensitivity"):
                assert row[header][:2] == ("", "–")
        else:
            assert float(row["Correlation"][0]) == result.scored.correlation.value


def test_classification_cells_show_the_interval_on_hover_and_undefined_the_reason(
    report: Path, results: list[ExplanationResult]
) -> None:
    table = by_header(report.read_text(encoding="utf-8"))
    detection = results[0].scores["detection"]
    assert isinstance(detection, ClassificationScore)
    interval = detection.metrics.balanced_accuracy.interval
    assert interval is not None
    assert table[0]["Detection"][2] == f"95% interval [{interval.low:.3f}, {interval.high:.3f}]"
    undefined = results[2].scores["detection"]
    assert undefined.value.value is None and undefined.value.reason
    value, text, title = table[2]["Detection"]
    assert (value, text) == ("", "undef.")
    assert title == undefined.value.reason.replace('"', "&quot;")


# -- the overview ----------------------------------------------------------------------------


def test_overview_says_what_the_headline_scores_are_and_means_every_scorer(
    page: Page, results: list[ExplanationResult]
) -> None:
    overview = page.text_of("overview")
    headlines = [r.score for r in results if r.score is not None]
    assert "Headline scoremixed: correlation 2, detection 2" in overview
    assert f"Mean score{statistics.fmean(headlines):.3f}" in overview
    assert "Undefined score1" in overview  # the detection whose every answer failed
    for name in ("correlation", "detection", "fuzzing", "plug"):
        values = [v for r in results if name in r.scores if (v := r.scores[name].value.value)]
        assert f"Mean {name}{statistics.fmean(values):.3f}" in overview
    assert (
        "Scorers: detection (fake:scripted) (3), fuzzing (fake:scripted) (1), plug (1)" in overview
    )
    assert "score (mixed: correlation 2, detection 2)" in overview  # the histogram


def test_a_detection_only_run_has_its_own_headline(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    only = results[1]
    html = write_report([only], tmp_path / "d.html").read_text(encoding="utf-8")
    overview = Page(html).text_of("overview")
    assert only.score is not None
    assert "Headline scoredetection AUROC" in overview
    assert f"Mean score{only.score:.3f}" in overview
    assert "Mean detection" not in overview and "Mean random-only" not in overview
    assert "Simulators: none" in overview
    assert "score (detection AUROC)" in overview
    assert header_names(html) == [*CORRELATION_ONLY[:4], "Detection", *CORRELATION_ONLY[-2:]]


# -- a unit's sections -----------------------------------------------------------------------


def test_a_unit_not_simulated_has_no_simulation_section_but_its_scores(
    page: Page, results: list[ExplanationResult]
) -> None:
    uid = section_ids(page)[1]
    section = page.text_of(uid)
    detection = results[1].scores["detection"]
    assert isinstance(detection, ClassificationScore)
    assert "Held-out excerpts" not in section and "Calibration" not in section
    assert "Simulator" not in section and "correlation" not in section
    assert f"Score (detection AUROC){detection.value.value:.3f}" in section
    assert "Judged excerpts, wrong answers first" in section
    tokens = [a for a, _ in page.scripts if a.get("class") == "tokens"]
    assert len(tokens) == 2  # the simulated units' excerpts only


def test_classification_section_shows_the_metrics_line(
    page: Page, results: list[ExplanationResult]
) -> None:
    section = page.text_of(section_ids(page)[0])
    detection = results[0].scores["detection"]
    assert isinstance(detection, ClassificationScore)
    m = detection.metrics
    for name, metric in (
        ("Balanced accuracy", m.balanced_accuracy),
        ("AUROC (of p(yes))", m.auroc),
        ("Precision", m.precision),
        ("Recall", m.recall),
        ("F1", m.f1),
    ):
        assert metric.value is not None and metric.interval is not None
        low, high = metric.interval.low, metric.interval.high
        assert f"{name}{metric.value:.3f} [{low:.3f}, {high:.3f}]" in section
    assert f"{m.judged} of {m.total} judged" in section
    assert f"{m.failed} failed" in section
    assert f"Firing threshold{detection.firing_threshold:.3g}" in section
    assert f"Negativesrandom; {detection.hard_negatives} of {m.negatives} contain" in section
    assert "Fuzzing" in section and "the activating excerpts, with as many other" in section


def test_judged_excerpts_wrong_first_with_answers_and_tokens(
    page: Page, results: list[ExplanationResult]
) -> None:
    html = "".join(page.text[section_ids(page)[0]])
    heads = re.findall(r"(✗ wrong|! failed|✓ right) · (top|quantile|random) #(\d+)", html)
    detection, fuzzing = (results[0].scores[n] for n in ("detection", "fuzzing"))
    assert isinstance(detection, ClassificationScore) and isinstance(fuzzing, ClassificationScore)
    blocks = judged_blocks(page)
    for score, block in zip((detection, fuzzing), blocks[:2], strict=True):
        shown_heads, heads = heads[: len(block["rows"])], heads[len(block["rows"]) :]
        assert len(shown_heads) == min(10, len(score.judgements))
        ranks = [("✗ wrong", "! failed", "✓ right").index(v) for v, _, _ in shown_heads]
        assert ranks == sorted(ranks) and ranks[0] == 0  # the random judge erred
        picked = [score.judgements[int(number) - 1] for _, _, number in shown_heads]
        assert [tuple(row[0]) for row in block["rows"]] == [j.record.tokens for j in picked]
        assert [row[2] for row in block["rows"]] == [list(j.highlighted or ()) for j in picked]
        for (verdict, source, _), judgement in zip(shown_heads, picked, strict=True):
            assert source == judgement.source
            assert verdict.endswith(
                {False: "wrong", None: "failed", True: "right"}[judgement.correct]
            )
    section = page.text_of(section_ids(page)[0])
    assert "more judged excerpts not shown" in section
    assert any(row[2] for row in blocks[1]["rows"])  # fuzzing marks its highlights


def test_judged_tokens_and_failure_messages_are_escaped(page: Page, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    (first, *_) = judged_blocks(page)
    assert tuple(first["rows"][0][0]) == (*NASTY, " 7")  # exactly, as data
    for attributes, text in page.scripts:
        if attributes.get("type") == "application/json":
            assert not re.search("[<>&]", text)
    assert "<script>x</script>" not in html and "<script>alert" not in html
    assert (
        NASTY_MESSAGE.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        in html
    )
    executable = [a for a, _ in page.scripts if a.get("type") != "application/json"]
    assert len(executable) == 1


def test_undefined_classification_score_says_why(
    page: Page, results: list[ExplanationResult]
) -> None:
    section = page.text_of(section_ids(page)[2])
    reason = results[2].scores["detection"].value.reason
    assert reason and f"Score (detection balanced accuracy)undefined {reason}" in section
    assert f"Balanced accuracyundefined {reason}" in section
    assert "judge: no answer (unparseable)" in section
    assert "✓ right" not in section and "✗ wrong" not in section


def test_plugin_score_has_a_column_and_its_details_as_escaped_json(
    page: Page, report: Path
) -> None:
    section = page.text_of(section_ids(page)[2])
    assert "Plug0.250" in section and "Score0.250" in section
    details = section.split("Details", 1)[1]
    assert json.loads(details) == PLUGIN.details
    html = report.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_max_judgements_none_shows_all_and_negative_is_refused(
    results: list[ExplanationResult], tmp_path: Path
) -> None:
    one = results[1:2]
    detection = one[0].scores["detection"]
    assert isinstance(detection, ClassificationScore)
    page = Page(write_report(one, tmp_path / "all.html", max_judgements=None).read_text())
    assert len(page.find("div", "judgement")) == len(detection.judgements)
    page = Page(write_report(one, tmp_path / "none.html", max_judgements=0).read_text())
    assert not page.find("div", "judgement") and not judged_blocks(page)
    with pytest.raises(InvalidInputError, match="max_judgements"):
        write_report(one, tmp_path / "bad.html", max_judgements=-1)


# -- in a real browser ---------------------------------------------------------------------

CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (see tests/test_report.py)")
def test_browser_sorts_by_a_scorer_and_draws_judged_tokens_as_text(
    report: Path, page: Page, results: list[ExplanationResult]
) -> None:
    assert CHROMIUM is not None
    column = header_names(report.read_text(encoding="utf-8")).index("Detection") + 1
    with Chromium(CHROMIUM, width=1280, height=900) as browser:
        browser.open(report.as_uri())
        browser.click(f"#units thead th:nth-child({column}) button")
        keys = browser.evaluate(
            f"Array.from(document.querySelectorAll('#units tbody td:nth-child({column})'))"
            ".map(td => td.getAttribute('data-v'))"
        )
        values = [r.scores["detection"].value.value for r in results if "detection" in r.scores]
        defined = sorted((v for v in values if v is not None), reverse=True)
        assert [float(k) for k in keys[: len(defined)]] == defined
        assert keys[len(defined) :] == [""] * (len(results) - len(defined))
        uid = section_ids(page)[0]
        unit = f"document.getElementById({json.dumps(uid)})"
        browser.click(f'#units a[href="#{uid}"]')
        browser.wait_for(f"{unit}.open && {unit}.hasAttribute('data-drawn')")
        drawn = browser.evaluate(
            f"Array.from({unit}.querySelectorAll('.jtoks')).map(box => box.textContent)"
        )
        assert len(drawn) == sum(len(block["rows"]) for block in judged_blocks(page)[:2])
        assert all(drawn) and "<script>" in drawn[0] and "↵" in drawn[0]
        assert browser.evaluate(f"{unit}.querySelectorAll('.jtoks .k.hl').length") > 0
        assert browser.evaluate(f"{unit}.querySelectorAll('.jtoks i.a10').length") > 0
        assert browser.evaluate("window.pwned === undefined") is True
        assert browser.console_errors() == []
