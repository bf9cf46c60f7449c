"""The paper's "all at once" simulator: one prompt-logprob request per excerpt, no generation.

The prompt (`build_all_at_once_prompt`) is raw text, not chat: a preamble, the made-up example
neurons of `neuron_explainer.llm.few_shot` (by default `CONTRASTING_EXAMPLES`, whose
explanations contradict the token surface; ``examples="paper"`` shows the explainer's
`FEW_SHOT_EXAMPLES`, as prompt version 1 did) with their real activations as
``token<TAB>N`` lines, then the explanation and the excerpt with every activation written as
the placeholder ``unknown`` (``token<TAB>unknown`` lines). The backend scores the prompt
(`LLM.aprompt_logprobs`); the top logprobs at the first token of each placeholder are the
model's prediction for what follows ``token<TAB>``, i.e. the activation. The alternatives that
stand for a number 0..10 are renormalised and their mean is the expected activation (``"1"``
counts as 1; 10 counts only when the tokenizer has ``"10"`` as one token).

Alignment: the character offset of every placeholder is known, and a prompt token must start
exactly there. A tokenizer that merges the tab into the placeholder (or otherwise shifts the
boundary) gives an alignment failure: `SimulationError` naming the position. A placeholder
whose top logprobs hold no number is a failure too (`SimulationError`), never a zero: raise
``top_logprobs`` or use a model that has learnt the format. Scoring a prompt is deterministic,
so nothing is retried.

Reading the logits: an LLM that implements `PlaceholderScorer` (the in-process ``hf`` provider)
can give the probability of every token that writes a value 0..10 at each placeholder straight
from its logits, rather than only the values among the top logprobs. With ``digits="auto"`` (the
default) the simulator uses that when the LLM offers it, so no placeholder ever lacks a number.

Reading one generation per placeholder: a server that cannot score a prompt but can generate
(llama.cpp) offers ``prefix_logprobs`` (`LLM.aprefix_logprobs`): for the prompt cut at each
placeholder, the top logprobs of the one token generated there. The prompt up to a placeholder
is exactly what the model sees before that placeholder in the scored prompt, so the reading is
the same; it costs one short request per token, each evaluating only the tokens added since the
last (the server's prompt cache). ``digits="auto"`` uses it when the LLM offers
``prefix_logprobs`` but not ``prompt_logprobs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from neuron_explainer.errors import CapabilityError, InvalidInputError, SimulationError
from neuron_explainer.interfaces import (
    REQUEST_OVERHEAD,
    CallEstimate,
    Simulator,
    estimate_tokens,
)
from neuron_explainer.llm.base import (
    LLM,
    PrefixLogprobsRequest,
    PrefixLogprobsResponse,
    PromptLogprobsRequest,
    PromptLogprobsResponse,
    required_llm,
)
from neuron_explainer.llm.few_shot import (
    CONTRASTING_EXAMPLES,
    FEW_SHOT_EXAMPLES,
    FewShotExample,
)
from neuron_explainer.llm.prompts import escape_token, reworded, unit_noun
from neuron_explainer.results import ComponentInfo, Explanation, SequenceSimulation
from neuron_explainer.simulators._common import (
    digit_probabilities,
    simulation_from_distributions,
)

__all__ = [
    "PLACEHOLDER",
    "PlaceholderScorer",
    "PromptLogprobSimulator",
    "build_all_at_once_prompt",
    "read_placeholders",
]

PROMPT_VERSION = "prompt-logprob-simulator/2"
"""2: the contrasting examples by default (``examples="contrasting"``); 1: the paper-style
examples the explainer shows (``examples="paper"`` writes version 1's prompt)."""
EXAMPLES: dict[str, tuple[FewShotExample, ...]] = {
    "contrasting": CONTRASTING_EXAMPLES,
    "paper": FEW_SHOT_EXAMPLES,
}
"""The example sets the simulator can show, by name."""
Digits = Literal["top_logprobs", "logits", "prefix_logprobs"]
PLACEHOLDER = "unknown"
"""What the prompt writes in place of each activation to predict."""
PREAMBLE = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing "
    "in a short document. Look at an explanation of what the neuron does, and try to predict "
    "its activations on each token.\n\nThe activation format is token<tab>activation, "
    'activations go from 0 to 10, "unknown" indicates an unknown activation. Most activations '
    "will be 0. Tabs, newlines and backslashes inside tokens are written as \\t, \\n and \\\\."
)


