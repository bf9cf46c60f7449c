"""`neuron_explainer.models.sae`: SAEs and transcoders written by the tests in each layout
(SAELens, EleutherAI sparsify, Gemma Scope) with random weights, loaded with `load_sae`, and
their `encode` compared with a hand computation in numpy (float64) from the same weights.

Tolerance: the library computes in float32, the reference in float64; activations are O(1), so
they agree to ``atol=rtol=1e-5``; ``latents=`` subsets agree with the full encode's columns
to 1e-6 (a narrower matmul may round float32's last bit differently). Each case checks that no
pre-activation sits within 1e-4 of a JumpReLU threshold, gate or top-k cut, so the
float32/float64 difference cannot flip a latent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.models.sae import SparseEncoder, load_sae

ATOL = RTOL = 1e-5
MARGIN = 1e-4
D_IN, D_SAE, N_TOKENS = 24, 64, 40


# -- reference math (numpy, float64) ---------------------------------------------------------


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def clear_of(values: np.ndarray, cut: np.ndarray | float) -> None:
    """The test data keep every value at least MARGIN from the cut it is compared with."""
    assert np.min(np.abs(values - cut)) > MARGIN, "test data too close to a cut; change the seed"


def top_k(pre: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(pre)
    for row, values in enumerate(pre):
        order = np.argsort(-values)
        clear_of(values[order[k - 1]], values[order[k]])
        out[row, order[:k]] = relu(values[order[:k]])
    return out


def group_max(pre: np.ndarray, k: int) -> np.ndarray:
    acts = relu(pre)
    groups = acts.reshape(len(acts), k, -1)
    out = np.zeros_like(groups)
    rows, group = np.meshgrid(np.arange(len(acts)), np.arange(k), indexing="ij")
    winner = groups.argmax(-1)
    out[rows, group, winner] = groups[rows, group, winner]
    return out.reshape(acts.shape)


def layer_norm(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / (centred.std(-1, ddof=1, keepdims=True) + 1e-5)


def constant_norm(x: np.ndarray) -> np.ndarray:
    return x * np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)


# -- writing SAEs ----------------------------------------------------------------------------


def weights(seed: int, d_in: int = D_IN, d_sae: int = D_SAE, d_out: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    d_out = d_in if d_out is None else d_out
    return {
        "W_enc": (rng.normal(size=(d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32),
        "b_enc": (0.1 * rng.normal(size=d_sae)).astype(np.float32),
        "W_dec": (rng.normal(size=(d_sae, d_out)) / np.sqrt(d_sae)).astype(np.float32),
        "b_dec": (0.2 * rng.normal(size=d_out)).astype(np.float32),
    }


def tokens(seed: int = 99, d_in: int = D_IN, n: int = N_TOKENS) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d_in)).astype(np.float32)


def saelens_cfg(architecture: str, **fields: Any) -> dict[str, Any]:
    """A cfg.json as SAELens 6.18 writes it (`SAEConfig.to_dict`)."""
    metadata = {
        "sae_lens_version": "6.18.0",
        "sae_lens_training_version": "6.18.0",
        "model_name": "gpt2",
        "hook_name": "blocks.6.hook_resid_pre",
        "hook_head_index": None,
        "context_size": 128,
        "prepend_bos": True,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {"center_writing_weights": False},
    }
    metadata.update(fields.pop("metadata", {}))
    return {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
        "architecture": architecture,
        **fields,
    }


def write_saelens(folder: Path, cfg: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, folder / "sae_weights.safetensors"
    )
    return folder


def write_sparsify(folder: Path, cfg: dict[str, Any], w: dict[str, np.ndarray]) -> Path:
    """A folder as sparsify's `SparseCoder.save_to_disk` writes it: `encoder` is an
    ``nn.Linear(d_in, num_latents)``, so its weight is stored ``[d_sae, d_in]``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    tensors = {
        "encoder.weight": np.ascontiguousarray(w["W_enc"].T),
        "encoder.bias": w["b_enc"],
        "W_dec": w["W_dec"],
        "b_dec": w["b_dec"],
    }
    save_file(tensors, folder / "sae.safetensors")
    return folder


