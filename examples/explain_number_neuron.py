"""Explain a synthetic "number neuron" offline and score the explanation.

A unit with a known rule (it fires on numbers, more strongly on longer ones) is recorded over
generated text; the offline token-table explainer and simulator explain and score it on
held-out records. No model, LLM or network is needed.

Run:  python examples/explain_number_neuron.py [--json result.json]
"""

from __future__ import annotations

import argparse
import random
import re
import sys

from neuron_explainer import (
    ActivationRecord,
    Provenance,
    UnitId,
    build_neuron_record,
    explain_neuron,
)

WORDS = [
    "the",
    "market",
    "city",
    "river",
    "report",
    "season",
    "company",
    "team",
    "people",
    "village",
    "station",
    "letter",
    "garden",
    "museum",
    "engine",
    "council",
    "harbour",
    "library",
    "bridge",
    "school",
]
VERBS = [
    "sold",
    "counted",
    "built",
    "shipped",
    "opened",
    "found",
    "repaired",
    "measured",
    "printed",
    "reported",
]
TEMPLATES = (
    "In {n} the {w} {v} {n} {w}s near the {w}.",
    "The {w} {v} about {n} {w}s, and the {w} {v} {n} more.",
    "Nobody {v} the {w} before the {w} {v} it.",
    "A {w} of {n} people {v} the old {w}.",
    "They {v} the {w} while the {w} waited by the {w}.",
)
WINDOW = 64
TOKEN = re.compile(r" ?\w+| ?[^\w\s]")


def rule(token: str, rng: random.Random) -> float:
    """The unit's true behaviour: about 3 + 0.5 per digit on numbers, near zero elsewhere."""
    core = token.strip()
    if core.isdigit():
        return 3.0 + 0.5 * len(core) + rng.gauss(0.0, 0.3)
    return rng.gauss(0.0, 0.15)


def number(rng: random.Random) -> str:
    return str(rng.choice([rng.randint(1, 12), rng.randint(10, 999), rng.randint(1800, 2024)]))


def document(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(4, 9)):
        template = rng.choice(TEMPLATES)
        sentences.append(
            re.sub(
                r"\{(\w)\}",
                lambda m: {
                    "n": number,
                    "w": lambda r: r.choice(WORDS),
                    "v": lambda r: r.choice(VERBS),
                }[m.group(1)](rng),
                template,
            )
        )
    return " ".join(sentences)


def excerpts(n_documents: int, seed: int) -> list[ActivationRecord]:
    """Tokenize generated documents into windows that never cross a document boundary."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_documents):
        tokens = TOKEN.findall(document(rng))
        for start in range(0, len(tokens), WINDOW):
            window = tokens[start : start + WINDOW]
            out.append(ActivationRecord(tokens=window, activations=[rule(t, rng) for t in window]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the ExplanationResult to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    unit = UnitId(model="synthetic-numbers", layer=0, index=0)
    record = build_neuron_record(
        unit,
        excerpts(n_documents=800, seed=args.seed),
        provenance=Provenance(
            model=unit.model, dataset="generated templates", window_length=WINDOW, bos_policy="none"
        ),
        top_k=40,
        n_random=30,
        seed=args.seed,
    )
    result = explain_neuron(record, explainer="token-table", simulator="token-table")

    print(f"unit:        {result.unit}")
    print(f"explanation: {result.explanation.text}")
    scored = result.scored
    for label, score in (
        ("score (top-and-random correlation)", scored.correlation),
        ("random-only correlation", scored.random_correlation),
        ("R² (calibrated)", scored.rsquared),
        ("absolute deviation explained", scored.absolute_dev_explained),
    ):
        shown = f"{score.value:.3f}" if score.value is not None else f"undefined ({score.reason})"
        print(f"{label + ':':38} {shown}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(result.model_dump_json(indent=2))
    return 0 if (result.score or 0.0) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
