"""Attention heads as units: a head's per-token activation, and the token it attended to most.

**Definition.** The activation of head ``h`` of layer ``L`` at token ``t`` is the L2 norm of what
the head writes into the residual stream there::

    a_h(t) = || z_h(t) @ W_O[h] ||_2

where ``z_h(t)`` (``[d_head]``) is the head's attention-weighted sum of values (TransformerLens'
``blocks.L.attn.hook_z[t, h]``, the input of the attention output projection split per head)
and ``W_O[h]`` (``[d_head, d_model]``) is the head's slice of the output projection. The bias
of the projection is excluded: it belongs to no head (TransformerLens' ``hook_result`` excludes
it too; the heads' writes plus the bias sum to the projection's output). The activation is
never negative; it is large when the head moves a lot of information into that token.

For Gemma 3 the write is taken before ``post_attention_layernorm``, which rescales the *sum*
of all heads per token and so has no per-head share; the norm above is the head's write as the
output projection makes it.

Weight layouts (``layout``): GPT-2's ``attn.c_proj`` is a ``Conv1D`` whose weight is
``[n_heads * d_head, d_model]`` (``"in_out"``, ``y = x @ W + b``); GPT-NeoX's
``attention.dense`` and Llama / Qwen2 / Gemma 3's ``self_attn.o_proj`` are ``Linear`` with
weight ``[d_model, n_heads * d_head]`` (``"out_in"``, ``y = x @ W.T + b``). Heads are laid out
head-major in the projection's input in all of them.

**Top source token.** `top_source_tokens` reruns the model on a few windows with the eager
attention implementation (switched on for the call and restored after it) and reads the
attention probabilities of the layer from its attention module, stopping the forward pass
there. The probabilities are per query head, so grouped-query attention (several query heads
sharing a key/value head: Llama, Qwen2, Gemma 3) needs nothing special, and Gemma 3's
sliding-window layers come with their window mask applied.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.hook_sites import (
    StopForward,
    attention_paths,
    attention_shape,
    capture_sites,
    module_at,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "AttendedSources",
    "HeadGeometry",
    "attention_probabilities",
    "head_activations",
    "head_geometry",
    "head_write_norms",
    "head_writes",
    "top_source_tokens",
]

Layout = Literal["in_out", "out_in"]


@dataclass(frozen=True)
class HeadGeometry:
    """The attention heads of one layer.

    Attributes:
        layer: the block (0-based).
        n_heads: query heads (the units).
        n_kv_heads: key/value heads (fewer than ``n_heads`` with grouped-query attention).
        head_dim: ``d_head``.
        o_proj: dotted path of the output projection from the model root.
        layout: how its weight is stored (see the module docstring).
    """

    layer: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    o_proj: str
    layout: Layout

    def weight(self, model: Any) -> torch.Tensor:
        """The output projection's weight in ``model``."""
        weight: torch.Tensor = module_at(model, self.o_proj).weight
        return weight

    def bias(self, model: Any) -> torch.Tensor | None:
        """The output projection's bias, or ``None`` (Llama, Qwen2, Gemma 3 have none)."""
        bias: torch.Tensor | None = getattr(module_at(model, self.o_proj), "bias", None)
        return bias


def head_geometry(model: Any, layer: int) -> HeadGeometry:
    """The `HeadGeometry` of ``layer`` of ``model`` (a supported transformers causal LM).

    Raises:
        InvalidInputError: unsupported architecture or layer out of range.
    """
    o_proj, layout = attention_paths(model, layer)[1:]
    n_heads, n_kv, head_dim = attention_shape(model)
    return HeadGeometry(layer, n_heads, n_kv, head_dim, o_proj, layout)


def _check_heads(heads: Sequence[int], n_heads: int) -> list[int]:
    wanted = [int(h) for h in heads]
    if not wanted:
        raise InvalidInputError("give at least one head")
    bad = [h for h in wanted if not 0 <= h < n_heads]
    if bad:
        raise InvalidInputError(f"head(s) {bad} out of range: the layer has heads 0..{n_heads - 1}")
    return wanted


def _head_weights(
    weight: torch.Tensor, heads: list[int], n_heads: int, head_dim: int, layout: Layout
) -> torch.Tensor:
    """``W_O[h]`` of ``heads``: ``[len(heads), d_head, d_model]``."""
    if layout not in ("in_out", "out_in"):
        raise InvalidInputError(f"layout must be 'in_out' or 'out_in', not {layout!r}")
    width = n_heads * head_dim
    axis = 0 if layout == "in_out" else 1
    if weight.ndim != 2 or weight.shape[axis] != width:
        raise InvalidInputError(
            f"an output projection weight of shape {tuple(weight.shape)} in layout {layout!r} "
            f"does not take n_heads * head_dim = {n_heads} * {head_dim} = {width} inputs "
            f"(its dimension {axis} must be {width})"
        )
    if layout == "in_out":
        per_head = weight.reshape(n_heads, head_dim, weight.shape[1])
    else:
        per_head = weight.reshape(weight.shape[0], n_heads, head_dim).permute(1, 2, 0)
    return per_head[heads]


