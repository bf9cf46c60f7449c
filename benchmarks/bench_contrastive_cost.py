"""Tokens of contrastive scoring and of sensitivity against plain scoring.

1. One unit, from the library's own dry-run estimate (`estimate_neuron`: nothing is sent):
   `number_neuron_record()` with the default splits (10 train, 20 calibration, 20 valid
   excerpts of 16 tokens); the LLM explainer and the chat-logprob simulator on an
   OpenAI-priced model name. For each best-of k: plain scoring without sensitivity, plain with
   sensitivity, contrastive (sensitivity free), as prompt + completion tokens and as a ratio to
   plain.
2. A batch, measured (``--units N``, default 24; ``--skip-batch`` to leave it out): a real
   collection of a tiny random GPT-2 (GPT-2's tokenizer, a made-up corpus; `explain_neurons`
   collects it), whose units share one reservoir of random excerpts as every collection's do;
   then `explain_neurons` over its first N neurons with the chat-logprob simulator against our
   loopback OpenAI-protocol server (`OracleResponder`), once per mode and k. The tokens are
   the simulator's, as the server reported them in the run's usage; the explainer is a mock
   whose k candidates are distinct texts (its tokens, the same in every mode, would lower every
   ratio, so the ratios are upper bounds). Also the dry-run estimate of the same batch
   (`estimate_run`, which counts shared neutral simulations once).

Issue 16's targets: contrastive <= 2x plain at best-of-1, <= 1.2x at best-of >= 5.

Run:  python benchmarks/bench_contrastive_cost.py [--units 24] [--skip-batch]
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.records.splits import split_records
from neuron_explainer.runs import explain_neurons
from neuron_explainer.runs.estimate import NeuronEstimate, estimate_neuron
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import (
    MockExplainer,
    OpenAITestServer,
    OracleResponder,
    number_neuron_record,
)


def tokens(estimate: NeuronEstimate) -> int:
    return estimate.prompt_tokens + estimate.completion_tokens


def one_unit() -> None:
    llm = OpenAILLM("gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    record = number_neuron_record()
    splits = split_records(record)
    sizes = {name: len(getattr(splits, name).records) for name in ("calibration", "valid")}
    print(f"train {len(splits.train)}, calibration {sizes['calibration']}, valid {sizes['valid']}")
    explainer, simulator = LLMExplainer(llm), ChatLogprobSimulator(llm)
    print("| best-of | plain | plain + sensitivity | contrastive | contrastive / plain |")
    print("|---:|---:|---:|---:|---:|")
    for k in (1, 2, 5, 10, 20):
        plain = estimate_neuron(record, explainer, simulator, best_of=k, sensitivity=False)
        sens = estimate_neuron(record, explainer, simulator, best_of=k, sensitivity=True)
        contrastive = estimate_neuron(
            record, explainer, simulator, best_of=k, scoring="contrastive"
        )
        p, s, c = tokens(plain), tokens(sens), tokens(contrastive)
        print(f"| {k} | {p:,} | {s:,} ({s / p:.2f}x) | {c:,} | {c / p:.2f}x |")


MODES: dict[str, dict[str, Any]] = {
    "plain": {"sensitivity": False},
    "contrastive": {"scoring": "contrastive"},
}


def batch(n_units: int, ks: Sequence[int]) -> None:
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from gpt2_tokenizer import write_gpt2_tokenizer

    workdir = Path(tempfile.mkdtemp())
    try:
        model = write_gpt2_tokenizer(workdir / "model")
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64)
        transformers.GPT2LMHeadModel(config).eval().save_pretrained(model)
        rng = random.Random(0)
        corpus = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120))) for _ in range(600)
        ]
        collection = workdir / "collection"
        neurons = f"0-{n_units - 1}"
        explain_neurons(  # collects, and explains with the token table (no LLM)
            model=model,
            corpus=corpus,
            layers="0",
            neurons=neurons,
            db=workdir / "collect.sqlite",
            collection_dir=collection,
            collect_options=COLLECT,
        )
        print(f"\nbatch: {n_units} units of a tiny GPT-2 collection (one random reservoir)")
        print("| best-of | plain | contrastive | contrastive / plain | estimate (run) |")
        print("|---:|---:|---:|---:|---:|")
        for k in ks:
            spent: dict[str, int] = {}
            estimated: dict[str, int] = {}
            for mode, options in MODES.items():
                db = workdir / f"{mode}-{k}.sqlite"
                with OpenAITestServer(responder=OracleResponder()) as server:
                    llm = OpenAILLM("gpt-4o-mini", api_key="unused", base_url=server.base_url)
                    kwargs: dict[str, Any] = {
                        "source": collection,
                        "layers": "0",
                        "neurons": neurons,
                        "db": db,
                        "explainer": distinct_candidates(),
                        "simulator": ChatLogprobSimulator(llm),
                        "explain_options": {"best_of": k, **options},
                    }
                    estimate = explain_neurons(**kwargs, dry_run=True, sample_units=n_units)
                    estimated[mode] = estimate.prompt_tokens + estimate.completion_tokens
                    summary = explain_neurons(**kwargs)
                    assert summary.done == n_units, summary
                    spent[mode] = summary.usage.prompt_tokens + summary.usage.completion_tokens
            p, c = spent["plain"], spent["contrastive"]
            e = estimated["contrastive"] / estimated["plain"]
            print(f"| {k} | {p:,} | {c:,} | {c / p:.2f}x | {e:.2f}x |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def distinct_candidates() -> MockExplainer:
    """An explainer whose every answer is a new text (so best-of-k has k candidates)."""
    counter = itertools.count()
    return MockExplainer.from_function(lambda _records: f"numbers and words, take {next(counter)}")


WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
COLLECT: dict[str, Any] = {
    "device": "cpu",
    "window_length": 16,
    "batch_size": 32,
    "top_k": 40,
    "n_random": 30,
    "seed": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=24)
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    one_unit()
    if not args.skip_batch:
        batch(args.units, (1, 2, 5, 10))


if __name__ == "__main__":
    main()
