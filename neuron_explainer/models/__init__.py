"""Models: load a Hugging Face causal LM (hub name, local folder, ``.gguf`` file or model
object) and know where each supported architecture keeps its MLP neurons.

* `neuron_explainer.models.loading`: `load_model`, `LoadedModel`, `model_shape` (layers and
  neurons from a config or GGUF header, without loading weights), `model_cache_dir` (where
  dequantised ``.gguf`` models are kept, `MODEL_CACHE_ENV`).
* `neuron_explainer.models.architectures`: `MLPSite` and `SITES`, the hook sites per
  ``model_type``.
* `neuron_explainer.models.gguf`: a ``.gguf`` file's metadata and shape from its header (with
  the `gguf` package, imported only then).

A service shared by subjects (which record a model) and the in-process ``hf:`` LLM provider
(which generates with one). Nothing here imports torch or transformers until a model loads.
"""

from neuron_explainer.models.architectures import SITES as SITES
from neuron_explainer.models.architectures import MLPSite as MLPSite
from neuron_explainer.models.loading import MODEL_CACHE_ENV as MODEL_CACHE_ENV
from neuron_explainer.models.loading import LoadedModel as LoadedModel
from neuron_explainer.models.loading import load_model as load_model
from neuron_explainer.models.loading import model_cache_dir as model_cache_dir
from neuron_explainer.models.loading import model_shape as model_shape

__all__ = [
    "MODEL_CACHE_ENV",
    "SITES",
    "LoadedModel",
    "MLPSite",
    "load_model",
    "model_cache_dir",
    "model_shape",
]
