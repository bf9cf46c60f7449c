"""Write the fixtures of the library just before sampler 2 (collection format 3, sampler 1:
quantile reservoirs by running counts, moments shifted by the first batch) into this folder.

Run once, with the library at commit 5579ed9 (the last commit before sampler 2), from a
worktree of that commit: ``git worktree add /tmp/old 5579ed9`` then
``PYTHONPATH=/tmp/old python tests/data/before_sampler_2/make_fixtures.py`` from the
repository root. The files it writes are committed; tests/test_stored_formats.py resumes the
collection with the current library. Do not rerun it with a newer library.

What it writes (all small):

* ``corpus.txt``: 60 made-up texts, one per line;
* ``collection/``: an *unfinished* collection of layer 1 of a tiny random GPT-2
  (``torch.manual_seed(0)``, 2 layers, 128 neurons, named ``"tiny-gpt2"``) over those texts
  (a corpus named ``"before-sampler-2"``), stopped as if killed after its checkpoint at 30
  windows (past the 20 warm-up windows, so its quantile reservoirs have begun);
* ``finished.jsonl``: the records of neurons 0-15 of the same collection run to its end without
  a stop, as that version wrote them (``NeuronRecord.model_dump_json()``, one per line).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for the tokenizer helper

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
MODEL_NAME = "tiny-gpt2"
CORPUS_NAME = "before-sampler-2"
NEURONS = range(16)
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


def texts() -> list[str]:
    rng = random.Random(1)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(60)]


def main() -> None:
    import torch
    import transformers
    from gpt2_tokenizer import write_gpt2_tokenizer

    import neuron_explainer
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.subjects.collect import collect
    from neuron_explainer.subjects.corpus import corpus_from

    print("library:", neuron_explainer.__file__)
    for name in ("collection", "corpus.txt", "finished.jsonl"):
        path = HERE / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (HERE / "corpus.txt").write_text("\n".join(texts()), encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_gpt2_tokenizer(Path(tmp) / "model")
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
        transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
        loaded = dataclasses.replace(load_model(folder, device="cpu"), name=MODEL_NAME)

        def stop(done: int) -> None:
            if done >= 35:
                raise Stop

        try:
            collect(loaded, corpus_from(texts(), name=CORPUS_NAME), out_dir=HERE / "collection",
                    progress=stop, **COLLECT)  # fmt: skip
        except Stop:
            pass
        whole = collect(loaded, corpus_from(texts(), name=CORPUS_NAME),
                        out_dir=Path(tmp) / "whole", **COLLECT)  # fmt: skip
        lines = [whole.neuron_record(1, i).model_dump_json() for i in NEURONS]
        (HERE / "finished.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
