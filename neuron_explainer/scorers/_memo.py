"""Simulations made once and reused within a scope (`SimulationMemo`, `reusing`).

`simulate_each` looks up every excerpt, by (simulator, explanation text, tokens), in the memos
open in the current context: an excerpt already simulated under the same explanation, or being
simulated right now by a concurrent caller, is not simulated again. Two scopes use it:

* one unit (`neuron_explainer.runs.explain.explain_record`): best-of-k's winner, and revision's
  texts, were simulated on the calibration split already; the final score reuses them;
* one batch, for the neutral explanation only: the neutral explanation says nothing about any
  unit, so its simulation of an excerpt is the same for every unit, and a collection's random
  excerpts come from one reservoir shared by all units (`neuron_explainer.subjects.collect`).
  The batch memo is bounded (least recently used entries leave first).

Only simulations are kept; a failed excerpt is simulated again by the next caller (a caller
waiting on it at that moment gets the same failure). Reused excerpts are not counted again in
the simulation meters: they cost nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import SequenceSimulation, SimulationFailure

Outcome = SequenceSimulation | SimulationFailure
Key = tuple[int, str, tuple[str, ...]]

_OPEN: ContextVar[tuple[SimulationMemo, ...]] = ContextVar("simulation_memos", default=())


class SimulationMemo:
    """Simulations by (simulator, explanation text, excerpt tokens), to reuse in one scope.

    Args:
        capacity: the most simulations kept (least recently used leave first); ``None`` keeps
            all of them (for one unit's scope).
        texts: reuse only simulations of these explanation texts (``None``: of every text).

    Raises:
        InvalidInputError: ``capacity`` below 1.
    """

    def __init__(self, capacity: int | None = None, texts: Container[str] | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise InvalidInputError(f"capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self.texts = texts
        self.reused = 0
        self._entries: OrderedDict[Key, asyncio.Future[Outcome]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def accepts(self, text: str) -> bool:
        """Whether simulations of the explanation ``text`` are kept here."""
        return self.texts is None or text in self.texts

    def get(self, key: Key) -> asyncio.Future[Outcome] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: asyncio.Future[Outcome]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while self.capacity is not None and len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop(self, key: Key, entry: asyncio.Future[Outcome]) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]


@contextmanager
def reusing(*memos: SimulationMemo) -> Iterator[None]:
    """Within the block, `simulate_each` reuses the simulations of ``memos`` (and those of the
    memos open around it) and adds its own to them."""
    token = _OPEN.set((*_OPEN.get(), *memos))
    try:
        yield
    finally:
        _OPEN.reset(token)


def reusing_for_unit(shared: SimulationMemo | None = None) -> AbstractContextManager[None]:
    """`reusing` a new memo of every text for one unit, and the batch's ``shared`` memo."""
    return reusing(SimulationMemo(), *([shared] if shared is not None else []))


async def simulate_reusing(
    simulator: object,
    text: str,
    records: Sequence[ActivationRecord],
    simulate: Callable[[Sequence[ActivationRecord]], Awaitable[list[Outcome]]],
) -> list[Outcome]:
    """``simulate(records)`` for the records the open memos accepting ``text`` do not hold
    (each distinct excerpt once), the memos' outcomes for the others, in the order of
    ``records``."""
    memos = [m for m in _OPEN.get() if m.accepts(text)]
    if not memos:
        return await simulate(records)
    keys: list[Key] = [(id(simulator), text, tuple(r.tokens)) for r in records]
    entries, owned = _claim(memos, keys)
    try:
        outcomes = await simulate([records[i] for i in owned.values()]) if owned else []
    except BaseException:
        for key in owned:
            _abandon(memos, key, entries[key])
        raise
    for key, outcome in zip(owned, outcomes, strict=True):
        entry = entries[key]
        if not entry.done():
            entry.set_result(outcome)
        if isinstance(outcome, SimulationFailure):
            for memo in memos:
                memo.drop(key, entry)
    by_key, redo = await _settled(entries)
    if redo:
        # their simulating caller was cancelled: claim them afresh
        again = await simulate_reusing(
            simulator, text, [records[keys.index(k)] for k in redo], simulate
        )
        by_key.update(zip(redo, again, strict=True))
    return [by_key[key] for key in keys]


def _claim(
    memos: Sequence[SimulationMemo], keys: Sequence[Key]
) -> tuple[dict[Key, asyncio.Future[Outcome]], dict[Key, int]]:
    """Each distinct key's entry: the memos' one, or a new one this caller owns (registered in
    every memo), with the index of the record it simulates for it."""
    entries: dict[Key, asyncio.Future[Outcome]] = {}
    owned: dict[Key, int] = {}
    loop = asyncio.get_running_loop()
    for i, key in enumerate(keys):
        if key in entries:
            continue
        found = next((e for e in (m.get(key) for m in memos) if e is not None), None)
        if found is None:
            found = loop.create_future()
            owned[key] = i
            for memo in memos:
                memo.put(key, found)
        else:
            for memo in memos:
                memo.reused += 1
        entries[key] = found
    return entries, owned


async def _settled(
    entries: dict[Key, asyncio.Future[Outcome]],
) -> tuple[dict[Key, Outcome], list[Key]]:
    """The outcome of every entry, and the keys whose simulating caller was cancelled (to
    simulate here)."""
    by_key: dict[Key, Outcome] = {}
    redo: list[Key] = []
    for key, entry in entries.items():
        try:
            by_key[key] = await asyncio.shield(entry)
        except asyncio.CancelledError:
            if not entry.cancelled():
                raise  # this caller was cancelled
            redo.append(key)
    return by_key, redo


def _abandon(memos: Sequence[SimulationMemo], key: Key, entry: asyncio.Future[Outcome]) -> None:
    """Forget ``entry`` and cancel it, so that callers waiting on it simulate it themselves."""
    for memo in memos:
        memo.drop(key, entry)
    entry.cancel()
