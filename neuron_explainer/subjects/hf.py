"""`HFSubject`: record units of a Hugging Face causal LM over a corpus.

MLP neurons by default; attention heads, SAE and transcoder latents, directions and neurons at
a named hook site too (`neuron_explainer.subjects.units`, docs/units.md). This subject keeps
the activations of the requested units in memory while it passes over the corpus, then
selects top, random and quantile excerpts exactly as a collection of the same corpus does
(every choice keyed by the window's id, `neuron_explainer.subjects.collect`). Memory
grows with the corpus (one float per token per requested unit), so it suits explaining a few
units over a corpus of up to a few million tokens; collecting every neuron of a model over a
large corpus is the streaming collector's job.
Every record names its corpus window (`neuron_explainer.records.WindowId`: document and token
offset), the id a collection of the same corpus gives the same window.
"""

from __future__ import annotations

import asyncio
import itertools
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
)
from neuron_explainer.subjects._state_records import refuse_dead_record, select_records
from neuron_explainer.subjects.capture import ActivationCapture
from neuron_explainer.subjects.corpus import (
    DEFAULT_WINDOW_LENGTH,
    BOSPolicy,
    Corpus,
    Window,
    bos_token_id,
    corpus_from,
    iter_windows,
)
from neuron_explainer.subjects.tokens import token_strings
from neuron_explainer.subjects.units import (
    UnitSources,
    load_direction,
    pad_windows,
    read_unit,
    sae_bos_policy,
    site_activations,
    top_sources,
    window_records,
)

__all__ = ["HFSubject"]