@runtime_checkable
class PlaceholderScorer(Protocol):
    """An LLM that reads the distribution over activation values at placeholders straight from
    its logits (`neuron_explainer.llm.hf.HFLLM` does)."""

    async def aplaceholder_values(
        self, prompt: str, offsets: Sequence[int]
    ) -> list[dict[int, float]]:
        """For each character offset of ``prompt`` (where a token must start): the probability
        of each activation value 0..10 as that token, summed over the vocabulary tokens that
        write it (``"7"``, ``" 7"``; ``"10"`` where one token writes it).

        Raises:
            InvalidInputError: no prompt token starts at an offset (alignment failure).
        """
        ...


def _neuron_header(number: int, explanation: str, noun: str) -> str:
    header = (
        f"Neuron {number}\nExplanation of neuron {number} behavior: the main thing this neuron "
        "does is find "
    )
    return f"{reworded(header, noun)}{explanation}\nActivations:\n"


def build_all_at_once_prompt(
    explanation: Explanation | str,
    tokens: Sequence[str],
    examples: Sequence[FewShotExample] = CONTRASTING_EXAMPLES,
    noun: str = "neuron",
) -> tuple[str, list[int]]:
    """The all-at-once prompt for ``tokens`` and the character offset of every placeholder.

    ``prompt[offset:offset + len(PLACEHOLDER)] == PLACEHOLDER`` at each offset, one per token
    in order. Pure text, so a local backend can score it with its own tokenizer.

    Args:
        explanation: the explanation (or its text).
        tokens: the excerpt to predict.
        examples: the example neurons shown first, with their activations.
        noun: what the prompt calls the unit (and the examples), e.g. ``"SAE latent"``
            (`neuron_explainer.llm.prompts.UNIT_NOUNS`).
    """
    text = explanation.text if isinstance(explanation, Explanation) else explanation
    parts = [reworded(PREAMBLE, noun), "\n\n"]
    for number, example in enumerate(examples, start=1):
        parts.append(_neuron_header(number, example.explanation, noun))
        for record in example.records:
            parts.append("<start>\n")
            parts.extend(f"{escape_token(t)}\t{level}\n" for t, level in record)
            parts.append("<end>\n")
        parts.append("\n")
    parts.append(_neuron_header(len(examples) + 1, text, noun))
    parts.append("<start>\n")
    offsets: list[int] = []
    length = sum(len(p) for p in parts)
    for token in tokens:
        line = f"{escape_token(token)}\t"
        offsets.append(length + len(line))
        parts.append(f"{line}{PLACEHOLDER}\n")
        length += len(parts[-1])
    parts.append("<end>")
    return "".join(parts), offsets


def read_placeholders(
    response: PromptLogprobsResponse, tokens: Sequence[str], offsets: Sequence[int]
) -> SequenceSimulation:
    """The simulation of ``tokens`` from a scored all-at-once prompt: the digit distribution of
    the top logprobs of the prompt token starting at each placeholder offset.

    Raises:
        SimulationError: no prompt token starts at a placeholder (alignment failure), or the
            top logprobs at a placeholder hold no number.
    """
    by_offset = {t.offset: t for t in response.tokens}
    distributions = []
    for i, (token, offset) in enumerate(zip(tokens, offsets, strict=True), start=1):
        scored = by_offset.get(offset)
        if scored is None or not PLACEHOLDER.startswith(scored.token[: len(PLACEHOLDER)]):
            around = [(t.token, t.offset) for t in response.tokens if abs(t.offset - offset) <= 8]
            raise SimulationError(
                f"alignment failure at token {i} ({token!r}): no prompt token starts at the "
                f"placeholder's character offset {offset} (tokens nearby: {around}); the "
                "backend's tokenizer merges the placeholder with the text before it"
            )
        found = digit_probabilities((t.token, t.logprob) for t in scored.top_logprobs)
        if not found:
            raise SimulationError(
                f"no activation number among the top logprobs at token {i} ({token!r}), "
                f"offset {offset}: {[t.token for t in scored.top_logprobs]}"
            )
        distributions.append(found)
    return simulation_from_distributions(tokens, distributions)


