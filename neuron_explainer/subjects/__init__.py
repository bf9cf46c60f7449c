"""Subjects: run a real model over real text and record its units.

* `ActivationCapture`: hooked capture of MLP neuron activations (GPT-2, GPT-NeoX/Pythia, Llama,
  Qwen2, Gemma 3; see `neuron_explainer.models.architectures`).
* `load_model`: load a model by name (``gpt2`` … ``gpt2-xl``), directory, ``.gguf`` file or
  object.
* `collect`: one streaming, resumable pass recording every neuron of chosen layers to disk;
  `Collection` reads one neuron's record back without a scan; `CollectionSubject` serves them.
* `neuron_explainer.subjects.hf.HFSubject`: records a few neurons in memory.
* `neuron_explainer.subjects.corpus`: corpora (files, folders, JSONL, strings, datasets) cut
  into document-bounded windows; `neuron_explainer.subjects.docstrings`: the offline
  ``python-docstrings`` corpus; ``_collect_state`` and ``_collect_run``: the collector's
  per-layer state and its pass over the corpus.

Both subjects are registered (``"hf"``, ``"collection"``), so `explain_neuron` builds them by
name; models load through `neuron_explainer.models`.

Nothing here imports torch or transformers until a model is loaded or captured.
"""

from neuron_explainer.models import SITES as SITES
from neuron_explainer.models import LoadedModel as LoadedModel
from neuron_explainer.models import MLPSite as MLPSite
from neuron_explainer.models import load_model as load_model
from neuron_explainer.subjects.capture import ActivationCapture as ActivationCapture
from neuron_explainer.subjects.collect import collect as collect
from neuron_explainer.subjects.collection import Collection as Collection
from neuron_explainer.subjects.collection import CollectionSubject as CollectionSubject

__all__ = [
    "SITES",
    "ActivationCapture",
    "Collection",
    "CollectionSubject",
    "LoadedModel",
    "MLPSite",
    "collect",
    "load_model",
]
