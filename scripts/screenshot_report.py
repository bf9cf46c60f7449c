"""Build a small demo report offline and screenshot it with headless Chromium.

    python scripts/screenshot_report.py [--out-dir build/report-demo] [--chromium PATH]

Writes ``report.html`` (the demo page) and ``report.png`` (a full-page screenshot with the
first unit's details open) to the output folder. Needs Chromium (Debian:
``apt-get install -y chromium``); no network is used.

The demo units are synthetic "number" neurons explained with the offline token-table
components, plus a few made to show the other cases: a simulator on the 0-10 scale, a noisy
one, one whose score is undefined (a constant prediction), awkward tokens, and failures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from neuron_explainer import (
    ActivationRecord,
    ExplanationResult,
    NeuronRecord,
    UnitId,
    build_neuron_record,
    explain_neuron,
)
from neuron_explainer.report import write_report
from neuron_explainer.testing import MockExplainer, MockSimulator, number_neuron_record

MODEL = "demo-numbers"
AWKWARD = ("<script>", "&amp;", "\n", "\t", "\u202e", '"', "'", "  ", "</details>")


def numbers(layer: int, index: int, seed: int) -> NeuronRecord:
    """A synthetic number neuron, relabelled as ``layer``/``index`` of the demo model."""
    record = number_neuron_record(seed=seed, length=24)
    return record.model_copy(update={"unit": UnitId(model=MODEL, layer=layer, index=index)})


def awkward(layer: int, index: int) -> NeuronRecord:
    """A unit that fires on HTML-like and invisible tokens."""
    rng = random.Random(7)
    words = (" the", " cat", " sat", " on", " a", " mat", ",", ".")
    excerpts = []
    for _ in range(120):
        tokens = [rng.choice(AWKWARD if rng.random() < 0.2 else words) for _ in range(20)]
        acts = [4.0 + rng.random() if t in AWKWARD else rng.gauss(0, 0.1) for t in tokens]
        excerpts.append(ActivationRecord(tokens=tokens, activations=acts))
    return build_neuron_record(UnitId(model=MODEL, layer=layer, index=index), excerpts)


def demo_results() -> list[ExplanationResult]:
    """A handful of real (offline) results showing every case the page handles."""
    results = [explain_neuron(numbers(layer, 100 + 7 * layer, layer)) for layer in range(4)]
    results.append(
        explain_neuron(
            numbers(4, 3, 11),
            explainer=MockExplainer("numbers such as 7, 42 and 1999"),
            simulator=MockSimulator.from_keywords(),
        )
    )
    noisy = numbers(5, 21, 12)
    results.append(
        explain_neuron(
            noisy,
            explainer=MockExplainer("numbers (a noisy simulator)"),
            simulator=MockSimulator.from_truth(noisy, noise=2.5, seed=1),
        )
    )
    results.append(
        explain_neuron(
            numbers(6, 5, 13),
            explainer=MockExplainer("nothing in particular"),
            simulator=MockSimulator.from_function(lambda tokens: [1.0] * len(tokens)),
        )
    )
    results.append(explain_neuron(awkward(7, 9)))
    return results


def find_chromium(given: str | None) -> str:
    """The Chromium binary: ``given``, ``$CHROMIUM`` or the first one on PATH."""
    for candidate in (given, os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    sys.exit("no Chromium found: apt-get install -y chromium (or pass --chromium PATH)")


def screenshot(chromium: str, page: Path, png: Path, *, width: int, height: int) -> None:
    """Screenshot ``page`` (first unit opened through its URL fragment) into ``png``."""
    html = page.read_text(encoding="utf-8")
    start = html.index('<details class="unit" id="') + len('<details class="unit" id="')
    first_unit = html[start : html.index('"', start)]
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                f"{page.resolve().as_uri()}#{first_unit}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("build/report-demo"))
    parser.add_argument("--chromium", help="the Chromium binary (default: found on PATH)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args()
    chromium = find_chromium(args.chromium)
    failures = [
        (UnitId(model=MODEL, layer=8, index=1), "LLMTimeoutError: no answer in 60 s (3 tries)"),
        (UnitId(model=MODEL, layer=8, index=2), "InsufficientRecordsError: 3 top records"),
    ]
    page = write_report(
        demo_results(), args.out_dir / "report.html", title="Demo report", failures=failures
    )
    png = args.out_dir / "report.png"
    screenshot(chromium, page, png, width=args.width, height=args.height)
    print(f"wrote {page} and {png}")


if __name__ == "__main__":
    main()
