"""Write an unfinished collection of SAE latents whose config hash holds the SAE's path (as
the library hashed it up to commit e8d134a) into this folder.

Run once, with the library at commit e8d134a (the last commit whose collection config named
the SAE by its path), from an export of that commit: ``git archive e8d134a neuron_explainer |
tar -x -C /tmp/old`` then ``PYTHONPATH=/tmp/old python tests/data/sae_path_in_hash/
make_fixtures.py`` from the repository root. (That commit's ``_collect_run.py`` already reads
``UnitGroup.signed``, a field the next commit adds: its line ``for b in short if not
self.groups or self.groups[target[0]].signed else []:`` was set back to the line before it,
``for b in [] if self.groups else short:``, in the export.) The files it writes are committed;
tests/test_collect_stats.py resumes the collection with the current library, from an SAE
folder somewhere else. Do not rerun it with a newer library.

What it writes (all small):

* ``sae/``: a random SAELens SAE of 12 latents at ``blocks.1.hook_resid_pre`` (seed 1, as
  ``write_sae`` in tests/test_collect_units.py writes it);
* ``collection/``: its latents collected (``latent_chunk`` 5) with a tiny random GPT-2
  (``torch.manual_seed(0)``, 2 layers, ``n_embd`` 32, 4 heads, named ``"tiny-gpt2"``) over the
  30 texts of ``texts()`` in tests/test_collect_units.py (corpus ``"sae-path-in-hash"``),
  stopped after the checkpoint at 8 windows (``progress.json`` says unfinished). Its
  ``tokens.json`` (the GPT-2 vocabulary, 600 kB) is left out: a resumed collection writes it.
"""

from __future__ import annotations

import dataclasses
import json
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
CORPUS_NAME = "sae-path-in-hash"
D_MODEL, D_SAE = 32, 12
COLLECT: dict[str, Any] = {
    "window_length": 8,
    "top_k": 5,
    "n_random": 3,
    "seed": 2,
    "device": "cpu",
    "batch_size": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 2,
    "quantile_warmup": 12,
    "checkpoint_every": 8,
    "latent_chunk": 5,
}


def texts(n: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 24))) for _ in range(n)]


def write_sae(folder: Path, seed: int = 1) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    w = {
        "W_enc": (rng.normal(size=(D_MODEL, D_SAE)) / np.sqrt(D_MODEL)).astype(np.float32),
        "b_enc": (0.1 * rng.normal(size=D_SAE)).astype(np.float32),
        "W_dec": (rng.normal(size=(D_SAE, D_MODEL)) / np.sqrt(D_SAE)).astype(np.float32),
        "b_dec": (0.2 * rng.normal(size=D_MODEL)).astype(np.float32),
    }
    config = {
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "architecture": "standard",
        "metadata": {
            "model_name": "tiny",
            "hook_name": "blocks.1.hook_resid_pre",
            "hook_head_index": None,
            "prepend_bos": True,
            "model_from_pretrained_kwargs": {"center_writing_weights": False},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(config))
    save_file(w, folder / "sae_weights.safetensors")
    return folder


class Stop(Exception):
    pass


def stop(done: int) -> None:
    if done >= 10:
        raise Stop  # as a kill after the checkpoint at 8 windows


def main() -> None:
    import torch
    import transformers
    from gpt2_tokenizer import write_gpt2_tokenizer

    import neuron_explainer
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.subjects.collect import collect
    from neuron_explainer.subjects.corpus import corpus_from

    print("library:", neuron_explainer.__file__)
    for name in ("collection", "sae"):
        if (HERE / name).is_dir():
            shutil.rmtree(HERE / name)
    sae = write_sae(HERE / "sae")
    scratch = HERE / "_model"
    write_gpt2_tokenizer(scratch)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=4, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(scratch)
    loaded = dataclasses.replace(load_model(scratch, device="cpu"), name=MODEL_NAME)
    try:
        collect(
            loaded,
            corpus_from(texts(), name=CORPUS_NAME),
            out_dir=HERE / "collection",
            sae=sae,
            progress=stop,
            **COLLECT,
        )
    except Stop:
        pass
    shutil.rmtree(scratch)
    (HERE / "collection" / "tokens.json").unlink()
    progress = json.loads((HERE / "collection" / "progress.json").read_text())
    assert not progress["finished"] and progress["windows_done"] == 8, progress


if __name__ == "__main__":
    main()
