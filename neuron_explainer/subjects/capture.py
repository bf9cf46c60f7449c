"""Hooked capture of MLP neuron activations from a Hugging Face causal LM.

`ActivationCapture` runs the model on a right-padded batch and returns, for each requested layer,
the ``[batch, positions, neurons]`` activations at that layer's `MLPSite`. The forward pass
stops right after the last requested layer (a hook raises a private signal that is caught), runs
under ``torch.inference_mode()``, and every hook is removed when the call ends, also when it
fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.architectures import MLPSite, site_for

if TYPE_CHECKING:
    import torch

__all__ = ["ActivationCapture"]


class _StopForward(Exception):
    """Raised from the last needed hook to skip the rest of the forward pass."""


def _resolve(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


class ActivationCapture:
    """Reads MLP neuron activations of ``layers`` from ``model``.

    Args:
        model: a transformers causal LM whose ``config.model_type`` is in
            `neuron_explainer.models.architectures.SITES` (or pass ``site``).
        layers: the layers to read (0 = first block).
        site: override where neurons are read.

    Raises:
        InvalidInputError: unsupported architecture, or a layer out of range.
    """

    def __init__(self, model: Any, layers: Sequence[int], *, site: MLPSite | None = None) -> None:
        self.model = model
        self.site = site or site_for(model)
        blocks = _resolve(model, self.site.layers)
        self.n_layers = len(blocks)
        wanted = sorted(set(layers))
        if not wanted:
            raise InvalidInputError("give at least one layer to capture")
        bad = [layer for layer in wanted if not 0 <= layer < self.n_layers]
        if bad:
            raise InvalidInputError(
                f"layer(s) {bad} out of range: the model has layers 0..{self.n_layers - 1}"
            )
        self.layers = wanted
        self._modules = {layer: _resolve(blocks[layer], self.site.module) for layer in wanted}

    @contextmanager
    def _hooks(self, sink: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
        last = self.layers[-1]
        handles = []

        def make(layer: int) -> Any:
            if self.site.read == "output":

                def hook(module: Any, args: Any, output: Any) -> None:
                    sink(layer, output)
                    if layer == last:
                        raise _StopForward
            else:

                def hook(module: Any, args: Any) -> None:  # type: ignore[misc]
                    sink(layer, args[0])
                    if layer == last:
                        raise _StopForward

            return hook

        try:
            for layer, module in self._modules.items():
                register = (
                    module.register_forward_hook
                    if self.site.read == "output"
                    else module.register_forward_pre_hook
                )
                handles.append(register(make(layer)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        on_layer: Callable[[int, torch.Tensor], None] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Run the model on ``input_ids`` ``[batch, positions]`` (right-padded, with
        ``attention_mask``) and return ``{layer: activations [batch, positions, neurons]}``.

        Values at padded positions are meaningless; callers drop them. With ``on_layer``, each
        layer's activations are handed to ``on_layer(layer, activations)`` as soon as the
        forward pass makes them (layers in ascending order), the tensor is not kept, and the
        dict comes back empty: the caller may modify the tensor in place, but must not keep
        it (the model still reads it). An exception from ``on_layer`` ends the forward pass
        and propagates; the hooks are removed either way.
        """
        import torch

        store: dict[int, torch.Tensor] = {}
        seen: list[int] = []

        def sink(layer: int, activations: torch.Tensor) -> None:
            seen.append(layer)
            if on_layer is None:
                store[layer] = activations
            else:
                on_layer(layer, activations)

        device = self.model.device
        input_ids = input_ids.to(device)
        attention_mask = None if attention_mask is None else attention_mask.to(device)
        with torch.inference_mode(), self._hooks(sink), suppress(_StopForward):
            self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        missing = [layer for layer in self.layers if layer not in seen]
        if missing:
            raise InvalidInputError(
                f"the forward pass never reached layer(s) {missing} at {self.site.hook_point(0)}"
            )
        return store
