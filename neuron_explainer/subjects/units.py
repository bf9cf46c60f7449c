"""Units beyond MLP neurons, as `neuron_explainer.subjects.hf.HFSubject` records them: SAE and
transcoder latents, attention heads, directions, and MLP neurons read at a named hook site.

Each unit's per-token activation is computed inside the forward hook of its hook site
(`neuron_explainer.models.hook_sites.hooked`) from the site's tensor, and the forward pass
stops there: only the unit's ``[batch, positions]`` activations leave the hook, no full-width
tensor is kept beyond the batch. What each kind's activation is (docs/units.md):

* ``sae_latent`` / ``transcoder_latent``: ``SparseEncoder.encode(site_activation, [latent])``
  at the SAE's hook site (its input site for a transcoder);
* ``attention_head``: the norm of the head's write into the residual stream,
  `neuron_explainer.models.heads.head_write_norms` of ``blocks.L.attn.hook_z``; each top
  record also gets the source token the head attended to most from its top token
  (`neuron_explainer.records.AttendedToken`, recomputed for the top windows only);
* ``direction``: ``site_activation @ vector`` (float64 when the model runs in float64, else
  float32), the vector a ``[d_model]`` array or ``.npy`` file; its sha256 (of the vector as
  little-endian float64) and file are in the record's provenance;
* ``mlp_neuron`` with a site: column ``index`` of the site's tensor.

A latent's and a direction's `UnitId.source` name the SAE (`sae_sha256` of its files) or the
vector by content (`UnitId.content_source`), so two SAEs at one site give different units.

torch and numpy are imported only when a unit is recorded or a vector loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.hook_sites import HookSite, StopForward, hooked, resolve
from neuron_explainer.records import ActivationRecord, AttendedToken, UnitId, WindowId
from neuron_explainer.subjects._unit_sources import SAE_FILES as SAE_FILES
from neuron_explainer.subjects._unit_sources import Direction as Direction
from neuron_explainer.subjects._unit_sources import UnitSources as UnitSources
from neuron_explainer.subjects._unit_sources import load_direction as load_direction
from neuron_explainer.subjects._unit_sources import refuse_settings
from neuron_explainer.subjects._unit_sources import sae_bos_policy as sae_bos_policy
from neuron_explainer.subjects._unit_sources import sae_provenance as sae_provenance
from neuron_explainer.subjects._unit_sources import sae_sha256 as sae_sha256
from neuron_explainer.subjects._unit_sources import source_of as source_of
from neuron_explainer.subjects.corpus import Window
from neuron_explainer.subjects.tokens import token_strings

if TYPE_CHECKING:
    import torch


__all__ = [
    "SAE_FILES",
    "Direction",
    "SiteUnit",
    "UnitSources",
    "load_direction",
    "pad_windows",
    "read_unit",
    "sae_bos_policy",
    "sae_sha256",
    "site_activations",
    "source_of",
    "top_sources",
    "window_records",
]

HEAD_SITE = "blocks.{layer}.attn.hook_z"
"""An attention head's hook site (its default: `UnitId.site` ``None``)."""
_refuse_settings = refuse_settings  # the collector's name for it


@dataclass(frozen=True, eq=False)
class SiteUnit:
    """How one unit's activation is read: the site, and the function that turns the site's
    tensor into the unit's ``[batch, positions]`` activations inside the hook.

    Attributes:
        site: the hook site.
        compute: site tensor → ``[batch, positions]``.
        hook_point: what `Provenance.hook_point` says.
        extra: what `Provenance.extra` holds about the unit (the SAE, the direction's hash).
    """

    site: HookSite
    compute: Callable[[torch.Tensor], torch.Tensor]
    hook_point: str
    extra: dict[str, Any] = field(default_factory=dict)


def _flat(site: HookSite, tensor: torch.Tensor) -> torch.Tensor:
    """``[..., width]``: ``attn.hook_z``'s ``[..., n_heads, d_head]`` flattened."""
    return tensor.flatten(-2) if site.heads is not None else tensor


def _check_width(site: HookSite, tensor: torch.Tensor, width: int, what: str) -> None:
    if tensor.shape[-1] != width:
        raise InvalidInputError(
            f"{what} reads activations of width {width}, but {site.name} is "
            f"{tensor.shape[-1]} wide in this model"
        )


