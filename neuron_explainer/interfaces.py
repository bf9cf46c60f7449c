"""The three pluggable stages: `Subject`, `Explainer`, `Simulator`.

Each is an abstract class with one async method to implement. The sync twins
(``neuron_record``, ``explain``, ``simulate``) run the async method for scripts; inside an
event loop, await the async method instead. Implementations describe themselves with
`info`, which every result records.

Explainers and simulators also answer what they would cost: ``estimate`` returns a
`CallEstimate` of the LLM requests and tokens for one unit, sending nothing (dry runs sum them,
see `neuron_explainer.runs.estimate`). The default answers for a component without an ``llm``
attribute "no LLM calls"; an LLM-backed component that does not override it is counted as 0
with a note naming it. `estimate_tokens` and `estimate_prompt_tokens` are the counting rules
the built-in components use.

A minimal simulator:

    class Constant(Simulator):
        async def asimulate(self, explanation, tokens):
            return SequenceSimulation(tokens=tuple(tokens),
                                      expected_activations=(1.0,) * len(tokens))

Failures are per excerpt. Scoring calls `Simulator.asimulate_each`, which gives, for every
excerpt, its simulation or the `SimulationFailure` saying why it could not be simulated; a
`SimulationError` raised for one excerpt (also an `InvalidResponseError` or an
`LLMTimeoutError`) becomes that excerpt's failure, classed by `failure_of` into one of the
`FAILURE_REASONS`, and the other excerpts go on. Any other error propagates at once.

How simulating went is counted in `SimulationStats` by the meters `track_simulations` opens
(contextvar meters like `neuron_explainer.llm.usage.track_usage`). Scoring records what it
asked for and what came back; a simulator reports each request it sends again within one
simulation with `record_retry`:

    for attempt in range(retries + 1):
        if attempt:
            record_retry("misaligned")
        ...
"""

from __future__ import annotations

import contextvars
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from neuron_explainer._aio import gather_or_cancel as gather_or_cancel
from neuron_explainer._aio import run_sync as run_sync
from neuron_explainer.errors import InvalidResponseError, LLMTimeoutError, SimulationError
from neuron_explainer.records import ActivationRecord, NeuronRecord, UnitId
from neuron_explainer.results import (
    ComponentInfo,
    Explanation,
    SequenceSimulation,
    SimulationFailure,
    SimulationStats,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "FAILURE_REASONS",
    "MESSAGE_OVERHEAD",
    "REQUEST_OVERHEAD",
    "SEQUENCE_FAILURES",
    "CallEstimate",
    "Explainer",
    "Probe",
    "SimulationMeter",
    "Simulator",
    "Subject",
    "current_unit",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "failure_of",
    "gather_or_cancel",
    "record_retry",
    "record_simulation_stats",
    "run_sync",
    "track_simulations",
    "unit_context",
]

CHARS_PER_TOKEN = 3.5
"""Characters per token assumed by `estimate_tokens` (conservative for English)."""
MESSAGE_OVERHEAD = 4
"""Tokens a chat format spends around each message."""
REQUEST_OVERHEAD = 3
"""Tokens a chat format spends on each request."""

Probe = Callable[[Sequence[str]], Awaitable[Sequence[ActivationRecord]]]
"""Reads a unit's true activations on new texts: one record per text, in order, its tokens as
the model's tokenizer splits the text (e.g. `neuron_explainer.subjects.hf.HFSubject.probe`);
revision runs the explainer's test sentences through it."""


FAILURE_REASONS: dict[str, str] = {
    "misaligned": "the answer's values do not line up with the excerpt's tokens (too many, "
    "too few, or for other tokens)",
    "unparseable": "the answer could not be read (not JSON, no number where one belongs)",
    "empty": "the model answered nothing usable (an empty answer)",
    "no_logprobs": "the answer lacks the logprobs the simulator reads",
    "invalid_response": "the server's answer does not follow the protocol (InvalidResponseError)",
    "timeout": "the server did not answer in time, on every attempt (LLMTimeoutError)",
    "batch_failed": "(a retry) the excerpt was simulated alone after its batch failed",
    "other": "a SimulationError that names no reason class",
}
"""The built-in reason classes of a failed simulation (and of a retry), with what each means.
A simulator names one with ``SimulationError(message, reason="misaligned")`` or in the
`SimulationFailure` it returns; others may be used (a short label, `REASON_PATTERN`)."""

