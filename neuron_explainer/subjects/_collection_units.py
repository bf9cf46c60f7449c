"""What `neuron_explainer.subjects.collection.Collection` reads of units: how active each
unit was (`Collection.unit_stats`: firing density, dead units, maximum activation), the refusal
of a dead unit's record (`DeadUnitError`), what a unit's provenance says of it, and where an
attention head looked from its top tokens.

A unit *fires* on a token where its activation is above 0. The collector counts those tokens
per unit (``firing_counts`` int64 [N] in each state file); a collection written before it did
has no counts, and then a unit is dead when its highest activation (``top_values[:, 0]``,
-inf when no window was seen) is not above 0, which says the same thing.

Importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from neuron_explainer.errors import DeadUnitError
from neuron_explainer.records import ActivationRecord, AttendedToken, UnitId

if TYPE_CHECKING:
    from neuron_explainer.subjects.collection import Collection

__all__ = [
    "DEAD_REASON",
    "UnitStats",
    "attended_records",
    "read_unit_stats",
    "refuse_dead",
    "unit_extra",
]

DEAD_REASON = "dead: never activated on the corpus"
"""How a dead unit's `DeadUnitError` begins (the reason a batch run records)."""

_NOUNS = {
    "mlp_neuron": ("neuron", "neurons"),
    "sae_latent": ("latent", "latents"),
    "transcoder_latent": ("latent", "latents"),
    "attention_head": ("head", "heads"),
    "direction": ("direction", "directions"),
}


def _percent(fraction: float) -> str:
    """``fraction`` as a percentage with two significant digits (``"0.31 %"``)."""
    text = np.format_float_positional(100 * fraction, precision=2, fractional=False, trim="-")
    return f"{text} %"


class UnitStats:
    """How active each unit of a collection was over the tokens collected, in the order of
    `Collection.units`.

    Attributes:
        kind: the units' kind (``"sae_latent"``, ``"mlp_neuron"``, ...).
        token_count: the real tokens collected (padding and a BOS prefix not counted).
        max_activation: float32 [N], each unit's highest activation (-inf: no window).
        firing_counts: int64 [N], the tokens where each unit was above 0; ``None`` for a
            collection written before the collector counted them.
    """

    def __init__(
        self,
        kind: str,
        token_count: int,
        max_activation: np.ndarray,
        firing_counts: np.ndarray | None,
        units: Callable[[], list[UnitId]],
    ) -> None:
        self.kind = kind
        self.token_count = token_count
        self.max_activation = max_activation
        self.firing_counts = firing_counts
        self._units = units

    def __len__(self) -> int:
        return int(self.max_activation.shape[0])

    def __repr__(self) -> str:
        return f"UnitStats({self.summary()!r})"

    def units(self) -> list[UnitId]:
        """The units, in the arrays' order (`Collection.units`)."""
        return self._units()

    @property
    def density(self) -> np.ndarray | None:
        """float64 [N]: the fraction of tokens where each unit fired (``firing_counts /
        token_count``), or ``None`` when the collection has no firing counts."""
        if self.firing_counts is None:
            return None
        return self.firing_counts / max(self.token_count, 1)

    @property
    def dead(self) -> np.ndarray:
        """bool [N]: the units that never fired (never above 0) on the tokens collected."""
        if self.firing_counts is not None:
            return np.asarray(self.firing_counts == 0)
        return np.asarray(~(self.max_activation > 0))

    def dead_units(self) -> list[UnitId]:
        """The units that never fired, in order."""
        units = self.units()
        return [units[i] for i in np.flatnonzero(self.dead)]

    def summary(self) -> str:
        """One line: how many units are dead and the median firing density of the others
        (``"12 of 16,384 latents are dead; median firing density 0.31 % (of the other
        16,372)"``)."""
        one, many = _NOUNS.get(self.kind, ("unit", "units"))
        n, dead = len(self), int(self.dead.sum())
        text = f"{dead:,} of {n:,} {one if n == 1 else many} {'is' if dead == 1 else 'are'} dead"
        density = self.density
        if density is None:
            return (
                f"{text} (never above 0 in their top windows); no firing densities (the "
                "collector counts them for latents, heads and directions, not in older "
                "collections)"
            )
        alive = density[~self.dead]
        if alive.size == 0:
            return f"{text} (never above 0 on {self.token_count:,} tokens)"
        median = _percent(float(np.median(alive)))
        rest = "" if dead == 0 else f" (of the other {alive.size:,})"
        return f"{text}; median firing density {median}{rest}"


