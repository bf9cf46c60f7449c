"""The unit ``explain`` is asked for: an MLP neuron, an SAE or transcoder latent, an attention
head or a direction (docs/units.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from neuron_explainer.cli._options import hidden_default
from neuron_explainer.cli._support import bad_input

if TYPE_CHECKING:
    from neuron_explainer.records import UnitId

__all__ = [
    "DirectionsOpt",
    "HeadsOpt",
    "HookOpt",
    "LatentsOpt",
    "SaeOpt",
    "UnitChoice",
    "batch_units",
    "parse_heads",
    "unit_choice",
]


@dataclass(frozen=True)
class UnitChoice:
    """The unit the explain options name (checked by `unit_choice`)."""

    kind: str
    layer: int = 0
    neuron: int = 0
    subject: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        """What the progress line says is recorded."""
        if self.kind == "mlp_neuron":
            return f"layer {self.layer}"
        if self.kind == "attention_head":
            return f"layer {self.layer} head {self.neuron}"
        if self.kind == "sae_latent":
            return f"latent {self.neuron}"
        return f"the direction at {self.subject['hook']}"

    def unit(self, subject: Any) -> UnitId:
        """The unit, made by ``subject``."""
        if self.kind == "attention_head":
            return subject.head_unit(self.layer, self.neuron)  # type: ignore[no-any-return]
        if self.kind == "sae_latent":
            return subject.latent_unit(self.neuron)  # type: ignore[no-any-return]
        if self.kind == "direction":
            return subject.direction_unit()  # type: ignore[no-any-return]
        return subject.unit(self.layer, self.neuron)  # type: ignore[no-any-return]


def unit_choice(
    layer: int | None,
    neuron: int | None,
    sae: Path | None,
    latent: int | None,
    head: str | None,
    direction: Path | None,
    hook: str | None,
) -> UnitChoice:
    """The unit named by exactly one of --layer/--neuron, --sae/--latent, --head,
    --direction/--hook (--hook may also name an SAE's site).

    Raises:
        InvalidInputError: none or several, half of one, or a --head that is not LAYER.HEAD.
    """
    named: dict[str, object] = {
        "--layer": layer,
        "--neuron": neuron,
        "--sae": sae,
        "--latent": latent,
    }
    named |= {"--head": head, "--direction": direction, "--hook": hook}
    given = {flag for flag, value in named.items() if value is not None}
    if given == {"--layer", "--neuron"}:
        assert layer is not None and neuron is not None
        return UnitChoice("mlp_neuron", layer, neuron)
    if given in ({"--sae", "--latent"}, {"--sae", "--latent", "--hook"}):
        assert latent is not None
        return UnitChoice("sae_latent", neuron=latent, subject={"sae": sae, "hook": hook})
    if given == {"--direction", "--hook"}:
        return UnitChoice("direction", subject={"direction": direction, "hook": hook})
    if given == {"--head"}:
        assert head is not None
        parts = head.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise bad_input(f"--head takes LAYER.HEAD, e.g. 3.5; got {head!r}")
        return UnitChoice("attention_head", int(parts[0]), int(parts[1]))
    got = ", ".join(sorted(given)) or "none of them"
    raise bad_input(
        "give one unit: --layer and --neuron (an MLP neuron), --sae and --latent (an SAE or "
        "transcoder latent), --head LAYER.HEAD (an attention head), or --direction and --hook "
        f"(a direction); got {got}"
    )


SaeOpt = Annotated[
    Path | None,
    hidden_default(
        "--sae",
        "An SAE or transcoder (a SAELens, sparsify or Gemma Scope folder): its latents "
        "(--latents; default all), read at the SAE's hook site, instead of --layers.",
    ),
]
LatentsOpt = Annotated[
    str | None, hidden_default("--latents", "The SAE's latents (with --sae): 0-99 or 0,5,9.")
]
HeadsOpt = Annotated[
    str | None,
    hidden_default("--heads", "Attention heads instead of --layers, as LAYER.HEAD: 3.5,3.7."),
]
DirectionsOpt = Annotated[
    Path | None,
    hidden_default(
        "--direction",
        "A .npy file of one [d_model] vector or K of them [K, d_model]: K direction units "
        "(index = row), the activation at --hook dotted with each, instead of --layers.",
    ),
]
HookOpt = Annotated[
    str | None,
    hidden_default(
        "--hook",
        "The hook site of --direction, or of an SAE whose files do not name it "
        "(TransformerLens-style: blocks.6.hook_resid_pre).",
    ),
]


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """``"3.5,3.7"`` → ``[(3, 5), (3, 7)]``.

    Raises:
        InvalidInputError: a part that is not LAYER.HEAD.
    """
    heads = []
    for part in spec.split(","):
        pieces = part.strip().split(".")
        if len(pieces) != 2 or not all(p.isdigit() for p in pieces):
            raise bad_input(f"--heads takes LAYER.HEAD,LAYER.HEAD..., e.g. 3.5,3.7; got {spec!r}")
        heads.append((int(pieces[0]), int(pieces[1])))
    return heads


def batch_units(
    layers: str | None,
    sae: Path | None,
    latents: str | None,
    heads: str | None,
    hook: str | None,
    direction: Path | None = None,
) -> dict[str, Any]:
    """`collect`'s (and `explain_neurons`') arguments for the units ``collect`` and ``run``
    are asked for: exactly one of --layers, --sae (with --latents, --hook), --heads and
    --direction (with --hook) (the layers are left to the caller).

    Raises:
        InvalidInputError: none or several, --latents without --sae, --hook without --sae or
            --direction, --direction without --hook, a bad --heads.
    """
    from neuron_explainer.runs import parse_indices

    named = (("--layers", layers), ("--sae", sae), ("--heads", heads), ("--direction", direction))
    given = [flag for flag, v in named if v]
    if len(given) != 1:
        raise bad_input(
            "give one of --layers (MLP neurons), --sae (with --latents: SAE or transcoder "
            "latents), --heads LAYER.HEAD,... or --direction FILE.npy with --hook SITE; got "
            f"{', '.join(given) or 'none of them'}"
        )
    if latents is not None and sae is None:
        raise bad_input("--latents and --hook go with --sae")
    if direction is not None:
        if hook is None:
            raise bad_input("--direction needs --hook: the site it is read at")
        return {"direction": direction, "hook": hook}
    if hook is not None and sae is None:
        raise bad_input("--hook goes with --sae or --direction")
    if sae is not None:
        chosen = None if latents is None else parse_indices(latents, what="latent")
        return {"sae": sae, "latents": chosen, "hook": hook}
    if heads is not None:
        return {"heads": parse_heads(heads)}
    return {}
