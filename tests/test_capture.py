"""Hooked MLP capture on small randomly initialised models of every supported architecture."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from neuron_explainer import InvalidInputError  # noqa: E402
from neuron_explainer.models.architectures import SITES, site_for  # noqa: E402
from neuron_explainer.subjects.capture import ActivationCapture  # noqa: E402

VOCAB = 101
SMALL = {
    "num_hidden_layers": 3,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 2,
    "vocab_size": VOCAB,
}


def tiny(model_type: str) -> Any:
    """A random tiny causal LM of ``model_type`` in float64, for exact comparisons."""
    torch.manual_seed(0)
    if model_type == "gpt2":
        config = transformers.GPT2Config(
            n_layer=3,
            n_embd=32,
            n_head=2,
            n_positions=64,
            vocab_size=VOCAB,
            bos_token_id=0,
            eos_token_id=0,
        )
    elif model_type == "llama":
        config = transformers.LlamaConfig(**SMALL, num_key_value_heads=2)
    elif model_type == "qwen2":
        config = transformers.Qwen2Config(**SMALL, num_key_value_heads=1)
    elif model_type == "gemma3_text":
        config = transformers.Gemma3TextConfig(**SMALL, num_key_value_heads=1, head_dim=16)
    else:
        config = transformers.GPTNeoXConfig(**SMALL)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float64).eval()
    assert model.config.model_type == model_type
    return model


ARCHES = ["gpt2", "llama", "qwen2", "gemma3_text", "gpt_neox"]


def blocks(model: Any) -> Any:
    site = site_for(model)
    obj = model
    for part in site.layers.split("."):
        obj = getattr(obj, part)
    return obj


def hand_computed(model: Any, layer: int, ids: Any) -> Any:
    """The MLP hidden activation computed by hand from the residual entering the MLP."""
    block = blocks(model)[layer]
    seen: dict[str, Any] = {}
    # The norm whose output feeds the MLP (Gemma 3 has a separate pre-feed-forward norm).
    norm_name = {"gpt2": "ln_2", "gemma3_text": "pre_feedforward_layernorm"}.get(
        model.config.model_type, "post_attention_layernorm"
    )
    norm = getattr(block, norm_name)
    handle = norm.register_forward_pre_hook(lambda m, args: seen.setdefault("h", args[0]))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    x = norm(seen["h"])
    mlp = block.mlp
    if model.config.model_type == "gpt2":
        pre = mlp.c_fc(x)  # gelu_new, written out
        return 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre**3)))
    if model.config.model_type == "gpt_neox":
        return mlp.act(mlp.dense_h_to_4h(x))
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


@pytest.mark.parametrize("model_type", ARCHES)
def test_capture_equals_hand_computation(model_type: str) -> None:
    model = tiny(model_type)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    captured = ActivationCapture(model, [0, 2])(ids, torch.ones_like(ids))
    assert sorted(captured) == [0, 2]
    for layer in (0, 2):
        expected = hand_computed(model, layer, ids)
        assert captured[layer].shape == (2, 9, 48 if model_type != "gpt2" else 128)
        torch.testing.assert_close(captured[layer], expected, rtol=0, atol=1e-12)
    if model_type != "gpt2":  # gated MLPs keep negative values
        assert (captured[2] < 0).any()


@pytest.mark.parametrize("model_type", ARCHES)
def test_batched_equals_unbatched_with_right_padding(model_type: str) -> None:
    model = tiny(model_type)
    gen = torch.Generator().manual_seed(2)
    lengths = [9, 4, 6]
    rows = [torch.randint(1, VOCAB, (n,), generator=gen) for n in lengths]
    batch = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)], mask[i, : len(row)] = row, 1
    capture = ActivationCapture(model, [1])
    together = capture(batch, mask)[1]
    for i, row in enumerate(rows):
        alone = capture(row[None], torch.ones(1, len(row), dtype=torch.long))[1][0]
        torch.testing.assert_close(together[i, : len(row)], alone, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("model_type", ARCHES)
def test_on_layer_streams_each_layer_and_padding_writes_do_not_leak(model_type: str) -> None:
    model = tiny(model_type)
    gen = torch.Generator().manual_seed(3)
    batch = torch.randint(1, VOCAB, (2, 9), generator=gen)
    mask = torch.ones_like(batch)
    mask[1, 5:] = 0  # row 1 is 5 tokens long, right-padded
    capture = ActivationCapture(model, [0, 1, 2])
    kept = capture(batch, mask)
    seen: list[int] = []

    def zero_padding(layer: int, acts: Any) -> None:
        seen.append(layer)
        # The zeros written at padded positions of earlier layers changed no real position.
        torch.testing.assert_close(acts[0], kept[layer][0], rtol=0, atol=0)
        torch.testing.assert_close(acts[1, :5], kept[layer][1, :5], rtol=0, atol=0)
        if layer < 2:
            assert not torch.equal(acts[1, 5:], torch.zeros_like(acts[1, 5:]))
        acts[1, 5:] = 0.0  # what the collector does; the model reads this tensor on

    assert capture(batch, mask, on_layer=zero_padding) == {}
    assert seen == [0, 1, 2]


def test_an_error_in_on_layer_ends_the_forward_and_removes_the_hooks() -> None:
    model = tiny("gpt2")
    capture = ActivationCapture(model, [0, 2])
    seen: list[int] = []

    def fail(layer: int, acts: Any) -> None:
        seen.append(layer)
        raise KeyError("fold failed")

    with pytest.raises(KeyError, match="fold failed"):
        capture(torch.randint(0, VOCAB, (1, 4)), on_layer=fail)
    assert seen == [0]
    assert hook_count(model) == 0


def hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_even_when_the_forward_fails() -> None:
    model = tiny("gpt2")
    capture = ActivationCapture(model, [0, 1])
    ids = torch.randint(0, VOCAB, (1, 5))
    capture(ids)
    assert hook_count(model) == 0
    with pytest.raises(IndexError):
        capture(torch.full((1, 5), VOCAB + 50))  # out-of-vocabulary id: embedding fails
    assert hook_count(model) == 0


def test_forward_stops_after_the_last_needed_layer() -> None:
    model = tiny("llama")
    ran: list[int] = []
    handles = [
        block.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
        for i, block in enumerate(model.model.layers)
    ]
    try:
        ActivationCapture(model, [1])(torch.randint(0, VOCAB, (1, 4)))
        assert ran == [0, 1]
        ran.clear()
        model(input_ids=torch.randint(0, VOCAB, (1, 4)))
        assert ran == [0, 1, 2]
    finally:
        for handle in handles:
            handle.remove()


def test_runs_under_inference_mode_without_grad() -> None:
    model = tiny("qwen2")
    out = ActivationCapture(model, [0])(torch.randint(0, VOCAB, (1, 3)))[0]
    assert out.is_inference() and not out.requires_grad


def test_bad_layers_and_unknown_architectures_are_clear() -> None:
    model = tiny("gpt2")
    with pytest.raises(InvalidInputError, match=r"layer\(s\) \[3\] out of range.*0\.\.2"):
        ActivationCapture(model, [0, 3])
    with pytest.raises(InvalidInputError, match="at least one layer"):
        ActivationCapture(model, [])
    config = transformers.BertConfig(
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=48,
        vocab_size=VOCAB,
    )
    bert = transformers.BertModel(config)
    with pytest.raises(InvalidInputError, match=r"model_type 'bert'.*To add it.*SITES"):
        ActivationCapture(bert, [0])
    assert {"gpt2", "llama", "qwen2", "gemma3_text", "gpt_neox"} <= set(SITES)
