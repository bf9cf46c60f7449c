"""What a subject needs, beyond the model, to record SAE and transcoder latents and directions
(`UnitSources`): the SAE and where it was read from, its content hash (`sae_sha256`, which
names its latents' `UnitId.source`), the BOS policy it was trained with, the settings that
cannot be honoured, and directions read from ``.npy`` files. Used by
`neuron_explainer.subjects.units` (which re-exports every name) and the collector."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import UnitId
from neuron_explainer.subjects.corpus import BOSPolicy

if TYPE_CHECKING:
    import numpy as np

    from neuron_explainer.models.sae import SparseEncoder

__all__ = [
    "SAE_FILES",
    "Direction",
    "UnitSources",
    "load_direction",
    "read_vectors",
    "refuse_settings",
    "sae_bos_policy",
    "sae_provenance",
    "sae_sha256",
    "source_of",
]

SAE_FILES = ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "params.npz")
"""The files of an SAE's folder that `sae_sha256` hashes, in this order (those present)."""


@dataclass(frozen=True, eq=False)
class Direction:
    """A direction in a hook site's activation space.

    Attributes:
        vector: ``[d_model]``, float64.
        sha256: hex sha256 of ``vector`` as contiguous little-endian float64 bytes.
        path: the ``.npy`` file it was read from, or ``None``.
    """

    vector: np.ndarray
    sha256: str
    path: str | None = None


