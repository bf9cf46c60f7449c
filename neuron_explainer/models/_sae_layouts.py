"""The file layouts `neuron_explainer.models.sae.load_sae` reads: SAELens, EleutherAI sparsify
and Gemma Scope (the versions followed are cited in `neuron_explainer.models.sae`).

Each reader validates what it reads (keys, shapes, config values) and raises `FormatError`
naming the file and what to fix, or `InvalidInputError` for a setting that cannot be computed.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.models.sae import NORMALIZATIONS, SparseEncoder

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG",
    "GEMMA_SCOPE_PARAMS",
    "SAELENS_WEIGHTS",
    "SPARSIFY_WEIGHTS",
    "converter",
    "gemma_scope",
    "saelens",
    "sparsify",
]

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
CONFIG = "cfg.json"
GEMMA_SCOPE_PARAMS = "params.npz"
SAELENS_SCALER = "activation_scaler.json"
SPARSIFY_RUN_CONFIG = "config.json"

_SAELENS_ARCHITECTURES = {
    "standard": ("sae_latent", "relu"),
    "jumprelu": ("sae_latent", "jumprelu"),
    "topk": ("sae_latent", "topk"),
    "gated": ("sae_latent", "gated"),
    "transcoder": ("transcoder_latent", "relu"),
    "skip_transcoder": ("transcoder_latent", "relu"),
    "jumprelu_transcoder": ("transcoder_latent", "jumprelu"),
}
"""SAELens ``architecture`` → (kind, activation)."""

_SAELENS_SETTINGS = (
    "model_name model_class_name hook_head_index hook_head_index_out model_from_pretrained_kwargs"
    " prepend_bos exclude_special_tokens context_size seqpos_slice dataset_path sae_lens_version"
    " sae_lens_training_version neuronpedia_id reshape_activations finetuning_scaling_factor d_out"
).split()
"""SAELens config keys recorded in `SparseEncoder.settings` (``finetuning_scaling_factor``
scales the decoder's input only, so encoding ignores it)."""

_PRE_6_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "hook_point_layer": "hook_layer",
    "activation_fn_str": "activation_fn",
}

_GEMMA_SITES = {
    "res": "blocks.{layer}.hook_resid_post",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "att": "blocks.{layer}.attn.hook_z",
    "transcoders": "blocks.{layer}.ln2.hook_normalized",
}
"""Gemma Scope repository suffix → hook site (SAELens' Gemma 2 loaders)."""

