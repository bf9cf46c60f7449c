"""TransformerLens / sparsify hook names resolved to HF modules, checked on tiny random models of
every supported architecture against the model's own hidden states and hand computations.

Tolerance: the models are float64 and the comparisons redo the model's own operations, so
values agree to 1e-10 (absolute and relative); most are bit-identical.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_models import ARCHES, batch, tiny  # noqa: E402

from neuron_explainer import InvalidInputError  # noqa: E402
from neuron_explainer.models.hook_sites import (  # noqa: E402
    TL_HOOKS,
    HookSite,
    capture_sites,
    hooked,
    module_at,
    resolve,
    supported_names,
)
from neuron_explainer.subjects.capture import ActivationCapture  # noqa: E402

TOL = {"atol": 1e-10, "rtol": 1e-10}
FINAL_NORM = {
    "gpt2": "transformer.ln_f",
    "gpt_neox": "gpt_neox.final_layer_norm",
}
BASE = {"gpt2": "h", "gpt_neox": "layers"}  # sparsify's block list under model.base_model
ATTN = {"gpt2": "attn", "gpt_neox": "attention"}


def close(actual: Any, expected: Any) -> None:
    torch.testing.assert_close(actual, expected, **TOL)


def names_for(model_type: str, layer: int) -> list[str]:
    parallel = model_type == "gpt_neox"
    return [
        f"blocks.{layer}.{hook}" for hook in TL_HOOKS if not (parallel and hook == "hook_resid_mid")
    ]


def block_module(model: Any, layer: int, sub: str) -> Any:
    path = resolve(model, f"blocks.{layer}.hook_resid_pre").module
    return module_at(model, f"{path}.{sub}" if sub else path)


@pytest.mark.parametrize("model_type", ARCHES)
def test_residual_sites_match_the_hidden_states(model_type: str) -> None:
    model = tiny(model_type)
    ids, mask = batch()
    names = [n for layer in (0, 1) for n in names_for(model_type, layer)]
    got = capture_sites(model, ids, mask, names)
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hidden) == 3
    close(got["blocks.0.hook_resid_pre"], hidden[0])
    close(got["blocks.1.hook_resid_pre"], hidden[1])
    close(got["blocks.0.hook_resid_post"], hidden[1])
    # HF's last hidden state has the final norm applied; resid_post of the last block has not.
    last = got["blocks.1.hook_resid_post"]
    assert not torch.allclose(last, hidden[2])
    final_norm = module_at(model, FINAL_NORM.get(model_type, "model.norm"))
    with torch.inference_mode():
        close(final_norm(last), hidden[2])
    for layer in (0, 1):
        pre, post = got[f"blocks.{layer}.hook_resid_pre"], got[f"blocks.{layer}.hook_resid_post"]
        attn, mlp = got[f"blocks.{layer}.hook_attn_out"], got[f"blocks.{layer}.hook_mlp_out"]
        if model_type == "gpt_neox":  # parallel attention and MLP: no resid_mid
            close(post, pre + attn + mlp)
            close(got[f"blocks.{layer}.hook_mlp_in"], pre)
            continue
        # attn_out and mlp_out are what is added to the residual (after Gemma 3's post-norms).
        mid = got[f"blocks.{layer}.hook_resid_mid"]
        close(mid, pre + attn)
        close(post, mid + mlp)
        close(got[f"blocks.{layer}.hook_mlp_in"], mid)  # TransformerLens: not normalised


@pytest.mark.parametrize("model_type", ARCHES)
def test_inner_sites_match_hand_computations(model_type: str) -> None:
    model = tiny(model_type)
    ids, mask = batch()
    base = BASE.get(model_type, "layers")
    attn = ATTN.get(model_type, "self_attn")
    sparsify = [f"{base}.1", f"{base}.1.mlp", f"{base}.1.mlp:input", f"{base}.1.{attn}"]
    got = capture_sites(model, ids, mask, [*names_for(model_type, 1), *sparsify])
    mlp_input = got["blocks.1.ln2.hook_normalized"]
    with torch.inference_mode():
        mlp = block_module(model, 1, "mlp")
        gated = hasattr(mlp, "gate_proj")
        hidden = mlp.up_proj(mlp_input) if gated else None
        act = mlp.act_fn if gated else mlp.act
        expected_post = act(got["blocks.1.mlp.hook_pre"]) * (hidden if gated else 1.0)
        close(got["blocks.1.mlp.hook_post"], expected_post)
        close(mlp(mlp_input), got[f"{base}.1.mlp"])
        ln1 = block_module(model, 1, {"gpt2": "ln_1"}.get(model_type, "input_layernorm"))
        close(got["blocks.1.ln1.hook_normalized"], ln1(got["blocks.1.hook_resid_pre"]))
        if model_type != "gpt_neox":
            norm = {"gpt2": "ln_2", "gemma3_text": "pre_feedforward_layernorm"}
            ln2 = block_module(model, 1, norm.get(model_type, "post_attention_layernorm"))
            close(mlp_input, ln2(got["blocks.1.hook_resid_mid"]))
        # hook_z is the output projection's input split per head, head-major.
        z = got["blocks.1.attn.hook_z"]
        assert z.shape == (2, 9, 4, 8)
        o_proj = module_at(model, resolve(model, "blocks.1.attn.hook_z").module)
        raw_attn = got[f"{base}.1.{attn}"]  # the attention module's own output
        close(o_proj(z.flatten(-2)), raw_attn)
        if model_type == "gemma3_text":  # TransformerLens' attn_out/mlp_out: after the post-norms
            post_attn = block_module(model, 1, "post_attention_layernorm")
            post_ff = block_module(model, 1, "post_feedforward_layernorm")
            close(got["blocks.1.hook_attn_out"], post_attn(raw_attn))
            close(got["blocks.1.hook_mlp_out"], post_ff(got[f"{base}.1.mlp"]))
            assert not torch.allclose(got["blocks.1.hook_mlp_out"], got[f"{base}.1.mlp"])
        else:
            close(got["blocks.1.hook_attn_out"], raw_attn)
            close(got["blocks.1.hook_mlp_out"], got[f"{base}.1.mlp"])
    close(got[f"{base}.1"], got["blocks.1.hook_resid_post"])
    close(got[f"{base}.1.mlp:input"], mlp_input)


@pytest.mark.parametrize("model_type", ARCHES)
def test_mlp_hook_post_is_the_neuron_site_captured_today(model_type: str) -> None:
    model = tiny(model_type)
    ids, mask = batch()
    got = capture_sites(model, ids, mask, ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"])
    today = ActivationCapture(model, [0, 1])(ids, mask)
    assert torch.equal(got["blocks.0.mlp.hook_post"], today[0])
    assert torch.equal(got["blocks.1.mlp.hook_post"], today[1])


def test_sequential_gpt_neox_has_a_resid_mid() -> None:
    model = tiny("gpt_neox", use_parallel_residual=False)
    ids, mask = batch()
    got = capture_sites(model, ids, mask, names_for("llama", 0))  # every hook, resid_mid too
    pre, mid = got["blocks.0.hook_resid_pre"], got["blocks.0.hook_resid_mid"]
    close(mid, pre + got["blocks.0.hook_attn_out"])
    close(got["blocks.0.hook_resid_post"], mid + got["blocks.0.hook_mlp_out"])
    close(got["blocks.0.hook_mlp_in"], mid)


def test_resolved_paths_per_architecture() -> None:
    gpt2, llama, gemma = tiny("gpt2"), tiny("llama"), tiny("gemma3_text")
    assert resolve(gpt2, "blocks.1.hook_resid_mid") == HookSite(
        "blocks.1.hook_resid_mid", 1, "transformer.h.1.ln_2", "input"
    )
    assert resolve(gpt2, "blocks.0.attn.hook_z") == HookSite(
        "blocks.0.attn.hook_z", 0, "transformer.h.0.attn.c_proj", "input", heads=(4, 8)
    )
    assert resolve(llama, "blocks.1.hook_resid_mid").module == (
        "model.layers.1.post_attention_layernorm"
    )
    assert resolve(llama, "layers.1.self_attn").pick == "first"
    assert resolve(llama, "model.layers.1.mlp").module == "model.layers.1.mlp"  # from the root
    assert resolve(gemma, "blocks.1.hook_attn_out").module == (
        "model.layers.1.post_attention_layernorm"
    )
    assert resolve(gemma, "blocks.1.hook_mlp_out").hook_point == (
        "model.layers.1.post_feedforward_layernorm:output"
    )
    assert resolve(gpt2, "h.1.mlp:input") == HookSite(
        "h.1.mlp:input", 1, "transformer.h.1.mlp", "input"
    )


def test_multimodal_gemma3_reads_its_language_model() -> None:
    text = transformers.Gemma3TextConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=101,
    )
    vision = transformers.SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = transformers.Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=1
    )
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    site = resolve(model, "blocks.1.hook_mlp_out")
    assert site.module == "model.language_model.layers.1.post_feedforward_layernorm"
    assert resolve(model, "language_model.layers.1.mlp").module == (
        "model.language_model.layers.1.mlp"
    )
    assert resolve(model, "blocks.0.attn.hook_z").heads == (4, 8)
    ids, mask = batch()
    got = capture_sites(model, ids, mask, ["blocks.1.hook_resid_post"])
    assert got["blocks.1.hook_resid_post"].shape == (2, 9, 32)


def hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_after_success_and_after_a_failure() -> None:
    model = tiny("llama")
    ids, mask = batch()
    capture_sites(model, ids, mask, ["blocks.1.hook_resid_mid", "blocks.0.attn.hook_z"])
    assert hook_count(model) == 0
    with pytest.raises(IndexError):  # a token id outside the vocabulary fails the embedding
        capture_sites(model, ids + 1000, mask, ["blocks.1.hook_resid_post"])
    assert hook_count(model) == 0

    def fail(site: HookSite, tensor: Any) -> None:
        raise RuntimeError("sink failed")

    with (
        pytest.raises(RuntimeError, match="sink failed"),
        hooked(model, [resolve(model, "blocks.0.hook_mlp_out")], fail),
    ):
        model(input_ids=ids)
    assert hook_count(model) == 0


def test_the_forward_stops_once_every_site_is_read() -> None:
    model = tiny("gpt2")
    ids, mask = batch()
    reached: list[str] = []
    handle = module_at(model, "transformer.h.1").register_forward_pre_hook(
        lambda module, args: reached.append("block 1")
    )
    try:
        got = capture_sites(model, ids, mask, ["blocks.0.hook_mlp_out", "h.0.attn"])
    finally:
        handle.remove()
    assert reached == []
    assert set(got) == {"blocks.0.hook_mlp_out", "h.0.attn"}


def test_errors_name_the_problem() -> None:
    llama, neox = tiny("llama"), tiny("gpt_neox")
    with pytest.raises(
        InvalidInputError, match=r"unknown hook site 'blocks\.0\.hook_q'.*supported"
    ):
        resolve(llama, "blocks.0.hook_q")
    with pytest.raises(InvalidInputError, match=r"blocks\.\{L\}\.attn\.hook_z"):
        resolve(llama, "embed.hook_embed")  # the message lists the supported names
    with pytest.raises(
        InvalidInputError, match=r"layer 2 out of range: the model has layers 0\.\.1"
    ):
        resolve(llama, "blocks.2.hook_resid_post")
    with pytest.raises(InvalidInputError, match="layer 5 out of range"):
        resolve(llama, "layers.5.mlp")
    with pytest.raises(InvalidInputError, match=r"no module at 'model\.layers\.1\.nope'"):
        resolve(llama, "layers.1.nope")
    with pytest.raises(InvalidInputError, match="no hook sites are known for model_type 'bert'"):
        resolve(SimpleNamespace(config=SimpleNamespace(model_type="bert")), "blocks.0.hook_z")
    with pytest.raises(InvalidInputError, match="hook_resid_mid is not defined for gpt_neox"):
        resolve(neox, "blocks.0.hook_resid_mid")
    with pytest.raises(InvalidInputError, match="at least one hook site"):
        capture_sites(llama, *batch(), [])
    site = HookSite("x", 0, "model.layers.0.mlp", "output", heads=(3, 5))
    with pytest.raises(InvalidInputError, match="not n_heads \\* d_head = 3 \\* 5"):
        site.select(torch.zeros(2, 7))
    with pytest.raises(InvalidInputError, match="expected a tensor at"):
        site.select((torch.zeros(2, 15),))  # pick="tensor": a tuple is not accepted
    assert any("sparsify" in name for name in supported_names())
