"""Write the stored-format fixtures of neuron_explainer 0.1 (run database schema 1, collection
format 1, result JSON without a format version) into this folder.

Run once, with the library at commit bbef5aa (the last commit before the layout change), from the
repository root: ``python tests/data/v1/make_fixtures.py``. The files it writes are committed;
tests/test_stored_formats.py opens, resumes and reports them with the current library. Do not
rerun it with a newer library: the point of the fixtures is that an older version wrote them.

What it writes (all small):

* ``collection/``: a tiny random GPT-2 (2 layers, 128 neurons each) collected over 60 made-up
  texts, windows of 8 tokens;
* ``run.sqlite``: an explain run (token-table explainer and simulator) over layer 0, neurons
  0-7 of that collection, stopped after 3 units as if killed: 3 done, 5 pending;
* ``result.json``: one `ExplanationResult` of a synthetic number neuron, as
  ``result.model_dump_json()`` wrote it.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for the tokenizer helper

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()


class Stop(Exception):
    """Raised from the progress callback to stop the run as a kill would."""


def main() -> None:
    import torch
    import transformers
    from gpt2_tokenizer import write_gpt2_tokenizer

    from neuron_explainer import ActivationRecord, UnitId, build_neuron_record, explain_neuron
    from neuron_explainer.batch import explain_neurons
    from neuron_explainer.subjects.collect import collect

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(60)]
    scratch = HERE / "_model"
    write_gpt2_tokenizer(scratch)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(scratch)
    for name in ("collection", "run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "result.json"):
        path = HERE / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    collect(
        str(scratch),
        texts,
        out_dir=HERE / "collection",
        layers=[0, 1],
        device="cpu",
        window_length=8,
        batch_size=8,
        top_k=12,
        n_random=8,
        quantile_levels=(0.5, 0.9),
        n_per_quantile=2,
        quantile_warmup=20,
        seed=1,
    )
    shutil.rmtree(scratch)

    done: list[object] = []

    def progress(event: object) -> None:
        done.append(event)
        if len(done) == 3:
            raise Stop

    try:
        explain_neurons(
            HERE / "collection",
            layers=[0],
            neurons="0-7",
            db=HERE / "run.sqlite",
            explainer="token-table",
            simulator="token-table",
            concurrency=1,
            progress=progress,
        )
    except Stop:
        pass

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