_NPZ_NAMES = {name.lower(): name for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
"""Gemma Scope ``params.npz`` keys, matched case-insensitively as SAELens does."""


# -- reading files ---------------------------------------------------------------------------


class Converter:
    """Moves tensors to the requested device and dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device = device
        self.dtype = dtype

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.device, dtype=self.dtype or tensor.dtype)


def converter(device: str | torch.device, dtype: str | torch.dtype | None) -> Converter:
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"unknown device {device!r}: {exc}") from exc
    if dtype is None or isinstance(dtype, torch.dtype):
        wanted = dtype
    else:
        found = getattr(torch, str(dtype).removeprefix("torch."), None)
        if not isinstance(found, torch.dtype):
            raise InvalidInputError(f"unknown dtype {dtype!r}; try 'float32' or 'bfloat16'")
        wanted = found
    if wanted is not None and not wanted.is_floating_point:
        raise InvalidInputError(f"dtype must be a floating-point type; got {wanted}")
    return Converter(where, wanted)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{path} must hold a JSON object; got {type(data).__name__}")
    return data


def _read_safetensors(path: Path, convert: Converter) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path, device="cpu")
    except (OSError, SafetensorError) as exc:
        raise FormatError(f"cannot read {path} as safetensors: {exc}") from exc
    return {name: convert(tensor) for name, tensor in tensors.items()}


def _read_npz(path: Path, convert: Converter) -> dict[str, torch.Tensor]:
    import numpy as np
    import torch

    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not a .npz archive of named arrays")
        with data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FormatError(f"cannot read {path} as a .npz archive: {exc}") from exc
    tensors: dict[str, torch.Tensor] = {}
    for key, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise FormatError(f"{key} in {path} has dtype {array.dtype}; expected floats")
        tensors[_NPZ_NAMES.get(key.lower(), key)] = convert(torch.from_numpy(array))
    return tensors


def _tensor(
    tensors: Mapping[str, torch.Tensor], name: str, shape: tuple[int | None, ...], source: Path
) -> torch.Tensor:
    """``tensors[name]``, checked against ``shape`` (``None``: any size)."""
    if name not in tensors:
        raise FormatError(
            f"{source} has no {name!r} tensor (found: {', '.join(sorted(tensors)) or 'none'})"
        )
    tensor = tensors[name]
    if len(tensor.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(tensor.shape, shape, strict=True)
    ):
        expected = ", ".join("*" if want is None else str(want) for want in shape)
        raise FormatError(
            f"{name} in {source} has shape {list(tensor.shape)}; expected [{expected}]"
        )
    return tensor


def _int(config: Mapping[str, Any], key: str, source: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FormatError(f"{source}: {key!r} must be a positive integer; got {value!r}")
    return value


def _layer_of(site: str | None) -> int | None:
    match = re.search(r"(?:^|\.)(?:blocks|layers|h)[._](\d+)(?:\.|$)", site or "")
    return int(match.group(1)) if match else None


def _build(source: Path, **fields: Any) -> SparseEncoder:
    """`SparseEncoder` (its own checks reported as the file's `FormatError`)."""
    try:
        return SparseEncoder(source=str(source), **fields)
    except FormatError:
        raise
    except InvalidInputError as exc:
        raise FormatError(str(exc)) from exc


# -- SAELens ---------------------------------------------------------------------------------


def _saelens_config(raw: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """A SAELens cfg.json as one flat dict in the 6.x key names (metadata merged in)."""
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FormatError(f"{source}: 'metadata' must be a JSON object")
    config = {**metadata, **{k: v for k, v in raw.items() if k != "metadata"}}
    version = str(config.get("sae_lens_version") or "")
    major = re.match(r"\d+", version)
    if major is None or int(major.group()) < 6:
        config = _pre_6_config(config)
    normalize = config.get("normalize_activations")
    if normalize is None or normalize is False:
        config["normalize_activations"] = "none"
    elif normalize is True:
        config["normalize_activations"] = "expected_average_only_in"
    return config


def _pre_6_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """SAELens' ``handle_pre_6_0_config``: old key names and defaults."""
    new = {_PRE_6_RENAMES.get(k, k): v for k, v in config.items()}
    new.setdefault("prepend_bos", True)
    new.setdefault("apply_b_dec_to_input", True)
    new.setdefault("architecture", "standard")
    hook_z = "hook_z" in str(new.get("hook_name") or "")
    new.setdefault("reshape_activations", "hook_z" if hook_z else "none")
    kwargs = new.get("activation_fn_kwargs") or {}
    if new.get("activation_fn") == "topk" and isinstance(kwargs, dict) and "k" in kwargs:
        new["architecture"] = "topk"
        new["k"] = kwargs["k"]
    return new


def saelens(folder: Path, hookpoint: str | None, convert: Converter) -> SparseEncoder:
    config_path, weights = folder / CONFIG, folder / SAELENS_WEIGHTS
    config = _saelens_config(_read_json(config_path), config_path)
    architecture = config.get("architecture", "standard")
    if architecture not in _SAELENS_ARCHITECTURES:
        raise FormatError(
            f"{config_path}: unknown or unsupported SAELens architecture {architecture!r}; "
            f"supported: {', '.join(_SAELENS_ARCHITECTURES)} (training checkpoints of "
            "batchtopk SAEs load once saved for inference, as jumprelu)"
        )
    kind, activation = _SAELENS_ARCHITECTURES[architecture]
    function = config.get("activation_fn")
    if function not in (None, "relu") and not (function == "topk" and activation == "topk"):
        raise FormatError(
            f"{config_path}: unknown activation_fn {function!r} for architecture "
            f"{architecture!r}; supported: relu (and topk with activation_fn_kwargs.k)"
        )
    site = config.get("hook_name")
    if hookpoint is not None and site is not None and hookpoint != site:
        raise InvalidInputError(f"{config_path} is an SAE for hook {site!r}, not {hookpoint!r}")
    d_in = _int(config, "d_in", config_path)
    tensors = _read_safetensors(weights, convert)
    d_sae = _saelens_width(config, tensors, d_in, weights)
    fields = _saelens_tensors(tensors, activation, kind, d_in, d_sae, weights)
    fields.update(_normalization(config, folder, config_path))
    if activation == "topk":
        fields["k"] = config.get("k")
        fields["rescale_acts_by_decoder_norm"] = bool(config.get("rescale_acts_by_decoder_norm"))
    apply_b_dec = bool(config.get("apply_b_dec_to_input", kind == "sae_latent"))
    if kind == "transcoder_latent" and apply_b_dec:
        raise FormatError(
            f"{config_path}: apply_b_dec_to_input must be false for a transcoder (SAELens "
            "refuses it too: b_dec lives in the output space)"
        )
    site = site or hookpoint
    layer = config.get("hook_layer")
    return _build(
        folder,
        kind=kind,
        layout="saelens",
        d_in=d_in,
        d_sae=d_sae,
        activation=activation,
        apply_b_dec_to_input=apply_b_dec,
        hook_site=site,
        hook_site_out=config.get("hook_name_out") if kind == "transcoder_latent" else None,
        layer=layer if isinstance(layer, int) else _layer_of(site),
        settings=_saelens_settings(config, architecture),
        **fields,
    )


def _saelens_width(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], d_in: int, source: Path
) -> int:
    if config.get("d_sae") is not None:
        return _int(config, "d_sae", source.parent / CONFIG)
    return int(_tensor(tensors, "W_enc", (d_in, None), source).shape[1])


def _saelens_tensors(
    tensors: Mapping[str, torch.Tensor],
    activation: str,
    kind: str,
    d_in: int,
    d_sae: int,
    source: Path,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"W_enc": _tensor(tensors, "W_enc", (d_in, d_sae), source)}
    d_out = d_in if kind == "sae_latent" else None
    fields["b_dec"] = _tensor(tensors, "b_dec", (d_out,), source)
    if "W_dec" in tensors:
        fields["W_dec"] = _tensor(tensors, "W_dec", (d_sae, fields["b_dec"].shape[0]), source)
    if activation == "gated":
        for name in ("b_gate", "r_mag", "b_mag"):
            fields[name] = _tensor(tensors, name, (d_sae,), source)
        fields["b_enc"] = None
        return fields
    fields["b_enc"] = _tensor(tensors, "b_enc", (d_sae,), source)
    if activation == "jumprelu":
        if "threshold" not in tensors and "log_threshold" in tensors:
            fields["threshold"] = _tensor(tensors, "log_threshold", (d_sae,), source).exp()
        else:
            fields["threshold"] = _tensor(tensors, "threshold", (d_sae,), source)
    return fields


def _normalization(config: Mapping[str, Any], folder: Path, source: Path) -> dict[str, Any]:
    normalize = config.get("normalize_activations", "none")
    if normalize not in NORMALIZATIONS:
        raise FormatError(
            f"{source}: unknown normalize_activations {normalize!r}; SAELens knows "
            + ", ".join(NORMALIZATIONS)
        )
    if normalize != "expected_average_only_in":
        return {"normalize_activations": normalize}
    factor = config.get("norm_scaling_factor")
    scaler = folder / SAELENS_SCALER
    if factor is None and scaler.is_file():
        factor = _read_json(scaler).get("scaling_factor")
    if factor is None:
        raise InvalidInputError(
            f"{source}: normalize_activations='expected_average_only_in' scales the input by a "
            "dataset-wide factor, which this folder does not give (no scaling_factor in "
            f"{SAELENS_SCALER}, no norm_scaling_factor in {CONFIG}); add one of those, or fold "
            "the factor into the weights (SAELens: sae.fold_activation_norm_scaling_factor)"
        )
    if not isinstance(factor, int | float) or isinstance(factor, bool) or not factor > 0:
        raise FormatError(f"{source}: the norm scaling factor must be a positive number")
    return {"normalize_activations": normalize, "norm_scaling_factor": float(factor)}


def _saelens_settings(config: Mapping[str, Any], architecture: str) -> dict[str, Any]:
    settings = {key: config[key] for key in _SAELENS_SETTINGS if key in config}
    settings["architecture"] = architecture
    settings.setdefault("prepend_bos", True)
    settings.setdefault("reshape_activations", "none")
    kwargs = config.get("model_from_pretrained_kwargs")
    center = kwargs.get("center_writing_weights") if isinstance(kwargs, dict) else None
    settings["center_writing_weights"] = center
    return settings


# -- sparsify --------------------------------------------------------------------------------


def sparsify(folder: Path, convert: Converter) -> SparseEncoder:
    config_path, weights = folder / CONFIG, folder / SPARSIFY_WEIGHTS
    config = _read_json(config_path)
    if config.get("signed"):
        raise FormatError(
            f"{config_path}: signed sparse coders (removed from sparsify in Aug 2024) are not "
            "supported"
        )
    activation = config.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise FormatError(
            f"{config_path}: unknown activation {activation!r}; sparsify knows topk and groupmax"
        )
    d_in = _int(config, "d_in", config_path)
    if config.get("num_latents"):  # sparsify: 0 means d_in * expansion_factor
        d_sae = _int(config, "num_latents", config_path)
    else:
        d_sae = d_in * _int(config, "expansion_factor", config_path, default=32)
    tensors = _read_safetensors(weights, convert)
    transcode = bool(config.get("transcode", False))
    fields: dict[str, Any] = {
        "W_enc": _tensor(tensors, "encoder.weight", (d_sae, d_in), weights).T,
        "b_enc": _tensor(tensors, "encoder.bias", (d_sae,), weights),
        "b_dec": _tensor(tensors, "b_dec", (None,), weights),
    }
    if "W_dec" in tensors:
        fields["W_dec"] = _tensor(tensors, "W_dec", (d_sae, fields["b_dec"].shape[0]), weights)
    settings: dict[str, Any] = {
        key: config[key]
        for key in ("k", "activation", "normalize_decoder", "multi_topk", "skip_connection")
        if key in config
    }
    settings.update(transcode=transcode, hookpoint_io="input" if transcode else "output")
    run_config = folder.parent / SPARSIFY_RUN_CONFIG
    if run_config.is_file():
        run = _read_json(run_config)
        settings["run_config"] = {k: v for k, v in run.items() if k not in ("hf_token", "sae")}
    return _build(
        folder,
        kind="transcoder_latent" if transcode else "sae_latent",
        layout="sparsify",
        d_in=d_in,
        d_sae=d_sae,
        activation=activation,
        k=config.get("k", 32),
        apply_b_dec_to_input=not transcode,
        hook_site=folder.name,
        hook_site_out=folder.name if transcode else None,
        layer=_layer_of(folder.name),
        settings=settings,
        **fields,
    )


# -- Gemma Scope -----------------------------------------------------------------------------


def gemma_scope(params: Path, hookpoint: str | None, convert: Converter) -> SparseEncoder:
    tensors = _read_npz(params, convert)
    w_enc = _tensor(tensors, "W_enc", (None, None), params)
    d_in, d_sae = (int(n) for n in w_enc.shape)
    fields: dict[str, Any] = {
        "W_enc": w_enc,
        "b_enc": _tensor(tensors, "b_enc", (d_sae,), params),
        "threshold": _tensor(tensors, "threshold", (d_sae,), params),
        "b_dec": _tensor(tensors, "b_dec", (None,), params),
    }
    if "W_dec" in tensors:
        fields["W_dec"] = _tensor(tensors, "W_dec", (d_sae, fields["b_dec"].shape[0]), params)
    config_path = params.parent / CONFIG
    config = _saelens_config(_read_json(config_path), config_path) if config_path.is_file() else {}
    derived = _gemma_path_info(params)
    transcoder = derived.pop("transcoder") or str(config.get("architecture", "")).endswith(
        "transcoder"
    )
    path_site, path_site_out = derived.pop("hook_site", None), derived.pop("hook_site_out", None)
    site = hookpoint or config.get("hook_name") or path_site
    site_out = config.get("hook_name_out") or path_site_out
    fields.update(_normalization(config, params.parent, config_path))
    settings = {
        **derived,
        **_saelens_settings(config, "jumprelu_transcoder" if transcoder else "jumprelu"),
    }
    if derived.get("embedding"):
        # SAELens' gemma_2_sae_huggingface_loader rescales the embedding SAE's encoder so that
        # it reads TransformerLens' hook_embed.
        fields["W_enc"] = fields["W_enc"] / math.sqrt(d_in)
    if not transcoder and site and "hook_z" in site:
        settings["reshape_activations"] = "hook_z"
    layer = _layer_of(site)
    return _build(
        params,
        kind="transcoder_latent" if transcoder else "sae_latent",
        layout="gemma_scope",
        d_in=d_in,
        d_sae=d_sae,
        activation="jumprelu",
        apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", False)) and not transcoder,
        hook_site=site,
        hook_site_out=site_out if transcoder else None,
        layer=layer if layer is not None else derived.get("layer"),
        settings=settings,
        **fields,
    )


def _gemma_path_info(params: Path) -> dict[str, Any]:
    """What a Gemma Scope path tells: ``…/gemma-scope-2b-pt-res/layer_12/width_16k/…``."""
    text = params.resolve().as_posix()
    found: dict[str, Any] = {"transcoder": False}
    if (layer := re.search(r"(?:^|/)layer_(\d+)(?:/|$)", text)) is not None:
        found["layer"] = int(layer.group(1))
    if (width := re.search(r"(?:^|/)width_(\d+)([km])(?:/|$)", text)) is not None:
        found["width"] = int(width.group(1)) * (1024 if width.group(2) == "k" else 1024**2)
    if (l0 := re.search(r"(?:^|/)average_l0_(\d+)(?:/|$)", text)) is not None:
        found["average_l0"] = int(l0.group(1))
    found["embedding"] = re.search(r"(?:^|/)embedding(?:/|$)", text) is not None
    repo = next((p for p in reversed(params.parts) if "gemma-scope" in p), None)
    if repo is None:
        return found
    tokens = repo.split("-")
    size = next((t for t in tokens if re.fullmatch(r"\d+b", t)), None)
    if size is not None:
        found["model_name"] = f"gemma-2-{size}" + ("-it" if "it" in tokens else "")
    found["prepend_bos"] = True
    suffix = next((t for t in ("transcoders", "res", "mlp", "att") if t in tokens), None)
    if suffix == "res" and found["embedding"]:
        found["hook_site"] = "hook_embed"
    elif suffix is not None and "layer" in found:
        found["hook_site"] = _GEMMA_SITES[suffix].format(layer=found["layer"])
    if suffix == "transcoders":
        found["transcoder"] = True
        if "layer" in found:
            found["hook_site_out"] = f"blocks.{found['layer']}.hook_mlp_out"
    return found
