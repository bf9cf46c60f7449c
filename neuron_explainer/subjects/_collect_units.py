"""The units of a collection that are not MLP neurons of whole layers: every (or some) latent
of one SAE or transcoder, or attention heads (used by `neuron_explainer.subjects.collect`).

Units are collected in *groups*: one group per hook site (the SAE's site; one group per layer
of heads). A group's units are split into *parts* of at most ``latent_chunk`` units; each part
has its own `LayerState` (its own state file), so no ``[tokens, units]`` tensor wider than a
part is made: inside the forward hook of the group's site, the site's tensor is turned into a
part's ``[batch, positions, part]`` activations, folded into that part's state, and freed
before the next part is computed. relu, JumpReLU and gated SAEs compute each part's columns of
``W_enc`` only (`SparseEncoder.encode`); top-k and groupmax SAEs need each token's whole
pre-activation row to pick its winners, so it is computed once per batch in chunks of tokens
(`SparseEncoder.encode_sparse`, ``[tokens, k]`` values and indices) and each part's dense
activations are scattered from it.

torch is imported only when a group computes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.hook_sites import HookSite, StopForward, hooked, resolve
from neuron_explainer.subjects.collection import runs_of
from neuron_explainer.subjects.units import (
    HEAD_SITE,
    UnitSources,
    _check_width,
    _flat,
    _refuse_settings,
    sae_provenance,
)

if TYPE_CHECKING:
    import torch


__all__ = [
    "DEFAULT_LATENT_CHUNK",
    "UnitCapture",
    "UnitGroup",
    "head_groups",
    "resumable_hash",
    "sae_groups",
]

DEFAULT_LATENT_CHUNK = 4096
"""Units per state part (and per computed slice of activations) by default."""


@dataclass(frozen=True, eq=False)
class UnitGroup:
    """Units of one kind read at one hook site.

    Attributes:
        name: the group's folder in the collection (``"sae"``, ``"heads_3"``).
        kind: the units' kind.
        site: the hook site read.
        unit_site: what the units' `UnitId.site` says (``None``: the kind's default site).
        indices: the units' indices, in state-row order.
        width: how many units the site has (the SAE's ``d_sae``, the layer's heads).
        part: units per state part.
        hook_point: what `Provenance.hook_point` says.
        compute: ``(site tensor, part indices)`` → ``[batch, positions, len(part)]``.
        sparse: for top-k / groupmax SAEs, ``site tensor`` → ``(values, indices)``
            ``[tokens, k]`` each (then ``compute`` is not used).
        extra: what `Provenance.extra` holds about the units (the SAE, the directions).
    """

    name: str
    kind: str
    site: HookSite
    unit_site: str | None
    indices: list[int]
    width: int
    part: int
    hook_point: str
    compute: Callable[[Any, list[int]], Any]
    sparse: Callable[[Any], tuple[Any, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return self.site.layer

    def parts(self) -> list[list[int]]:
        """The units of each part, in order."""
        return [self.indices[i : i + self.part] for i in range(0, len(self.indices), self.part)]

    def meta(self) -> dict[str, Any]:
        """How the collection folder describes the group (``meta.json``'s ``units.groups``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "site": self.site.name,
            "unit_site": self.unit_site,
            "hook_point": self.hook_point,
            "indices": runs_of(self.indices),
            "width": self.width,
            "part": self.part,
            "extra": self.extra,
        }

    def config(self) -> dict[str, Any]:
        """What the collection's config (and so its hash) says of the group: `meta` without
        the files' paths (``extra``'s ``path`` entries), so that an SAE or a direction is
        named by its content (its sha256) and moving its files does not block resuming."""
        return {**self.meta(), "extra": _without_paths(self.extra)}