def sparsify_cfg(**fields: Any) -> dict[str, Any]:
    """`SparseCoderConfig.to_dict()` plus ``d_in``, as sparsify's `save_to_disk` writes it."""
    return {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": 8,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
        **fields,
    }


def encode(sae: SparseEncoder, x: np.ndarray, latents: Any = None) -> np.ndarray:
    out = sae.encode(torch.from_numpy(x), latents)
    assert out.dtype == torch.float32
    return out.numpy().astype(np.float64)


def check(sae: SparseEncoder, x: np.ndarray, expected: np.ndarray) -> None:
    got = encode(sae, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    assert (got > 0).any() and (got == 0).any()  # the data exercise both sides
    subset = [5, 0, D_SAE - 1, 5, 17]
    # a narrower matmul may round differently in float32's last bit
    np.testing.assert_allclose(encode(sae, x, subset), got[:, subset], atol=1e-6, rtol=1e-6)


# -- SAELens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_standard_relu(tmp_path: Path, apply_b_dec: bool) -> None:
    w = weights(1)
    cfg = saelens_cfg("standard", apply_b_dec_to_input=apply_b_dec)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = tokens()
    sae_in = x - w["b_dec"] if apply_b_dec else x
    check(sae, x, relu(sae_in.astype(np.float64) @ w["W_enc"] + w["b_enc"]))
    assert (sae.kind, sae.layout, sae.activation) == ("sae_latent", "saelens", "relu")
    assert (sae.d_in, sae.d_sae, sae.hook_site, sae.layer) == (
        D_IN,
        D_SAE,
        "blocks.6.hook_resid_pre",
        6,
    )
    assert sae.apply_b_dec_to_input is apply_b_dec
    assert sae.settings["prepend_bos"] is True
    assert sae.settings["center_writing_weights"] is False
    assert sae.settings["model_name"] == "gpt2"


def test_saelens_jumprelu(tmp_path: Path) -> None:
    w = weights(2)
    x = tokens()
    pre = (x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    threshold = np.quantile(pre, 0.6, axis=0).astype(np.float32) + np.float32(3e-3)
    clear_of(pre, threshold)
    sae = load_sae(
        write_saelens(tmp_path / "sae", saelens_cfg("jumprelu"), {**w, "threshold": threshold})
    )
    check(sae, x, relu(pre) * (pre > threshold))
    assert sae.activation == "jumprelu"


@pytest.mark.parametrize("rescale", [False, True])
def test_saelens_topk(tmp_path: Path, rescale: bool) -> None:
    w = weights(4)
    cfg = saelens_cfg("topk", k=6, rescale_acts_by_decoder_norm=rescale)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = tokens()
    pre = (x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if rescale:
        pre = pre * np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    check(sae, x, top_k(pre, 6))
    assert (sae.activation, sae.k, sae.rescale_acts_by_decoder_norm) == ("topk", 6, rescale)


def test_saelens_topk_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neuron_explainer.models import sae as module

    monkeypatch.setattr(module, "_TOPK_CHUNK_ELEMENTS", 3 * D_SAE)  # 3 tokens a chunk
    w = weights(4)
    sae = load_sae(write_saelens(tmp_path / "sae", saelens_cfg("topk", k=6), w))
    x = tokens()
    pre = (x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    check(sae, x, top_k(pre, 6))


def test_saelens_gated(tmp_path: Path) -> None:
    w = weights(4)
    rng = np.random.default_rng(40)
    gated = {
        "W_enc": w["W_enc"],
        "b_gate": (0.1 * rng.normal(size=D_SAE)).astype(np.float32),
        "r_mag": (0.3 * rng.normal(size=D_SAE)).astype(np.float32),
        "b_mag": (0.1 * rng.normal(size=D_SAE)).astype(np.float32),
        "W_dec": w["W_dec"],
        "b_dec": w["b_dec"],
    }
    sae = load_sae(write_saelens(tmp_path / "sae", saelens_cfg("gated"), gated))
    x = tokens()
    sae_in = x.astype(np.float64) - w["b_dec"]
    gate = sae_in @ w["W_enc"] + gated["b_gate"]
    clear_of(gate, 0.0)
    magnitude = sae_in @ (w["W_enc"] * np.exp(gated["r_mag"].astype(np.float64))) + gated["b_mag"]
    check(sae, x, (gate > 0) * relu(magnitude))
    assert sae.activation == "gated" and sae.b_enc is None


@pytest.mark.parametrize(
    "normalize", ["constant_norm_rescale", "layer_norm", "expected_average_only_in"]
)
def test_saelens_input_normalisation(tmp_path: Path, normalize: str) -> None:
    w = weights(5)
    folder = write_saelens(
        tmp_path / "sae", saelens_cfg("standard", normalize_activations=normalize), w
    )
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.37}))
    sae = load_sae(folder)
    x = 3.0 * tokens() + 1.5
    x64 = x.astype(np.float64)
    normed = {
        "constant_norm_rescale": constant_norm(x64),
        "layer_norm": layer_norm(x64),
        "expected_average_only_in": 0.37 * x64,
    }[normalize]
    check(sae, x, relu((normed - w["b_dec"]) @ w["W_enc"] + w["b_enc"]))
    assert sae.normalize_activations == normalize


def test_saelens_norm_scaling_factor_in_cfg(tmp_path: Path) -> None:
    w = weights(5)
    cfg = saelens_cfg(
        "standard", normalize_activations="expected_average_only_in", norm_scaling_factor=2.5
    )
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = tokens()
    check(sae, x, relu((2.5 * x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]))


def test_saelens_expected_average_without_a_factor_is_refused(tmp_path: Path) -> None:
    cfg = saelens_cfg("standard", normalize_activations="expected_average_only_in")
    folder = write_saelens(tmp_path / "sae", cfg, weights(5))
    with pytest.raises(InvalidInputError, match="expected_average_only_in") as info:
        load_sae(folder)
    assert "scaling_factor" in str(info.value)


def test_saelens_pre_6_config(tmp_path: Path) -> None:
    """A flat cfg.json of SAELens 3-5 (read as SAELens' handle_pre_6_0_config reads it)."""
    w = weights(6)
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "apply_b_dec_to_input": False,
        "finetuning_scaling_factor": False,
        "context_size": 128,
        "model_name": "gpt2-small",
        "hook_name": "blocks.8.hook_resid_pre",
        "hook_layer": 8,
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": "Skylion007/openwebtext",
        "normalize_activations": False,
        "dtype": "float32",
        "device": "cpu",
        "sae_lens_training_version": "3.0.0",
        "model_from_pretrained_kwargs": {"center_writing_weights": True},
    }
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = tokens()
    check(sae, x, top_k(x.astype(np.float64) @ w["W_enc"] + w["b_enc"], 5))
    assert (sae.activation, sae.k, sae.layer, sae.hook_site) == (
        "topk",
        5,
        8,
        "blocks.8.hook_resid_pre",
    )
    assert sae.normalize_activations == "none"
    assert sae.settings["center_writing_weights"] is True  # the caller must refuse this one