def read_vectors(direction: str | os.PathLike[str] | Any, shapes: str) -> tuple[Any, str | None]:
    """``direction`` (a ``.npy`` file's path or an array-like) as a contiguous little-endian
    float64 array, with the path it was read from; ``shapes`` says what a file should hold.

    Raises:
        InvalidInputError: no such file, not a ``.npy`` array, or not numbers.
    """
    import numpy as np

    path = None
    if isinstance(direction, str | os.PathLike):
        path = str(direction)
        if not Path(path).is_file():
            raise InvalidInputError(f"no direction file at {path}: give a .npy file of {shapes}")
        try:
            direction = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{path} is not a .npy array: {exc}") from exc
    try:
        array = np.ascontiguousarray(np.asarray(direction, dtype="<f8"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"a direction must be an array of numbers: {exc}") from exc
    return array, path


def load_direction(direction: str | os.PathLike[str] | Any) -> Direction:
    """A `Direction` from a ``.npy`` file (path) or an array-like ``[d_model]``.

    Raises:
        InvalidInputError: no such file, not a 1-D array of finite numbers.
    """
    import numpy as np

    vector, path = read_vectors(direction, "[d_model]")
    where = f" in {path}" if path else ""
    if vector.ndim != 1 or vector.size == 0:
        raise InvalidInputError(
            f"the direction{where} has shape {list(vector.shape)}; give one vector [d_model]"
        )
    if not np.isfinite(vector).all():
        raise InvalidInputError(f"the direction{where} holds NaN or infinite values")
    return Direction(vector, hashlib.sha256(vector.tobytes()).hexdigest(), path)


def sae_sha256(sae: SparseEncoder, path: str | None) -> dict[str, str]:
    """The sha256 of the SAE's files (`SAE_FILES` present in its folder, in that order) when
    it was read from a folder or a file in one, else of its encoder tensors as float32; and
    what was hashed (``{"sha256": ..., "of": ...}``). Its `UnitId.content_source` is the
    `UnitId.source` of the SAE's latents."""
    digest = hashlib.sha256()
    root = Path(path) if path else None
    if root is not None and root.is_file():
        root = root.parent
    files = [root / name for name in SAE_FILES] if root is not None else []
    found = [f for f in files if f.is_file()]
    if found:
        for f in found:
            with f.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return {"sha256": digest.hexdigest(), "of": "+".join(f.name for f in found)}
    for name in ("W_enc", "b_enc", "threshold", "b_gate", "r_mag", "b_mag"):
        tensor = getattr(sae, name)
        if tensor is not None:
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return {"sha256": digest.hexdigest(), "of": "encoder tensors (float32)"}


@dataclass(frozen=True)
class UnitSources:
    """What a subject needs, beyond the model, to record units that are not MLP neurons.

    Attributes:
        sae: the SAE or transcoder whose latents are recorded (``sae_latent``,
            ``transcoder_latent``).
        sae_path: where it was read from.
        direction: the vector of ``direction`` units.
        hook: the hook site of ``direction`` units (and of an SAE whose files do not say).
    """

    sae: SparseEncoder | None = None
    sae_path: str | None = None
    direction: Direction | None = None
    hook: str | None = None

    @functools.cached_property
    def sae_hash(self) -> dict[str, str]:
        """`sae_sha256` of the SAE (computed once).

        Raises:
            InvalidInputError: no SAE.
        """
        if self.sae is None:
            raise InvalidInputError("no SAE given: record SAE latents with sae=PATH")
        return sae_sha256(self.sae, self.sae_path)

    def sae_source(self) -> str:
        """The `UnitId.source` of the SAE's latents (`UnitId.content_source` of `sae_hash`).

        Raises:
            InvalidInputError: no SAE.
        """
        return UnitId.content_source(self.sae_hash["sha256"])

    def direction_source(self) -> str:
        """The `UnitId.source` of the direction (`UnitId.content_source` of its sha256).

        Raises:
            InvalidInputError: no direction.
        """
        if self.direction is None:
            raise InvalidInputError("no direction given: pass direction= and hook=")
        return UnitId.content_source(self.direction.sha256)

    def sae_site(self) -> str:
        """The name of the site the SAE reads (a transcoder's input; sparsify's
        ``hookpoint:input`` when it reads a module's input).

        Raises:
            InvalidInputError: no SAE, or one whose site is unknown and no ``hook``.
        """
        sae = self.sae
        if sae is None:
            raise InvalidInputError("no SAE given: record SAE latents with sae=PATH")
        name = sae.hook_site or self.hook
        if name is None:
            raise InvalidInputError(
                f"the SAE at {self.sae_path} does not say which hook site it reads: give hook= "
                "(e.g. 'blocks.6.hook_resid_post')"
            )
        if sae.settings.get("hookpoint_io") == "input" and ":" not in name:
            name += ":input"
        return name


def sae_bos_policy(sae: SparseEncoder, bos: BOSPolicy | None, where: str) -> BOSPolicy | None:
    """The BOS policy to record ``sae``'s latents with: ``bos`` (the one asked for, ``None``
    when none was) checked against the SAE's ``prepend_bos`` (SAELens: every training context
    began with a BOS token), whose match is ``"window"`` (each window read after a BOS token);
    ``prepend_bos`` false matches ``"none"``. ``None`` when the SAE does not say and no policy
    was asked for.

    Raises:
        InvalidInputError: ``bos`` conflicts with ``prepend_bos``.
    """
    prepend = sae.settings.get("prepend_bos")
    if prepend is None:
        return bos
    wanted: BOSPolicy = "window" if prepend else "none"
    if bos is not None and bos != wanted:
        raise InvalidInputError(
            f"the SAE at {where} was trained with prepend_bos={bool(prepend)} (every context "
            f"{'began with a BOS token' if prepend else 'had no BOS token'}): record its "
            f"latents with bos={wanted!r}, not bos={bos!r}"
        )
    return wanted


def refuse_settings(sae: SparseEncoder, where: str, site: str) -> None:
    """Refuse SAE settings whose activations the HF model's tensors do not give."""
    settings = sae.settings
    if settings.get("center_writing_weights") is True:
        raise InvalidInputError(
            f"the SAE at {where} was trained on a TransformerLens model loaded with "
            "center_writing_weights=True (every write to the residual stream mean-centred); "
            "the Hugging Face model's activations are not centred, so its latents cannot be "
            "recorded faithfully here"
        )
    kwargs = settings.get("model_from_pretrained_kwargs") or {}
    if isinstance(kwargs, dict) and kwargs.get("fold_ln") is True and "hook_normalized" in site:
        raise InvalidInputError(
            f"the SAE at {where} reads {site} of a model loaded with fold_ln=True (the norm's "
            "weight folded into the next layer); the Hugging Face norm output includes it"
        )
    if settings.get("hook_head_index") is not None:
        raise InvalidInputError(
            f"the SAE at {where} reads one head (hook_head_index="
            f"{settings['hook_head_index']}) of {site}, which is not supported"
        )


def sae_provenance(sae: SparseEncoder, path: str | None, site: str) -> dict[str, Any]:
    """What a record's provenance says of the SAE its unit comes from."""
    return {
        "path": path,
        "layout": sae.layout,
        "kind": sae.kind,
        "activation": sae.activation,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "hook_site": site,
    }


def source_of(unit_extra: Any) -> str | None:
    """The `UnitId.source` a record's ``provenance.extra["unit"]`` names: the
    `UnitId.content_source` of its SAE's ``sha256`` (``{"sae": {"sha256": ...}}``), or of its
    direction's (``{"direction": {"sha256": ...}}``; a row of an array of directions: the
    whole array's ``array_sha256``); ``None`` when it names none (an MLP neuron, a head, an SAE
    recorded before its hash was kept)."""
    if not isinstance(unit_extra, dict):
        return None
    for name, keys in (("sae", ("sha256",)), ("direction", ("array_sha256", "sha256"))):
        facts = unit_extra.get(name)
        if isinstance(facts, dict):
            found = next((facts[k] for k in keys if isinstance(facts.get(k), str)), None)
            return None if found is None else UnitId.content_source(found)
    return None