def _head_inputs(z: torch.Tensor, heads: list[int], n_heads: int, head_dim: int) -> torch.Tensor:
    """``z`` of ``heads``: ``[..., len(heads), d_head]`` from ``[..., n_heads * d_head]`` or
    ``[..., n_heads, d_head]``."""
    if z.ndim >= 2 and tuple(z.shape[-2:]) == (n_heads, head_dim):
        return z[..., heads, :]
    if z.shape[-1] != n_heads * head_dim:
        raise InvalidInputError(
            f"z of shape {tuple(z.shape)} is neither [..., {n_heads * head_dim}] nor "
            f"[..., {n_heads}, {head_dim}] (n_heads={n_heads}, head_dim={head_dim})"
        )
    return z.reshape(*z.shape[:-1], n_heads, head_dim)[..., heads, :]


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if z.dtype == torch.float64 else torch.float32


def head_writes(
    z: torch.Tensor,
    weight: torch.Tensor,
    heads: Sequence[int],
    n_heads: int,
    head_dim: int,
    layout: Layout,
) -> torch.Tensor:
    """What each of ``heads`` writes into the residual stream: ``z_h @ W_O[h]``, without bias.

    Args:
        z: the output projection's input, ``[..., n_heads * head_dim]`` or
            ``[..., n_heads, head_dim]`` (``attn.hook_z``).
        weight: the output projection's weight, in ``layout``.
        heads: the heads wanted, in the order wanted.

    Returns:
        ``[..., len(heads), d_model]``, in float32 (float64 when ``z`` is float64). Summed over
        all heads plus the projection's bias, it is the projection's output.

    Raises:
        InvalidInputError: shapes that do not fit, heads out of range, an unknown layout.
    """
    import torch

    wanted = _check_heads(heads, n_heads)
    dtype = _compute_dtype(z)
    w = _head_weights(weight, wanted, n_heads, head_dim, layout).to(z.device, dtype)
    x = _head_inputs(z, wanted, n_heads, head_dim).to(dtype)
    return torch.einsum("...hi,him->...hm", x, w)


def head_write_norms(
    z: torch.Tensor,
    weight: torch.Tensor,
    heads: Sequence[int],
    n_heads: int,
    head_dim: int,
    layout: Layout,
) -> torch.Tensor:
    """The activation of ``heads``: the L2 norm of each head's write, ``[..., len(heads)]``.

    Computed as ``sqrt(z_h G_h z_h^T)`` with the Gram matrix ``G_h = W_O[h] W_O[h]^T``
    (``[d_head, d_head]``, formed in float64), so no ``[..., heads, d_model]`` tensor is made:
    memory and work grow with ``d_head``, not ``d_model``. Float32 (float64 when ``z`` is);
    agrees with ``head_writes(...).norm(dim=-1)`` to float32 rounding (the tests use
    rtol 1e-4 in float32, 1e-9 in float64).

    Arguments as for `head_writes`.
    """
    import torch

    wanted = _check_heads(heads, n_heads)
    dtype = _compute_dtype(z)
    w = _head_weights(weight, wanted, n_heads, head_dim, layout).to(z.device, torch.float64)
    gram = torch.einsum("him,hjm->hij", w, w).to(dtype)
    x = _head_inputs(z, wanted, n_heads, head_dim).to(dtype)
    squared = (torch.einsum("...hi,hij->...hj", x, gram) * x).sum(-1)
    return squared.clamp(min=0).sqrt()


def head_activations(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer: int,
    heads: Sequence[int],
) -> torch.Tensor:
    """`head_write_norms` of ``heads`` at ``layer`` over a batch: ``[batch, positions, heads]``.

    One forward pass, stopped at the layer's output projection (`capture_sites` of
    ``blocks.{layer}.attn.hook_z``). Values at padded positions are meaningless.
    """
    geometry = head_geometry(model, layer)
    name = f"blocks.{layer}.attn.hook_z"
    z = capture_sites(model, input_ids, attention_mask, [name])[name]
    return head_write_norms(
        z,
        geometry.weight(model).detach(),
        heads,
        geometry.n_heads,
        geometry.head_dim,
        geometry.layout,
    )


@contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Switch ``model`` to the eager attention implementation, restoring the old one after."""
    config = model.config
    before: dict[str, str] = {"": config._attn_implementation}
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None and getattr(sub, "_attn_implementation", None):
            before[key] = sub._attn_implementation
    if set(before.values()) == {"eager"}:
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before if len(before) > 1 else before[""])


def attention_probabilities(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layer: int
) -> torch.Tensor:
    """The attention probabilities of ``layer``: ``[batch, n_heads, query, key]`` (per query
    head; grouped-query attention already expanded), from one forward pass with the eager
    attention implementation, stopped after that layer's attention. Meant for a few windows:
    the tensor is quadratic in the window length.

    Raises:
        InvalidInputError: unsupported architecture, layer out of range, or an attention
            module that returns no probabilities.
    """
    import torch

    attn_path = attention_paths(model, layer)[0]
    found: list[torch.Tensor] = []

    def read(module: Any, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple | list) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor):
            raise InvalidInputError(f"no attention probabilities came out of {attn_path}")
        found.append(weights)
        raise StopForward

    input_ids = input_ids.to(model.device)
    mask = None if attention_mask is None else attention_mask.to(model.device)
    handle = module_at(model, attn_path).register_forward_hook(read)
    try:
        with _eager_attention(model), torch.inference_mode(), suppress(StopForward):
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()
    if not found:
        raise InvalidInputError(f"the forward pass never reached {attn_path}")
    return found[0]


@dataclass(frozen=True)
class AttendedSources:
    """Where some heads looked from some target tokens of one window.

    Attributes:
        positions: the target (query) positions, as asked.
        heads: the heads, as asked.
        sources: ``sources[i][j]``: the source (key) position that head ``heads[j]`` gave the
            highest attention probability from ``positions[i]`` (the earliest one on a tie).
        weights: ``weights[i][j]``: that probability.
    """

    positions: tuple[int, ...]
    heads: tuple[int, ...]
    sources: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]


def _check_positions(
    positions: Sequence[Sequence[int]], input_ids: torch.Tensor, mask: torch.Tensor | None
) -> list[list[int]]:
    batch, length = int(input_ids.shape[0]), int(input_ids.shape[1])
    if len(positions) != batch:
        raise InvalidInputError(
            f"positions has {len(positions)} entries; give one list of target positions for "
            f"each of the {batch} windows"
        )
    checked = []
    for window, wanted in enumerate(positions):
        targets = [int(p) for p in wanted]
        bad = [p for p in targets if not 0 <= p < length]
        if not bad and mask is not None:
            bad = [p for p in targets if not bool(mask[window, p])]
        if bad:
            raise InvalidInputError(
                f"window {window}: target position(s) {bad} are not real tokens (the window "
                f"has {length} positions; padded ones cannot be targets)"
            )
        checked.append(targets)
    return checked


def top_source_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer: int,
    heads: Sequence[int],
    positions: Sequence[Sequence[int]],
) -> list[AttendedSources]:
    """For each window of ``input_ids`` ``[batch, positions]`` and each of its target
    ``positions`` (one list per window, e.g. its top-activating tokens), the source token each
    of ``heads`` attended to most; one `AttendedSources` per window.

    The attention is recomputed for these windows only (`attention_probabilities`), one window
    at a time and cut after its last target: with causal attention that changes nothing for the
    targets, and it drops right padding, whose query rows can attend to nothing (a sliding
    window past the last real token) and turn into NaN that the value products of later layers
    spread to every position (``0 * NaN``; seen with HF's eager attention in float64).

    Raises:
        InvalidInputError: unsupported architecture, layer or head out of range, a positions
            list per window missing, a target position outside the window or on padding, or
            NaN probabilities (left padding).
    """
    n_heads = head_geometry(model, layer).n_heads
    wanted = _check_heads(heads, n_heads)
    targets = _check_positions(positions, input_ids, attention_mask)
    found = []
    for window, window_targets in enumerate(targets):
        end = max(window_targets, default=0) + 1
        ids = input_ids[window : window + 1, :end]
        mask = None if attention_mask is None else attention_mask[window : window + 1, :end]
        if mask is not None and bool(mask.all()):
            mask = None  # right padding cut off: nothing to mask
        probs = attention_probabilities(model, ids, mask, layer)[0, wanted]  # [heads, q, k]
        best, source = probs[:, window_targets].double().max(dim=-1)  # [heads, targets]
        if bool(best.isnan().any()):
            raise InvalidInputError(
                f"window {window}: the attention probabilities are NaN (a padded position "
                "that attends to nothing poisons the others; give right-padded windows)"
            )
        found.append(
            AttendedSources(
                positions=tuple(window_targets),
                heads=tuple(wanted),
                sources=tuple(tuple(row) for row in source.T.tolist()),
                weights=tuple(tuple(row) for row in best.T.tolist()),
            )
        )
    return found
