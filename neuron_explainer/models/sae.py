"""Sparse autoencoder (SAE) and transcoder latents: load one from local files, encode a
hook-site activation into latent activations.

`load_sae` reads the three layouts people publish and returns a `SparseEncoder`, whose
`encode` computes the activations of some (or all) latents from the activation captured at the
SAE's hook site, with the same arithmetic as the library that wrote the files:

* **SAELens** (a folder with ``cfg.json`` + ``sae_weights.safetensors``), followed at
  SAELens 6.18.0 (jbloomAus/SAELens commit 91ca16ccd0684e4dd6323cd4f23ded734339ec54:
  ``sae_lens/saes/{sae,standard_sae,jumprelu_sae,topk_sae,gated_sae,transcoder}.py`` and
  ``sae_lens/loading/pretrained_sae_loaders.py``). Configs written before 6.0 (flat keys,
  ``hook_point``, ``activation_fn_str``, boolean ``normalize_activations``) are read the way
  SAELens' ``handle_pre_6_0_config`` reads them. Architectures: ``standard`` (relu),
  ``jumprelu``, ``topk`` (with ``rescale_acts_by_decoder_norm``), ``gated``, ``transcoder``,
  ``skip_transcoder`` and ``jumprelu_transcoder``.
* **EleutherAI sparsify** (a folder with ``cfg.json`` + ``sae.safetensors``, or a run folder of
  per-hookpoint folders; ``hookpoint=`` picks one), followed at EleutherAI/sparsify commit
  9d3b136c9217565af11089081444770e0d31673d (``sparsify/sparse_coder.py``,
  ``sparsify/fused_encoder.py``, ``sparsify/config.py``): ``encoder.weight`` is stored
  ``[d_sae, d_in]``; ``pre = relu((x - b_dec) @ encoder.weight.T + encoder.bias)`` (no
  ``b_dec`` subtraction for transcoders, ``transcode: true``), then top-k (``activation:
  "topk"``) or one winner in each of k contiguous groups (``"groupmax"``). sparsify itself
  always subtracts ``b_dec`` from an SAE's input; SAELens' sparsify converter instead sets
  ``apply_b_dec_to_input = not normalize_decoder``, which we do not copy.
* **Gemma Scope** (``params.npz`` with ``W_enc`` ``[d_in, d_sae]``, ``W_dec``, ``b_enc``,
  ``b_dec``, ``threshold``): JumpReLU, ``relu(pre) * (pre > threshold)`` with
  ``pre = x @ W_enc + b_enc`` and no ``b_dec`` subtraction (as Gemma Scope's tutorial and
  SAELens' ``gemma_2_sae_huggingface_loader`` compute it). The hook site comes from the folder
  path as far as it can (``layer_12`` gives the layer; a ``gemma-scope-…-res`` / ``-mlp`` /
  ``-att`` / ``-transcoders`` repository folder in the path gives the site, as SAELens derives
  it from the repository name), from an optional SAELens-style ``cfg.json`` beside
  ``params.npz``, or from ``hookpoint=``; otherwise `SparseEncoder.hook_site` is ``None`` and
  the caller must name the site.

The math per activation, after input preprocessing (cast to the weights' dtype, SAELens'
``normalize_activations``, then ``x - b_dec`` when `SparseEncoder.apply_b_dec_to_input`):

* ``relu``: ``relu(x @ W_enc + b_enc)``
* ``jumprelu``: ``relu(pre) * (pre > threshold)``
* ``topk``: ``pre`` (times the decoder row norms when ``rescale_acts_by_decoder_norm``), the k
  largest per token kept and passed through relu, the rest 0 (SAELens' ``TopK``; sparsify's
  relu-then-top-k gives the same values, ties at the k-th value aside)
* ``groupmax``: the latents split into k contiguous groups; in each, the largest
  ``relu(pre)`` is kept, the rest 0
* ``gated`` (SAELens): ``(x @ W_enc + b_gate > 0) * relu(x @ (W_enc * exp(r_mag)) + b_mag)``

Not supported, each refused with `InvalidInputError` naming it: SAELens'
``expected_average_only_in`` normalisation without a scaling factor in the folder (an
``activation_scaler.json`` with ``scaling_factor``, or ``norm_scaling_factor`` in
``cfg.json``); SAELens training-only architectures (``batchtopk``, ``matryoshka_batchtopk``,
which SAELens saves for inference as ``jumprelu``); pre-6.0 ``activation_fn`` values other than
relu and topk (``tanh-relu``); sparsify's ``signed`` SAEs (removed from sparsify in Aug 2024).

Model settings that change the activations (``prepend_bos``, ``model_from_pretrained_kwargs``
and its ``center_writing_weights``, ``hook_head_index``, ``seqpos_slice``, ...) are recorded in
`SparseEncoder.settings` for the caller to honour or refuse; nothing here runs a model. torch,
numpy and safetensors are imported only when an SAE loads or encodes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from neuron_explainer.errors import FormatError, InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACTIVATIONS",
    "NORMALIZATIONS",
    "SparseEncoder",
    "load_sae",
]

Activation = Literal["relu", "jumprelu", "topk", "groupmax", "gated"]
Normalization = Literal["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"]
LatentKind = Literal["sae_latent", "transcoder_latent"]
Layout = Literal["saelens", "sparsify", "gemma_scope"]

ACTIVATIONS: tuple[str, ...] = ("relu", "jumprelu", "topk", "groupmax", "gated")
"""The activation functions `SparseEncoder` computes."""

NORMALIZATIONS: tuple[str, ...] = (
    "none",
    "expected_average_only_in",
    "constant_norm_rescale",
    "layer_norm",
)
"""SAELens' ``normalize_activations`` values (all computed; ``expected_average_only_in`` only
with its scaling factor)."""

_TOPK_CHUNK_ELEMENTS = 1 << 22
"""Top-k computes the full pre-activation row: this many floats (16 MiB in float32) at most
per chunk of tokens."""

_LAYER_NORM_EPS = 1e-5
"""SAELens' ``layer_norm`` input normalisation: ``(x - mean) / (std + eps)``."""


