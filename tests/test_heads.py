"""Attention heads as units on tiny random models: each head's write to the residual stream and its
norm against hand computations from the output projection's weight, and the most-attended source
token against the model's own attention probabilities (grouped-query and sliding-window
attention included).

Tolerances: float64 models, so writes and norms agree with the hand computations to 1e-9
(absolute and relative; the norm goes through a Gram matrix, the hand computation does not);
float32 norms agree with the float64 ones to rtol 1e-4, atol 1e-5. Source positions must be equal,
their probabilities within 1e-12.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_models import ARCHES, batch, tiny  # noqa: E402

from neuron_explainer import InvalidInputError  # noqa: E402
from neuron_explainer.models.heads import (  # noqa: E402
    AttendedSources,
    HeadGeometry,
    attention_probabilities,
    head_activations,
    head_geometry,
    head_write_norms,
    head_writes,
    top_source_tokens,
)
from neuron_explainer.models.hook_sites import capture_sites, module_at  # noqa: E402

TOL = {"atol": 1e-9, "rtol": 1e-9}


def capture_heads(model: Any, layer: int) -> tuple[HeadGeometry, Any, Any]:
    """The layer's geometry, its ``attn.hook_z`` and its output projection's output."""
    geometry = head_geometry(model, layer)
    z_name = f"blocks.{layer}.attn.hook_z"
    got = capture_sites(model, *batch(), [z_name, geometry.o_proj])  # o_proj by module path
    return geometry, got[z_name], got[geometry.o_proj]


def by_hand(model: Any, geometry: HeadGeometry, z: Any, head: int) -> Any:
    """Head ``head``'s write: the projection applied to ``z`` with every other head zeroed,
    minus the projection's bias (so the layout is the module's own, not the library's)."""
    only = torch.zeros_like(z)
    only[..., head, :] = z[..., head, :]
    o_proj = module_at(model, geometry.o_proj)
    bias = geometry.bias(model)
    with torch.inference_mode():
        out = o_proj(only.flatten(-2))
    return out if bias is None else out - bias


@pytest.mark.parametrize("model_type", ARCHES)
def test_head_writes_sum_to_the_output_projection(model_type: str) -> None:
    model = tiny(model_type)
    geometry, z, projected = capture_heads(model, 1)
    weight, bias = geometry.weight(model).detach(), geometry.bias(model)
    writes = head_writes(z, weight, range(4), 4, 8, geometry.layout)
    assert writes.shape == (2, 9, 4, 32)
    total = writes.sum(dim=-2) + (0.0 if bias is None else bias)
    torch.testing.assert_close(total, projected, **TOL)
    for head in range(4):
        torch.testing.assert_close(writes[..., head, :], by_hand(model, geometry, z, head), **TOL)
    # z flattened ([..., n_heads * d_head]) is accepted as well
    flat = head_writes(z.flatten(-2), weight, [3], 4, 8, geometry.layout)
    torch.testing.assert_close(flat[..., 0, :], writes[..., 3, :], **TOL)


@pytest.mark.parametrize("model_type", ARCHES)
def test_head_write_norms_of_some_heads(model_type: str) -> None:
    model = tiny(model_type)
    geometry, z, _ = capture_heads(model, 1)
    weight = geometry.weight(model).detach()
    norms = head_write_norms(z, weight, [2, 0], 4, 8, geometry.layout)
    assert norms.shape == (2, 9, 2)
    assert norms.dtype == torch.float64
    # a manual einsum over the full projection input, with W_O sliced by hand
    flat = z.flatten(-2)
    for column, head in enumerate([2, 0]):
        cols = slice(8 * head, 8 * head + 8)
        w_h = weight[cols, :] if geometry.layout == "in_out" else weight[:, cols].T
        manual = torch.einsum("bti,im->btm", flat[..., cols], w_h).norm(dim=-1)
        torch.testing.assert_close(norms[..., column], manual, **TOL)
        hand = by_hand(model, geometry, z, head).norm(dim=-1)
        torch.testing.assert_close(norms[..., column], hand, **TOL)
    ids, mask = batch()
    torch.testing.assert_close(head_activations(model, ids, mask, 1, [2, 0]), norms, **TOL)


def test_float32_norms_agree_with_float64() -> None:
    model = tiny("llama")
    geometry, z, _ = capture_heads(model, 0)
    weight = geometry.weight(model).detach()
    exact = head_write_norms(z, weight, range(4), 4, 8, "out_in")
    single = head_write_norms(z.float(), weight.float(), range(4), 4, 8, "out_in")
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-5)


def test_geometry_per_architecture() -> None:
    llama, gpt2, gemma = tiny("llama"), tiny("gpt2"), tiny("gemma3_text")
    assert head_geometry(llama, 1) == HeadGeometry(
        1, 4, 2, 8, "model.layers.1.self_attn.o_proj", "out_in"
    )
    assert head_geometry(llama, 1).bias(llama) is None
    gpt2_heads = head_geometry(gpt2, 0)
    assert (gpt2_heads.o_proj, gpt2_heads.layout) == ("transformer.h.0.attn.c_proj", "in_out")
    assert gpt2_heads.weight(gpt2).shape == (32, 32)
    assert gpt2_heads.bias(gpt2) is not None
    assert head_geometry(gemma, 0).n_kv_heads == 2


