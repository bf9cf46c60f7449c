"""The real ``neuron-explainer`` console script prints how a run's simulations went (issue 15):
its summary line matches what the run database recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("typer.testing")
pytest.importorskip("transformers")

from test_cli import console_script, corpus, tiny_model

from neuron_explainer.runs import RunStore
from neuron_explainer.testing import OpenAITestServer

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