@dataclass(frozen=True, eq=False)
class SparseEncoder:
    """The encoder side of an SAE or transcoder, as loaded by `load_sae`.

    Attributes:
        kind: ``"sae_latent"`` or ``"transcoder_latent"``.
        layout: the file layout it was read from (``"saelens"``, ``"sparsify"``,
            ``"gemma_scope"``).
        d_in: width of the hook-site activation it reads.
        d_sae: number of latents.
        activation: ``"relu"``, ``"jumprelu"``, ``"topk"``, ``"groupmax"`` or ``"gated"``.
        W_enc: ``[d_in, d_sae]`` (sparsify's ``[d_sae, d_in]`` ``encoder.weight``, transposed).
        b_enc: ``[d_sae]``; ``None`` for gated SAEs (their biases are ``b_gate`` and ``b_mag``).
        b_dec: the decoder bias, ``[d_in]`` for SAEs (subtracted from the input when
            `apply_b_dec_to_input`), ``[d_out]`` for transcoders (never subtracted).
        W_dec: ``[d_sae, d_out]`` when the files have it (needed only by
            `rescale_acts_by_decoder_norm`).
        k: latents kept per token (``topk``) or the number of groups (``groupmax``).
        threshold: ``[d_sae]`` JumpReLU thresholds.
        b_gate, r_mag, b_mag: ``[d_sae]`` gated-SAE parameters (SAELens names).
        apply_b_dec_to_input: subtract ``b_dec`` from the (normalised) input first.
        normalize_activations: SAELens' input normalisation.
        norm_scaling_factor: the input is multiplied by it under ``expected_average_only_in``.
        rescale_acts_by_decoder_norm: SAELens top-k: pre-activations are multiplied by the
            decoder rows' norms before the top-k.
        hook_site: where the input is read. A TransformerLens hook name
            (``"blocks.6.hook_resid_pre"``) for SAELens and Gemma Scope; sparsify's hookpoint
            verbatim (an HF module path such as ``"layers.6"`` or ``"layers.6.mlp"``: an SAE reads
            that module's output, a transcoder its input, see ``settings["hookpoint_io"]``);
            ``None`` when the files do not say.
        hook_site_out: a transcoder's output site (``None`` for SAEs or when unknown).
        layer: the layer index when the site or folder names one.
        settings: everything else the caller must honour or refuse, as found in the files
            (``prepend_bos``, ``model_name``, ``model_from_pretrained_kwargs``,
            ``center_writing_weights`` — ``True``/``False`` when the config states it, ``None``
            when it does not —, ``hook_head_index``, ``reshape_activations``,
            ``hookpoint_io``, the layout's remaining config keys).
        source: the path the SAE was read from.
    """

    kind: LatentKind
    layout: Layout
    d_in: int
    d_sae: int
    activation: Activation
    W_enc: torch.Tensor
    b_enc: torch.Tensor | None
    b_dec: torch.Tensor
    W_dec: torch.Tensor | None = None
    k: int | None = None
    threshold: torch.Tensor | None = None
    b_gate: torch.Tensor | None = None
    r_mag: torch.Tensor | None = None
    b_mag: torch.Tensor | None = None
    apply_b_dec_to_input: bool = False
    normalize_activations: Normalization = "none"
    norm_scaling_factor: float | None = None
    rescale_acts_by_decoder_norm: bool = False
    hook_site: str | None = None
    hook_site_out: str | None = None
    layer: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        _check_encoder(self)

    @property
    def device(self) -> torch.device:
        """The device the weights are on."""
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (inputs are cast to it, as SAELens does)."""
        return self.W_enc.dtype

    def encode(
        self, x: torch.Tensor, latents: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The activations of ``latents`` (all when ``None``) for the hook-site activation ``x``.

        Args:
            x: ``[..., d_in]`` (or ``[..., n_heads, d_head]`` for SAELens ``hook_z`` SAEs).
            latents: latent indices, in the order wanted (repeats allowed).

        Returns:
            ``[..., len(latents)]`` (or ``[..., d_sae]``), in the weights' dtype and device.
            relu, JumpReLU and gated SAEs compute only the requested columns of ``W_enc``;
            top-k and groupmax compute the pre-activations their selection needs (top-k in
            chunks of tokens) and return only the requested latents.

        Raises:
            InvalidInputError: ``x`` is not ``[..., d_in]``, or a latent index is out of range.
        """
        import torch

        columns = self._columns(latents)
        with torch.no_grad():
            sae_in = self._preprocess(x)
            lead = sae_in.shape[:-1]
            flat = sae_in.reshape(-1, self.d_in)
            if self.activation == "topk":
                out = self._encode_topk(flat, columns)
            elif self.activation == "groupmax":
                out = self._encode_groupmax(flat, columns)
            else:
                out = self._encode_columns(flat, columns)
            return out.reshape(*lead, out.shape[-1])

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k and groupmax: all latents as ``(values, indices)``, ``[tokens, k]`` each
        (``x`` flattened; latents not listed are 0), computed in chunks of tokens as `encode`.

        Raises:
            InvalidInputError: not a top-k or groupmax SAE, or ``x`` not ``[..., d_in]``."""
        import torch

        if self.activation not in ("topk", "groupmax"):
            raise InvalidInputError(
                f"encode_sparse is for topk and groupmax, not {self.activation}"
            )
        assert self.k is not None and self.b_enc is not None  # checked at construction
        scale = self._decoder_norms() if self.rescale_acts_by_decoder_norm else None
        with torch.no_grad():
            flat = self._preprocess(x).reshape(-1, self.d_in)
            values, indices = [], []
            rows = max(1, _TOPK_CHUNK_ELEMENTS // self.d_sae)
            for start in range(0, flat.shape[0], rows):
                pre = flat[start : start + rows] @ self.W_enc + self.b_enc
                if self.activation == "groupmax":
                    top, where = pre.relu().reshape(pre.shape[0], self.k, -1).max(dim=-1)
                    where = where + torch.arange(
                        0, self.d_sae, self.d_sae // self.k, device=pre.device
                    )
                else:
                    top, where = torch.topk(pre if scale is None else pre * scale, k=self.k)
                    top = top.relu()
                values.append(top)
                indices.append(where)
            return torch.cat(values), torch.cat(indices)

    # -- input -----------------------------------------------------------------------------

    def _columns(self, latents: Sequence[int] | torch.Tensor | None) -> torch.Tensor | None:
        import torch

        if latents is None:
            return None
        try:
            index = torch.as_tensor(latents, dtype=torch.long, device=self.device).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"latents must be integer indices: {exc}") from exc
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.d_sae):
            raise InvalidInputError(
                f"latent index out of range: this SAE has {self.d_sae} latents (0 to "
                f"{self.d_sae - 1}); got {int(index.min())} to {int(index.max())}"
            )
        return index

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """SAELens' ``process_sae_in``: cast, ``hook_z`` reshape, normalise, subtract b_dec."""
        sae_in = x.to(device=self.device, dtype=self.dtype)
        if (
            sae_in.shape[-1] != self.d_in
            and self.settings.get("reshape_activations") == "hook_z"
            and sae_in.ndim >= 2
            and sae_in.shape[-2] * sae_in.shape[-1] == self.d_in
        ):
            sae_in = sae_in.flatten(-2)
        if sae_in.ndim == 0 or sae_in.shape[-1] != self.d_in:
            raise InvalidInputError(
                f"x has shape {list(x.shape)}; this SAE reads [..., d_in] with d_in={self.d_in}"
            )
        sae_in = self._normalize(sae_in)
        if self.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        return sae_in

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_activations == "constant_norm_rescale":
            coefficient: torch.Tensor = (self.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            return x * coefficient
        if self.normalize_activations == "layer_norm":
            centred = x - x.mean(dim=-1, keepdim=True)
            return centred / (centred.std(dim=-1, keepdim=True) + _LAYER_NORM_EPS)
        if self.normalize_activations == "expected_average_only_in":
            assert self.norm_scaling_factor is not None  # checked at construction
            return x * self.norm_scaling_factor
        return x

    # -- activations -----------------------------------------------------------------------

    def _encode_columns(self, flat: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        """relu, JumpReLU and gated: per-latent functions, so only the requested columns."""
        import torch

        def pick(t: torch.Tensor | None) -> torch.Tensor:
            assert t is not None  # checked at construction
            return t if columns is None else t.index_select(-1, columns)

        w_enc = pick(self.W_enc)
        if self.activation == "gated":
            active = (flat @ w_enc + pick(self.b_gate)) > 0
            magnitude = flat @ (w_enc * pick(self.r_mag).exp()) + pick(self.b_mag)
            return torch.relu(magnitude) * active.to(flat.dtype)
        pre = flat @ w_enc + pick(self.b_enc)
        if self.activation == "jumprelu":
            return torch.relu(pre) * (pre > pick(self.threshold)).to(flat.dtype)
        return torch.relu(pre)

    def _encode_topk(self, flat: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        import torch

        assert self.k is not None and self.b_enc is not None  # checked at construction
        scale = self._decoder_norms() if self.rescale_acts_by_decoder_norm else None
        width = self.d_sae if columns is None else int(columns.numel())
        out = flat.new_zeros((flat.shape[0], width))
        rows = max(1, _TOPK_CHUNK_ELEMENTS // self.d_sae)
        for start in range(0, flat.shape[0], rows):
            pre = flat[start : start + rows] @ self.W_enc + self.b_enc
            if scale is not None:
                pre = pre * scale
            values, indices = torch.topk(pre, k=self.k, dim=-1, sorted=False)
            kept = torch.zeros_like(pre).scatter_(-1, indices, values.relu())
            out[start : start + rows] = kept if columns is None else kept[:, columns]
        return out

    def _decoder_norms(self) -> torch.Tensor:
        assert self.W_dec is not None  # checked at construction
        norms: torch.Tensor = self.W_dec.norm(dim=-1)
        return norms

    def _encode_groupmax(self, flat: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        """sparsify's groupmax: the winner of each of k contiguous groups keeps its value."""
        import torch

        assert self.k is not None and self.b_enc is not None  # checked at construction
        size = self.d_sae // self.k
        wanted = torch.arange(self.d_sae, device=self.device) if columns is None else columns
        groups, position = torch.unique(wanted // size, return_inverse=True)
        group_columns = (groups[:, None] * size + torch.arange(size, device=self.device)).reshape(
            -1
        )
        pre = torch.relu(
            flat @ self.W_enc.index_select(1, group_columns) + self.b_enc[group_columns]
        )
        values, winners = pre.reshape(flat.shape[0], -1, size).max(dim=-1)
        won = winners[:, position] == (wanted % size)
        return torch.where(won, values[:, position], torch.zeros_like(values[:, position]))


def _check_encoder(enc: SparseEncoder) -> None:
    """The parameters an activation needs are there, with the shapes it needs."""
    if enc.activation not in ACTIVATIONS:
        raise InvalidInputError(
            f"unknown activation {enc.activation!r}; supported: {', '.join(ACTIVATIONS)}"
        )
    if enc.normalize_activations not in NORMALIZATIONS:
        raise InvalidInputError(
            f"unknown normalize_activations {enc.normalize_activations!r}; supported: "
            + ", ".join(NORMALIZATIONS)
        )
    if enc.normalize_activations == "expected_average_only_in" and enc.norm_scaling_factor is None:
        raise InvalidInputError(
            "normalize_activations='expected_average_only_in' needs the dataset-wide scaling "
            "factor the SAE was trained with; fold it into the weights (SAELens: "
            "sae.fold_activation_norm_scaling_factor) or give it as norm_scaling_factor"
        )
    _check_shape(enc, "W_enc", enc.W_enc, (enc.d_in, enc.d_sae))
    if enc.kind == "sae_latent" and enc.apply_b_dec_to_input:
        _check_shape(enc, "b_dec", enc.b_dec, (enc.d_in,))
    needed = {
        "relu": ("b_enc",),
        "jumprelu": ("b_enc", "threshold"),
        "topk": ("b_enc",),
        "groupmax": ("b_enc",),
        "gated": ("b_gate", "r_mag", "b_mag"),
    }[enc.activation]
    for name in needed:
        _check_shape(enc, name, getattr(enc, name), (enc.d_sae,))
    _check_k(enc)


def _check_k(enc: SparseEncoder) -> None:
    if enc.activation not in ("topk", "groupmax"):
        return
    if not isinstance(enc.k, int) or isinstance(enc.k, bool) or not 0 < enc.k <= enc.d_sae:
        raise InvalidInputError(
            f"{enc.activation} needs an integer k between 1 and d_sae={enc.d_sae}; got {enc.k!r}"
        )
    if enc.activation == "groupmax" and enc.d_sae % enc.k:
        raise InvalidInputError(f"groupmax needs d_sae={enc.d_sae} to be a multiple of k={enc.k}")
    if enc.rescale_acts_by_decoder_norm:
        if enc.W_dec is None:
            raise InvalidInputError("rescale_acts_by_decoder_norm needs W_dec, which is missing")
        if enc.W_dec.ndim != 2 or enc.W_dec.shape[0] != enc.d_sae:
            raise InvalidInputError(
                f"W_dec has shape {list(enc.W_dec.shape)}; expected [d_sae={enc.d_sae}, d_out]"
            )


def _check_shape(
    enc: SparseEncoder, name: str, tensor: torch.Tensor | None, shape: tuple[int, ...]
) -> None:
    where = f" in {enc.source}" if enc.source else ""
    if tensor is None:
        raise InvalidInputError(f"{name} is missing{where}; a {enc.activation} SAE needs it")
    if tuple(tensor.shape) != shape:
        raise InvalidInputError(
            f"{name}{where} has shape {list(tensor.shape)}; expected {list(shape)}"
        )


def load_sae(
    path: str | os.PathLike[str],
    *,
    hookpoint: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> SparseEncoder:
    """Load an SAE or transcoder's encoder from local files, detecting the layout.

    Args:
        path: an SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), a sparsify folder
            (``cfg.json`` + ``sae.safetensors``) or sparsify run folder (one such folder per
            hookpoint), a Gemma Scope folder or its ``params.npz``, or one of those files.
        hookpoint: a sparsify run folder's hookpoint to load (required when it has several);
            for Gemma Scope, the hook site when the path does not name it; for SAELens, must
            agree with the config's ``hook_name`` when both are given.
        device: where to put the weights.
        dtype: the weights' dtype (``torch.float32``, ``"bfloat16"``, ...); by default the
            dtype they are stored in.

    Raises:
        InvalidInputError: no SAE at ``path``, an ambiguous or unknown ``hookpoint`` (the
            message lists the available ones), or a setting this module cannot compute.
        FormatError: a file is malformed: unreadable, missing keys, wrong shapes, unknown
            architecture or activation; the message names the file and what to fix.
    """
    from neuron_explainer.models import _sae_layouts as files

    root = Path(path)
    if not root.exists():
        raise InvalidInputError(f"no SAE at {root}: no such file or folder")
    convert = files.converter(device, dtype)
    if root.is_file():
        if root.name == files.GEMMA_SCOPE_PARAMS:
            return files.gemma_scope(root, hookpoint, convert)
        if root.name not in (files.SAELENS_WEIGHTS, files.SPARSIFY_WEIGHTS, files.CONFIG):
            raise InvalidInputError(
                f"{root} is not an SAE file: give its folder, or {files.GEMMA_SCOPE_PARAMS}, "
                f"{files.SAELENS_WEIGHTS}, {files.SPARSIFY_WEIGHTS} or {files.CONFIG}"
            )
        root = root.parent
    if (root / files.GEMMA_SCOPE_PARAMS).is_file():
        return files.gemma_scope(root / files.GEMMA_SCOPE_PARAMS, hookpoint, convert)
    if (root / files.CONFIG).is_file():
        if (root / files.SAELENS_WEIGHTS).is_file():
            return files.saelens(root, hookpoint, convert)
        if (root / files.SPARSIFY_WEIGHTS).is_file():
            _pick_hookpoint(root.parent, [root.name], hookpoint)
            return files.sparsify(root, convert)
        raise FormatError(
            f"{root / files.CONFIG} has no weights beside it: expected {files.SAELENS_WEIGHTS} "
            f"(SAELens) or {files.SPARSIFY_WEIGHTS} (sparsify)"
        )
    available = sorted(
        child.name
        for child in root.iterdir()
        if (child / files.CONFIG).is_file() and (child / files.SPARSIFY_WEIGHTS).is_file()
    )
    if not available:
        raise InvalidInputError(
            f"no SAE found in {root}: expected {files.CONFIG} with {files.SAELENS_WEIGHTS} "
            f"(SAELens) or {files.SPARSIFY_WEIGHTS} (sparsify), a folder per sparsify "
            f"hookpoint, or {files.GEMMA_SCOPE_PARAMS} (Gemma Scope)"
        )
    return files.sparsify(root / _pick_hookpoint(root, available, hookpoint), convert)


def _pick_hookpoint(root: Path, available: list[str], hookpoint: str | None) -> str:
    """The sparsify hookpoint folder to load: ``hookpoint``, or the only one there is."""
    listing = ", ".join(available)
    if hookpoint is None:
        if len(available) == 1:
            return available[0]
        raise InvalidInputError(
            f"{root} holds sparse coders for {len(available)} hookpoints; pass hookpoint= "
            f"one of: {listing}"
        )
    if hookpoint not in available:
        raise InvalidInputError(
            f"hookpoint {hookpoint!r} is not in {root}; available hookpoints: {listing}"
        )
    return hookpoint
