"""Write the stored-format fixtures of the library just before window ids (collection format 1,
result format 4) into this folder.

Run once, with the library at commit 9fac847 (the last commit before window ids), e.g. from a
worktree of that commit: ``git worktree add /tmp/old HEAD`` then
``PYTHONPATH=/tmp/old python tests/data/before_window_ids/make_fixtures.py`` from the
repository root. The files it writes are committed; tests/test_stored_formats.py reads and
resumes them with the current library. Do not rerun it with a newer library: the point of the
fixtures is that an older version wrote them.

What it writes (all small):

* ``corpus.txt``: 60 made-up texts, one per line;
* ``collection/``: an *unfinished* collection (format 1, no window positions) of layer 1 of a
  tiny random GPT-2 (``torch.manual_seed(0)``, 2 layers, 128 neurons each, named
  ``"tiny-gpt2"``) over those texts (a corpus named ``"before-window-ids"``), windows of 8
  tokens, stopped as if killed after its checkpoint at 20 windows (25 windows were written);
* ``result.json``: one `ExplanationResult` (format 4) of a synthetic number neuron, as
  ``result.model_dump_json()`` wrote it: its split plan has no quantile part and its records
  no window ids.

The collection settings are `COLLECT` below; a test resumes it with the same settings.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for the tokenizer helper

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
MODEL_NAME = "tiny-gpt2"
CORPUS_NAME = "before-window-ids"
COLLECT: dict[str, Any] = {
    "layers": [1],
    "window_length": 8,
    "batch_size": 5,
    "top_k": 6,
    "n_random": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 3,
    "quantile_warmup": 20,
    "checkpoint_every": 10,
    "seed": 3,
}


class Stop(Exception):
    """Raised from the progress callback to stop the collection as a kill would."""


def main() -> None:
    import torch
    import transformers
    from gpt2_tokenizer import write_gpt2_tokenizer

    import neuron_explainer
    from neuron_explainer import ActivationRecord, UnitId, build_neuron_record, explain_neuron
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.subjects.collect import collect
    from neuron_explainer.subjects.corpus import corpus_from

    print("library:", neuron_explainer.__file__)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(60)]
    for name in ("collection", "corpus.txt", "result.json"):
        path = HERE / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (HERE / "corpus.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")

    scratch = HERE / "_model"
    write_gpt2_tokenizer(scratch)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(scratch)
    loaded = dataclasses.replace(load_model(scratch, device="cpu"), name=MODEL_NAME)

    def progress(done: int) -> None:
        if done >= 25:
            raise Stop

    try:
        collect(
            loaded,
            corpus_from(texts, name=CORPUS_NAME),
            out_dir=HERE / "collection",
            progress=progress,
            **COLLECT,
        )
    except Stop:
        pass
    shutil.rmtree(scratch)

    words = [" the", " cat", " sat", " on", " a", " mat", " 7", " 42", " 1999"]
    excerpts = []
    for _ in range(120):
        tokens = [rng.choice(words) for _ in range(12)]
        activations = [rng.gauss(3.0 if t.strip().isdigit() else 0.0, 0.2) for t in tokens]
        excerpts.append(ActivationRecord(tokens=tokens, activations=activations))
    record = build_neuron_record(UnitId(model="toy", layer=0, index=0), excerpts)
    result = explain_neuron(record, explainer="token-table", simulator="token-table")
    (HERE / "result.json").write_text(result.model_dump_json(), encoding="utf-8")


if __name__ == "__main__":
    main()
