"""Tokens of contrastive scoring and of sensitivity against plain scoring, per unit, from the
library's own dry-run estimate (`estimate_neuron`: nothing is sent).

The unit: `number_neuron_record()` with the default splits (10 train, 20 calibration, 20 valid
excerpts of 16 tokens); the LLM explainer and the chat-logprob simulator on an OpenAI-priced
model name (no request is made). For each best-of k: plain scoring without sensitivity, plain
with sensitivity, contrastive (sensitivity free), each as prompt + completion tokens and as a
ratio to plain. Issue 16's targets: contrastive <= 2x plain at best-of-1, <= 1.2x at best-of
>= 5.

Run:  python benchmarks/bench_contrastive_cost.py
"""

from __future__ import annotations

from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.records.splits import split_records
from neuron_explainer.runs.estimate import NeuronEstimate, estimate_neuron
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import number_neuron_record


def tokens(estimate: NeuronEstimate) -> int:
    return estimate.prompt_tokens + estimate.completion_tokens


def main() -> None:
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


if __name__ == "__main__":
    main()
