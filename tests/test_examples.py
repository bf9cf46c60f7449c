from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_number_neuron_example_scores_at_least_0_9(tmp_path: Path) -> None:
    out_file = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "explain_number_neuron.py"), "--json", str(out_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    match = re.search(r"score \(top-and-random correlation\):\s+([0-9.]+)", run.stdout)
    assert match, run.stdout
    score = float(match.group(1))
    assert score >= 0.9
    saved = json.loads(out_file.read_text())
    assert round(saved["scored"]["correlation"]["value"], 3) == score
    assert saved["explainer"]["name"] == "token-table"
    assert "numbers in general" in saved["explanation"]["text"]


def test_detection_example_scores_with_every_scorer(tmp_path: Path) -> None:
    out_file = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "score_with_detection.py"), "--json", str(out_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    values = dict(re.findall(r"^(detection|fuzzing|correlation): ([0-9.]+)$", run.stdout, re.M))
    assert set(values) == {"detection", "fuzzing", "correlation"}, run.stdout
    saved = json.loads(out_file.read_text())
    assert list(saved["scores"]) == ["detection", "fuzzing", "correlation"]
    for name in ("detection", "fuzzing"):
        assert round(saved["scores"][name]["value"]["value"], 3) == float(values[name])
        assert saved["scores"][name]["metrics"]["failed_positives"] == 0
