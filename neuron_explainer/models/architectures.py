"""Where the MLP neurons of each supported architecture live.

A neuron is one coordinate of the MLP's hidden activation, the vector the MLP's output
projection multiplies:

* GPT-2: the output of ``mlp.act`` (GPT-2's own ``gelu_new``), the input of ``mlp.c_proj``;
* GPT-NeoX / Pythia: the output of ``mlp.act``, the input of ``mlp.dense_4h_to_h``;
* Llama, Qwen2, Gemma 3 (gated MLPs): the input of ``mlp.down_proj``, i.e.
  ``act(gate_proj(x)) * up_proj(x)``; it can be negative, and the sign is kept.

To add an architecture, add an `MLPSite` to `SITES` keyed by the model's ``config.model_type``
(and write a capture test that compares with a hand computation, as tests/test_capture.py does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from neuron_explainer.errors import InvalidInputError

__all__ = ["SITES", "MLPSite", "mlp_shape", "site_for"]


@dataclass(frozen=True)
class MLPSite:
    """Where to read a layer's MLP neurons.

    Attributes:
        layers: dotted path from the model to its list of transformer blocks.
        module: dotted path from a block to the module whose input or output is read.
        read: ``"output"`` of ``module``, or its first positional ``"input"``.
    """

    layers: str
    module: str
    read: Literal["input", "output"]

    def hook_point(self, layer: int) -> str:
        """A readable name of the read point, recorded in provenance."""
        return f"{self.layers}.{layer}.{self.module}:{self.read}"


_GATED = MLPSite(layers="model.layers", module="mlp.down_proj", read="input")

SITES: dict[str, MLPSite] = {
    "gpt2": MLPSite(layers="transformer.h", module="mlp.act", read="output"),
    "gpt_neox": MLPSite(layers="gpt_neox.layers", module="mlp.act", read="output"),
    "llama": _GATED,
    "qwen2": _GATED,
    "gemma3_text": _GATED,
    "gemma3": MLPSite(layers="model.language_model.layers", module="mlp.down_proj", read="input"),
}
"""``config.model_type`` → where its MLP neurons are read."""


def _unsupported(model_type: object, owner: str) -> InvalidInputError:
    return InvalidInputError(
        f"no MLP capture site is known for model_type {model_type!r} "
        f"({owner}); supported: {', '.join(sorted(SITES))}. To add it, put "
        "an MLPSite(layers=<path to the block list>, module=<path to the MLP's activation or "
        "output projection>, read='output'|'input') into "
        "neuron_explainer.models.architectures.SITES under that model_type"
    )


def site_for(model: Any) -> MLPSite:
    """The `MLPSite` of ``model`` (a transformers ``PreTrainedModel``).

    Raises:
        InvalidInputError: the architecture is not in `SITES`; the message says how to add it.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    site = SITES.get(str(model_type))
    if site is None:
        raise _unsupported(model_type, type(model).__name__)
    return site


def mlp_shape(config: Any) -> tuple[int, int]:
    """``(layers, MLP neurons per layer)`` from a transformers config, without loading weights.

    GPT-2 reads ``n_layer`` and ``n_inner`` (``4 * n_embd`` when unset); Gemma 3's multimodal
    config reads its ``text_config``; the others read ``num_hidden_layers`` and
    ``intermediate_size``.

    Raises:
        InvalidInputError: the architecture is not in `SITES`.
    """
    model_type = getattr(config, "model_type", None)
    if str(model_type) not in SITES:
        raise _unsupported(model_type, type(config).__name__)
    if model_type == "gpt2":
        return int(config.n_layer), int(config.n_inner or 4 * config.n_embd)
    text = config.text_config if model_type == "gemma3" else config
    return int(text.num_hidden_layers), int(text.intermediate_size)