def _site(model: Any, unit: UnitId, name: str) -> HookSite:
    site = resolve(model, name)
    if site.layer != unit.layer:
        raise InvalidInputError(
            f"{unit}: the site {name} is in layer {site.layer}, not layer {unit.layer}"
        )
    return site


def _mlp_unit(model: Any, unit: UnitId) -> SiteUnit:
    assert unit.site is not None
    site = _site(model, unit, unit.site)

    def compute(tensor: torch.Tensor) -> torch.Tensor:
        width = int(_flat(site, tensor).shape[-1])
        if unit.index >= width:
            raise InvalidInputError(
                f"index {unit.index} out of range: {site.name} has 0..{width - 1}"
            )
        return _flat(site, tensor)[..., unit.index]

    return SiteUnit(site, compute, f"{site.name} ({site.hook_point})")


def _head_unit(model: Any, unit: UnitId) -> SiteUnit:
    from neuron_explainer.models.heads import head_geometry, head_write_norms

    name = HEAD_SITE.format(layer=unit.layer)
    if unit.site not in (None, name):
        raise InvalidInputError(f"an attention head reads {name}, not {unit.site}")
    site = _site(model, unit, name)
    geometry = head_geometry(model, unit.layer)
    if not 0 <= unit.index < geometry.n_heads:
        raise InvalidInputError(
            f"head {unit.index} out of range: layer {unit.layer} has heads "
            f"0..{geometry.n_heads - 1}"
        )
    weight = geometry.weight(model).detach()

    def compute(z: torch.Tensor) -> torch.Tensor:
        norms = head_write_norms(
            z, weight, [unit.index], geometry.n_heads, geometry.head_dim, geometry.layout
        )
        return norms[..., 0]

    extra = {"head_activation": "norm of the head's write to the residual stream"}
    return SiteUnit(site, compute, f"{name} ({geometry.o_proj}:input)", extra)


def _check_source(unit: UnitId, source: str, what: str) -> None:
    """Refuse a unit that names another SAE or direction than the one given (a unit that
    names none, as every unit written before sources, is read through the one given)."""
    if unit.source is not None and unit.source != source:
        raise InvalidInputError(
            f"{unit} is a unit of {unit.source}, but {what} is {source}: give the SAE or "
            "direction it was recorded with"
        )


def _latent_unit(model: Any, unit: UnitId, sources: UnitSources) -> SiteUnit:
    sae, where = sources.sae, sources.sae_path or "(given)"
    if sae is None:
        raise InvalidInputError(f"{unit}: no SAE given to read it from (sae=PATH)")
    if unit.kind != sae.kind:
        raise InvalidInputError(f"the SAE at {where} has {sae.kind} units, not {unit.kind}")
    name = sources.sae_site()
    if unit.site not in (None, name):
        raise InvalidInputError(f"the SAE at {where} reads {name}, not {unit.site}")
    _check_source(unit, sources.sae_source(), f"the SAE at {where}")
    refuse_settings(sae, where, name)
    if not 0 <= unit.index < sae.d_sae:
        raise InvalidInputError(
            f"latent {unit.index} out of range: the SAE at {where} has {sae.d_sae} latents "
            f"(0 to {sae.d_sae - 1})"
        )
    site = _site(model, unit, name)

    def compute(tensor: torch.Tensor) -> torch.Tensor:
        flat = _flat(site, tensor)
        _check_width(site, flat, sae.d_in, f"the SAE at {where}")
        return sae.encode(flat, [unit.index])[..., 0]

    extra = {"sae": {**sae_provenance(sae, sources.sae_path, name), **sources.sae_hash}}
    return SiteUnit(site, compute, f"{name} ({site.hook_point})", extra)


def _direction_unit(model: Any, unit: UnitId, sources: UnitSources) -> SiteUnit:
    import torch

    direction = sources.direction
    if direction is None or sources.hook is None:
        raise InvalidInputError(f"{unit}: give the direction and its hook site (direction=, hook=)")
    if unit.site != sources.hook:
        raise InvalidInputError(f"the direction is at {sources.hook}, not {unit.site}")
    _check_source(unit, sources.direction_source(), "the direction given")
    site = _site(model, unit, sources.hook)
    vectors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
    width = int(direction.vector.shape[0])

    def compute(tensor: torch.Tensor) -> torch.Tensor:
        flat = _flat(site, tensor)
        _check_width(site, flat, width, "the direction")
        dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
        key = (dtype, flat.device)
        if key not in vectors:
            vectors[key] = torch.from_numpy(direction.vector).to(flat.device, dtype)
        return flat.to(dtype) @ vectors[key]

    extra = {"direction": {"sha256": direction.sha256, "path": direction.path, "width": width}}
    return SiteUnit(site, compute, f"{site.name} ({site.hook_point})", extra)


