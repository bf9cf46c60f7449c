# ruff: noqa: E402, E501, E741, B905
"""Prompt experiments for a small detection judge (issue 17), on planted units from Debian
fortunes (benchmarks/bench_classification.py's units: our own data, not the puzzle benchmark).

For each unit: 10 activating and 10 silent excerpts of its valid split, judged under its own
explanation (true) and the next unit's (false), one request per ``--per`` excerpts, with a
llama.cpp server on 127.0.0.1. Variants:

* ``current``: the detection scorer's prompt (classification-scorer/2), JSON answer;
* ``contains`` / ``contains_examples``: "does each text contain <explanation>?", JSON answer;
* ``yesno`` / ``yesno_neuron``: one excerpt, a plain "yes" or "no" answer, p(yes) read from the
  first token's logprobs.

Prints per unit and variant: balanced accuracy of the greedy answers (yes-rate on activating,
no-rate on silent excerpts) and AUROC of p(yes).

Run:  python benchmarks/prototypes/judge_prompts.py --units 3 --per 1 --variants yesno
      [--model GGUF]   (default: the llama.cpp tests' 0.5B GGUF)
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import numpy as np
from bench_classification import UNITS, fortunes, gpt2_split, unit_record, windows
from bench_simulators import llamacpp_llm

from neuron_explainer.llm.base import Message
from neuron_explainer.records.splits import split_records
from neuron_explainer.scorers import _judge
from neuron_explainer.scorers._examples import FiringRule, pick_negatives, pick_positives


def auroc(pos, neg):
    pos, neg = np.array(pos), np.array(neg)
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
        / (len(pos) * len(neg))
    )


VARIANTS = {}


def variant(f):
    VARIANTS[f.__name__] = f
    return f


SYS2 = (
    "A neuron in a language model activates on the tokens that match its explanation. "
    "For each numbered excerpt, answer 1 if some token of it matches the explanation, else 0. "
    "Most excerpts of ordinary text do not match."
)


@variant
def current(expl, texts):
    return [
        Message(role="system", content=SYS2),
        Message(
            role="user",
            content=_judge._user(expl, texts, "Does the neuron activate on each excerpt?"),
        ),
    ]


@variant
def contains(expl, texts):
    lines = "\n".join(f"{i}. {t.lstrip(' ')}" for i, t in enumerate(texts, 1))
    return [
        Message(
            role="user",
            content=(
                f"Texts:\n{lines}\n\nFor each text: does it contain {expl}? "
                f'Answer in JSON, one property per text, 1 for yes and 0 for no: {{"1": 0 or 1, ...}}'
            ),
        )
    ]


@variant
def contains_examples(expl, texts):
    lines = "\n".join(f"{i}. {t.lstrip(' ')}" for i, t in enumerate(texts, 1))
    head = (
        "You check whether short texts contain something. Example: for 'names of fruits', "
        "the text 'She ate an apple at noon.' gets 1 and 'The train left at noon.' gets 0.\n\n"
    )
    return [
        Message(
            role="user",
            content=(
                head + f"Texts:\n{lines}\n\nFor each text: does it contain {expl}? "
                f'Answer in JSON, one property per text, 1 for yes and 0 for no: {{"1": 0 or 1, ...}}'
            ),
        )
    ]


YESNO = set()


@variant
def yesno(expl, texts):
    (t,) = texts
    return [
        Message(
            role="user",
            content=f"Text: {t.strip()}\n\nDoes this text contain {expl}? Answer yes or no.",
        )
    ]


YESNO.add("yesno")


@variant
def yesno_neuron(expl, texts):
    (t,) = texts
    return [
        Message(
            role="system",
            content="A neuron in a language model activates on text that matches its explanation.",
        ),
        Message(
            role="user",
            content=f"Explanation: {expl}\n\nText: {t.strip()}\n\nDoes the neuron activate on this text? Answer yes or no.",
        ),
    ]


YESNO.add("yesno_neuron")


SHOTS = (
    ("She played a slow tune on the old piano.", "musical instruments", "yes"),
    ("He painted the fence a bright green.", "musical instruments", "no"),
    ("He painted the fence a bright green.", "colours", "yes"),
    ("She played a slow tune on the old piano.", "colours", "no"),
)
"""Worked answers for `yesno_contrast`: each text asked under two explanations, once yes and
once no, so that the answer has to come from the explanation (concepts that overlap no
puzzle of the benchmark)."""


def _yesno_question(text, expl):
    return f"Text: {text.strip()}\n\nDoes this text contain {expl}? Answer yes or no."


@variant
def yesno_contrast(expl, texts):
    (t,) = texts
    out = []
    for text, concept, answer in SHOTS:
        out.append(Message(role="user", content=_yesno_question(text, concept)))
        out.append(Message(role="assistant", content=answer.capitalize()))
    out.append(Message(role="user", content=_yesno_question(t, expl)))
    return out


YESNO.add("yesno_contrast")

import math


async def ask_yesno(llm, messages):
    r = await llm.acomplete(messages, temperature=0.0, max_tokens=2, logprobs=True, top_logprobs=10)
    c = r.choices[0]
    first = c.logprobs[0]
    mass = {"yes": 0.0, "no": 0.0}
    seen = {(first.token, first.logprob), *((t.token, t.logprob) for t in first.top_logprobs)}
    for tok, lp in seen:
        k = tok.strip().lower()
        if k in mass:
            mass[k] += math.exp(lp)
    tot = mass["yes"] + mass["no"]
    p = mass["yes"] / tot if tot else 0.5

    class V:
        pass

    v = V()
    v.p_yes = p
    v.answer = p > 0.5
    return [v]


async def ask(llm, messages, n):
    r = await llm.acomplete(
        messages,
        temperature=0.0,
        max_tokens=12 * n + 32,
        logprobs=True,
        top_logprobs=5,
        response_format=_judge._schema(n),
    )
    got = _judge.read(r.choices[0], n)
    return [got.get(k) for k in range(1, n + 1)]


async def run(llm, units, per, names):
    split = gpt2_split()
    cut = windows(fortunes(), split)
    for index, unit in enumerate(UNITS[:units]):
        record, _ = unit_record(unit, index, cut, top_k=80, n_random=120)
        splits = split_records(record)
        held = splits.valid
        rule = FiringRule(0.2, record.max_activation)
        pos = pick_positives(rule, held.top, held.quantile_records, held.random, 10)
        neg, _ = pick_negatives(rule, held.random, 10, "random", set())
        items = [(c.record, True) for c in pos] + [(c.record, False) for c in neg]
        rng = np.random.default_rng(index)
        order = rng.permutation(len(items))
        items = [items[i] for i in order]
        texts = [_judge.render(r.tokens) for r, _ in items]
        other = UNITS[(index + 1) % len(UNITS)]
        for name in names:
            for which, expl in (("true", unit.explanation), ("false", other.explanation)):
                t0 = time.time()
                verdicts = []
                for i in range(0, len(texts), per):
                    if name in YESNO:
                        verdicts += await ask_yesno(llm, VARIANTS[name](expl, texts[i : i + per]))
                    else:
                        verdicts += await ask(
                            llm, VARIANTS[name](expl, texts[i : i + per]), len(texts[i : i + per])
                        )
                p = [v.p_yes if v and v.p_yes is not None else 0.5 for v in verdicts]
                yes = [bool(v and v.answer) for v in verdicts]
                lab = [l for _, l in items]
                tpr = np.mean([y for y, l in zip(yes, lab) if l])
                tnr = np.mean([not y for y, l in zip(yes, lab) if not l])
                a = auroc([q for q, l in zip(p, lab) if l], [q for q, l in zip(p, lab) if not l])
                print(
                    f"{unit.name:12} {name:18} per={per:2} {which:5} BA {(tpr + tnr) / 2:.2f} (yes|pos {tpr:.2f}, no|neg {tnr:.2f}) AUROC {a:.2f}  {time.time() - t0:.0f}s",
                    flush=True,
                )


ap = argparse.ArgumentParser()
ap.add_argument("--units", type=int, default=3)
ap.add_argument("--per", type=int, default=1)
ap.add_argument("--variants", default="current,contains,contains_examples")
ap.add_argument("--model", default="")
a = ap.parse_args()


class A:
    llamacpp_client = "auto"
    max_new_tokens = 512
    slots = 1


with llamacpp_llm(a.model, A) as (llm, used, extra):
    asyncio.run(run(llm, a.units, a.per, a.variants.split(",")))
