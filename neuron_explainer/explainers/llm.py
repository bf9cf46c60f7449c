"""An explainer that asks an LLM what the top-activating excerpts have in common.

The prompt follows the paper: a system message with the task and the ``token<TAB>activation``
format, a few made-up neurons (`neuron_explainer.llm.few_shot`) as earlier user/assistant
turns, then the real neuron's train records on the 0-10 prompt scale. When fewer than
`ZERO_FILTER_THRESHOLD` of the shown tokens are non-zero, the records are repeated with the
zeros filtered out, so a sparse neuron's few active tokens stand out.

Before sending, the prompt's length is estimated (``chars / 3.5``, or ``count_tokens``) and
checked against the model's context window (`context_window_for`) minus ``max_tokens``. If it
does not fit, parts are dropped in this order, re-checking after each step:

1. the zero-filtered repeat;
2. train records from the end (the lowest ranked: train records come in rank order), one at a
   time, down to one record.

If even one record does not fit, `ExplanationError` is raised; nothing is truncated. What was
dropped is recorded in ``Explanation.data["prompt"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pydantic import JsonValue

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.errors import ExplanationError, InvalidInputError
from neuron_explainer.explainers._revision_prompt import (
    parse_test_sentences,
    revision_turn,
    tests_turn,
)
from neuron_explainer.explainers._unit_words import ANSWER_PREFIX as ANSWER_PREFIX
from neuron_explainer.explainers._unit_words import EXPLANATION_LINE as EXPLANATION_LINE
from neuron_explainer.explainers._unit_words import ZERO_FILTER_HEADER as ZERO_FILTER_HEADER
from neuron_explainer.explainers._unit_words import (
    attention_lines,
    explanation_line,
    reworded,
    unit_noun,
    unit_turn,
)
from neuron_explainer.explainers.revising import Disagreement
from neuron_explainer.interfaces import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    CallEstimate,
    Explainer,
)
from neuron_explainer.interfaces import estimate_tokens as estimate_tokens
from neuron_explainer.llm.base import LLM, Message, required_llm
from neuron_explainer.llm.few_shot import FEW_SHOT_EXAMPLES, FewShotExample
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import ComponentInfo, Explanation, PromptScale

__all__ = [
    "CONTEXT_WINDOWS",
    "DEFAULT_CONTEXT_WINDOW",
    "ZERO_FILTER_THRESHOLD",
    "LLMExplainer",
    "clean_explanation",
    "context_window_for",
    "estimate_tokens",
]

PROMPT_VERSION = "llm-explainer/2"
_ANSWER_PREFIX = re.compile(r"^the main thing this [\w -]{1,40}? does is find\b\s*", re.IGNORECASE)
ZERO_FILTER_THRESHOLD = 0.2
"""Repeat the records with zeros filtered out when fewer than this share of tokens is non-zero."""
SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for one particular thing in "
    "a short document. Look at the parts of the document the neuron activates for and "
    "summarize in a single sentence what the neuron is looking for. Don't list examples of "
    "words.\n\nThe activation format is token<tab>activation. Activation values range from 0 "
    "to 10. A neuron finding what it's looking for is represented by a non-zero activation "
    "value. The higher the activation value, the stronger the match. Tabs, newlines and "
    "backslashes inside tokens are written as \\t, \\n and \\\\."
)

CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
}
"""Context windows (tokens) by model-name prefix; the longest matching prefix wins."""
DEFAULT_CONTEXT_WINDOW = 8_192
"""The context window assumed for a model `CONTEXT_WINDOWS` does not know (conservative)."""

Levels = Sequence[Sequence[tuple[str, int]]]


def context_window_for(model: str) -> int:
    """The context window of ``model`` from `CONTEXT_WINDOWS` (longest prefix), else
    `DEFAULT_CONTEXT_WINDOW`."""
    matches = [prefix for prefix in CONTEXT_WINDOWS if model.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW


def clean_explanation(raw: str) -> str:
    """The explanation in an LLM's answer: its first non-empty line, without a repeated answer
    prefix ("the main thing this neuron does is find"), surrounding quotes or backticks,
    surrounding whitespace, or a trailing period."""
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    text = " ".join(line.split())
    previous = None
    while text != previous:
        previous = text
        text = _ANSWER_PREFIX.sub("", text)
        text = text.strip(" \"'`")
        if text.endswith("."):
            text = text[:-1].rstrip()
    return text


def _levels(records: Sequence[ActivationRecord], scale: PromptScale) -> list[list[tuple[str, int]]]:
    return [list(zip(r.tokens, scale.discretize(r.activations), strict=True)) for r in records]


def _is_sparse(blocks: Levels) -> bool:
    levels = [level for block in blocks for _, level in block]
    nonzero = sum(1 for level in levels if level > 0)
    return bool(levels) and 0 < nonzero < ZERO_FILTER_THRESHOLD * len(levels)


def _example_turns(examples: Sequence[FewShotExample], noun: str = "neuron") -> list[Message]:
    turns = []
    for i, example in enumerate(examples, start=1):
        turns.append(
            Message(
                role="user",
                content=unit_turn(i, example.records, _is_sparse(example.records), noun),
            )
        )
        turns.append(Message(role="assistant", content=f"{example.explanation}."))
    return turns


TEST_SENTENCE_TOKENS = 40
"""Completion tokens allowed per test sentence asked for."""


class LLMExplainer(Explainer):
    """Shows an LLM a few made-up neurons and then the train records on the 0-10 scale, and
    keeps its one-sentence answer (see the module docstring for the prompt and the context
    rule).

    Args:
        llm: the model to ask (any registered provider).
        max_tokens: length limit of the answer (also reserved out of the context window).
        temperature: sampling temperature of a single explanation (0 = greedy).
        n_candidates: samples drawn by `aexplain`, which returns the first usable one.
        candidate_temperature: sampling temperature when more than one sample is drawn.
        supports_n: ask for several samples in one request (``ChatRequest.n``); if the backend
            returns fewer choices, the rest are asked for one by one. ``False``: one request
            per sample.
        few_shot: show the made-up example neurons first.
        context_window: the model's context in tokens; default from `context_window_for`.
        count_tokens: counts the tokens of a text; default `estimate_tokens` (chars / 3.5).

    Raises:
        InvalidInputError: no ``llm`` given (name the explainer as ``provider:model``), or an
            option out of range.
    """

    name = "llm"
    version = "2"
    prompt_version = PROMPT_VERSION
    recorded_settings = (
        "llm",
        "max_tokens",
        "temperature",
        "n_candidates",
        "candidate_temperature",
        "few_shot",
        "context_window",
    )

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        max_tokens: int = 80,
        temperature: float = 0.0,
        n_candidates: int = 1,
        candidate_temperature: float = 1.0,
        supports_n: bool = True,
        few_shot: bool = True,
        context_window: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        llm = required_llm(llm, by="the 'llm' explainer", kind="explainer")
        if n_candidates < 1 or max_tokens < 1:
            raise InvalidInputError("n_candidates and max_tokens must be at least 1")
        if context_window is not None and context_window <= max_tokens:
            raise InvalidInputError(
                f"context_window ({context_window}) must exceed max_tokens ({max_tokens})"
            )
        self.llm, self.max_tokens, self.temperature = llm, max_tokens, temperature
        self.n_candidates, self.candidate_temperature = n_candidates, candidate_temperature
        self.supports_n, self.few_shot = supports_n, few_shot
        self.context_window = context_window or context_window_for(llm.model)
        self.count_tokens = count_tokens

    @property
    def info(self) -> ComponentInfo:
        """The `recorded_settings`, and how the prompt's tokens are counted."""
        info = super().info
        token_count = "custom" if self.count_tokens else f"chars/{CHARS_PER_TOKEN}"
        return info.model_copy(update={"settings": {**info.settings, "token_count": token_count}})

    def messages(
        self,
        records: Sequence[ActivationRecord],
        scale: PromptScale,
        *,
        zero_filtered_repeat: bool | None = None,
    ) -> list[Message]:
        """The chat messages sent for ``records``.

        Args:
            records: the train records to show, in order.
            scale: their 0-10 prompt scale.
            zero_filtered_repeat: repeat the records with zeros filtered out; by default when
                fewer than `ZERO_FILTER_THRESHOLD` of their tokens are non-zero.
        """
        blocks = _levels(records, scale)
        repeat = _is_sparse(blocks) if zero_filtered_repeat is None else zero_filtered_repeat
        examples = FEW_SHOT_EXAMPLES if self.few_shot else ()
        noun = unit_noun()
        turn = unit_turn(len(examples) + 1, blocks, repeat, noun, attention_lines(records))
        return [
            Message(role="system", content=reworded(SYSTEM, noun)),
            *_example_turns(examples, noun),
            Message(role="user", content=turn),
        ]

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """The estimated prompt tokens of ``messages`` (with a few per message of overhead)."""
        count = self.count_tokens or estimate_tokens
        return sum(count(m.content) + MESSAGE_OVERHEAD for m in messages) + REQUEST_OVERHEAD

    def fit_prompt(
        self, records: Sequence[ActivationRecord]
    ) -> tuple[list[Message], PromptScale, dict[str, JsonValue]]:
        """Build the prompt for ``records``, dropping parts until it fits the context window
        (see the module docstring); returns the messages, the scale of the records shown and a
        note of what was shown and dropped.

        Raises:
            ExplanationError: no record has a positive activation, or even one record does not
                fit.
        """
        shown = list(records)
        scale = PromptScale.for_records(shown)
        if scale is None:
            raise ExplanationError("no train record has a positive activation to show the LLM")
        repeat = _is_sparse(_levels(shown, scale))
        wanted_repeat, dropped_records = repeat, list[JsonValue]()
        budget = self.context_window - self.max_tokens
        while True:
            messages = self.messages(shown, scale, zero_filtered_repeat=repeat)
            estimate = self.prompt_tokens(messages)
            if estimate <= budget:
                break
            if repeat:
                repeat = False
            elif len(shown) > 1:
                shown.pop()
                dropped_records.append(len(shown))
                new_scale = PromptScale.for_records(shown)
                if new_scale is None:  # pragma: no cover - records come in rank order
                    raise ExplanationError("the records that fit have no positive activation")
                scale = new_scale
            else:
                raise ExplanationError(
                    f"even one train record does not fit {self.llm.name}'s context: the prompt "
                    f"is about {estimate} tokens and {self.context_window} - {self.max_tokens} "
                    "(the answer) are available; use a model with a longer context or shorter "
                    "records"
                )
        note: dict[str, JsonValue] = {
            "records_shown": len(shown),
            "records_dropped": dropped_records[::-1],
            "zero_filtered_repeat": repeat,
            "zero_filtered_repeat_dropped": wanted_repeat and not repeat,
            "estimated_tokens": estimate,
            "context_window": self.context_window,
        }
        return messages, scale, note

    async def _sample(self, messages: list[Message], k: int) -> list[str]:
        temperature = self.temperature if k == 1 else self.candidate_temperature

        async def ask(n: int) -> list[str]:
            response = await self.llm.acomplete(
                messages, n=n, max_tokens=self.max_tokens, temperature=temperature
            )
            return [choice.text for choice in response.choices][:n]

        raws = await ask(k) if self.supports_n or k == 1 else []
        missing = k - len(raws)
        if missing > 0:
            for more in await gather_or_cancel(*(ask(1) for _ in range(missing))):
                raws.extend(more)
        return raws

    async def aexplain_candidates(
        self, records: Sequence[ActivationRecord], k: int
    ) -> list[Explanation]:
        """Sample ``k`` explanations of ``records`` (one request with ``n=k``, or ``k`` requests
        when ``supports_n`` is off or the backend ignores ``n``); returns the usable ones (a
        non-empty cleaned answer), in the order sampled.

        Raises:
            ExplanationError: ``k < 1``, nothing to show, the prompt does not fit, or no sample
                is usable.
        """
        if k < 1:
            raise ExplanationError(f"asked for {k} candidate explanations; ask for at least 1")
        messages, scale, note = self.fit_prompt(records)
        raws = await self._sample(messages, k)
        candidates = [
            Explanation(
                text=text,
                scale=scale,
                raw_output=raw,
                data={"prompt": note},
                explainer=self.info,
            )
            for raw in raws
            if (text := clean_explanation(raw))
        ]
        if not candidates:
            shown = raws[0] if len(raws) == 1 else raws
            raise ExplanationError(
                f"{self.llm.name} returned no explanation (raw output {shown!r})"
            )
        return candidates

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Ask the LLM (``n_candidates`` samples); the first usable cleaned answer is the
        explanation, its raw answer is kept in ``raw_output``.

        Raises:
            ExplanationError: no positive activation to show, the prompt does not fit the
                context, or no usable answer.
        """
        return (await self.aexplain_candidates(records, self.n_candidates))[0]

    def revision_messages(
        self,
        records: Sequence[ActivationRecord],
        explanation: Explanation,
        disagreements: Sequence[Disagreement],
    ) -> list[Message]:
        """The chat messages that ask for a revision: the explaining prompt for ``records``
        (`fit_prompt`), the explanation as the answer, then the disagreements (each token
        marked in its context, with its true and predicted activation) and the request for a
        better explanation.

        Raises:
            ExplanationError: as `fit_prompt`.
        """
        noun = unit_noun()
        turn = revision_turn(disagreements, explanation_line(noun), noun)
        return self._after_answer(records, explanation, turn)

    def test_messages(
        self, records: Sequence[ActivationRecord], explanation: Explanation, n: int
    ) -> list[Message]:
        """The chat messages that ask for ``n`` sentences to test ``explanation``: the
        explaining prompt for ``records`` (`fit_prompt`), the explanation as the answer, then
        the request (half should fire, half look alike but should not).

        Raises:
            ExplanationError: as `fit_prompt`.
        """
        return self._after_answer(records, explanation, tests_turn(n, unit_noun()))

    def _after_answer(
        self, records: Sequence[ActivationRecord], explanation: Explanation, turn: str
    ) -> list[Message]:
        """The explaining prompt for ``records``, ``explanation`` as its answer, then ``turn``.

        Raises:
            ExplanationError: as `fit_prompt`.
        """
        messages, _, _ = self.fit_prompt(records)
        return [
            *messages,
            Message(role="assistant", content=f"{explanation.text}."),
            Message(role="user", content=turn),
        ]

    async def _answer_once(
        self, messages: list[Message], max_tokens: int, temperature: float
    ) -> str:
        """The text of one sample's answer to ``messages`` (empty when there is none)."""
        response = await self.llm.acomplete(
            messages, n=1, max_tokens=max_tokens, temperature=temperature
        )
        return response.choices[0].text if response.choices else ""

    async def apropose_tests(
        self, records: Sequence[ActivationRecord], explanation: Explanation, n: int
    ) -> list[str]:
        """Ask the LLM (greedy, one sample) for up to ``n`` sentences that test
        ``explanation`` of ``records`` (`test_messages`), one per line.

        Raises:
            ExplanationError: the prompt does not fit, or the answer holds no sentence.
        """
        messages = self.test_messages(records, explanation, n)
        raw = await self._answer_once(messages, self._tests_max_tokens(n), 0.0)
        found = parse_test_sentences(raw, n)
        if not found:
            raise ExplanationError(f"{self.llm.name} wrote no test sentence (raw output {raw!r})")
        return found

    async def arevise(
        self,
        records: Sequence[ActivationRecord],
        explanation: Explanation,
        disagreements: Sequence[Disagreement],
    ) -> Explanation:
        """Ask the LLM (greedy, one sample) to revise ``explanation`` of ``records`` given
        where its simulation disagreed with the truth (`revision_messages`); the ``[[ ]]``
        marks of the disagreements are taken out of the answer.

        Raises:
            ExplanationError: the prompt does not fit, or the answer is not usable.
        """
        messages = self.revision_messages(records, explanation, disagreements)
        raw = await self._answer_once(messages, self.max_tokens, self.temperature)
        # the disagreements mark tokens as [[token]]; a small model copies the marks
        text = clean_explanation(raw.replace("[[", "").replace("]]", ""))
        if not text:
            raise ExplanationError(f"{self.llm.name} returned no revision (raw output {raw!r})")
        return Explanation(
            text=text,
            scale=explanation.scale,
            raw_output=raw,
            data={**explanation.data, "revised_from": explanation.text},
            explainer=self.info,
        )

    def estimate(self, records: Sequence[ActivationRecord], *, best_of: int = 1) -> CallEstimate:
        """The requests and tokens of explaining ``records``, sending nothing: the prompt
        `fit_prompt` builds, counted by `prompt_tokens` (plus `REQUEST_OVERHEAD`), once per
        request (one with ``supports_n``, else one per sample); the completion as
        ``max_tokens`` per sample (an upper bound). Samples: ``best_of`` when above 1, else
        ``n_candidates``. Not priced (``cost_usd`` is ``None``).

        Raises:
            ExplanationError: no positive activation to show, or the prompt does not fit.
        """
        messages, _, _ = self.fit_prompt(records)
        samples = best_of if best_of > 1 else self.n_candidates
        requests = 1 if self.supports_n else samples
        return CallEstimate.of(
            self,
            requests=requests,
            prompt_tokens=(self.prompt_tokens(messages) + REQUEST_OVERHEAD) * requests,
            completion_tokens=self.max_tokens * samples,
            note=f"completion counted as max_tokens ({self.max_tokens}) per sample",
        )

    def _tests_max_tokens(self, n: int) -> int:
        return max(self.max_tokens, TEST_SENTENCE_TOKENS * n)

    def estimate_tests(self, records: Sequence[ActivationRecord], n: int) -> CallEstimate:
        """The request and tokens of asking for ``n`` test sentences (`apropose_tests`),
        sending nothing; the completion counted at its limit. Not priced.

        Raises:
            ExplanationError: as `fit_prompt`.
        """
        placeholder = Explanation(text="x" * 60, explainer=self.info)
        messages = self.test_messages(records, placeholder, n)
        return CallEstimate.of(
            self,
            requests=1,
            prompt_tokens=self.prompt_tokens(messages) + REQUEST_OVERHEAD,
            completion_tokens=self._tests_max_tokens(n),
            note="test sentences",
        )
