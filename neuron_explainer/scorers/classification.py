"""Classification scorers: an LLM answers yes/no questions about held-out excerpts, given the
explanation. Far cheaper than simulation (one short answer per excerpt, several excerpts per
request) and within reach of small models.

* `DetectionScorer` (``"detection"``): does the unit activate on this excerpt? Positives are
  activating excerpts across activation levels, negatives non-activating ones (random, or hard:
  containing the unit's top tokens).
* `FuzzingScorer` (``"fuzzing"``): are the highlighted tokens the ones the unit fires on?
  Each activating excerpt is shown twice, in different requests: with its firing tokens
  highlighted (positive) and with as many other tokens highlighted (negative), drawn by a
  generator seeded per unit and excerpt (`neuron_explainer.scorers._examples.rng_for`).

Both judge only the held-out split they are given (never what the explainer saw) and score
with `classification_metrics`: balanced accuracy (the headline), precision, recall, F1 and,
when the LLM returns logprobs, AUROC of the probability of "yes", each with a bootstrap
interval. A judgement that failed is counted (per class) and kept with its reason, never
dropped and never taken as "no". Which excerpts count as activating, and which negatives were
used, is recorded with the score (`neuron_explainer.scorers._examples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from neuron_explainer.errors import InsufficientRecordsError, InvalidInputError
from neuron_explainer.interfaces import CallEstimate
from neuron_explainer.llm.base import LLM
from neuron_explainer.llm.prompts import reworded, unit_noun
from neuron_explainer.results import ClassificationScore, Explanation, Judgement, Score
from neuron_explainer.results import SimulationFailure as Failure
from neuron_explainer.scorers import _judge
from neuron_explainer.scorers._classification import classification_metrics
from neuron_explainer.scorers._examples import (
    DEFAULT_FIRING_FRACTION,
    Candidate,
    FiringRule,
    NegativeKind,
    pick_negatives,
    pick_positives,
    rng_for,
    seeded,
    top_tokens,
    wrong_highlight,
)
from neuron_explainer.scorers.base import Scorer, ScoringData

__all__ = ["DetectionScorer", "FuzzingScorer"]

PROMPT_VERSION = "classification-scorer/4"
_TASK = "A neuron activates on the tokens that match its explanation. "
DETECTION_SYSTEM = (
    _TASK + "For each numbered excerpt, answer 1 if some token matches the explanation, else 0. "
    "Most excerpts do not match."
)
FUZZING_SYSTEM = (
    _TASK + "Some tokens of each numbered excerpt are marked <<like this>>. Answer 1 if the "
    "marked tokens match the explanation, else 0."
)
DEFAULT_PER_REQUEST = 20
"""Excerpts per request of the JSON answer."""
Item = tuple[Candidate, tuple[int, ...] | None]
"""An excerpt to judge, with the positions highlighted in it (fuzzing) or ``None``."""
T = TypeVar("T")


@dataclass(frozen=True)
class _Chosen:
    """What one unit's scorer judges: its requests' excerpts, and what to record about them."""

    groups: list[list[Item]]
    negatives: Literal["random", "hard", "wrong_highlight"]
    hard_negatives: int = 0
    not_judged: int = 0

    @property
    def items(self) -> list[Item]:
        return [item for group in self.groups for item in group]


DETECTION_YESNO = "Does this text contain {explanation}?"
FUZZING_YESNO = (
    "Some tokens of this text are marked <<like this>>. Are the marked tokens {explanation}?"
)
"""The one-excerpt questions of ``answer="yesno"`` (the explanation filled in)."""


class _ClassificationScorer(Scorer):
    """What detection and fuzzing share: the LLM, the excerpts judged, the metrics."""

    kind: ClassVar[Literal["detection", "fuzzing"]]
    system: ClassVar[str]
    yesno: ClassVar[str]
    prompt_version = PROMPT_VERSION
    version = "1"
    recorded_settings: ClassVar[tuple[str, ...]] = (
        "llm",
        "n_positives",
        "n_negatives",
        "excerpts_per_request",
        "answer",
        "firing_fraction",
        "retries",
        "seed",
    )

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        n_positives: int = 20,
        n_negatives: int = 20,
        excerpts_per_request: int | None = None,
        answer: str = "json",
        firing_fraction: float = DEFAULT_FIRING_FRACTION,
        retries: int = 2,
        seed: int = 0,
        n_resamples: int = 1000,
    ) -> None:
        if answer not in _judge.ANSWERS:
            raise InvalidInputError(f"answer is 'json' or 'yesno', got {answer!r}")
        if excerpts_per_request is None:
            excerpts_per_request = 1 if answer == "yesno" else DEFAULT_PER_REQUEST
        if answer == "yesno" and excerpts_per_request != 1:
            raise InvalidInputError(
                "answer='yesno' asks about one excerpt per request: leave excerpts_per_request "
                f"unset (or 1), got {excerpts_per_request}"
            )
        self.answer = answer
        if not isinstance(llm, LLM):
            raise InvalidInputError(
                f"the {self.kind} scorer needs an LLM: pass llm= (an LLM, or a 'provider:model' "
                f"name through registry.scorer({self.kind!r}, llm=...)); in explain_neuron it "
                "borrows the simulator's LLM"
            )
        self.llm = llm
        for name, value, low in (
            ("n_positives", n_positives, 1),
            ("n_negatives", n_negatives, 1),
            ("excerpts_per_request", excerpts_per_request, 1),
            ("retries", retries, 0),
            ("n_resamples", n_resamples, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
        FiringRule(firing_fraction, 1.0)  # checks the fraction
        self.n_positives, self.n_negatives = n_positives, n_negatives
        self.excerpts_per_request, self.retries = excerpts_per_request, retries
        self.firing_fraction, self.seed, self.n_resamples = firing_fraction, seed, n_resamples

    # -- what is judged ----------------------------------------------------------------------

    def _rule(self, data: ScoringData) -> FiringRule:
        return FiringRule(self.firing_fraction, data.record.max_activation)

    def _choose(self, data: ScoringData, rule: FiringRule) -> _Chosen:
        """The excerpts to judge, grouped into requests, each with its highlight (fuzzing).

        Raises:
            InsufficientRecordsError: nothing of one class to judge.
        """
        raise NotImplementedError

    def _question(self, explanation: Explanation) -> str:
        if self.answer == "yesno":
            return self.yesno.format(explanation=explanation.text.strip().rstrip("."))
        return ""  # the numbered JSON answer's system prompt asks the question

    @staticmethod
    def _shown(group: Sequence[Item]) -> list[str]:
        return [_judge.render(c.record.tokens, h or ()) for c, h in group]

    # -- scoring -----------------------------------------------------------------------------

    async def ascore(self, explanation: Explanation, data: ScoringData) -> ClassificationScore:
        """Judge the held-out excerpts of ``data.split`` and score the answers.

        Raises:
            InsufficientRecordsError: the split has no activating or no non-activating excerpt
                to judge.
            Exception: an LLM error that is not one excerpt's failure (authentication, budget).
        """
        rule = self._rule(data)
        chosen = self._choose(data, rule)
        verdicts = await _judge.ask(
            self.llm,
            system=self._system(),
            explanation=explanation.text,
            question=self._question(explanation),
            groups=[self._shown(g) for g in chosen.groups],
            retries=self.retries,
            answer=self.answer,
        )
        judgements = tuple(
            Judgement(
                record=c.record,
                source=c.source,
                label=c.label,
                highlighted=h,
                answer=v.answer,
                p_yes=v.p_yes,
                failure=None
                if v.answer is not None
                else Failure(reason=v.reason or "other", message=v.message),
            )
            for (c, h), v in zip(chosen.items, verdicts, strict=True)
        )
        metrics = classification_metrics(
            [j.label for j in judgements],
            [j.answer for j in judgements],
            [j.p_yes for j in judgements],
            n_resamples=self.n_resamples,
            rng=self.seed,
        )
        ranked = metrics.auroc.value is not None
        headline = metrics.auroc if ranked else metrics.balanced_accuracy
        return ClassificationScore(
            kind=self.kind,
            scorer=self.info,
            split=data.split,
            value=Score(value=headline.value, reason=headline.reason),
            headline="auroc" if ranked else "balanced_accuracy",
            metrics=metrics,
            judgements=judgements,
            firing_fraction=rule.fraction,
            firing_threshold=rule.threshold,
            negatives=chosen.negatives,
            hard_negatives=chosen.hard_negatives,
            not_judged=chosen.not_judged,
            excerpts_per_request=self.excerpts_per_request,
        )

    def _system(self) -> str:
        """The system prompt, naming the kind of unit being scored (`unit_noun`; a neuron's
        prompt is the one the prompt version names)."""
        return reworded(self.system, unit_noun())

    def estimate(self, explanation: Explanation, data: ScoringData) -> CallEstimate:
        """The requests and tokens of `ascore` without retries, sending nothing (excerpts are
        chosen as `ascore` chooses them)."""
        try:
            chosen = self._choose(data, self._rule(data))
        except InsufficientRecordsError as exc:
            return CallEstimate.of(self, cost_usd=0.0, note=str(exc))
        requests, prompt, completion = _judge.estimate_requests(
            system=self._system(),
            explanation=explanation.text,
            question=self._question(explanation),
            groups=[self._shown(g) for g in chosen.groups],
            answer=self.answer,
        )
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=prompt, completion_tokens=completion
        )


def _insufficient(data: ScoringData, what: str, rule: FiringRule) -> InsufficientRecordsError:
    return InsufficientRecordsError(
        f"{data.record.unit}: the {data.split} split has no {what} excerpt to judge (firing: "
        f"activation >= {rule.threshold:.4g}, {rule.fraction:g} x the largest); collect more "
        "records or change firing_fraction"
    )


class DetectionScorer(_ClassificationScorer):
    """Does the unit activate on this excerpt, given the explanation? (see the module
    docstring).

    Args:
        llm: the judge (``provider:model`` is built by the registry).
        n_positives: at most this many activating excerpts of the split are judged (fewer
            when the split has fewer).
        n_negatives: at most this many non-activating excerpts are judged.
        negatives: ``"random"`` non-activating excerpts, or ``"hard"`` ones (containing a
            token that fires in the train excerpts) first.
        excerpts_per_request: excerpts judged in one request (default 20; 1 with
            ``answer="yesno"``).
        answer: ``"json"`` (a numbered JSON object for several excerpts per request) or
            ``"yesno"`` (one excerpt per request, a plain question answered "yes" or "no":
            what small local judges answer best; docs/classification-scorers.md).
        firing_fraction: a token fires at ``firing_fraction`` x the unit's largest activation.
        retries: times an excerpt left without an answer is asked again.
        seed: seeds the bootstrap intervals (and, in fuzzing, the wrong highlights).
        n_resamples: bootstrap resamples of each interval.

    Raises:
        InvalidInputError: no LLM, or an option out of range.
    """

    name = "detection"
    kind = "detection"
    system = DETECTION_SYSTEM
    yesno = DETECTION_YESNO
    recorded_settings = (*_ClassificationScorer.recorded_settings, "negatives")

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        n_positives: int = 20,
        n_negatives: int = 20,
        negatives: NegativeKind = "random",
        excerpts_per_request: int | None = None,
        answer: str = "json",
        firing_fraction: float = DEFAULT_FIRING_FRACTION,
        retries: int = 2,
        seed: int = 0,
        n_resamples: int = 1000,
    ) -> None:
        super().__init__(
            llm,
            n_positives=n_positives,
            n_negatives=n_negatives,
            excerpts_per_request=excerpts_per_request,
            answer=answer,
            firing_fraction=firing_fraction,
            retries=retries,
            seed=seed,
            n_resamples=n_resamples,
        )
        if negatives not in ("random", "hard"):
            raise InvalidInputError(f"negatives is 'random' or 'hard', got {negatives!r}")
        self.negatives: NegativeKind = negatives

    def _choose(self, data: ScoringData, rule: FiringRule) -> _Chosen:
        held = data.splits.held_out(data.split)
        quantiles = held.quantile_records
        positives = pick_positives(rule, held.top, quantiles, held.random, self.n_positives)
        if not positives:
            raise _insufficient(data, "activating", rule)
        hard_tokens = top_tokens(rule, data.splits.train)
        negatives, hard = pick_negatives(
            rule, held.random, self.n_negatives, self.negatives, hard_tokens
        )
        if not negatives:
            raise _insufficient(data, "non-activating", rule)
        pool = [*held.top, *quantiles, *held.random]
        ambiguous = sum(not rule.fires(r) and not rule.silent(r) for r in pool)
        items: list[Item] = [(c, None) for c in _interleave(positives, negatives)]
        size = self.excerpts_per_request
        groups = [items[i : i + size] for i in range(0, len(items), size)]
        return _Chosen(_shuffled(groups, data, self), self.negatives, hard, ambiguous)


class FuzzingScorer(_ClassificationScorer):
    """Are the highlighted tokens the ones the unit fires on, given the explanation? (see the
    module docstring). Takes the options of `DetectionScorer` except ``negatives`` and
    ``n_negatives`` (each activating excerpt is its own negative, wrongly highlighted).

    Raises:
        InvalidInputError: no LLM, or an option out of range.
    """

    name = "fuzzing"
    kind = "fuzzing"
    system = FUZZING_SYSTEM
    yesno = FUZZING_YESNO

    def _choose(self, data: ScoringData, rule: FiringRule) -> _Chosen:
        held = data.splits.held_out(data.split)
        positives = pick_positives(
            rule, held.top, held.quantile_records, held.random, self.n_positives
        )
        right: list[Item] = []
        wrong: list[Item] = []
        for c in positives:
            drawn = wrong_highlight(rule, c.record, rng_for(data.record.unit, c.record, self.seed))
            if drawn is not None:
                right.append((c, tuple(rule.firing_positions(c.record))))
                wrong.append((Candidate(c.record, c.source, False), tuple(drawn)))
        if not right:
            raise _insufficient(data, "activating (with enough silent tokens to mislabel)", rule)
        # each request holds both classes, never both versions of one excerpt: the right
        # versions of one half go with the wrong versions of the other half
        half = len(right) // 2
        order = _interleave(right[:half], wrong[half:]) + _interleave(wrong[:half], right[half:])
        groups = _pack(order, self.excerpts_per_request)
        return _Chosen(
            _shuffled(groups, data, self), "wrong_highlight", 0, len(positives) - len(right)
        )


def _shuffled(
    groups: list[list[Item]], data: ScoringData, scorer: _ClassificationScorer
) -> list[list[Item]]:
    """Each request's excerpts in an order of their own (seeded by the unit, the scorer and
    its seed), so an excerpt's number says nothing about its class."""
    rng = seeded(data.record.unit, scorer.kind, scorer.seed)
    return [[group[i] for i in rng.permutation(len(group))] for group in groups]


def _interleave(a: Sequence[T], b: Sequence[T]) -> list[T]:
    """``a`` and ``b`` alternated (the rest of the longer one at the end), so each request
    holds both classes."""
    out: list[T] = []
    for i in range(max(len(a), len(b))):
        out.extend(x[i] for x in (a, b) if i < len(x))
    return out


def _pack(items: Sequence[Item], size: int) -> list[list[Item]]:
    """``items`` in requests of at most ``size``, in order, each excerpt at most once per
    request: an item whose excerpt its request already holds goes to the next request that
    does not (the two versions of a fuzzed excerpt are never judged side by side)."""
    groups: list[list[Item]] = []
    for item in items:
        tokens = item[0].record.tokens
        for group in groups:
            if len(group) < size and all(c.record.tokens != tokens for c, _ in group):
                group.append(item)
                break
        else:
            groups.append([item])
    return groups