def test_saelens_pre_6_hook_point_names(tmp_path: Path) -> None:
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_point": "blocks.2.hook_mlp_out",
        "hook_point_layer": 2,
    }
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, weights(6)))
    assert (sae.hook_site, sae.layer, sae.activation, sae.apply_b_dec_to_input) == (
        "blocks.2.hook_mlp_out",
        2,
        "relu",
        True,
    )
    assert sae.settings["center_writing_weights"] is None  # not stated by the file


def test_saelens_jumprelu_transcoder(tmp_path: Path) -> None:
    d_out = 32
    w = weights(7, d_out=d_out)
    x = tokens()
    pre = x.astype(np.float64) @ w["W_enc"] + w["b_enc"]
    threshold = np.full(D_SAE, 0.15, dtype=np.float32)
    clear_of(pre, threshold)
    cfg = saelens_cfg(
        "jumprelu_transcoder",
        d_out=d_out,
        apply_b_dec_to_input=False,
        metadata={
            "hook_name": "blocks.3.ln2.hook_normalized",
            "hook_name_out": "blocks.3.hook_mlp_out",
        },
    )
    sae = load_sae(write_saelens(tmp_path / "tc", cfg, {**w, "threshold": threshold}))
    check(sae, x, relu(pre) * (pre > threshold))
    assert sae.kind == "transcoder_latent"
    assert (sae.hook_site, sae.hook_site_out, sae.layer) == (
        "blocks.3.ln2.hook_normalized",
        "blocks.3.hook_mlp_out",
        3,
    )
    assert sae.settings["d_out"] == d_out