SEQUENCE_FAILURES: tuple[type[Exception], ...] = (
    SimulationError,
    InvalidResponseError,
    LLMTimeoutError,
)
"""The errors that, raised while simulating one excerpt, are that excerpt's failure (counted,
never zeros); any other error stops the unit at once."""

_LABEL = re.compile(r"[^a-z0-9_]+")


def _label(reason: str | None) -> str:
    """``reason`` as a reason class: lower case, runs of other characters as ``_``, at most
    32 characters; ``"other"`` when nothing is left."""
    label = _LABEL.sub("_", (reason or "").lower()).strip("_")[:32].rstrip("_")
    return label if label[:1].isalpha() else "other"


def failure_of(error: BaseException) -> SimulationFailure:
    """The `SimulationFailure` that ``error``, raised while simulating one excerpt, stands
    for: its class is the error's ``reason`` when it has one (`SimulationError`), else
    ``"invalid_response"`` for an `InvalidResponseError`, ``"timeout"`` for an
    `LLMTimeoutError` and ``"other"`` for anything else; the message is the error's."""
    reason = getattr(error, "reason", None)
    if not isinstance(reason, str) or not reason:
        if isinstance(error, InvalidResponseError):
            reason = "invalid_response"
        elif isinstance(error, LLMTimeoutError):
            reason = "timeout"
    return SimulationFailure(reason=_label(reason), message=str(error) or type(error).__name__)


class SimulationMeter:
    """Running `SimulationStats` of the simulations made while it is open (see
    `track_simulations`)."""

    def __init__(self) -> None:
        self._stats = SimulationStats()
        self._lock = threading.Lock()

    @property
    def stats(self) -> SimulationStats:
        """The totals so far."""
        return self._stats

    def add(self, stats: SimulationStats) -> None:
        """Add ``stats`` to the totals."""
        with self._lock:
            self._stats = self._stats + stats


_simulation_meters: contextvars.ContextVar[tuple[SimulationMeter, ...]] = contextvars.ContextVar(
    "neuron_explainer_simulation_meters", default=()
)


_current_unit: contextvars.ContextVar[UnitId | None] = contextvars.ContextVar(
    "neuron_explainer_current_unit", default=None
)


@contextmanager
def unit_context(unit: UnitId) -> Iterator[None]:
    """Within the block (and tasks started in it), `current_unit` is ``unit``: the unit being
    explained, so that a component can say what kind of unit it is (an LLM explainer's prompt
    names an SAE latent a latent, not a neuron)."""
    token = _current_unit.set(unit)
    try:
        yield
    finally:
        _current_unit.reset(token)


def current_unit() -> UnitId | None:
    """The unit being explained (`unit_context`), ``None`` outside a run."""
    return _current_unit.get()


@contextmanager
def track_simulations() -> Iterator[SimulationMeter]:
    """Open a meter of the simulations made inside the block (and in tasks started in it).
    Meters nest; every open one counts what is recorded."""
    meter = SimulationMeter()
    token = _simulation_meters.set((*_simulation_meters.get(), meter))
    try:
        yield meter
    finally:
        _simulation_meters.reset(token)


def record_simulation_stats(stats: SimulationStats) -> None:
    """Add ``stats`` to every open meter (scoring calls it for what it simulated); nothing
    when no meter is open."""
    for meter in _simulation_meters.get():
        meter.add(stats)


def record_retry(reason: str) -> None:
    """Count one retry in every open meter: a simulator calls it each time it sends a request
    again within one simulation (another prompt after an unusable answer, an excerpt asked
    alone after its batch failed). Nothing happens when no meter is open.

    Args:
        reason: why, as a short label (``"misaligned"``, ``"unparseable"``, ...; see
            `FAILURE_REASONS`); other text is made into one (lower case, ``_`` for the rest).
    """
    label = _label(reason)
    record_simulation_stats(SimulationStats(retried=1, retry_reasons={label: 1}))


