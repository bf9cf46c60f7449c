"""Write the stored-format fixtures of the library just before unit collections (collection
format 2, run-database schema 3) into this folder.

Run once, with the library at commit 9daed6f (the last commit before collections of SAE latents
and attention heads), from a worktree of that commit: ``git worktree add /tmp/old 9daed6f``
then ``PYTHONPATH=/tmp/old python tests/data/before_units/make_fixtures.py`` from the
repository root. The files it writes are committed; tests/test_collect_units.py reads,
migrates and reports them with the current library. Do not rerun it with a newer library.

What it writes (all small):

* ``collection/``: a finished collection (format 2) of layer 1 of a tiny random GPT-2
  (``torch.manual_seed(0)``, 2 layers, 128 neurons each, named ``"tiny-gpt2"``) over 40
  made-up texts (corpus ``"before-units"``), windows of 8 tokens;
* ``run.sqlite``: a run database (schema 3) explaining neurons 0-2 of layer 1 from it with the
  token-table baseline.
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
CORPUS_NAME = "before-units"
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


def texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(40)]


def main() -> None:
    import torch
    import transformers
    from gpt2_tokenizer import write_gpt2_tokenizer

    import neuron_explainer
    from neuron_explainer import explain_neurons
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.subjects.collect import collect
    from neuron_explainer.subjects.corpus import corpus_from

    print("library:", neuron_explainer.__file__)
    for name in ("collection", "run.sqlite"):
        path = HERE / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    scratch = HERE / "_model"
    write_gpt2_tokenizer(scratch)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(scratch)
    loaded = dataclasses.replace(load_model(scratch, device="cpu"), name=MODEL_NAME)
    collection = collect(
        loaded, corpus_from(texts(), name=CORPUS_NAME), out_dir=HERE / "collection", **COLLECT
    )
    shutil.rmtree(scratch)
    explain_neurons(
        collection,
        db=HERE / "run.sqlite",
        layers=[1],
        neurons="0-2",
        explainer="token-table",
        simulator="token-table",
    )


if __name__ == "__main__":
    main()