class HFSubject(Subject):
    """Units of a Hugging Face causal LM, recorded over ``corpus``: MLP neurons (`unit`),
    attention heads (`head_unit`), the latents of ``sae`` (`latent_unit`), the ``direction``
    at ``hook`` (`direction_unit`); docs/units.md defines each one's activation.

    Args:
        model: a name (``"gpt2"`` … ``"gpt2-xl"``, a hub id), a local directory, a ``.gguf``
            file, a `LoadedModel`, or a model object (then pass ``tokenizer``). Loaded on first
            use.
        corpus: anything `neuron_explainer.subjects.corpus.corpus_from` accepts.
        tokenizer: the tokenizer, when ``model`` is an object.
        dtype: the model's dtype, e.g. ``"float32"`` (recorded in provenance).
        device: where the model runs (default CUDA if present; recorded in provenance).
        window_length: excerpt length in tokens; windows never cross a document boundary.
        bos: the BOS policy (``"none"``, ``"document"`` or ``"window"``); by default
            ``"none"``, or with an SAE the policy its ``prepend_bos`` needs (``"window"`` for
            ``True``; another policy given is refused).
        batch_size: windows per forward pass (right-padded).
        top_k: top-activating excerpts per neuron.
        n_random: random excerpts per neuron.
        quantile_levels: where the per-excerpt max distribution is cut into bins.
        n_per_quantile: excerpts sampled from each bin.
        quantile_warmup: windows whose maxes fix the bins' boundaries.
        seed: seed of the random choices. With the same settings and corpus, `collect` picks
            the same windows for every unit (docs/collection.md).
        progress: called after every forward pass with the number of tokens the model has
            read so far in this recording (padding not counted); `count_tokens` gives the
            total.
        sae: an SAE or transcoder (a folder or file `neuron_explainer.models.sae.load_sae`
            reads, or a loaded `SparseEncoder`) whose latents `latent_unit` names.
        direction: a ``[d_model]`` vector (a ``.npy`` file or an array) that
            `direction_unit` names; needs ``hook``.
        hook: the direction's hook site (``"blocks.6.hook_resid_pre"``), or the site of an
            SAE whose files do not name it.

    Raises:
        InvalidInputError: a bad window length or batch size, both ``sae`` and
            ``direction``, a direction without ``hook``, an SAE that cannot be read, whose
            site differs from ``hook`` or whose ``prepend_bos`` conflicts with ``bos``.
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
        bos: BOSPolicy | None = None,
        batch_size: int = 16,
        top_k: int = DEFAULT_TOP_K,
        n_random: int = DEFAULT_N_RANDOM,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        n_per_quantile: int = DEFAULT_N_PER_QUANTILE,
        quantile_warmup: int = 1024,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
        sae: str | os.PathLike[str] | Any = None,
        direction: str | os.PathLike[str] | Any = None,
        hook: str | None = None,
    ) -> None:
        if window_length < 1 or batch_size < 1:
            raise InvalidInputError("window_length and batch_size must be >= 1")
        self.sources = _sources(sae, direction, hook)
        if self.sources.sae is not None:
            bos = sae_bos_policy(self.sources.sae, bos, self.sources.sae_path or "(given)")
        self._model_spec, self._tokenizer = model, tokenizer
        self._dtype, self._device = dtype, device
        self._loaded: LoadedModel | None = model if isinstance(model, LoadedModel) else None
        self.corpus: Corpus = corpus_from(corpus)
        self.window_length, self.batch_size = window_length, batch_size
        self.bos: BOSPolicy = bos or "none"
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
            "quantile_warmup": quantile_warmup,
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

    def head_unit(self, layer: int, head: int) -> UnitId:
        """The `UnitId` of attention head ``head`` in ``layer`` (site: the kind's default,
        ``blocks.{layer}.attn.hook_z``)."""
        return UnitId(model=self.model_name, layer=layer, index=head, kind="attention_head")

    def latent_unit(self, latent: int) -> UnitId:
        """The `UnitId` of latent ``latent`` of the subject's SAE (kind ``sae_latent`` or
        ``transcoder_latent``, at the SAE's hook site, its source the SAE's content hash;
        loads the model to find the site's layer).

        Raises:
            InvalidInputError: no SAE, latent out of range, a site the model does not have.
        """
        from neuron_explainer.models.hook_sites import resolve

        sae, site = self.sources.sae, self.sources.sae_site()
        assert sae is not None  # sae_site checked it
        if not 0 <= latent < sae.d_sae:
            raise InvalidInputError(
                f"latent {latent} out of range: the SAE at {self.sources.sae_path} has "
                f"{sae.d_sae} latents (0 to {sae.d_sae - 1})"
            )
        layer = resolve(self.loaded.model, site).layer
        named = {"kind": sae.kind, "site": site, "source": self.sources.sae_source()}
        return UnitId(model=self.model_name, layer=layer, index=latent, **named)

    def direction_unit(self) -> UnitId:
        """The `UnitId` of the subject's direction (index 0, at ``hook``, its source the
        vector's content hash; loads the model to find the site's layer). The vector's sha256
        goes into the record's provenance too.

        Raises:
            InvalidInputError: no direction, a site the model does not have.
        """
        from neuron_explainer.models.hook_sites import resolve

        hook = self.sources.hook
        if self.sources.direction is None or hook is None:
            raise InvalidInputError("no direction given: pass direction= and hook=")
        layer = resolve(self.loaded.model, hook).layer
        source = self.sources.direction_source()
        return UnitId(
            model=self.model_name, layer=layer, index=0, kind="direction", site=hook, source=source
        )

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
        """Record ``unit`` over the corpus; the model runs in a worker thread.

        Raises:
            InvalidInputError: a kind this subject cannot record (or without its SAE or
                direction), layer or index out of range, or a corpus that yields no window.
            DeadUnitError: the unit is never above 0 on the corpus: nothing to explain (its
                message begins ``"dead: never activated on the corpus"``, as a collection's).
        """
        if unit.kind != "mlp_neuron" or unit.site is not None:
            record = await asyncio.to_thread(self.unit_record, unit)
        else:
            records = await asyncio.to_thread(self.neuron_records, unit.layer, [unit.index])
            record = records[unit.index]
        refuse_dead_record(record, unit)
        return record

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
            InvalidInputError: a kind this subject cannot record, layer or index out of
                range, or a text with no token.
        """
        return await asyncio.to_thread(self._activations, unit, list(texts))

    def _activations(self, unit: UnitId, texts: list[str]) -> list[ActivationRecord]:
        if not texts:
            return []
        with self._model_lock:
            return self._activations_locked(unit, texts)

    def _activations_locked(self, unit: UnitId, texts: list[str]) -> list[ActivationRecord]:
        loaded = self.loaded
        first: dict[int, Window] = {}
        for window in iter_windows(
            corpus_from(texts), loaded.tokenizer, length=self.window_length, bos=self.bos
        ):
            first.setdefault(window.document, window)
        empty = [i for i in range(len(texts)) if i not in first]
        if empty:
            raise InvalidInputError(f"text(s) {empty} have no token to run")
        windows = [first[i] for i in range(len(texts))]
        batches = [
            windows[start : start + self.batch_size]
            for start in range(0, len(windows), self.batch_size)
        ]
        if unit.kind != "mlp_neuron" or unit.site is not None:
            reading = read_unit(loaded.model, unit, self.sources)
            records = []
            for batch in batches:
                acts = site_activations(loaded.model, reading, *pad_windows(batch))
                records += window_records(loaded.tokenizer, batch, acts, of_corpus=False)
            return records
        capture = ActivationCapture(loaded.model, [unit.layer])
        columns: dict[int, list[ActivationRecord]] = {unit.index: []}
        for batch in batches:
            self._run(capture, unit.layer, batch, [unit.index], columns, of_corpus=False)
        return columns[unit.index]

    def unit_record(self, unit: UnitId) -> NeuronRecord:
        """Record one unit of any kind the subject knows (docs/units.md) over the corpus, its
        activation computed in the forward hook of its site and the pass stopped there; an
        attention head's top records also say which token the head attended to most from
        their top token (`ActivationRecord.attended`).

        Raises:
            InvalidInputError: a kind this subject cannot record (or without its SAE or
                direction), a refused SAE setting, a site width that does not fit, an index
                out of range, or no windows.
        """
        with self._model_lock:
            return self._unit_record(unit)

    def _unit_record(self, unit: UnitId) -> NeuronRecord:
        loaded = self.loaded
        reading = read_unit(loaded.model, unit, self.sources)
        windows = iter_windows(
            self.corpus, loaded.tokenizer, length=self.window_length, bos=self.bos
        )
        records: list[ActivationRecord] = []
        self._tokens_read = 0
        batch: list[Window] = []
        for window in itertools.chain(windows, [None]):
            if window is not None:
                batch.append(window)
            if batch and (window is None or len(batch) == self.batch_size):
                acts = site_activations(loaded.model, reading, *pad_windows(batch))
                records += window_records(loaded.tokenizer, batch, acts, of_corpus=True)
                self._count(batch)
                batch = []
        if not records:
            raise InvalidInputError(f"corpus {self.corpus.name!r} yields no windows to record")
        provenance = self._provenance(reading.hook_point, extra={"unit": reading.extra})
        layer = unit.layer if unit.layer is not None else 0
        record = self._select([unit], [records], layer, provenance)[0]
        if unit.kind != "attention_head":
            return record
        prefix = [bos_token_id(loaded.tokenizer)] if self.bos == "window" else []
        top = top_sources(loaded.model, loaded.tokenizer, unit, record.top_records, prefix)
        return record.model_copy(update={"top_records": tuple(top)})

    def _provenance(self, hook_point: str, extra: dict[str, Any] | None = None) -> Provenance:
        loaded = self.loaded
        return Provenance(
            model=loaded.name,
            hook_point=hook_point,
            dataset=self.corpus.name,
            window_length=self.window_length,
            bos_policy=self.bos,
            dtype=loaded.dtype,
            device=loaded.device,
            extra=extra or {},
        )

    def _count(self, batch: list[Window]) -> None:
        self._tokens_read += sum(len(window.input_ids) for window in batch)
        if self.progress is not None:
            self.progress(self._tokens_read)

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
        provenance = self._provenance(capture.site.hook_point(layer))
        units = [self.unit(layer, i) for i in wanted]
        records = self._select(units, [columns[i] for i in wanted], layer, provenance)
        return dict(zip(wanted, records, strict=True))

    def _select(
        self,
        units: list[UnitId],
        columns: list[list[ActivationRecord]],
        layer: int,
        provenance: Provenance,
    ) -> list[NeuronRecord]:
        """Each unit's record, its windows chosen as a collection chooses them."""
        return select_records(
            units, columns, layer=layer, width=self.window_length, provenance=provenance,
            **self._selection,
        )  # fmt: skip

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
        acts = capture(*pad_windows(batch))[layer]
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
        if of_corpus:  # the recording's corpus: progress
            self._count(batch)
        return n_neurons


def _sources(sae: Any, direction: Any, hook: str | None) -> UnitSources:
    """The SAE (loaded) or direction (read) a subject records, with its hook site."""
    if sae is not None and direction is not None:
        raise InvalidInputError("give an SAE or a direction, not both")
    if direction is not None:
        if hook is None:
            raise InvalidInputError("a direction needs its hook site: give hook= as well")
        return UnitSources(direction=load_direction(direction), hook=hook)
    if sae is None:
        return UnitSources(hook=hook)
    from neuron_explainer.models.sae import SparseEncoder, load_sae

    encoder = sae if isinstance(sae, SparseEncoder) else load_sae(sae, hookpoint=hook)
    path = encoder.source if isinstance(sae, SparseEncoder) else str(sae)
    if hook is not None and encoder.hook_site not in (None, hook):
        raise InvalidInputError(
            f"the SAE at {path} reads {encoder.hook_site}, not hook={hook!r}: leave hook out "
            "or give the SAE's site"
        )
    return UnitSources(sae=encoder, sae_path=path, hook=hook)
