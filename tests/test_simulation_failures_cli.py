"""The real ``neuron-explainer`` console script prints how a run's simulations went (issue 15):
its summary line matches what the run database recorded."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

pytest.importorskip("typer.testing")
pytest.importorskip("transformers")

from test_cli import console_script, corpus, tiny_model

from neuron_explainer.runs import RunStore
from neuron_explainer.testing import OpenAITestServer, ReceivedRequest

__all__ = ["corpus", "tiny_model"]  # fixtures of test_cli, used here


def test_the_run_summary_counts_the_failed_simulations(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    db = tmp_path / "run.sqlite"
    with OpenAITestServer(default="I'm sorry, I can't help with that.") as server:
        server.responder = lambda request: (
            " numbers." if "Explanation of neuron behavior" in str(request.body) else None
        )
        ran = console_script(
            "run", tiny_model, "--corpus", corpus, "--split", "line", "--layers", "1",
            "--neurons", "0-1", "--db", db, "--explainer", "openai:m", "--simulator",
            "openai:m", "--window-length", "16", "--top-k", "12", "--n-random", "12",
            env={"OPENAI_BASE_URL": server.base_url},
        )  # fmt: skip
    # Every simulation answer is unusable: both units fail, with their counts.
    assert ran.returncode == 1, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert "0 done, 2 failed, 0 skipped (of 2)" in ran.stdout
    with RunStore(db) as store:
        total = store.simulation()
        per_unit = [s.simulation for s in store.units()]
        reasons = [s.reason or "" for s in store.units()]
    assert total.attempted > 0 and total.failed == total.attempted
    assert all(s is not None and s.failed == s.attempted > 0 for s in per_unit)
    for stats, reason in zip(per_unit, reasons, strict=True):
        assert stats is not None and f"could not simulate any of {stats.attempted} " in reason
    assert total.prompt_tokens > 0
    assert f"simulations: {total.describe()}" in lines
    assert f"0 of {total.attempted} simulated ({total.attempted} failed: " in ran.stdout


def test_max_failed_fraction_reaches_explain(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    """A simulator answer unusable for every third excerpt asked for (the same excerpt fails on
    every retry, with no line for any token): the unit fails under the default 10 % and is
    scored on the other excerpts under ``--max-failed-fraction 0.99``."""
    from neuron_explainer.results import ExplanationResult
    from neuron_explainer.testing import OracleResponder

    oracle = OracleResponder()
    seen: dict[str, int] = {}  # each excerpt's listing -> the order it was first asked for
    lock = threading.Lock()

    def responder(request: ReceivedRequest) -> object:
        messages = request.body.get("messages") or [{}]
        listing = str(messages[min(1, len(messages) - 1)].get("content", ""))
        if "numbered:" in listing:
            with lock:
                order = seen.setdefault(listing, len(seen))
            if order % 3 == 0:  # a third of the excerpts, never all of one split
                return "I'm sorry, I can't help with that."
        return oracle(request)

    def explain(*extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        out = tmp_path / f"result{len(extra)}.json"
        seen.clear()
        with OpenAITestServer(responder=responder) as server:
            ran = console_script(
                "explain", tiny_model, "--corpus", corpus, "--split", "line", "--layer", "1",
                "--neuron", "0", "--explainer", "openai:m", "--simulator", "openai:m",
                "--window-length", "16", "--top-k", "12", "--n-random", "12", "--out", out,
                *extra, env={"OPENAI_BASE_URL": server.base_url},
            )  # fmt: skip
        return ran, out

    failing, _ = explain()
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "more than max_failed_fraction 10%" in failing.stderr

    allowed, out = explain("--max-failed-fraction", "0.99")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    result = ExplanationResult.model_validate_json(out.read_text(encoding="utf-8"))
    assert result.scored is not None and result.simulation is not None
    assert 0 < result.scored.n_failed < result.simulation.attempted
    assert result.simulation.failure_reasons == {"misaligned": result.simulation.failed}

    bad = console_script("explain", tiny_model, "--max-failed-fraction", "1.5")
    assert bad.returncode == 2 and "--max-failed-fraction" in bad.stderr
