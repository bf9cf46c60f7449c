"""Tiny random causal LMs of every supported architecture, built offline, for exact comparisons.

``from tiny_models import tiny`` (tests/ is on the import path). Each has 2 blocks, 4 query heads
of size 8 (grouped-query attention with 2 key/value heads where the architecture has it), float64
weights, and is in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

VOCAB = 101
ARCHES = ["gpt2", "gpt_neox", "llama", "qwen2", "gemma3_text"]
SHAPE = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "vocab_size": VOCAB,
}


def tiny(model_type: str, *, seed: int = 0, **overrides: Any) -> Any:
    """A random tiny causal LM of ``model_type`` (``overrides`` go to its config)."""
    torch.manual_seed(seed)
    if model_type == "gpt2":
        config: Any = transformers.GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=64,
            vocab_size=VOCAB,
            bos_token_id=0,
            eos_token_id=0,
            **overrides,
        )
    elif model_type == "gpt_neox":
        config = transformers.GPTNeoXConfig(**SHAPE, **overrides)
    elif model_type == "llama":
        config = transformers.LlamaConfig(**SHAPE, num_key_value_heads=2, **overrides)
    elif model_type == "qwen2":
        config = transformers.Qwen2Config(**SHAPE, num_key_value_heads=2, **overrides)
    else:
        config = transformers.Gemma3TextConfig(
            **SHAPE,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=3,
            layer_types=["sliding_attention", "full_attention"],
            **overrides,
        )
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float64).eval()
    assert model.config.model_type == model_type
    return model


def batch(seed: int = 1, length: int = 9) -> tuple[Any, Any]:
    """Two windows of ``length`` token ids, the second right-padded by 3, and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return ids, mask