# (model type, layer): GQA for llama / qwen2 / gemma3_text; gemma's layer 0 slides (window 3).
CASES = [("gpt2", 1), ("gpt_neox", 0), ("llama", 1), ("qwen2", 0), ("gemma3_text", 0)]
CASES += [("gemma3_text", 1)]  # in a padded float64 batch, this layer's window 1 would be NaN


@pytest.mark.parametrize(("model_type", "layer"), CASES)
def test_top_source_tokens_are_the_argmax_of_the_attention(model_type: str, layer: int) -> None:
    model = tiny(model_type)
    assert model.config._attn_implementation == "sdpa"
    ids, mask = batch()
    positions = [[0, 4, 8], [5, 2]]  # window 1 is padded from position 6 on
    found = top_source_tokens(model, ids, mask, layer, [3, 1], positions)
    assert model.config._attn_implementation == "sdpa"  # restored
    model.set_attn_implementation("eager")
    for window, sources in enumerate(found):
        # the reference: the window's real tokens alone (right padding dropped), eager attention
        with torch.inference_mode():
            alone = ids[window : window + 1, : int(mask[window].sum())]
            out = model(input_ids=alone, output_attentions=True)
        probs = out.attentions[layer][0]  # [n_heads (query heads), query, key]
        assert probs.shape[:2] == (4, alone.shape[1])
        assert isinstance(sources, AttendedSources)
        assert sources.positions == tuple(positions[window])
        assert sources.heads == (3, 1)
        for i, target in enumerate(positions[window]):
            for j, head in enumerate((3, 1)):
                row = probs[head, target]
                assert sources.sources[i][j] == int(row.argmax())
                assert sources.weights[i][j] == pytest.approx(float(row.max()), abs=1e-12)
                assert sources.sources[i][j] <= target  # causal
                if model_type == "gemma3_text" and layer == 0:
                    assert sources.sources[i][j] > target - 3  # inside the sliding window
    probabilities = attention_probabilities(model, ids[1:, :6], None, layer)
    torch.testing.assert_close(probabilities[0], probs, atol=1e-12, rtol=1e-12)


def test_sources_of_grouped_query_heads_differ_per_query_head() -> None:
    model = tiny("llama")
    ids, mask = batch(length=12)
    found = top_source_tokens(model, ids[:1], mask[:1], 0, range(4), [[11]])[0]
    probs = attention_probabilities(model, ids[:1], mask[:1], 0)
    # heads 0 and 1 share a key/value head but not their queries, so their patterns differ
    assert not torch.allclose(probs[0, 0], probs[0, 1])
    assert found.sources[0] == tuple(int(probs[0, h, 11].argmax()) for h in range(4))


def test_errors_name_the_problem() -> None:
    model = tiny("llama")
    ids, mask = batch()
    z = torch.zeros(2, 9, 32, dtype=torch.float64)
    weight = head_geometry(model, 0).weight(model).detach()
    with pytest.raises(InvalidInputError, match=r"head\(s\) \[4\] out of range: .*heads 0\.\.3"):
        head_write_norms(z, weight, [1, 4], 4, 8, "out_in")
    with pytest.raises(InvalidInputError, match="give at least one head"):
        head_writes(z, weight, [], 4, 8, "out_in")
    with pytest.raises(InvalidInputError, match="layout must be 'in_out' or 'out_in'"):
        head_writes(z, weight, [0], 4, 8, "linear")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"its dimension 1 must be 24"):
        head_writes(torch.zeros(2, 24), weight, [0], 4, 6, "out_in")
    with pytest.raises(InvalidInputError, match=r"z of shape \(2, 9, 30\) is neither"):
        head_writes(torch.zeros(2, 9, 30), weight, [0], 4, 8, "out_in")
    with pytest.raises(InvalidInputError, match="layer 2 out of range"):
        head_geometry(model, 2)
    with pytest.raises(InvalidInputError, match="give one list of target positions for each"):
        top_source_tokens(model, ids, mask, 0, [0], [[1]])
    with pytest.raises(InvalidInputError, match=r"window 1: target position\(s\) \[7\] are not"):
        top_source_tokens(model, ids, mask, 0, [0], [[1], [7]])  # 7 is padding
    with pytest.raises(InvalidInputError, match=r"window 0: target position\(s\) \[9\]"):
        top_source_tokens(model, ids, None, 0, [0], [[9], [0]])
    with pytest.raises(InvalidInputError, match="out of range"):
        top_source_tokens(model, ids, mask, 0, [4], [[1], [1]])
    left = torch.ones_like(ids)
    left[:, :2] = 0  # left padding: HF's eager float64 attention gives those rows NaN
    with pytest.raises(InvalidInputError, match="window 0: the attention probabilities are NaN"):
        top_source_tokens(model, ids, left, 1, [0], [[5], [6]])
    assert model.config._attn_implementation == "sdpa"