def test_saelens_hook_z_input_is_flattened(tmp_path: Path) -> None:
    w = weights(8)
    cfg = saelens_cfg(
        "standard", reshape_activations="hook_z", metadata={"hook_name": "blocks.1.attn.hook_z"}
    )
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = tokens()
    heads = torch.from_numpy(x).reshape(N_TOKENS, 4, D_IN // 4)
    np.testing.assert_allclose(sae.encode(heads).numpy(), encode(sae, x), atol=1e-6, rtol=1e-6)


# -- sparsify --------------------------------------------------------------------------------


def test_sparsify_topk_sae(tmp_path: Path) -> None:
    w = weights(9)
    sae = load_sae(write_sparsify(tmp_path / "layers.6", sparsify_cfg(k=8), w))
    x = tokens()
    pre = relu((x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    check(sae, x, top_k(pre, 8))
    assert (sae.kind, sae.layout, sae.activation, sae.k) == ("sae_latent", "sparsify", "topk", 8)
    assert (sae.hook_site, sae.layer, sae.settings["hookpoint_io"]) == ("layers.6", 6, "output")


def test_sparsify_transcoder_does_not_subtract_b_dec(tmp_path: Path) -> None:
    w = weights(10)
    sae = load_sae(write_sparsify(tmp_path / "layers.3.mlp", sparsify_cfg(k=8, transcode=True), w))
    x = tokens()
    check(sae, x, top_k(relu(x.astype(np.float64) @ w["W_enc"] + w["b_enc"]), 8))
    assert sae.kind == "transcoder_latent" and not sae.apply_b_dec_to_input
    assert (sae.hook_site, sae.hook_site_out, sae.layer) == ("layers.3.mlp", "layers.3.mlp", 3)
    assert sae.settings["hookpoint_io"] == "input"


def test_sparsify_groupmax(tmp_path: Path) -> None:
    w = weights(11)
    sae = load_sae(
        write_sparsify(tmp_path / "layers.2", sparsify_cfg(activation="groupmax", k=8), w)
    )
    x = tokens()
    check(sae, x, group_max((x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 8))
    np.testing.assert_allclose(encode(sae, x, [63]), encode(sae, x)[:, [63]], atol=1e-6, rtol=1e-6)


def test_sparsify_expansion_factor_sets_the_width(tmp_path: Path) -> None:
    w = weights(12, d_in=16, d_sae=32)
    cfg = sparsify_cfg(num_latents=0, expansion_factor=2, d_in=16, k=4)
    sae = load_sae(write_sparsify(tmp_path / "layers.0", cfg, w))
    assert sae.d_sae == 32


def test_sparsify_run_folder_picks_a_hookpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for layer, seed in ((4, 13), (5, 14)):
        write_sparsify(run / f"layers.{layer}", sparsify_cfg(), weights(seed))
    (run / "config.json").write_text(
        json.dumps({"model": "EleutherAI/pythia-70m", "ctx_len": 2048})
    )
    sae = load_sae(run, hookpoint="layers.5")
    x = tokens()
    w = weights(14)
    check(sae, x, top_k(relu((x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]), 8))
    assert sae.layer == 5 and sae.settings["run_config"]["model"] == "EleutherAI/pythia-70m"
    with pytest.raises(InvalidInputError, match="pass hookpoint=") as ambiguous:
        load_sae(run)
    assert "layers.4, layers.5" in str(ambiguous.value)
    with pytest.raises(InvalidInputError, match=r"available hookpoints: layers\.4, layers\.5"):
        load_sae(run, hookpoint="layers.9")
    with pytest.raises(
        InvalidInputError, match=r"'layers\.4' is not in .*available hookpoints: layers\.5$"
    ):
        load_sae(run / "layers.5", hookpoint="layers.4")


def test_sparsify_run_folder_with_one_hookpoint_needs_no_choice(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "run" / "layers.1", sparsify_cfg(), weights(15))
    assert load_sae(tmp_path / "run").hook_site == "layers.1"


# -- Gemma Scope -----------------------------------------------------------------------------


def write_gemma_scope(folder: Path, seed: int, **extra: np.ndarray) -> tuple[Path, dict]:
    w = weights(seed)
    x = tokens()
    pre = x.astype(np.float64) @ w["W_enc"] + w["b_enc"]
    threshold = (np.quantile(pre, 0.7, axis=0) + 2e-3).astype(np.float32)
    clear_of(pre, threshold)
    folder.mkdir(parents=True)
    arrays = {**w, "threshold": threshold, **extra}
    np.savez(folder / "params.npz", **arrays)
    return folder / "params.npz", arrays


def test_gemma_scope_jumprelu(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_12" / "width_16k" / "average_l0_82"
    params, w = write_gemma_scope(folder, 16)
    x = tokens()
    pre = x.astype(np.float64) @ w["W_enc"] + w["b_enc"]  # no b_dec subtraction
    for sae in (load_sae(params), load_sae(folder)):
        check(sae, x, relu(pre) * (pre > w["threshold"]))
        assert (sae.layout, sae.kind, sae.activation) == ("gemma_scope", "sae_latent", "jumprelu")
        assert (sae.hook_site, sae.layer) == ("blocks.12.hook_resid_post", 12)
        assert not sae.apply_b_dec_to_input
        assert sae.settings["model_name"] == "gemma-2-2b"
        assert (sae.settings["width"], sae.settings["average_l0"]) == (16384, 82)


def test_gemma_scope_site_unknown_without_the_repository_folder(tmp_path: Path) -> None:
    params, _ = write_gemma_scope(tmp_path / "layer_3" / "width_16k" / "average_l0_20", 17)
    sae = load_sae(params)
    assert (sae.hook_site, sae.layer) == (None, 3)
    named = load_sae(params, hookpoint="blocks.3.hook_mlp_out")
    assert (named.hook_site, named.layer) == ("blocks.3.hook_mlp_out", 3)


def test_gemma_scope_transcoder(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_5" / "width_16k" / "average_l0_30"
    params, w = write_gemma_scope(folder, 18)
    sae = load_sae(params)
    x = tokens()
    pre = x.astype(np.float64) @ w["W_enc"] + w["b_enc"]
    check(sae, x, relu(pre) * (pre > w["threshold"]))
    assert sae.kind == "transcoder_latent"
    assert (sae.hook_site, sae.hook_site_out) == (
        "blocks.5.ln2.hook_normalized",
        "blocks.5.hook_mlp_out",
    )


def test_gemma_scope_config_beside_params(tmp_path: Path) -> None:
    params, _ = write_gemma_scope(tmp_path / "mine", 19)
    (tmp_path / "mine" / "cfg.json").write_text(
        json.dumps(
            {
                "hook_name": "blocks.7.hook_resid_post",
                "model_name": "gemma-2-2b",
                "prepend_bos": True,
            }
        )
    )
    sae = load_sae(params)
    assert (sae.hook_site, sae.layer, sae.settings["model_name"]) == (
        "blocks.7.hook_resid_post",
        7,
        "gemma-2-2b",
    )


# -- general behaviour -----------------------------------------------------------------------


def test_encode_keeps_leading_dimensions_and_casts(tmp_path: Path) -> None:
    w = weights(20)
    sae = load_sae(write_saelens(tmp_path / "sae", saelens_cfg("standard"), w))
    x = tokens().reshape(4, 10, D_IN)
    out = sae.encode(torch.from_numpy(x).double(), [3, 4])
    assert out.shape == (4, 10, 2) and out.dtype == torch.float32
    flat = encode(sae, x.reshape(-1, D_IN), [3, 4])
    np.testing.assert_allclose(out.reshape(-1, 2).numpy(), flat, atol=ATOL, rtol=RTOL)
    assert sae.encode(torch.from_numpy(x), torch.tensor([], dtype=torch.long)).shape == (4, 10, 0)


def test_dtype_and_device_arguments(tmp_path: Path) -> None:
    w = weights(21)
    folder = write_saelens(tmp_path / "sae", saelens_cfg("standard"), w)
    sae = load_sae(folder, dtype="float64", device="cpu")
    assert sae.dtype == torch.float64 and sae.device == torch.device("cpu")
    x = tokens()
    out = sae.encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        out, relu((x.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]), atol=1e-12
    )
    with pytest.raises(InvalidInputError, match="unknown dtype"):
        load_sae(folder, dtype="float99")
    with pytest.raises(InvalidInputError, match="floating-point"):
        load_sae(folder, dtype=torch.int32)


def test_importing_the_module_does_not_load_torch() -> None:
    code = (
        "import sys, neuron_explainer.models, neuron_explainer.models.sae\n"
        "print(sorted(m for m in ('torch', 'safetensors', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" not in out.stdout and "safetensors" not in out.stdout


# -- errors ----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        load_sae(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="no SAE found"):
        load_sae(tmp_path)


def test_cfg_without_weights(tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps(saelens_cfg("standard")))
    with pytest.raises(FormatError, match=r"no weights beside it.*sae_weights\.safetensors"):
        load_sae(tmp_path)


def test_missing_tensor(tmp_path: Path) -> None:
    w = weights(22)
    folder = write_saelens(tmp_path / "sae", saelens_cfg("jumprelu"), w)  # no threshold
    with pytest.raises(FormatError, match="no 'threshold' tensor"):
        load_sae(folder)
    params = tmp_path / "gs" / "params.npz"
    params.parent.mkdir()
    np.savez(params, **w)
    with pytest.raises(FormatError, match="no 'threshold' tensor"):
        load_sae(params)


def test_wrong_shapes(tmp_path: Path) -> None:
    w = weights(23)
    transposed = {**w, "W_enc": np.ascontiguousarray(w["W_enc"].T)}
    folder = write_saelens(tmp_path / "a", saelens_cfg("standard"), transposed)
    with pytest.raises(FormatError, match=r"W_enc in .* has shape \[64, 24\]; expected \[24, 64\]"):
        load_sae(folder)
    bad_bias = write_saelens(
        tmp_path / "b", saelens_cfg("standard"), {**w, "b_enc": w["b_enc"][:10]}
    )
    with pytest.raises(FormatError, match=r"b_enc .* expected \[64\]"):
        load_sae(bad_bias)
    # sparsify's encoder.weight is [d_sae, d_in]; one written as [d_in, d_sae] is refused
    sparsify = tmp_path / "layers.0"
    write_sparsify(sparsify, sparsify_cfg(), w)
    save_file(
        {"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "b_dec": w["b_dec"]},
        sparsify / "sae.safetensors",
    )
    with pytest.raises(FormatError, match=r"encoder.weight .* expected \[64, 24\]"):
        load_sae(sparsify)


def test_unknown_activation_or_architecture(tmp_path: Path) -> None:
    w = weights(24)
    with pytest.raises(
        FormatError, match="unknown or unsupported SAELens architecture 'batchtopk'"
    ):
        load_sae(write_saelens(tmp_path / "a", saelens_cfg("batchtopk", k=4), w))
    old = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "tanh-relu",
        "hook_point": "blocks.0.hook_resid_pre",
    }
    with pytest.raises(FormatError, match="unknown activation_fn 'tanh-relu'"):
        load_sae(write_saelens(tmp_path / "b", old, w))
    with pytest.raises(FormatError, match="unknown activation 'softmax'"):
        load_sae(write_sparsify(tmp_path / "layers.1", sparsify_cfg(activation="softmax"), w))
    with pytest.raises(FormatError, match="unknown normalize_activations 'whiten'"):
        load_sae(
            write_saelens(
                tmp_path / "c", saelens_cfg("standard", normalize_activations="whiten"), w
            )
        )
    with pytest.raises(FormatError, match="signed sparse coders"):
        load_sae(write_sparsify(tmp_path / "layers.2", sparsify_cfg(signed=True), w))


def test_bad_config_values(tmp_path: Path) -> None:
    w = weights(25)
    with pytest.raises(FormatError, match="'d_in' must be a positive integer"):
        load_sae(write_saelens(tmp_path / "a", {**saelens_cfg("standard"), "d_in": "24"}, w))
    with pytest.raises(FormatError, match="topk needs an integer k"):
        load_sae(write_saelens(tmp_path / "b", saelens_cfg("topk"), w))
    with pytest.raises(FormatError, match="groupmax needs d_sae=64 to be a multiple of k=5"):
        load_sae(write_sparsify(tmp_path / "layers.3", sparsify_cfg(activation="groupmax", k=5), w))
    with pytest.raises(FormatError, match="apply_b_dec_to_input must be false for a transcoder"):
        load_sae(
            write_saelens(tmp_path / "c", saelens_cfg("transcoder", apply_b_dec_to_input=True), w)
        )
    with pytest.raises(InvalidInputError, match=r"SAE for hook 'blocks\.6\.hook_resid_pre', not"):
        load_sae(
            write_saelens(tmp_path / "d", saelens_cfg("standard"), w),
            hookpoint="blocks.7.hook_resid_pre",
        )


def test_malformed_files(tmp_path: Path) -> None:
    folder = write_saelens(tmp_path / "a", saelens_cfg("standard"), weights(26))
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(FormatError, match=r"cannot read .*cfg\.json as JSON"):
        load_sae(folder)
    (folder / "cfg.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="must hold a JSON object"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps(saelens_cfg("standard")))
    (folder / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(FormatError, match=r"cannot read .* as safetensors"):
        load_sae(folder)
    params = tmp_path / "gs" / "params.npz"
    params.parent.mkdir()
    params.write_bytes(b"not an npz")
    with pytest.raises(FormatError, match=r"cannot read .* as a \.npz archive"):
        load_sae(params)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="is not an SAE file"):
        load_sae(folder / "notes.txt")


def test_bad_encode_arguments(tmp_path: Path) -> None:
    sae = load_sae(write_saelens(tmp_path / "sae", saelens_cfg("standard"), weights(27)))
    with pytest.raises(
        InvalidInputError, match=r"latent index out of range: this SAE has 64 latents"
    ):
        sae.encode(torch.zeros(2, D_IN), [0, 64])
    with pytest.raises(InvalidInputError, match=r"latent index out of range"):
        sae.encode(torch.zeros(2, D_IN), [-1])
    with pytest.raises(
        InvalidInputError,
        match=r"x has shape \[2, 23\]; this SAE reads \[\.\.\., d_in\] with d_in=24",
    ):
        sae.encode(torch.zeros(2, D_IN - 1))
    with pytest.raises(InvalidInputError, match="latents must be integer indices"):
        sae.encode(torch.zeros(2, D_IN), ["a"])  # type: ignore[list-item]
