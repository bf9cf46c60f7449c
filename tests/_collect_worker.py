"""Run a collection in a subprocess for tests/test_collect.py (the kill-and-resume test).

Usage: python _collect_worker.py MODEL_DIR OUT_DIR N_TEXTS SLEEP_SECONDS

Collects with the same settings as `test_collect.COMMON`; sleeps after each batch (only here,
never in the library) so the test can kill it midway.
"""

from __future__ import annotations

import sys
import time

from neuron_explainer.subjects.collect import collect

if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_collect import COMMON, texts

    model_dir, out_dir, n_texts, pause = sys.argv[1:5]
    collect(
        model_dir,
        texts(int(n_texts)),
        out_dir=out_dir,
        progress=lambda done: time.sleep(float(pause)),
        **COMMON,
    )