def _without_paths(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` without the ``path`` entries of its dict values (``{"sae": {"path": ...}}``)."""
    return {
        key: {k: v for k, v in value.items() if k != "path"} if isinstance(value, dict) else value
        for key, value in extra.items()
    }


def resumable_hash(out_dir: Path, config: dict[str, Any]) -> str | None:
    """The config hash of the collection already in ``out_dir`` when it was made with
    ``config`` but hashed the older way, with its SAE's path in the hash (collections begun
    before the config named the SAE by content); ``None`` otherwise. Resuming such a
    collection under its own hash keeps it (and the runs that name its hash) going, wherever
    the SAE now lies.

    Raises:
        FormatError: ``meta.json`` or ``progress.json`` is not valid JSON.
    """
    from neuron_explainer.subjects.collection import META, PROGRESS, read_json

    if not (out_dir / META).is_file() or not (out_dir / PROGRESS).is_file():
        return None
    previous = read_json(out_dir / META).get("config")
    held = read_json(out_dir / PROGRESS).get("config_hash")
    if not isinstance(previous, dict) or not isinstance(previous.get("units"), list):
        return None
    units = [
        {**u, "extra": _without_paths(u.get("extra") or {})} if isinstance(u, dict) else u
        for u in previous["units"]
    ]
    same = _canonical({**previous, "units": units}) == _canonical(config)
    return str(held) if same and isinstance(held, str) else None


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def sae_groups(
    model: Any, sources: UnitSources, latents: Sequence[int] | None, chunk: int
) -> list[UnitGroup]:
    """The one group of ``latents`` (all when ``None``) of the SAE in ``sources``.

    Raises:
        InvalidInputError: a refused SAE setting, a site the model lacks, latents out of range.
    """
    sae, where = sources.sae, sources.sae_path or "(given)"
    assert sae is not None
    name = sources.sae_site()
    _refuse_settings(sae, where, name)
    wanted = list(range(sae.d_sae)) if latents is None else sorted(set(latents))
    bad = [i for i in wanted if not 0 <= i < sae.d_sae]
    if bad or not wanted:
        raise InvalidInputError(
            f"latents {bad[:5] or '(none)'} out of range: the SAE at {where} has {sae.d_sae} "
            f"latents (0 to {sae.d_sae - 1})"
        )
    site = resolve(model, name)

    def compute(tensor: torch.Tensor, part: list[int]) -> torch.Tensor:
        flat = _flat(site, tensor)
        _check_width(site, flat, sae.d_in, f"the SAE at {where}")
        return sae.encode(flat, part)

    def sparse(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = _flat(site, tensor)
        _check_width(site, flat, sae.d_in, f"the SAE at {where}")
        return sae.encode_sparse(flat)

    extra = {
        "sae": {
            **sae_provenance(sae, sources.sae_path, name),
            **sources.sae_hash,
        }
    }
    return [
        UnitGroup(
            name="sae",
            kind=sae.kind,
            site=site,
            unit_site=name,
            indices=wanted,
            width=sae.d_sae,
            part=chunk,
            hook_point=f"{name} ({site.hook_point})",
            compute=compute,
            sparse=sparse if sae.activation in ("topk", "groupmax") else None,
            extra=extra,
        )
    ]


def head_groups(model: Any, heads: Sequence[tuple[int, int]], chunk: int) -> list[UnitGroup]:
    """One group per layer of ``heads`` (``(layer, head)`` pairs).

    Raises:
        InvalidInputError: no heads, a layer or head out of range.
    """
    from neuron_explainer.models.heads import head_geometry, head_write_norms

    by_layer: dict[int, set[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), set()).add(int(head))
    if not by_layer:
        raise InvalidInputError("give at least one attention head, as (layer, head)")
    groups = []
    for layer in sorted(by_layer):
        name = HEAD_SITE.format(layer=layer)
        site = resolve(model, name)
        geometry = head_geometry(model, layer)
        wanted = sorted(by_layer[layer])
        if wanted[-1] >= geometry.n_heads or wanted[0] < 0:
            raise InvalidInputError(
                f"head {wanted[-1] if wanted[-1] >= geometry.n_heads else wanted[0]} out of "
                f"range: layer {layer} has heads 0..{geometry.n_heads - 1}"
            )
        weight = geometry.weight(model).detach()

        def compute(z: Any, part: list[int], g: Any = geometry, w: Any = weight) -> Any:
            return head_write_norms(z, w, part, g.n_heads, g.head_dim, g.layout)

        groups.append(
            UnitGroup(
                name=f"heads_{layer}",
                kind="attention_head",
                site=site,
                unit_site=None,
                indices=wanted,
                width=geometry.n_heads,
                part=chunk,
                hook_point=f"{name} ({geometry.o_proj}:input)",
                compute=compute,
                extra={"head_activation": "norm of the head's write to the residual stream"},
            )
        )
    return groups


class UnitCapture:
    """Runs the model on a batch and hands each part's activations to ``on_layer`` from inside
    its site's forward hook (the same call as `ActivationCapture`; the key is
    ``(group index, part index)``)."""

    def __init__(self, model: Any, groups: list[UnitGroup]) -> None:
        self.model, self.groups = model, groups
        self.parts = [g.parts() for g in groups]
        self._columns: dict[tuple[int, int], Any] = {}

    def _column(self, g: int, p: int, device: Any) -> Any:
        """For a sparse group's part: latent → its column in the part (-1: not in it)."""
        import torch

        if (g, p) not in self._columns:
            part = self.parts[g][p]
            column = torch.full((self.groups[g].width,), -1, dtype=torch.long)
            column[torch.tensor(part)] = torch.arange(len(part))
            self._columns[(g, p)] = column.to(device)
        return self._columns[(g, p)]

    def _fold_group(self, g: int, tensor: Any, on_layer: Callable[[Any, Any], None]) -> None:
        import torch

        group = self.groups[g]
        lead = tensor.shape[:2]
        codes = group.sparse(tensor) if group.sparse is not None else None
        for p, part in enumerate(self.parts[g]):
            if codes is None:
                acts = group.compute(tensor, part)
            else:
                values, where = codes
                cols = self._column(g, p, where.device)[where]
                keep = cols >= 0
                rows = torch.arange(where.shape[0], device=where.device)[:, None].expand_as(where)
                acts = values.new_zeros((where.shape[0], len(part)))
                acts[rows[keep], cols[keep]] = values[keep]
                acts = acts.reshape(*lead, len(part))
            on_layer((g, p), acts)
            del acts

    def __call__(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        *,
        on_layer: Callable[[Any, Any], None],
    ) -> dict[Any, Any]:
        import torch

        by_site: dict[str, list[int]] = {}
        for g, group in enumerate(self.groups):
            by_site.setdefault(group.site.name, []).append(g)
        sites = {self.groups[gs[0]].site.name: self.groups[gs[0]].site for gs in by_site.values()}
        seen: set[str] = set()

        def sink(site: HookSite, tensor: torch.Tensor) -> None:
            for g in by_site[site.name]:
                self._fold_group(g, tensor, on_layer)
            seen.add(site.name)
            if len(seen) == len(sites):
                raise StopForward

        device = self.model.device
        ids = input_ids.to(device)
        mask = None if attention_mask is None else attention_mask.to(device)
        with (
            torch.inference_mode(),
            hooked(self.model, sites.values(), sink),
            suppress(StopForward),
        ):
            self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        missing = sorted(set(sites) - seen)
        if missing:
            raise InvalidInputError(f"the forward pass never reached {missing}")
        return {}


def attended_arrays(
    model: Any,
    group: UnitGroup,
    part: list[int],
    top_windows: Any,
    top_slots: Any,
    top_activations: Any,
    window_tokens: Callable[[int], tuple[int, ...]],
    prefix: list[int],
) -> dict[str, Any]:
    """For a part of attention heads: where each head looked from the top token (first
    maximum) of each of its top windows, recomputed on those windows only (`neuron_explainer.
    models.heads.top_source_tokens`). Arrays ``[N, k]`` in rank order: ``attended_position``
    (the top token's position in the excerpt; -1: no window), ``attended_source`` (the source's
    position in the excerpt; -1: the context-only BOS before it), ``attended_source_id`` (its
    token id) and ``attended_weight`` (its attention probability)."""
    import numpy as np
    import torch

    from neuron_explainer.models.heads import top_source_tokens

    shape = top_windows.shape
    out = {
        "attended_position": np.full(shape, -1, np.int64),
        "attended_source": np.full(shape, -1, np.int64),
        "attended_source_id": np.full(shape, -1, np.int64),
        "attended_weight": np.zeros(shape, np.float32),
    }
    for row, head in enumerate(part):
        for rank, window in enumerate(top_windows[row]):
            if window < 0:
                continue
            excerpt = window_tokens(int(window))
            acts = top_activations[row, top_slots[row, rank], : len(excerpt)]
            target = int(np.argmax(acts))
            ids = [*prefix, *excerpt]
            found = top_source_tokens(
                model, torch.tensor([ids]), None, group.layer, [head], [[target + len(prefix)]]
            )[0]
            source = found.sources[0][0]
            out["attended_position"][row, rank] = target
            out["attended_source"][row, rank] = max(-1, source - len(prefix))
            out["attended_source_id"][row, rank] = ids[source]
            out["attended_weight"][row, rank] = min(1.0, max(0.0, found.weights[0][0]))
    return out
