"""Collecting SAE latents and capturing heads / directions: time against their floors.

Targets (issue 18):

* collecting every latent of a 16,384-latent SAE (random weights, ``d_in`` 768) at a
  GPT-2-small-shaped layer (``GPT2Config()``, random weights) costs <= 1.25x the *floor*: the
  bare forward stopped at the hook site plus the encoder's matmul (``relu(x @ W_enc + b_enc)``,
  all latents, result dropped), over the same right-padded batches. The whole collection
  (state set-up, every batch, the final checkpoint writing the state) and the floor are timed
  alternately, ``--reps`` times each in one process, so other load hits both alike; the ratio
  of each pair is reported (median, min, max), with the batches-only ratio (final checkpoint
  left out) beside it;
* peak resident memory does not grow with the corpus: ``--tokens`` and ``4 x --tokens`` are
  collected in fresh processes (``ru_maxrss``);
* 131,072 latents run too (``--big``): time, ratio to its floor, state size on disk;
* head and direction capture (`neuron_explainer.subjects.units.site_activations`, one unit)
  against the bare forward stopped at the same site: ``--capture-reps`` interleaved
  repetitions, ratio median and spread.

Corpus: the Debian fortunes (``apt-get install fortunes``: /usr/share/games/fortunes, quotes
split at lines holding ``%``), GPT-2's tokenizer (the test helper's BPE files).

Run:  python benchmarks/bench_collect_units.py [--tokens 8000] [--reps 5] [--big] [--only-collect]
Writes benchmarks/results/collect_units_<UTC time>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gpt2_tokenizer import write_gpt2_tokenizer

from neuron_explainer.models.hook_sites import hooked, resolve
from neuron_explainer.models.loading import load_model
from neuron_explainer.records import UnitId
from neuron_explainer.subjects.collect import collect
from neuron_explainer.subjects.corpus import corpus_from, iter_windows
from neuron_explainer.subjects.units import (
    UnitSources,
    load_direction,
    pad_windows,
    read_unit,
    site_activations,
)

FORTUNES = Path("/usr/share/games/fortunes")
SITE = "blocks.6.hook_resid_pre"
RESULTS = Path(__file__).resolve().parent / "results"


class _Stop(Exception):
    pass


def fortunes(n_tokens: int) -> list[str]:
    """Fortunes in file order, about ``n_tokens`` GPT-2 tokens (4 characters a token)."""
    quotes: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file():
            continue
        text = path.read_text(encoding="latin-1")
        quotes += [q.strip() for q in text.split("\n%\n") if q.strip()]
    out, chars = [], 0
    for quote in quotes:
        out.append(quote)
        chars += len(quote)
        if chars >= 4 * n_tokens:
            break
    return out


def write_sae(folder: Path, d_sae: int, d_in: int = 768) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    w = {
        "W_enc": (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32),
        "b_enc": np.full(d_sae, -0.5, np.float32),
        "W_dec": np.zeros((d_sae, d_in), np.float32),
        "b_dec": np.zeros(d_in, np.float32),
    }
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "architecture": "standard",
        "metadata": {"hook_name": SITE, "prepend_bos": True},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(folder / "sae_weights.safetensors"))
    return folder


def floor_pass(model: Any, batches: list[Any], w_enc: Any, b_enc: Any, site: str) -> float:
    """The bare forward stopped at ``site`` plus ``relu(x @ W_enc + b_enc)``; seconds."""
    hook = resolve(model, site)

    def sink(_: Any, tensor: Any) -> None:
        if w_enc is not None:
            torch.relu(tensor.reshape(-1, tensor.shape[-1]) @ w_enc + b_enc)
        raise _Stop

    start = time.perf_counter()
    for ids, mask in batches:
        with torch.inference_mode(), hooked(model, [hook], sink), suppress(_Stop):
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    return time.perf_counter() - start


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def collect_vs_floor(
    loaded: Any, corpus: list[str], sae: Path, reps: int, work: Path, **options: Any
) -> dict[str, Any]:
    """``reps`` alternations of one whole collection and one floor pass over its batches."""
    from safetensors.numpy import load_file

    weights = load_file(str(sae / "sae_weights.safetensors"))
    w_enc, b_enc = torch.from_numpy(weights["W_enc"]), torch.from_numpy(weights["b_enc"])
    windows = list(iter_windows(corpus_from(corpus), loaded.tokenizer, length=64, bos="window"))
    batch = options.get("batch_size", 16)
    batches = [pad_windows(windows[i : i + batch]) for i in range(0, len(windows), batch)]
    tokens = sum(len(w.excerpt_ids) for w in windows)
    whole, loop, floors = [], [], []
    last: list[float] = []  # when each batch was done
    for rep in range(reps):
        out = work / f"c{rep}"
        last.clear()
        start = time.perf_counter()
        collect(loaded, corpus, out_dir=out, sae=sae, window_length=64,
                progress=lambda _: last.append(time.perf_counter()), **options)  # fmt: skip
        end = time.perf_counter()
        whole.append(end - start)
        loop.append(last[-1] - start)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out)
        floors.append(floor_pass(loaded.model, batches, w_enc, b_enc, SITE))
    return {
        "windows": len(windows),
        "tokens": tokens,
        "collect_s": spread(whole),
        "floor_s": spread(floors),
        "ratio_whole": spread([c / f for c, f in zip(whole, floors, strict=True)]),
        "ratio_batches_only": spread([c / f for c, f in zip(loop, floors, strict=True)]),
        "collect_tokens_per_s": tokens / statistics.median(whole),
        "floor_tokens_per_s": tokens / statistics.median(floors),
        "state_bytes": size,
    }


def capture_vs_bare(loaded: Any, corpus: list[str], reps: int) -> dict[str, Any]:
    """Head (5.1) and direction (at SITE) capture against the bare forward stopped at the
    same site, alternated ``reps`` times over the same batches."""
    model = loaded.model
    windows = list(iter_windows(corpus_from(corpus), loaded.tokenizer, length=64))[:64]
    batches = [pad_windows(windows[i : i + 16]) for i in range(0, len(windows), 16)]
    vector = np.random.default_rng(1).standard_normal(768)
    units = {
        "head": (UnitId(model="m", layer=5, index=1, kind="attention_head"), UnitSources()),
        "direction": (
            UnitId(model="m", layer=6, index=0, kind="direction", site=SITE),
            UnitSources(direction=load_direction(vector), hook=SITE),
        ),
    }
    out: dict[str, Any] = {"tokens": sum(len(w.input_ids) for w in windows)}
    for name, (unit, sources) in units.items():
        reading = read_unit(model, unit, sources)
        ratios = []
        for _ in range(reps):
            start = time.perf_counter()
            for ids, mask in batches:
                site_activations(model, reading, ids, mask)
            took = time.perf_counter() - start
            ratios.append(took / floor_pass(model, batches, None, None, reading.site.name))
        out[name] = {"site": reading.site.name, "ratio": spread(ratios)}
    return out


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: collect ``--tokens`` and print the peak RSS (MB)."""
    loaded = load_model(args.model_dir, device="cpu")
    collect(loaded, fortunes(args.tokens), out_dir=Path(args.out), sae=Path(args.sae),
            window_length=64, checkpoint_every=256)  # fmt: skip
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_rss(model_dir: Path, sae: Path, tokens: int, work: Path) -> float:
    out = work / f"mem{tokens}"
    run = subprocess.run(
        [sys.executable, __file__, "--memory-child", "--model-dir", str(model_dir),
         "--sae", str(sae), "--out", str(out), "--tokens", str(tokens)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shutil.rmtree(out)
    return float(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--capture-reps", type=int, default=10)
    parser.add_argument("--big", action="store_true", help="also 131,072 latents")
    parser.add_argument(
        "--only-collect", action="store_true", help="only the 16,384-latent collection timing"
    )
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--sae", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp())
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "torch_threads": torch.get_num_threads(),
        "settings": {"tokens": args.tokens, "reps": args.reps, "window_length": 64,
                     "batch_size": 16, "bos": "window", "site": SITE},
    }  # fmt: skip
    try:
        model_dir = write_gpt2_tokenizer(work / "model")
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().save_pretrained(model_dir)
        loaded = load_model(model_dir, device="cpu")
        corpus = fortunes(args.tokens)
        sae = write_sae(work / "sae16k", 16_384)
        if not args.only_collect:
            results["capture"] = capture_vs_bare(loaded, corpus, args.capture_reps)
            print("capture:", json.dumps(results["capture"]))
        results["sae_16384"] = collect_vs_floor(
            loaded, corpus, sae, args.reps, work, checkpoint_every=4096
        )
        print("16,384 latents:", json.dumps(results["sae_16384"]))
        if not args.only_collect:
            results["peak_rss_mb"] = {
                str(n): peak_rss(model_dir, sae, n, work) for n in (args.tokens, 4 * args.tokens)
            }
            print("peak RSS (MB):", results["peak_rss_mb"])
        if args.big:
            big = write_sae(work / "sae128k", 131_072)
            results["sae_131072"] = collect_vs_floor(
                loaded, fortunes(args.tokens // 4), big, 1, work, checkpoint_every=4096,
                top_k=20, n_random=10,
            )  # fmt: skip
            print("131,072 latents:", json.dumps(results["sae_131072"]))
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"collect_units_{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(path)


if __name__ == "__main__":
    main()