def estimate_tokens(text: str) -> int:
    """A conservative token count for ``text``: ``ceil(len(text) / 3.5)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(contents: Iterable[str]) -> int:
    """The estimated prompt tokens of one chat request whose messages hold ``contents``:
    `estimate_tokens` of each plus `MESSAGE_OVERHEAD`, and `REQUEST_OVERHEAD` once."""
    return sum(estimate_tokens(c) + MESSAGE_OVERHEAD for c in contents) + REQUEST_OVERHEAD


Role = Literal["explainer", "simulator", "scorer"]
"""What a component does in the pipeline."""


class CallEstimate(BaseModel):
    """The LLM requests one component would make for one unit.

    Attributes:
        role: ``"explainer"``, ``"simulator"`` or ``"scorer"``.
        component: the component's name.
        llm: the LLM it calls (``provider:model``), ``None`` for a component without one.
        requests, prompt_tokens, completion_tokens: the estimate.
        cost_usd: its cost in USD; ``None``: not priced yet (the run's estimate prices the
            tokens with the component's ``llm``: its ``price``, else its model's known price).
        note: how it was estimated, or why it could not be.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    component: str
    llm: str | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    note: str | None = None

    @classmethod
    def of(
        cls,
        component: _Component,
        *,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float | None = None,
        note: str | None = None,
    ) -> CallEstimate:
        """An estimate for ``component``: its role, its name and (from its ``llm``
        attribute, if any) its LLM's name filled in."""
        llm = getattr(component, "llm", None)
        return cls(
            role=component.role,
            component=component.info.name,
            llm=None if llm is None else str(getattr(llm, "name", llm)),
            requests=requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            note=note,
        )

    @classmethod
    def unknown(cls, component: _Component) -> CallEstimate:
        """The default answer of ``estimate``: "no LLM calls" (cost 0) for a component without
        an ``llm`` attribute; for one with an LLM, 0 with a note naming both."""
        if getattr(component, "llm", None) is None:
            return cls.of(component, cost_usd=0.0, note="no LLM calls")
        part = cls.of(component, cost_usd=0.0)
        note = (
            f"{part.role} {part.component!r} calls {part.llm} with prompts this estimate does "
            "not know; counted as 0 (override its estimate method to count them)"
        )
        return part.model_copy(update={"note": note})


class _Component:
    """Shared by explainers, simulators and scorers: a name and the settings results record."""

    name: str = ""
    """Registry name of the component (e.g. ``"token-table"``); the class name if empty."""
    role: ClassVar[Role]
    """What the component does in the pipeline."""
    version: ClassVar[str | None] = None
    """Version of the component's behaviour, recorded in `info`; change it when results do."""
    prompt_version: ClassVar[str | None] = None
    """Version of the prompts an LLM-backed component sends, recorded in `info`."""
    recorded_settings: ClassVar[tuple[str, ...]] = ()
    """The attributes `info` records as settings (an ``llm`` by its name)."""

    @property
    def info(self) -> ComponentInfo:
        """Name, `version`, `prompt_version` and the `recorded_settings`, recorded in every
        result. Override it to record more."""
        settings = {key: getattr(self, key) for key in self.recorded_settings}
        if "llm" in settings:
            settings["llm"] = settings["llm"].name
        return ComponentInfo(
            name=self.name or type(self).__name__,
            version=self.version,
            prompt_version=self.prompt_version,
            settings=settings,
        )


class Subject(ABC):
    """A model whose units can be recorded over a corpus.

    Implement `aneuron_record`: collect (or load) the activation records of one unit. A
    subject registered by a plugin (``register_subjects``) is built by name by
    `neuron_explainer.explain_neuron`, which asks it for ``unit(layer, neuron)``'s record.
    """

    @property
    def model_name(self) -> str:
        """The name units of this subject carry in `UnitId.model` (default: the class name)."""
        return type(self).__name__

    def unit(self, layer: int, index: int) -> UnitId:
        """The `UnitId` of MLP neuron ``index`` in ``layer``, named by `model_name`."""
        return UnitId(model=self.model_name, layer=layer, index=index)

    @abstractmethod
    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        """Return the `NeuronRecord` of ``unit``.

        Raises:
            InvalidInputError: the unit does not exist in this subject.
        """

    def neuron_record(self, unit: UnitId) -> NeuronRecord:
        """Sync twin of `aneuron_record`."""
        return run_sync(self.aneuron_record(unit))


