"""TransformerLens hook names (and sparsify hookpoints) mapped to Hugging Face modules.

SAEs and transcoders are published against a *hook site*: SAELens and Gemma Scope name it the
TransformerLens way (``blocks.6.hook_resid_post``), EleutherAI's sparsify by the module path
under ``model.base_model`` (``layers.6``, ``layers.6.mlp``). `resolve` turns either into a
`HookSite`: which module of the HF model to hook, whether its input or its output is read, and
how to pick and shape the tensor. `capture_sites` reads several sites in one forward pass.

TransformerLens names supported (``L`` = block index, 0-based), for the architectures of
`neuron_explainer.models.architectures.SITES` (gpt2, gpt_neox, llama, qwen2, gemma3_text,
gemma3); "input"/"output" is of the HF module named:

========================== ============================================================
``hook_resid_pre``         input of block ``L`` (= ``output_hidden_states[L]``)
``hook_resid_mid``         input of the norm in front of the MLP: GPT-2 ``ln_2``,
                           Llama/Qwen2/GPT-NeoX ``post_attention_layernorm``, Gemma 3
                           ``pre_feedforward_layernorm``; it is resid_pre + attn_out
``hook_resid_post``        output of block ``L`` (= ``hidden_states[L + 1]``, except for the
                           last block, whose HF hidden state has the final norm applied)
``hook_attn_out``          what attention adds to the residual stream (see Gemma 3 below)
``hook_mlp_out``           what the MLP adds to the residual stream (see Gemma 3 below)
``hook_mlp_in``            TransformerLens' meaning: the residual the MLP's norm reads, i.e.
                           resid_mid (resid_pre for GPT-NeoX's parallel blocks), *not* normalised
``ln1.hook_normalized``    output of the norm in front of attention (= attention's input)
``ln2.hook_normalized``    input of the MLP module (its norm's output; what transcoders read)
``mlp.hook_pre``           MLP pre-activation: GPT-2 ``mlp.c_fc``, GPT-NeoX
                           ``mlp.dense_h_to_4h``, gated MLPs ``mlp.gate_proj`` (output)
``mlp.hook_post``          the MLP neuron site of `architectures.SITES`, as captured today
``attn.hook_z``            input of the attention output projection (GPT-2 ``attn.c_proj``,
                           GPT-NeoX ``attention.dense``, others ``self_attn.o_proj``),
                           reshaped to ``[..., n_heads, d_head]``
========================== ============================================================

Architecture notes (TransformerLens read at commit 4cd36aa, July 2026,
``transformer_lens/components/transformer_block.py`` and ``weight_conversions/gemma.py``):

* **Gemma 3** norms the attention and MLP outputs *inside* the block (``post_attention_layernorm``,
  ``post_feedforward_layernorm``) before adding them to the residual. TransformerLens applies
  ``ln1_post`` / ``ln2_post`` *before* ``hook_attn_out`` / ``hook_mlp_out`` ("so hook_attn_out
  captures that which is added to the residual stream"), so here too ``hook_attn_out`` is the
  output of ``post_attention_layernorm`` and ``hook_mlp_out`` the output of
  ``post_feedforward_layernorm``; resid_mid = resid_pre + attn_out and resid_post = resid_mid +
  mlp_out hold exactly. Sparsify's ``layers.L.mlp`` / ``layers.L.self_attn`` are the outputs of
  the modules themselves, i.e. *before* those norms: a different tensor for Gemma only.
* **Gemma 3's embedding** is scaled by ``sqrt(d_model)`` (HF's ``Gemma3TextScaledWordEmbedding``,
  cast to the weight dtype); TransformerLens folds the same factor into ``W_E``, so
  ``blocks.0.hook_resid_pre`` agrees. The multimodal ``gemma3`` reads its language model.
* **GPT-2** has a separate ``ln_2``, whose input is resid_mid.
* **Llama / Qwen2** have no module that outputs resid_mid, but it is the input of
  ``post_attention_layernorm`` (the norm in front of the MLP, despite its name), so it is read
  there, not recomputed.
* **GPT-NeoX** (Pythia) with ``use_parallel_residual=True`` (the default) feeds attention and
  MLP the same resid_pre: there is no resid_mid (TransformerLens defines no ``hook_resid_mid``
  either), so asking for it is an error; ``hook_mlp_in`` is then resid_pre.
* Settings that change TransformerLens' activations are not mimicked: the HF model's own tensors
  are read. ``ln*.hook_normalized`` here includes the norm's weight (and bias), as
  TransformerLens gives it with ``fold_ln=False`` (``from_pretrained_no_processing``); its
  default ``fold_ln=True`` moves them into the next layer. ``center_writing_weights=True``
  (also its default) subtracts the mean from everything written into the residual stream.
  Honouring or refusing an SAE's settings is the loader's job.

Sparsify hookpoints: a module path relative to ``model.base_model`` (``h.6`` / ``h.6.mlp`` for
GPT-2, ``layers.6.self_attn`` for Llama, ``language_model.layers.6`` for the multimodal Gemma 3),
or relative to the model itself; the *output* is read (``layers.6`` is resid_post). A suffix
``:input`` reads the module's first input instead (sparsify's transcoders read
``layers.6.mlp:input`` and predict its output).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.architectures import SITES

if TYPE_CHECKING:
    import torch

__all__ = [
    "TL_HOOKS",
    "HookSite",
    "StopForward",
    "attention_paths",
    "attention_shape",
    "capture_sites",
    "hooked",
    "module_at",
    "resolve",
    "supported_names",
]

Read = Literal["input", "output"]
Pick = Literal["tensor", "first"]


@dataclass(frozen=True)
class _Block:
    """Block-relative module paths of one architecture ("" is the block itself)."""

    ln1: str
    attn: str
    o_proj: str
    o_layout: Literal["in_out", "out_in"]
    attn_out: str
    mid: str
    mlp: str
    mlp_pre: str
    mlp_out: str


_LLAMA = _Block(
    ln1="input_layernorm",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    o_layout="out_in",
    attn_out="self_attn",
    mid="post_attention_layernorm",
    mlp="mlp",
    mlp_pre="mlp.gate_proj",
    mlp_out="mlp",
)
_GEMMA3 = _Block(
    ln1="input_layernorm",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    o_layout="out_in",
    attn_out="post_attention_layernorm",
    mid="pre_feedforward_layernorm",
    mlp="mlp",
    mlp_pre="mlp.gate_proj",
    mlp_out="post_feedforward_layernorm",
)
_BLOCKS: dict[str, _Block] = {
    "gpt2": _Block(
        ln1="ln_1",
        attn="attn",
        o_proj="attn.c_proj",
        o_layout="in_out",
        attn_out="attn",
        mid="ln_2",
        mlp="mlp",
        mlp_pre="mlp.c_fc",
        mlp_out="mlp",
    ),
    "gpt_neox": _Block(
        ln1="input_layernorm",
        attn="attention",
        o_proj="attention.dense",
        o_layout="out_in",
        attn_out="attention",
        mid="post_attention_layernorm",
        mlp="mlp",
        mlp_pre="mlp.dense_h_to_4h",
        mlp_out="mlp",
    ),
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "gemma3_text": _GEMMA3,
    "gemma3": _GEMMA3,
}

TL_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_mlp_in",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "attn.hook_z",
)
"""The TransformerLens hooks supported, after ``blocks.{L}.``."""

_TL_NAME = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(h) for h in TL_HOOKS) + r")$")
_SPARSIFY_NAME = re.compile(r"^([A-Za-z_][\w.]*?)(?::(input|output))?$")


def supported_names() -> list[str]:
    """The name forms `resolve` accepts, for error messages and docs."""
    return [f"blocks.{{L}}.{hook}" for hook in TL_HOOKS] + [
        "<sparsify hookpoint: block path under model.base_model, e.g. layers.{L}, "
        "layers.{L}.mlp, h.{L}.attn>[:input|:output]"
    ]


@dataclass(frozen=True)
class HookSite:
    """Where one named activation is read in a Hugging Face model.

    Attributes:
        name: the name asked for (TransformerLens or sparsify form).
        layer: the block it belongs to (0-based).
        module: dotted path of the hooked module from the model root.
        read: ``"output"`` of ``module`` (a forward hook) or its first ``"input"`` (a forward
            pre-hook; the first positional argument, else the ``hidden_states`` keyword).
        pick: ``"tensor"``: the value read is the tensor; ``"first"``: it may be a tuple or
            list (HF attention modules return ``(output, weights)``; decoder layers did in older
            transformers versions) whose first element is the tensor.
        heads: ``(n_heads, d_head)`` to unflatten the last dimension into (``attn.hook_z``),
            else ``None``.
    """

    name: str
    layer: int
    module: str
    read: Read
    pick: Pick = "tensor"
    heads: tuple[int, int] | None = None

    @property
    def hook_point(self) -> str:
        """A readable name of the read point, as `MLPSite.hook_point` writes it."""
        return f"{self.module}:{self.read}"

    def select(self, value: Any) -> torch.Tensor:
        """The site's tensor from what the hook saw (the module's output, or its first input).

        Raises:
            InvalidInputError: the value is not what the site expects.
        """
        import torch

        if self.pick == "first" and isinstance(value, tuple | list):
            value = value[0] if value else None
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(
                f"{self.name}: expected a tensor at {self.hook_point}, got {type(value).__name__}"
            )
        if self.heads is None:
            return value
        n_heads, d_head = self.heads
        if value.shape[-1] != n_heads * d_head:
            raise InvalidInputError(
                f"{self.name}: the last dimension at {self.hook_point} is {value.shape[-1]}, "
                f"not n_heads * d_head = {n_heads} * {d_head}"
            )
        return value.reshape(*value.shape[:-1], n_heads, d_head)


def module_at(root: Any, path: str) -> Any:
    """The submodule of ``root`` at dotted ``path`` (``""`` is ``root``; digits index lists).

    Raises:
        InvalidInputError: no module there.
    """
    obj = root
    for part in path.split(".") if path else ():
        try:
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        except (AttributeError, IndexError, TypeError) as exc:
            raise InvalidInputError(
                f"no module at {path!r} in {type(root).__name__}: {part!r} not found"
            ) from exc
    return obj


def _model_type(model: Any) -> str:
    model_type = str(getattr(getattr(model, "config", None), "model_type", None))
    if model_type not in _BLOCKS:
        raise InvalidInputError(
            f"no hook sites are known for model_type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(sorted(_BLOCKS))}"
        )
    return model_type


def _text_config(model: Any) -> Any:
    config = model.config
    return config.text_config if config.model_type == "gemma3" else config


def attention_shape(model: Any) -> tuple[int, int, int]:
    """``(n_heads, n_key_value_heads, d_head)`` of ``model``'s attention, from its config.

    Raises:
        InvalidInputError: unsupported architecture.
    """
    model_type = _model_type(model)
    config = _text_config(model)
    if model_type == "gpt2":
        n_heads = int(config.n_head)
        return n_heads, n_heads, int(config.n_embd) // n_heads
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    d_head = getattr(config, "head_dim", None) or int(config.hidden_size) // n_heads
    return n_heads, n_kv, int(d_head)


def attention_paths(model: Any, layer: int) -> tuple[str, str, Literal["in_out", "out_in"]]:
    """``(attention module, its output projection, the projection's weight layout)`` of
    ``layer``, as dotted paths from the model root; the layout is ``"in_out"`` for GPT-2's
    ``Conv1D`` (weight ``[in, out]``), ``"out_in"`` for a ``Linear`` (weight ``[out, in]``).

    Raises:
        InvalidInputError: unsupported architecture or layer out of range.
    """
    block = _BLOCKS[_model_type(model)]
    _check_layer(model, f"blocks.{layer}.attn", layer)
    prefix = f"{SITES[model.config.model_type].layers}.{layer}."
    return prefix + block.attn, prefix + block.o_proj, block.o_layout


def _parallel(model: Any) -> bool:
    return model.config.model_type == "gpt_neox" and bool(model.config.use_parallel_residual)


def _tl_target(model: Any, hook: str) -> tuple[str, Read, Pick]:
    """Block-relative module, read and pick of a TransformerLens hook."""
    model_type = _model_type(model)
    block = _BLOCKS[model_type]
    parallel = _parallel(model)
    if hook == "hook_resid_mid" and parallel:
        raise InvalidInputError(
            "blocks.{L}.hook_resid_mid is not defined for gpt_neox with use_parallel_residual="
            "True: attention and MLP both read resid_pre, so there is no residual between them "
            "(TransformerLens defines no hook_resid_mid there either)"
        )
    neuron = SITES[model_type]
    targets: dict[str, tuple[str, Read, Pick]] = {
        "hook_resid_pre": ("", "input", "tensor"),
        "hook_resid_mid": (block.mid, "input", "tensor"),
        "hook_resid_post": ("", "output", "first"),
        "hook_attn_out": (block.attn_out, "output", "first"),
        "hook_mlp_out": (block.mlp_out, "output", "first"),
        "hook_mlp_in": ("" if parallel else block.mid, "input", "tensor"),
        "ln1.hook_normalized": (block.ln1, "output", "tensor"),
        "ln2.hook_normalized": (block.mlp, "input", "tensor"),
        "mlp.hook_pre": (block.mlp_pre, "output", "tensor"),
        "mlp.hook_post": (neuron.module, neuron.read, "tensor"),
        "attn.hook_z": (block.o_proj, "input", "tensor"),
    }
    return targets[hook]


def _n_layers(model: Any) -> int:
    return len(module_at(model, SITES[_model_type(model)].layers))


def _check_layer(model: Any, name: str, layer: int) -> None:
    n_layers = _n_layers(model)
    if not 0 <= layer < n_layers:
        raise InvalidInputError(
            f"{name}: layer {layer} out of range: the model has layers 0..{n_layers - 1}"
        )


def _base_prefix(model: Any) -> str:
    base = getattr(model, "base_model", model)
    for path, module in model.named_modules():
        if module is base:
            return str(path)
    return ""


def _sparsify_site(model: Any, name: str) -> HookSite | None:
    """The site of a sparsify hookpoint, or None when ``name`` is not one."""
    match = _SPARSIFY_NAME.match(name)
    if match is None:
        return None
    path = match.group(1)
    read: Read = "input" if match.group(2) == "input" else "output"
    layers = SITES[_model_type(model)].layers
    prefix = _base_prefix(model)
    for candidate in (f"{prefix}.{path}" if prefix else path, path):
        if not candidate.startswith(layers + "."):
            continue
        index = candidate[len(layers) + 1 :].partition(".")[0]
        if not index.isdigit():
            return None
        layer = int(index)
        _check_layer(model, name, layer)
        module_at(model, candidate)  # raises when there is no such module
        return HookSite(name, layer, candidate, read, "first" if read == "output" else "tensor")
    return None


def resolve(model: Any, name: str) -> HookSite:
    """The `HookSite` of ``name`` in ``model`` (a transformers causal LM).

    ``name`` is a TransformerLens hook name (``blocks.6.hook_resid_post``, see `TL_HOOKS`) or a
    sparsify hookpoint (``layers.6``, ``layers.6.mlp``, optionally ``:input``); see the module
    docstring for what each reads on each architecture.

    Raises:
        InvalidInputError: unsupported architecture, unknown name (the message lists the
            supported ones), layer out of range, no such module, or a site the architecture
            does not have (``hook_resid_mid`` of a parallel GPT-NeoX block).
    """
    model_type = _model_type(model)
    match = _TL_NAME.match(name)
    if match is not None:
        layer, hook = int(match.group(1)), match.group(2)
        _check_layer(model, name, layer)
        sub, read, pick = _tl_target(model, hook)
        blocks = SITES[model_type].layers
        module = f"{blocks}.{layer}.{sub}" if sub else f"{blocks}.{layer}"
        module_at(model, module)
        heads = None
        if hook == "attn.hook_z":
            n_heads, _, d_head = attention_shape(model)
            heads = (n_heads, d_head)
        return HookSite(name, layer, module, read, pick, heads)
    site = None if name.startswith("blocks.") else _sparsify_site(model, name)
    if site is None:
        raise InvalidInputError(
            f"unknown hook site {name!r} for {model_type}; supported: "
            + ", ".join(supported_names())
        )
    return site


class StopForward(Exception):
    """Raised from a hook once everything needed is read, to skip the rest of the forward
    pass; the caller suppresses it around the forward call."""


@contextmanager
def hooked(
    model: Any, sites: Iterable[HookSite], sink: Callable[[HookSite, torch.Tensor], None]
) -> Iterator[None]:
    """Within the block, every forward pass of ``model`` hands each site's tensor to
    ``sink(site, tensor)`` as soon as it is computed. The hooks are removed on exit, also when
    the body or ``sink`` raises. The tensor is the model's own: ``sink`` must not modify it
    unless it means to change the rest of the forward pass.
    """
    handles = []

    def output_hook(site: HookSite) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            sink(site, site.select(output))

        return hook

    def input_hook(site: HookSite) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            value = args[0] if args else kwargs.get("hidden_states")
            sink(site, site.select(value))

        return hook

    try:
        for site in sites:
            module = module_at(model, site.module)
            if site.read == "output":
                handles.append(module.register_forward_hook(output_hook(site)))
            else:
                handles.append(module.register_forward_pre_hook(input_hook(site), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_sites(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    names: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Run ``model`` once on ``input_ids`` ``[batch, positions]`` and return ``{name: tensor}``
    for each of ``names`` (`resolve` forms; ``[batch, positions, ...]`` each).

    Runs under ``torch.inference_mode()`` without a KV cache; the forward pass stops as soon as
    every site is read; the hooks are removed when the call ends, also when it fails. Values at
    padded positions are meaningless.

    Raises:
        InvalidInputError: no names, or a name `resolve` refuses, or a site the forward pass
            never reached.
    """
    import torch

    sites = {name: resolve(model, name) for name in dict.fromkeys(names)}
    if not sites:
        raise InvalidInputError("give at least one hook site name to capture")
    store: dict[str, torch.Tensor] = {}

    def keep(site: HookSite, tensor: torch.Tensor) -> None:
        store[site.name] = tensor
        if len(store) == len(sites):
            raise StopForward

    device = model.device
    input_ids = input_ids.to(device)
    attention_mask = None if attention_mask is None else attention_mask.to(device)
    with torch.inference_mode(), hooked(model, sites.values(), keep), suppress(StopForward):
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    missing = [name for name in sites if name not in store]
    if missing:
        raise InvalidInputError(f"the forward pass never reached {missing}")
    return {name: store[name] for name in sites}