class PromptLogprobSimulator(Simulator):
    """The paper's all-at-once simulator: one prompt-logprob request per excerpt (see the
    module docstring for the prompt and the alignment rule).

    Args:
        llm: the model to ask; it must offer ``prompt_logprobs``.
        top_logprobs: alternatives asked for at each prompt token (1-20).
        examples: the example neurons shown first: ``"contrasting"`` (default;
            `CONTRASTING_EXAMPLES`, the same word firing in one excerpt and silent in the
            next, so that predicting from the words does not pay) or ``"paper"``
            (`FEW_SHOT_EXAMPLES`, prompt version 1).
        digits: where the value distribution comes from: ``"top_logprobs"`` (the values among
            the top alternatives of `LLM.aprompt_logprobs`), ``"logits"`` (every value token,
            from an LLM that is a `PlaceholderScorer`), ``"prefix_logprobs"`` (the values among
            the top alternatives of one token generated at each placeholder,
            `LLM.aprefix_logprobs`), or ``"auto"``: ``"logits"`` when the LLM offers it, else
            ``"top_logprobs"`` when it offers ``prompt_logprobs``, else ``"prefix_logprobs"``.

    Raises:
        InvalidInputError: no ``llm`` given, or an option out of range.
        CapabilityError: the LLM lacks what ``digits`` reads (with ``"auto"``: it offers
            neither ``prompt_logprobs`` nor ``prefix_logprobs``; the message names the server
            and what to change).
    """

    name = "llm-prompt-logprob"
    version = "1"
    prompt_version = PROMPT_VERSION
    recorded_settings = ("llm", "top_logprobs", "examples")

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        top_logprobs: int = 15,
        digits: Literal["auto", "top_logprobs", "logits", "prefix_logprobs"] = "auto",
        examples: Literal["contrasting", "paper"] = "contrasting",
    ) -> None:
        llm = required_llm(
            llm,
            by="the 'llm-prompt-logprob' simulator",
            kind="simulator",
            offering="prompt logprobs, e.g. a completions server with echo + logprobs",
        )
        if not 1 <= top_logprobs <= 20:
            raise InvalidInputError(f"top_logprobs must be within 1-20, got {top_logprobs}")
        if digits not in ("auto", "top_logprobs", "logits", "prefix_logprobs"):
            raise InvalidInputError(
                "digits must be 'auto', 'top_logprobs', 'logits' or 'prefix_logprobs', got "
                f"{digits!r}"
            )
        if examples not in EXAMPLES:
            raise InvalidInputError(f"examples must be 'contrasting' or 'paper', got {examples!r}")
        self.llm, self.top_logprobs, self.examples = llm, top_logprobs, examples
        self.digits: Digits = _digits_source(llm, digits)

    def prompt(
        self, explanation: Explanation | str, tokens: Sequence[str]
    ) -> tuple[str, list[int]]:
        """`build_all_at_once_prompt` with this simulator's examples, calling the unit being
        explained by its kind (`neuron_explainer.llm.prompts.unit_noun`)."""
        return build_all_at_once_prompt(explanation, tokens, EXAMPLES[self.examples], unit_noun())

    @property
    def info(self) -> ComponentInfo:
        """The `recorded_settings`, and ``digits`` unless they come from prompt logprobs."""
        info = super().info
        if self.digits == "top_logprobs":
            return info
        return info.model_copy(update={"settings": {**info.settings, "digits": self.digits}})

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The requests and tokens of simulating ``excerpts``, sending nothing: one request
        per non-empty excerpt, its `build_all_at_once_prompt` counted by `estimate_tokens`
        (plus `REQUEST_OVERHEAD`), and the LLM's ``prompt_logprobs_max_tokens`` (if it has
        one, else 0) of completion each. Reading ``prefix_logprobs``: one request per token,
        its prompt up to the token's placeholder (most of it from the server's cache, but
        counted), and one completion token each. Not priced (``cost_usd`` is ``None``)."""
        if self.digits == "prefix_logprobs":
            return self._estimate_prefixes(explanation, excerpts)
        per_request = getattr(self.llm, "prompt_logprobs_max_tokens", None) or 0
        prompts = [self.prompt(explanation, t)[0] for t in excerpts if t]
        return CallEstimate.of(
            self,
            requests=len(prompts),
            prompt_tokens=sum(estimate_tokens(p) + REQUEST_OVERHEAD for p in prompts),
            completion_tokens=per_request * len(prompts),
        )

    def _estimate_prefixes(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> CallEstimate:
        requests = tokens = 0
        for excerpt in excerpts:
            prompt, offsets = self.prompt(explanation, excerpt)
            requests += len(offsets)
            tokens += sum(estimate_tokens(prompt[:o]) + REQUEST_OVERHEAD for o in offsets)
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=tokens, completion_tokens=requests
        )

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation (expected value over 0-10) with its distribution.

        Raises:
            SimulationError: an alignment failure or a placeholder with no number among its
                top logprobs.
        """
        if not tokens:
            return SequenceSimulation(tokens=(), expected_activations=())
        prompt, offsets = self.prompt(explanation, tokens)
        if self.digits == "logits":
            return await self._from_logits(prompt, tokens, offsets)
        if self.digits == "prefix_logprobs":
            request = PrefixLogprobsRequest(
                prompt=prompt, offsets=tuple(offsets), top_logprobs=self.top_logprobs
            )
            answer = await self.llm.aprefix_logprobs(request)
            return _read_prefixes(self.llm.name, answer, tokens)
        response = await self.llm.aprompt_logprobs(
            PromptLogprobsRequest(prompt=prompt, top_logprobs=self.top_logprobs)
        )
        try:
            return read_placeholders(response, tokens, offsets)
        except SimulationError as exc:
            raise SimulationError(f"{self.llm.name}: {exc}") from None

    async def _from_logits(
        self, prompt: str, tokens: Sequence[str], offsets: Sequence[int]
    ) -> SequenceSimulation:
        assert isinstance(self.llm, PlaceholderScorer)
        try:
            distributions = await self.llm.aplaceholder_values(prompt, offsets)
        except InvalidInputError as exc:
            raise SimulationError(f"{self.llm.name}: alignment failure: {exc}") from None
        for i, (token, found) in enumerate(zip(tokens, distributions, strict=True), start=1):
            if not found or not sum(found.values()) > 0:
                raise SimulationError(
                    f"{self.llm.name}: no probability on any activation value at token {i} "
                    f"({token!r})"
                )
        return simulation_from_distributions(tokens, distributions)


