"""`HFSubject`: record units of a Hugging Face causal LM over a corpus.

This subject keeps the activations of the requested neurons of one layer in memory while it
passes over the corpus, then selects top, random and quantile excerpts with
`neuron_explainer.build_neuron_record`. Memory grows with the corpus (one float per token per
requested neuron), so it suits explaining a few neurons over a corpus of up to a few million
tokens; collecting every neuron of a model over a large corpus is the streaming collector's job.
Every record names its corpus window (`neuron_explainer.records.WindowId`: document and token
offset), the id a collection of the same corpus gives the same window.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import Probe, Subject
from neuron_explainer.models.loading import LoadedModel, load_model
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId, WindowId
from neuron_explainer.records.building import (
    DEFAULT_N_PER_QUANTILE,
    DEFAULT_N_RANDOM,
    DEFAULT_QUANTILE_LEVELS,
    DEFAULT_TOP_K,
    build_neuron_record,
)
from neuron_explainer.subjects.capture import ActivationCapture
from neuron_explainer.subjects.corpus import (
    DEFAULT_WINDOW_LENGTH,
    BOSPolicy,
    Corpus,
    Window,
    corpus_from,
    iter_windows,
)
from neuron_explainer.subjects.tokens import token_strings

__all__ = ["HFSubject"]


class HFSubject(Subject):
    """MLP neurons of a Hugging Face causal LM, recorded over ``corpus``.

    Args:
        model: a name (``"gpt2"`` … ``"gpt2-xl"``, a hub id), a local directory, a ``.gguf``
            file, a `LoadedModel`, or a model object (then pass ``tokenizer``). Loaded on first
            use.
        corpus: anything `neuron_explainer.subjects.corpus.corpus_from` accepts.
        tokenizer: the tokenizer, when ``model`` is an object.
        dtype: the model's dtype, e.g. ``"float32"`` (recorded in provenance).
        device: where the model runs (default CUDA if present; recorded in provenance).
        window_length: excerpt length in tokens; windows never cross a document boundary.
        bos: the BOS policy (``"none"``, ``"document"`` or ``"window"``).
        batch_size: windows per forward pass (right-padded).
        top_k: top-activating excerpts per neuron (see `build_neuron_record`).
        n_random: random excerpts per neuron.
        quantile_levels: where the per-excerpt max distribution is cut into bins.
        n_per_quantile: excerpts sampled from each bin.
        seed: seed of the random choices.
        progress: called after every forward pass with the number of tokens the model has
            read so far in this recording (padding not counted); `count_tokens` gives the
            total.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | Any,
        corpus: Any,
        *,
        tokenizer: Any = None,
        dtype: str = "float32",
        device: str | None = None,
        window_length: int = DEFAULT_WINDOW_LENGTH,
        bos: BOSPolicy = "none",
        batch_size: int = 16,
        top_k: int = DEFAULT_TOP_K,
        n_random: int = DEFAULT_N_RANDOM,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        n_per_quantile: int = DEFAULT_N_PER_QUANTILE,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if window_length < 1 or batch_size < 1:
            raise InvalidInputError("window_length and batch_size must be >= 1")
        self._model_spec, self._tokenizer = model, tokenizer
        self._dtype, self._device = dtype, device
        self._loaded: LoadedModel | None = model if isinstance(model, LoadedModel) else None
        self.corpus: Corpus = corpus_from(corpus)
        self.window_length, self.bos, self.batch_size = window_length, bos, batch_size
        self.progress = progress
        self._tokens_read = 0
        # one forward pass at a time: hooks of concurrent captures on one model would stop
        # each other's passes (probes run in worker threads, several units at once)
        self._model_lock = threading.Lock()
        self._selection: dict[str, Any] = {
            "top_k": top_k,
            "n_random": n_random,
            "quantile_levels": tuple(quantile_levels),
            "n_per_quantile": n_per_quantile,
            "seed": seed,
        }

    @property
    def loaded(self) -> LoadedModel:
        """The model and tokenizer (loaded on first access)."""
        if self._loaded is None:
            self._loaded = load_model(
                self._model_spec, tokenizer=self._tokenizer, dtype=self._dtype, device=self._device
            )
        return self._loaded

    @property
    def model_name(self) -> str:
        """The name units of this subject carry in `UnitId.model`."""
        return self.loaded.name

    def unit(self, layer: int, index: int) -> UnitId:
        """The `UnitId` of MLP neuron ``index`` in ``layer``."""
        return UnitId(model=self.model_name, layer=layer, index=index)

    def count_tokens(self) -> int:
        """The number of tokens one recording reads (what `progress` counts up to): the corpus
        is read, tokenized and cut into windows as a recording does it, and no model is run
        (the tokenizer is loaded with the model, on first use). A corpus made from a one-shot
        iterator cannot be read again afterwards.

        Raises:
            InvalidInputError: the model cannot be loaded, or the BOS policy needs a BOS token
                the tokenizer does not have.
            FormatError: the corpus cannot be read.
            UsageError: the corpus is a one-shot iterator read already.
        """
        windows = iter_windows(
            self.corpus, self.loaded.tokenizer, length=self.window_length, bos=self.bos
        )
        return sum(len(window.input_ids) for window in windows)

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        """Record ``unit`` (an MLP neuron) over the corpus; the model runs in a worker thread.

        Raises:
            InvalidInputError: not an MLP neuron, layer or index out of range, or a corpus that
                yields no window.
        """
        records = await asyncio.to_thread(self.neuron_records, unit.layer, [unit.index])
        return records[unit.index]

    def probe(self, unit: UnitId) -> Probe:
        """A `neuron_explainer.explainers.revising.Probe` of ``unit``: its true activations
        on new texts (`aactivations`), e.g. for the sentences an explainer writes to test
        its explanation when revising."""

        async def activations(texts: Sequence[str]) -> list[ActivationRecord]:
            return await self.aactivations(unit, texts)

        return activations

    async def aactivations(self, unit: UnitId, texts: Sequence[str]) -> list[ActivationRecord]:
        """``unit``'s activations on each of ``texts``, read as a recording reads the corpus
        (same BOS policy): one record per text, of its first ``window_length`` tokens (with no
        window id: the texts are not windows of the corpus); the model runs in a worker thread.

        Raises:
            InvalidInputError: not an MLP neuron, layer or index out of range, or a text with
                no token.
        """
        if unit.kind != "mlp_neuron":
            raise InvalidInputError(f"HFSubject runs MLP neurons, not {unit.kind!r} units")
        return await asyncio.to_thread(self._activations, unit.layer, unit.index, list(texts))

    def _activations(self, layer: int, index: int, texts: list[str]) -> list[ActivationRecord]:
        if not texts:
            return []
        with self._model_lock:
            return self._activations_locked(layer, index, texts)

    def _activations_locked(
        self, layer: int, index: int, texts: list[str]
    ) -> list[ActivationRecord]:
        loaded = self.loaded
        first: dict[int, Window] = {}
        for window in iter_windows(
            corpus_from(texts), loaded.tokenizer, length=self.window_length, bos=self.bos
        ):
            first.setdefault(window.document, window)
        empty = [i for i in range(len(texts)) if i not in first]
        if empty:
            raise InvalidInputError(f"text(s) {empty} have no token to run")
        capture = ActivationCapture(loaded.model, [layer])
        columns: dict[int, list[ActivationRecord]] = {index: []}
        windows = [first[i] for i in range(len(texts))]
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start : start + self.batch_size]
            self._run(capture, layer, batch, [index], columns, of_corpus=False)
        return columns[index]

    def neuron_records(self, layer: int, indices: Iterable[int]) -> dict[int, NeuronRecord]:
        """Record several neurons of one layer in one pass over the corpus. Every record names
        its corpus window (`ActivationRecord.window_id`).

        Raises:
            InvalidInputError: an index or the layer out of range, or no windows.
        """
        with self._model_lock:
            return self._neuron_records(layer, indices)

    def _neuron_records(self, layer: int, indices: Iterable[int]) -> dict[int, NeuronRecord]:
        wanted = sorted(set(indices))
        loaded = self.loaded
        capture = ActivationCapture(loaded.model, [layer])
        columns: dict[int, list[ActivationRecord]] = {i: [] for i in wanted}
        windows = iter_windows(
            self.corpus, loaded.tokenizer, length=self.window_length, bos=self.bos
        )
        batch: list[Window] = []
        n_neurons: int | None = None
        self._tokens_read = 0
        for window in windows:
            batch.append(window)
            if len(batch) == self.batch_size:
                n_neurons = self._run(capture, layer, batch, wanted, columns)
                batch = []
        if batch:
            n_neurons = self._run(capture, layer, batch, wanted, columns)
        if n_neurons is None:
            raise InvalidInputError(f"corpus {self.corpus.name!r} yields no windows to record")
        provenance = Provenance(
            model=loaded.name,
            hook_point=capture.site.hook_point(layer),
            dataset=self.corpus.name,
            window_length=self.window_length,
            bos_policy=self.bos,
            dtype=loaded.dtype,
            device=loaded.device,
        )
        return {
            i: build_neuron_record(
                self.unit(layer, i), columns[i], provenance=provenance, **self._selection
            )
            for i in wanted
        }

    def _run(
        self,
        capture: ActivationCapture,
        layer: int,
        batch: list[Window],
        wanted: list[int],
        columns: dict[int, list[ActivationRecord]],
        *,
        of_corpus: bool = True,
    ) -> int:
        """Run ``batch`` and append each wanted neuron's record of every window to ``columns``.

        ``of_corpus``: the windows are the recording's corpus (its records carry their
        `WindowId` and progress is counted), not a probe's texts.

        Returns:
            How many neurons the layer has.

        Raises:
            InvalidInputError: a wanted index out of range.
        """
        import torch

        width = max(len(w.input_ids) for w in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, window in enumerate(batch):
            ids[row, : len(window.input_ids)] = torch.tensor(window.input_ids)
            mask[row, : len(window.input_ids)] = 1
        acts = capture(ids, mask)[layer]
        n_neurons = int(acts.shape[-1])
        bad = [i for i in wanted if not 0 <= i < n_neurons]
        if bad:
            raise InvalidInputError(
                f"neuron index(es) {bad} out of range: layer {layer} has neurons 0..{n_neurons - 1}"
            )
        chosen = acts[:, :, wanted].float().cpu()
        tokenizer = self.loaded.tokenizer
        for row, window in enumerate(batch):
            excerpt = window.excerpt_ids
            tokens = token_strings(tokenizer, excerpt)
            span = chosen[row, window.n_prefix : window.n_prefix + len(excerpt)]
            window_id = (
                WindowId(document=window.document, start=window.start) if of_corpus else None
            )
            for column, index in enumerate(wanted):
                columns[index].append(
                    ActivationRecord(
                        tokens=tokens,
                        activations=span[:, column].tolist(),
                        token_ids=excerpt,
                        window_id=window_id,
                    )
                )
        if not of_corpus:  # not the recording's corpus: no progress
            return n_neurons
        self._tokens_read += sum(len(window.input_ids) for window in batch)
        if self.progress is not None:
            self.progress(self._tokens_read)
        return n_neurons