def read_unit(model: Any, unit: UnitId, sources: UnitSources) -> SiteUnit:
    """How to read ``unit`` of ``model`` (a transformers causal LM).

    Raises:
        InvalidInputError: an unknown kind, the SAE or direction missing or refused (its
            settings, its site), a site the model does not have, an index out of range.
    """
    if unit.kind == "attention_head":
        return _head_unit(model, unit)
    if unit.kind in ("sae_latent", "transcoder_latent"):
        return _latent_unit(model, unit, sources)
    if unit.kind == "direction":
        return _direction_unit(model, unit, sources)
    if unit.kind == "mlp_neuron" and unit.site is not None:
        return _mlp_unit(model, unit)
    raise InvalidInputError(f"the hf subject cannot record {unit.kind!r} units")


def site_activations(
    model: Any, reading: SiteUnit, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The unit's activations ``[batch, positions]`` (float64, on the CPU) over a right-padded
    batch, from one forward pass stopped at the unit's site. Values at padded positions are
    meaningless.

    Raises:
        InvalidInputError: what ``reading.compute`` raises (a width that does not fit), or a
            site the forward pass never reached.
    """
    import torch

    found: list[torch.Tensor] = []

    def sink(site: HookSite, tensor: torch.Tensor) -> None:
        found.append(reading.compute(tensor).to(torch.float64).cpu())
        raise StopForward

    ids = input_ids.to(model.device)
    mask = attention_mask.to(model.device)
    with torch.inference_mode(), hooked(model, [reading.site], sink), suppress(StopForward):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    if not found:
        raise InvalidInputError(f"the forward pass never reached {reading.site.name}")
    return found[0]


def pad_windows(batch: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``batch``, right-padded with id 0."""
    import torch

    width = max(len(w.input_ids) for w in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, window in enumerate(batch):
        ids[row, : len(window.input_ids)] = torch.tensor(window.input_ids)
        mask[row, : len(window.input_ids)] = 1
    return ids, mask


def window_records(
    tokenizer: Any, batch: Sequence[Window], acts: torch.Tensor, *, of_corpus: bool
) -> list[ActivationRecord]:
    """One record per window of ``batch`` from its activations ``[batch, positions]`` (the
    excerpt's positions only; with the `WindowId` when ``of_corpus``)."""
    records = []
    for row, window in enumerate(batch):
        excerpt = window.excerpt_ids
        span = acts[row, window.n_prefix : window.n_prefix + len(excerpt)]
        window_id = WindowId(document=window.document, start=window.start) if of_corpus else None
        records.append(
            ActivationRecord(
                tokens=token_strings(tokenizer, excerpt),
                activations=span.tolist(),
                token_ids=excerpt,
                window_id=window_id,
            )
        )
    return records


def top_sources(
    model: Any,
    tokenizer: Any,
    unit: UnitId,
    records: Iterable[ActivationRecord],
    prefix: Sequence[int],
) -> list[ActivationRecord]:
    """``records`` (an attention head's top records) each with `ActivationRecord.attended`:
    the source token the head attended to most from the record's top token (its first
    maximum), recomputed on these windows only (`neuron_explainer.models.heads.
    top_source_tokens`). ``prefix``: the context-only ids read before each excerpt (the BOS
    of ``bos="window"``).

    Raises:
        InvalidInputError: a record without token ids.
    """
    import torch

    from neuron_explainer.models.heads import top_source_tokens

    out = []
    for record in records:
        if record.token_ids is None:
            raise InvalidInputError("an attention head's top record needs its token ids")
        target = max(range(len(record)), key=record.activations.__getitem__)
        ids = torch.tensor([[*prefix, *record.token_ids]], dtype=torch.long)
        found = top_source_tokens(
            model, ids, None, unit.layer, [unit.index], [[target + len(prefix)]]
        )[0]
        source = found.sources[0][0] - len(prefix)
        token = record.tokens[source] if source >= 0 else token_strings(tokenizer, prefix)[source]
        attended = AttendedToken(
            position=target,
            source=source if source >= 0 else None,
            source_token=token,
            weight=min(1.0, max(0.0, found.weights[0][0])),
        )
        out.append(record.model_copy(update={"attended": attended}))
    return out