def _read_prefixes(
    name: str, answer: PrefixLogprobsResponse, tokens: Sequence[str]
) -> SequenceSimulation:
    """The simulation from the alternatives generated at each placeholder.

    Raises:
        SimulationError: the answer does not hold one reading per token, or a reading holds
            no number among its alternatives (never read as a zero).
    """
    if len(answer.prefixes) != len(tokens):
        raise SimulationError(
            f"{name}: {len(answer.prefixes)} prefix readings for {len(tokens)} tokens"
        )
    distributions = []
    for i, (token, prefix) in enumerate(zip(tokens, answer.prefixes, strict=True), start=1):
        found = digit_probabilities((t.token, t.logprob) for t in prefix.top_logprobs)
        if not found:
            raise SimulationError(
                f"{name}: no activation number among the top logprobs generated at token {i} "
                f"({token!r}), offset {prefix.offset}: "
                f"{[t.token for t in prefix.top_logprobs]}; raise top_logprobs"
            )
        distributions.append(found)
    return simulation_from_distributions(tokens, distributions)


def _server_of(llm: LLM) -> str:
    """`` at <base URL>`` for an LLM behind a server, else nothing."""
    try:
        url = llm.info.settings.get("base_url")
    except InvalidInputError:  # an unusable OPENAI_BASE_URL: the request will say so
        return ""
    return f" at {url}" if isinstance(url, str) else ""


def _digits_source(llm: LLM, digits: str) -> Digits:
    """Where ``digits`` (``"auto"`` or a source) reads from for ``llm``, checked.

    Raises:
        CapabilityError: ``llm`` lacks it; for ``"auto"``, a message naming the simulator, the
            server and what to change.
    """
    by = "the 'llm-prompt-logprob' (all-at-once) simulator"
    scorer = isinstance(llm, PlaceholderScorer)
    if digits == "logits" or (digits == "auto" and scorer):
        if not scorer:
            raise CapabilityError(
                f"digits='logits' needs an LLM that reads values from its logits (a "
                f"PlaceholderScorer, such as the 'hf' provider); {llm.name} is not one"
            )
        llm.require("prompt_logprobs", by=f"{by} (it reads the prompt's placeholder tokens)")
        return "logits"
    if digits == "top_logprobs":
        llm.require("prompt_logprobs", by=f"{by} (it reads the prompt's placeholder tokens)")
        return "top_logprobs"
    if digits == "prefix_logprobs":
        llm.require("prefix_logprobs", by=f"{by} (digits='prefix_logprobs')")
        return "prefix_logprobs"
    if "prompt_logprobs" in llm.capabilities:
        return "top_logprobs"
    if "prefix_logprobs" in llm.capabilities:
        return "prefix_logprobs"
    offered = ", ".join(sorted(llm.capabilities)) or "nothing"
    raise CapabilityError(
        f"{by} reads the model's probability of each activation value at every placeholder, "
        f"so it needs 'prompt_logprobs' (a server that scores a prompt: vLLM, a completions "
        f"API with echo) or 'prefix_logprobs' (llama.cpp's /completion with n_probs); "
        f"{llm.name}{_server_of(llm)} offers neither (it offers: {offered}). For a llama.cpp "
        f"server use the 'llamacpp' provider ('llamacpp:{llm.model}'); for vLLM give the "
        "'openai' provider capabilities including 'prompt_logprobs'; in-process, use "
        "'hf:MODEL'; or choose the 'llm-json' simulator, which needs only chat"
    )
