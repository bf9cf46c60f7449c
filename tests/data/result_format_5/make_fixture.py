"""Write ``result.json``: an `ExplanationResult` of format 5, the last format before scorers
(format 6 adds ``scores`` and lets ``scored`` be ``None``), into this folder.

Run once, with the library at commit 43cd61a (format 5), e.g. from a worktree of that
commit: ``git worktree add /tmp/v5 43cd61a`` then
``PYTHONPATH=/tmp/v5 python tests/data/result_format_5/make_fixture.py`` from the repository
root. The file it writes is committed; tests/test_stored_formats.py reads it with the current
library. Do not rerun it with a newer library: the point is that an older version wrote it.

The result: the synthetic number neuron (`number_neuron_record`, seed 0), explained and scored
by the offline token-table explainer and simulator, with 3 top and 2 random records per split
(small), its records' window ids set by hand (document i, offset 0) so that they are stored.
"""

from __future__ import annotations

from pathlib import Path

from neuron_explainer import ActivationRecord, WindowId, explain_neuron
from neuron_explainer.records.building import build_neuron_record
from neuron_explainer.results import RESULT_FORMAT_VERSION
from neuron_explainer.testing import number_neuron_record

HERE = Path(__file__).parent


def main() -> None:
    assert RESULT_FORMAT_VERSION == 5, "run this with the library at format 5 (commit 43cd61a)"
    base = number_neuron_record(seed=0)
    excerpts = [
        ActivationRecord(
            tokens=r.tokens, activations=r.activations, window_id=WindowId(document=i, start=0)
        )
        for i, r in enumerate([*base.top_records, *base.random_sample])
    ]
    record = build_neuron_record(base.unit, excerpts, provenance=base.provenance, seed=0)
    result = explain_neuron(record, n_top_per_split=3, n_random_per_split=2)
    (HERE / "result.json").write_text(result.model_dump_json(), encoding="utf-8")


if __name__ == "__main__":
    main()