class Explainer(_Component, ABC):
    """Turns top-activating records into an `Explanation`.

    Implement `aexplain`. It sees only the train split. An LLM-backed explainer should also
    override `estimate`, so dry runs can count its requests.
    """

    role: ClassVar[Role] = "explainer"

    @abstractmethod
    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Explain what the unit responds to, from ``records`` (the train split).

        Raises:
            ExplanationError: no usable explanation could be produced.
        """

    def explain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Sync twin of `aexplain`."""
        return run_sync(self.aexplain(records))

    def estimate(self, records: Sequence[ActivationRecord], *, best_of: int = 1) -> CallEstimate:
        """The LLM requests and tokens explaining ``records`` (the train split) would take,
        sending nothing: one explanation, or with ``best_of > 1`` that many candidates (see
        `neuron_explainer.runs.best_of`).

        The default (`CallEstimate.unknown`): "no LLM calls" without an ``llm`` attribute,
        else 0 with a note naming the LLM. Override it to count your prompts; leave
        ``cost_usd`` ``None`` to have them priced with your ``llm``.

        Raises:
            ExplanationError: the prompt cannot be built (e.g. no positive activation).
        """
        return CallEstimate.unknown(self)


class Simulator(_Component, ABC):
    """Predicts activations on tokens from an explanation alone.

    Implement `asimulate` for one excerpt. `asimulate_many` runs it over many
    excerpts concurrently; override it when a backend can batch. Scoring calls
    `asimulate_each`, which keeps every excerpt's outcome apart (a simulation, or why it
    failed); override it too when a batch can tell which of its excerpts failed. An LLM-backed
    simulator should also override `estimate`, so dry runs can count its requests, and call
    `record_retry` for each request it sends again.
    """

    role: ClassVar[Role] = "simulator"

    @abstractmethod
    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict the activation of every token in ``tokens``.

        The result must have exactly one expected activation per token.

        Raises:
            SimulationError: no usable prediction could be made (never return zeros instead).
        """

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Simulate several excerpts concurrently; results are in the order of ``sequences``.
        The first failure cancels the other simulations and propagates."""
        return await gather_or_cancel(*(self.asimulate(explanation, s) for s in sequences))

    async def asimulate_each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """Simulate each of ``sequences``: in their order, a `SequenceSimulation` or the
        `SimulationFailure` saying why that excerpt could not be simulated. Scoring calls this;
        one excerpt's failure never stops the others.

        The default simulates every excerpt with `asimulate`, concurrently; an error of
        `SEQUENCE_FAILURES` becomes that excerpt's failure (`failure_of`). A simulator that
        overrides `asimulate_many` (to batch excerpts) is asked for them all at once first;
        when that raises one of `SEQUENCE_FAILURES`, each excerpt is simulated again alone
        with `asimulate` (each counted as a ``"batch_failed"`` retry). Override this method
        when a batch can tell which of its excerpts failed, to spare those requests.

        Raises:
            Exception: any error not in `SEQUENCE_FAILURES` (authentication, budget, a missing
                capability, a bug) propagates at once; the other simulations are cancelled.
        """
        if type(self).asimulate_many is not Simulator.asimulate_many:
            try:
                return list(await self.asimulate_many(explanation, sequences))
            except SEQUENCE_FAILURES as exc:
                if len(sequences) == 1:
                    return [failure_of(exc)]
                for _ in sequences:
                    record_retry("batch_failed")

        async def settle(tokens: Sequence[str]) -> SequenceSimulation | SimulationFailure:
            try:
                return await self.asimulate(explanation, tokens)
            except SEQUENCE_FAILURES as exc:
                return failure_of(exc)

        return await gather_or_cancel(*(settle(tokens) for tokens in sequences))

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Sync twin of `asimulate`."""
        return run_sync(self.asimulate(explanation, tokens))

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The LLM requests and tokens simulating ``excerpts`` with ``explanation`` would take
        (as one `asimulate_many` call), sending nothing.

        The default (`CallEstimate.unknown`): "no LLM calls" without an ``llm`` attribute,
        else 0 with a note naming the LLM. Override it to count your prompts; leave
        ``cost_usd`` ``None`` to have them priced with your ``llm``.
        """
        return CallEstimate.unknown(self)
