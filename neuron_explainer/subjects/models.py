"""Load a Hugging Face causal LM (and its tokenizer) for capture.

``gpt2``, ``gpt2-medium``, ``gpt2-large`` and ``gpt2-xl`` resolve to their hub repositories
(``openai-community/...``); any other string is a local directory, a ``.gguf`` file, or a hub
id. A model object can be passed directly with its tokenizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_explainer.errors import InvalidInputError

__all__ = ["GPT2_HUB_IDS", "LoadedModel", "hub_id", "load_model"]

GPT2_HUB_IDS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
"""Short GPT-2 names → Hugging Face hub repositories."""


def hub_id(name: str) -> str:
    """The hub repository for ``name`` (GPT-2 short names expanded; others unchanged)."""
    return GPT2_HUB_IDS.get(name, name)


@dataclass
class LoadedModel:
    """A model ready for capture, with what provenance records about it."""

    model: Any
    tokenizer: Any
    name: str
    dtype: str
    device: str


def _torch_dtype(dtype: str) -> Any:
    import torch

    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise InvalidInputError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
    return value


def load_model(
    model: str | os.PathLike[str] | Any,
    *,
    tokenizer: Any = None,
    dtype: str = "float32",
    device: str | None = None,
) -> LoadedModel:
    """Load ``model`` for capture, in ``dtype`` on ``device`` (default: CUDA if present).

    Raises:
        InvalidInputError: the model or tokenizer cannot be loaded (the message says from where
            it was tried), a model object without a tokenizer, or an unknown dtype.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded: Any
    if isinstance(model, str | os.PathLike):
        name = os.fspath(model)
        path = Path(name)
        kwargs: dict[str, Any] = {}
        if path.is_file() and path.suffix == ".gguf":
            source, kwargs["gguf_file"] = str(path.parent), path.name
        elif path.exists():
            source = str(path)
        else:
            source = hub_id(name)
        try:
            loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            where = "local path" if path.exists() else "Hugging Face hub repository"
            raise InvalidInputError(
                f"could not load model {name!r} from {where} {source!r}: "
                f"{' '.join(str(exc).split())} Without hub "
                "access, pass a local directory (save_pretrained) or a .gguf file"
            ) from exc
    else:
        if tokenizer is None:
            raise InvalidInputError("a model object needs its tokenizer: pass tokenizer=...")
        loaded = model.to(torch_dtype)
        name = str(getattr(loaded.config, "_name_or_path", "") or type(loaded).__name__)
    loaded = loaded.to(device).eval()
    return LoadedModel(model=loaded, tokenizer=tokenizer, name=name, dtype=dtype, device=device)
