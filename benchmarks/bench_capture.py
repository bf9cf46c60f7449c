"""Capture overhead: hooked forward vs bare forward of the same GPT-2-small-shaped model.

Target (issue 4): capture of every layer costs at most 1.03x a bare forward of the same batch.
Both are measured in one run, interleaved, under torch.inference_mode(); the figure is the
ratio of medians. The bare baseline is the transformer body (``model.transformer``), since
capture stops after the last block and never runs the LM head; the full-LM forward is shown
too.

Run:  python benchmarks/bench_capture.py [--batch 8] [--length 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from neuron_explainer.subjects.capture import ActivationCapture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).to(args.device).eval()  # GPT-2 small's shape
    ids = torch.randint(0, 50257, (args.batch, args.length), device=args.device)
    mask = torch.ones_like(ids)
    capture = ActivationCapture(model, range(12))

    def body() -> None:
        with torch.inference_mode():
            model.transformer(input_ids=ids, attention_mask=mask, use_cache=False)

    def full() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    def hooked() -> None:
        capture(ids, mask)

    runs: dict[str, list[float]] = {"bare body": [], "bare LM": [], "capture 12 layers": []}
    fns = {"bare body": body, "bare LM": full, "capture 12 layers": hooked}
    for fn in fns.values():  # warm up
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            runs[name].append(time.perf_counter() - start)
    med = {name: statistics.median(times) for name, times in runs.items()}
    tokens = args.batch * args.length
    for name, seconds in med.items():
        print(f"{name:18} {seconds * 1000:8.1f} ms  {tokens / seconds:9.0f} tokens/s")
    print(
        f"capture / bare body: {med['capture 12 layers'] / med['bare body']:.3f}x (target <= 1.03)"
    )
    print(f"capture / bare LM:   {med['capture 12 layers'] / med['bare LM']:.3f}x")


if __name__ == "__main__":
    main()
