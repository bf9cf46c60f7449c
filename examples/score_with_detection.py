"""Score an explanation with the classification scorers (detection, fuzzing) next to the
simulation score.

The unit is the synthetic number neuron (`number_neuron_record`, half its excerpts without a
number, so some are non-activating). The offline token-table explainer explains it; the judge
is ``--judge provider:model`` (e.g. ``openai:gpt-4o-mini`` with OPENAI_API_KEY set, or
``hf:PATH`` for a local model), by default an offline stand-in that judges by the rule
(`neuron_explainer.testing.OracleJudge`), so the example runs with no model or network.

Run:  python examples/score_with_detection.py [--judge provider:model] [--json result.json]
"""

from __future__ import annotations

import argparse
import sys

from neuron_explainer import explain_neuron
from neuron_explainer.plugins import default_registry
from neuron_explainer.testing import OracleJudge, ScriptedLLM, number_neuron_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", help="the judge LLM as provider:model (default: offline)")
    parser.add_argument("--json", help="also write the whole result here")
    args = parser.parse_args(argv)

    registry = default_registry()
    judge = registry.llm(args.judge) if args.judge else ScriptedLLM(default=OracleJudge())
    record = number_neuron_record(silent_fraction=0.5)
    result = explain_neuron(
        record,
        explainer="token-table",
        simulator="token-table",
        scorers=[
            registry.scorer("detection", llm=judge),
            registry.scorer("fuzzing", llm=judge),
            "correlation",
        ],
    )
    print(f"explanation: {result.explanation.text}")
    for name, score in result.scores.items():
        value = "undefined" if score.value.value is None else f"{score.value.value:.3f}"
        print(f"{name}: {value}")
        metrics = getattr(score, "metrics", None)
        if metrics is not None:
            print(f"  {metrics.describe()}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(result.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