def state_stats(f: Any) -> tuple[np.ndarray, np.ndarray | None, int]:
    """From an open state file ``f`` (``safe_open``): each row's maximum activation, its
    firing count (``None`` when the file has none) and the file's token count."""
    maxes = np.asarray(f.get_slice("top_values")[:, :1]).reshape(-1).astype(np.float32)
    firing = f.get_tensor("firing_counts") if "firing_counts" in f.keys() else None  # noqa: SIM118
    return maxes, firing, int(f.get_tensor("token_count")[0])


def refuse_dead(f: Any, row: int, unit: UnitId) -> None:
    """Raise `DeadUnitError` when row ``row`` of the open state file ``f`` never fired.

    Raises:
        DeadUnitError: the unit never activated above 0 on the tokens collected.
    """
    tokens = int(f.get_tensor("token_count")[0])
    top = float(f.get_slice("top_values")[row : row + 1, :1].reshape(-1)[0])
    if "firing_counts" in f.keys():  # noqa: SIM118  (collections written before lack it)
        if int(f.get_slice("firing_counts")[row : row + 1][0]) > 0:
            return
        why = f"no activation above 0 in {tokens:,} tokens"
    elif top > 0:
        return
    else:
        why = f"its highest activation over {tokens:,} tokens is {top:g}"
    raise DeadUnitError(
        f"{DEAD_REASON} ({why}): {unit} has nothing to explain. Collection.unit_stats() lists "
        "the dead units; record(unit, allow_dead=True) reads its record anyway"
    )


def read_unit_stats(collection: Collection) -> UnitStats:
    """`Collection.unit_stats`: one column of each state file (layers, or groups' parts, in
    `Collection.units` order)."""
    from safetensors import safe_open

    from neuron_explainer.subjects.collection import state_file

    keys = [f"layer_{layer}" for layer in collection.layers] if not collection.groups else []
    for g in collection.groups:
        parts = -(-len(g["indices"]) // int(g["part"]))
        keys += [f"{g['name']}/part_{p:05d}" for p in range(parts)]
    found = []
    for key in keys:
        path = state_file(collection.path, key, collection.generation)
        with safe_open(str(path), framework="np") as f:
            found.append(state_stats(f))
    counts = [c for _, c, _ in found]
    return UnitStats(
        collection.kind,
        max((t for _, _, t in found), default=0),
        np.concatenate([m for m, _, _ in found]),
        None if any(c is None for c in counts) else np.concatenate(counts),  # type: ignore[arg-type]
        collection.units,
    )


def unit_extra(group: dict[str, Any], row: int) -> dict[str, Any]:
    """What a collected record's provenance says of its unit: its group's ``extra``; for a
    direction, the row's own sha256 (as the single-unit path gives it) with the whole
    array's (``array_sha256``) and the row."""
    extra = group["extra"]
    if "direction" not in extra or "rows_sha256" not in extra["direction"]:
        return dict(extra)
    facts = dict(extra["direction"])
    rows = facts.pop("rows_sha256")
    return {
        **extra,
        "direction": {**facts, "sha256": rows[row], "array_sha256": facts["sha256"], "row": row},
    }


def attended_records(
    f: Any,
    index: int,
    records: tuple[ActivationRecord, ...],
    ranks: list[int],
    vocabulary: list[str],
) -> tuple[ActivationRecord, ...]:
    """``records`` (an attention head's top records, of ``ranks``; row ``index`` of the open
    state file ``f``) with their `AttendedToken`, as the collector stored it."""
    got = {
        name: f.get_slice(f"attended_{name}")[index]
        for name in ("position", "source", "source_id", "weight")
    }
    out = []
    for record, rank in zip(records, ranks, strict=True):
        source = int(got["source"][rank])
        attended = AttendedToken(
            position=int(got["position"][rank]),
            source=source if source >= 0 else None,
            source_token=vocabulary[int(got["source_id"][rank])],
            weight=float(got["weight"][rank]),
        )
        out.append(record.model_copy(update={"attended": attended}))
    return tuple(out)
