"""One streaming pass over a corpus that records every neuron of chosen layers.

`collect` reads the corpus's windows (`iter_windows`, window ``w`` = the ``w``-th window of the
stream), runs them through the model in right-padded batches (`ActivationCapture`), and keeps
for every neuron of every chosen layer a fixed-size state: its memory does not depend on the
corpus size.

* **Top-k**: the ``top_k`` windows with the highest max activation, with their activations.
  Ties keep the earlier window, so the result equals ranking all windows by
  ``(-max, window)`` and does not depend on the batch size (beyond the float noise padding
  adds to the forward pass, which can reorder exact ties such as windows that start with the
  same token: a causal model's first position sees that token only).
* **Random sample**: one reservoir of ``R = 2 * n_random`` windows shared by all neurons
  (Algorithm R). The slot window ``w`` may take comes from a stateless hash of ``(seed, w)``
  and a slot holds the largest window hashed to it, so resuming needs no random state and
  the order windows come in does not matter. A neuron's record takes the reservoir in
  slot order, skips its own top windows and keeps the first ``n_random``: top and random never
  share a window; a small corpus (or one where many reservoir windows are top windows) can give
  fewer than ``n_random``.
* **Quantile samples** (warm-up method): the per-window max of every neuron is buffered for
  the first ``quantile_warmup`` windows; then each neuron's boundaries are fixed at
  ``quantile_levels`` of those maxes (``numpy.quantile``, linear). Every later window falls in
  one bin per neuron, and each (neuron, bin) keeps the ``n_per_quantile`` windows with the
  smallest keys, a stateless hash of ``(seed, layer, w, neuron)`` (bottom-m). Limits:
  boundaries describe the warm-up windows only (biased when the corpus drifts); warm-up
  windows are never sampled; a corpus shorter than the warm-up gets boundaries from all its
  windows and empty samples.
* **Moments**: token count and sums of ``(x - c) ** p``, ``p = 1..4``, per neuron, ``c``
  being the neuron's mean over window 0 (a shift against cancellation); each window's partial
  sums are float32 (relative error ~1e-7, measured against float64 in the tests), added in
  float64 over a fixed binary tree of window blocks (a moment tree), so the totals do not
  depend on how the corpus is split. Read back as `neuron_explainer.records.building.moments`
  defines them.
* **Window table**: every window's excerpt ids, appended to a file (disk grows with the corpus,
  4 bytes per token slot; memory does not).

The collector keeps every window, duplicates included; `Collection.neuron_record` drops an
excerpt whose tokens repeat one it already holds (as `build_neuron_record` does), so a record
can hold fewer than ``top_k`` or ``n_random`` excerpts when the corpus repeats text.

Layout of ``out_dir``::

    meta.json                      format, config and its hash, model, layers, neurons per
                                   layer, hook points, provenance fields, tokenizer facts
    progress.json                  windows_done, tokens_done, generation, finished (written last)
    tokens.json                    {"strings": token_strings(tokenizer, [i]) for every id}
    window_ids.u32                 uint32 [windows, window_length], excerpt ids zero-padded
    window_lengths.u32             uint32 [windows], excerpt lengths
    window_positions.i64           int64 [windows, 2], (document, start): each window's
                                   `WindowId` (format 2; -1 = unknown, migrated from format 1)
    layer_{L}/state-{gen}.safetensors   N = neurons, k = top_k, R = 2 * n_random,
                                   Q = len(quantile_levels), m = n_per_quantile,
                                   W = quantile_warmup, Lw = window_length:
        top_values f32 [N,k], top_windows i64 [N,k] (-1 = empty), both in rank order;
        top_slots i64 [N,k]: where rank r's activations lie in top_activations f32 [N,k,Lw]
        random_windows i64 [R], random_activations f32 [N,R,Lw]
        quantile_boundaries f64 [N,Q] (NaN before warm-up ends), quantile_counts i64 [N,Q+1],
        quantile_windows i64 [N,Q+1,m], quantile_activations f32 [N,Q+1,m,Lw],
        warmup_maxes f32 [W,N]
        moment_shift f64 [N], moment_sums f64 [N,4], token_count i64 [1]
        moment_node_ids i64 [K,2], moment_nodes f64 [K,4,N] (the moment tree's blocks),
        covered i64 [P,2] (window ranges held), firing_counts i64 [N] (units only)

Every decision is keyed by the window id and batches are cut on a fixed grid (``batch_end``), so
partial states over pieces of the corpus merge into this state exactly (``cluster=``; collection
format 4, sampler 2; a collection begun by an earlier version resumes with sampler 1).

Checkpoints: every ``checkpoint_every`` windows (batches never cross a multiple of it) and at
the end, the window files are flushed and synced, each layer's state is written under a new
generation (temp file + ``os.replace``), then ``meta.json`` and ``progress.json`` (atomically),
and only then older generations are deleted. A restart with the same config resumes from
``progress.json``: window files are truncated to ``windows_done`` rows, the first
``windows_done`` windows are skipped (each checked against its recorded token ids and
position, and an unknown position filled in), and the result equals an uninterrupted run bit
for bit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.loading import LoadedModel, load_model
from neuron_explainer.records.building import (
    DEFAULT_N_PER_QUANTILE,
    DEFAULT_N_RANDOM,
    DEFAULT_QUANTILE_LEVELS,
    DEFAULT_TOP_K,
    checked_quantile_levels,
)
from neuron_explainer.subjects._collect_batches import fold_here
from neuron_explainer.subjects._collect_directions import direction_groups, load_directions
from neuron_explainer.subjects._collect_run import CollectionRun
from neuron_explainer.subjects._collect_shards import ShardJob, fold_on_cluster
from neuron_explainer.subjects._collect_units import (
    DEFAULT_LATENT_CHUNK,
    UnitCapture,
    UnitGroup,
    attended_arrays,
    head_groups,
    resumable_hash,
    sae_groups,
)
from neuron_explainer.subjects.capture import ActivationCapture
from neuron_explainer.subjects.collection import (
    META,
    PROGRESS,
    UNKNOWN_POSITION,
    VOCABULARY,
    WINDOW_IDS,
    WINDOW_LENGTHS,
    WINDOW_POSITIONS,
    Collection,
    read_json,
)
from neuron_explainer.subjects.corpus import (
    DEFAULT_WINDOW_LENGTH,
    BOSPolicy,
    Window,
    corpus_from,
    corpus_provenance,
    iter_windows,
)

__all__ = ["collect"]


def _config_hash(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _clear(out_dir: Path) -> None:
    """Remove the files a collection writes (and nothing else)."""
    for name in (PROGRESS, META, VOCABULARY, WINDOW_IDS, WINDOW_LENGTHS, WINDOW_POSITIONS):
        (out_dir / name).unlink(missing_ok=True)
    for pattern in ("layer_*", "sae", "heads_*", "direction"):
        for folder in out_dir.glob(pattern):
            if folder.is_dir():
                shutil.rmtree(folder)


def build_capture(
    loaded: LoadedModel, units: dict[str, Any]
) -> tuple[ActivationCapture | UnitCapture, list[UnitGroup], BOSPolicy]:
    """The capture of `collect`'s units (``units``: its ``layers``, ``sae``, ``latents``,
    ``heads``, ``direction``, ``hook``, ``latent_chunk`` and ``bos`` arguments), its unit
    groups (none for MLP neurons) and the BOS policy to use."""
    groups, bos = _unit_groups(
        loaded.model, units["sae"], units["latents"], units["heads"], units["hook"],
        units["latent_chunk"], units["bos"], units["direction"],
    )  # fmt: skip
    capture: ActivationCapture | UnitCapture = (
        UnitCapture(loaded.model, groups)
        if groups
        else ActivationCapture(loaded.model, units["layers"] or [])
    )
    return capture, groups, bos


def _verified_skip(windows: Iterator[Window], run: CollectionRun) -> Iterator[Window]:
    """Skip the windows a resumed run already holds, checking that each one has the token ids
    and the position recorded for it (so a corpus that changed under the same name is caught,
    not mixed in) and filling in a position not known (a collection begun in format 1); then
    yield the rest.

    Raises:
        InvalidInputError: a skipped window differs from the one recorded, or the corpus ends
            before the windows done.
    """
    done = run.windows_done
    if done:
        width = run.width
        ids = np.memmap(run.out / WINDOW_IDS, dtype=np.uint32, mode="r", shape=(done, width))
        lengths = np.fromfile(run.out / WINDOW_LENGTHS, dtype=np.uint32, count=done)
        positions = np.memmap(
            run.out / WINDOW_POSITIONS, dtype=np.int64, mode="r+", shape=(done, 2)
        )
        for w in range(done):
            window = next(windows, None)
            known = tuple(int(x) for x in positions[w])
            if window is None:
                got = "the corpus ended"
            elif list(window.excerpt_ids) != ids[w, : int(lengths[w])].tolist():
                got = "its tokens differ"
            elif UNKNOWN_POSITION in known:
                positions[w] = (window.document, window.start)
                continue
            elif known != (window.document, window.start):
                got = (
                    f"it is token {window.start} of document {window.document}, not token "
                    f"{known[1]} of document {known[0]}"
                )
            else:
                continue
            positions.flush()
            raise InvalidInputError(
                f"cannot resume the collection in {run.out}: window {w} was collected "
                f"from this corpus before, but now {got}; the corpus changed since the "
                "collection started. Restore it, or pass overwrite=True to start over"
            )
        positions.flush()
        del ids, positions
    yield from windows


def _unit_groups(
    model: Any,
    sae: Any,
    latents: Sequence[int] | None,
    heads: Sequence[tuple[int, int]] | None,
    hook: str | None,
    chunk: int,
    bos: BOSPolicy | None,
    direction: Any = None,
) -> tuple[list[UnitGroup], BOSPolicy]:
    """The unit groups to collect (none for MLP neurons) and the BOS policy to use."""
    if heads:
        return head_groups(model, heads, chunk), bos or "none"
    if direction is not None:
        assert hook is not None
        return direction_groups(model, load_directions(direction), hook, chunk), bos or "none"
    if not sae:
        return [], bos or "none"
    from neuron_explainer.subjects.hf import _sources
    from neuron_explainer.subjects.units import sae_bos_policy

    sources = _sources(sae, None, hook)
    assert sources.sae is not None
    bos = sae_bos_policy(sources.sae, bos, sources.sae_path or "(given)")
    return sae_groups(model, sources, latents, chunk), bos or "none"


def _attend(run: CollectionRun, loaded: LoadedModel, bos: BOSPolicy) -> None:
    """Give each attention head's state where it looked from its top windows' top tokens
    (`attended_arrays`), once the collection is complete."""
    heads = [(g, group) for g, group in enumerate(run.groups) if group.kind == "attention_head"]
    if not heads:
        return
    from neuron_explainer.subjects.corpus import bos_token_id

    run.flush()
    prefix = [bos_token_id(loaded.tokenizer)] if bos == "window" else []
    for g, group in heads:
        for p, part in enumerate(group.parts()):
            a = run.states[run.targets[(g, p)][0]].a
            a.update(
                attended_arrays(
                    loaded.model, group, part, a["top_windows"], a["top_slots"],
                    a["top_activations"], run.window_tokens, prefix,
                )
            )  # fmt: skip


def _check_counts(*counts: tuple[str, int, int]) -> None:
    """Check `collect`'s sizes and counts, each given as ``(name, value, minimum)``.

    Raises:
        InvalidInputError: the first value below its minimum, named.
    """
    for name, value, minimum in counts:
        if value < minimum:
            raise InvalidInputError(f"{name} must be at least {minimum}, got {value}")


def _resume_or_clear(run: CollectionRun, *, overwrite: bool) -> bool:
    """Get ``run.out`` ready for ``run``, from what an earlier `collect` left there.

    With no ``progress.json``, or one written under another config and ``overwrite``, the
    collection files are removed (nothing else in the folder is touched); an unfinished
    collection with the same config is resumed (`CollectionRun.resume`).

    Returns:
        Whether a finished collection with the same config is already there (nothing to do).

    Raises:
        InvalidInputError: the folder holds a collection with another config and not
            ``overwrite``.
        FormatError: an unfinished collection's files are missing or short.
    """
    progress = run.out / PROGRESS
    if not progress.exists():
        _clear(run.out)
        return False
    previous = read_json(progress)
    if previous.get("config_hash") != run.config_hash:
        if not overwrite:
            raise InvalidInputError(
                f"{run.out} holds a collection made with another config "
                f"(hash {previous.get('config_hash')}, now {run.config_hash}); pass "
                "overwrite=True to replace it, or use another out_dir"
            )
        _clear(run.out)
        return False
    if previous.get("finished"):
        return True
    run.resume(previous)
    return False


def collect(
    model: str | os.PathLike[str] | LoadedModel | Any,
    corpus: Any,
    *,
    out_dir: str | os.PathLike[str],
    layers: Sequence[int] | None = None,
    sae: str | os.PathLike[str] | Any = None,
    latents: Sequence[int] | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    direction: str | os.PathLike[str] | Any = None,
    hook: str | None = None,
    latent_chunk: int = DEFAULT_LATENT_CHUNK,
    tokenizer: Any = None,
    dtype: str = "float32",
    device: str | None = None,
    window_length: int = DEFAULT_WINDOW_LENGTH,
    bos: BOSPolicy | None = None,
    min_length: int = 1,
    batch_size: int = 16,
    top_k: int = DEFAULT_TOP_K,
    n_random: int = DEFAULT_N_RANDOM,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    n_per_quantile: int = DEFAULT_N_PER_QUANTILE,
    quantile_warmup: int = 1024,
    seed: int = 0,
    checkpoint_every: int = 4096,
    max_windows: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    cluster: Any = None,
) -> Collection:
    """Collect records of every MLP neuron of ``layers`` (or of an SAE's latents, of
    attention heads, or of directions) in one pass over ``corpus``.

    Args:
        model: anything `load_model` takes, or a `LoadedModel`.
        corpus: anything `corpus_from` takes.
        out_dir: the collection folder (created; layout in the module docstring).
        layers: layers to record, all neurons of each.
        sae: instead of ``layers``: an SAE or transcoder (a folder `load_model` reads, or a
            `SparseEncoder`) whose ``latents`` are recorded at its hook site (docs/units.md).
        latents: the SAE's latents to record (a ``range`` or indices); all when ``None``.
        heads: instead of ``layers``: ``(layer, head)`` pairs of attention heads.
        direction: instead of ``layers``: one vector ``[d_model]`` or ``K`` of them
            ``[K, d_model]`` (an array or a ``.npy`` file), read at ``hook``: ``K`` units of
            kind ``direction`` (index = row), each ``site_activation @ vector`` computed in the
            site's hook as `explain_neuron(direction=...)` computes it. The array's sha256
            (and each row's) is in the meta and the records' provenance, and in the config:
            resuming with other vectors is refused.
        hook: the directions' hook site (required with ``direction``), or the SAE's when its
            files do not name it.
        latent_chunk: units per state part: latent (or direction) activations are computed
            and folded ``latent_chunk`` units at a time, so no wider ``[tokens, units]``
            tensor is made (part of the config: a resumed collection keeps its own).
        tokenizer, dtype, device: as for `load_model`.
        window_length, bos, min_length: how windows are cut (`iter_windows`); ``bos``
            defaults to ``"none"``, or with an SAE to what its ``prepend_bos`` needs.
        batch_size: windows per forward pass; results do not depend on it.
        top_k, n_random, quantile_levels, n_per_quantile: what each record holds.
        quantile_warmup: windows whose maxes fix the quantile boundaries (see module docstring).
        seed: seeds every sampling decision.
        checkpoint_every: windows between checkpoints.
        max_windows: stop after this many windows.
        overwrite: replace a collection in ``out_dir`` made with another config.
        progress: called with the number of windows done after every batch.
        cluster: fold the windows on a Dask cluster's workers instead of in this process:
            an address (``"tcp://host:8786"``, a running scheduler), a number of local worker
            processes to start (bound to 127.0.0.1, stopped after), or a
            ``distributed.Client``. The result is the same collection (bit for bit on the
            CPU); workers load the model by name, so ``model`` must be loadable there
            (docs/cluster.md). Needs ``neuron-explainer[dask]``.

    Returns:
        The finished `Collection`. A finished collection with the same config is returned
        without any work; an unfinished one is resumed.

    Raises:
        InvalidInputError: bad arguments (not exactly one of ``layers``, ``sae``, ``heads``,
            ``direction``; ``direction`` without ``hook``, a bad array), a refused SAE setting,
            a site the model lacks, no windows, or ``out_dir`` holds a collection with another
            config (pass ``overwrite=True``).
    """
    chosen = [name for name, v in (("layers", layers), ("sae", sae), ("heads", heads)) if v]
    chosen += ["direction"] if direction is not None else []
    if len(chosen) != 1:
        raise InvalidInputError(
            "give exactly one of layers= (MLP neurons), sae= (with latents=), heads= or "
            f"direction= (with hook=); got {chosen or 'none'}"
        )
    if latents is not None and sae is None:
        raise InvalidInputError("latents= needs sae=")
    if (direction is None) == (hook is not None) and sae is None:
        raise InvalidInputError(
            "direction= needs hook= (its site, e.g. 'blocks.6.hook_resid_pre')"
            if hook is None
            else "hook= goes with direction= or sae="
        )
    _check_counts(
        ("latent_chunk", latent_chunk, 1),
        ("window_length", window_length, 1),
        ("batch_size", batch_size, 1),
        ("top_k", top_k, 1),
        ("checkpoint_every", checkpoint_every, 1),
        ("quantile_warmup", quantile_warmup, 1),
        ("n_random", n_random, 0),
        ("n_per_quantile", n_per_quantile, 0),
        ("seed", seed, 0),
    )
    levels = checked_quantile_levels(quantile_levels)
    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, tokenizer=tokenizer, dtype=dtype, device=device)
    )
    source = corpus_from(corpus)
    units = {
        "layers": layers, "sae": sae, "latents": latents, "heads": heads,
        "direction": direction, "hook": hook, "latent_chunk": latent_chunk, "bos": bos,
    }  # fmt: skip
    capture, groups, bos = build_capture(loaded, units)
    fields = corpus_provenance(
        source, length=window_length, bos=bos, min_length=min_length, tokenizer=loaded.tokenizer
    )
    config = {
        "model": loaded.name,
        "dataset": source.name,
        "corpus": fields["extra"]["corpus"],
        "layers": capture.layers if isinstance(capture, ActivationCapture) else [],
        "window_length": window_length,
        "bos": bos,
        "min_length": min_length,
        "top_k": top_k,
        "n_random": n_random,
        "quantile_levels": list(levels),
        "n_per_quantile": n_per_quantile,
        "quantile_warmup": quantile_warmup,
        "seed": seed,
        "dtype": loaded.dtype,
        "max_windows": max_windows,
    }
    sizes = {"batch_size": batch_size, "checkpoint_every": checkpoint_every}
    if groups:  # MLP collections keep the config (and hash) of format 2
        config["units"] = [{**g.config(), "chunk": latent_chunk} for g in groups]
    out = Path(out_dir)
    # a collection begun when the hash held the SAE's path resumes under its own hash
    config_hash = (groups and resumable_hash(out, config)) or _config_hash(config)
    out.mkdir(parents=True, exist_ok=True)
    run = CollectionRun(out, config, config_hash, loaded, capture, fields, groups, sizes)
    if _resume_or_clear(run, overwrite=overwrite):
        return Collection(out)
    run.start()
    windows = iter_windows(
        source, loaded.tokenizer, length=window_length, bos=bos, min_length=min_length
    )
    stream = itertools.islice(_verified_skip(windows, run), max_windows)
    try:
        if cluster is None:
            fold_here(run, stream, progress)
        else:
            job = ShardJob(
                str(model) if isinstance(model, str | os.PathLike) else loaded.name,
                tokenizer, loaded.dtype, device if not isinstance(model, LoadedModel) else None,
                {**units, "bos": bos}, run.config | sizes,
            ).with_key()  # fmt: skip
            # one tokenising pass first: the shards after the warm-up are cut equal
            counted = iter_windows(
                source, loaded.tokenizer, length=window_length, bos=bos, min_length=min_length
            )
            total = sum(1 for _ in itertools.islice(counted, max_windows))
            fold_on_cluster(run, cluster, job, stream, progress, total)
    except BaseException:
        run.close()
        raise
    if run.windows_done == 0:
        run.close()
        raise InvalidInputError(f"corpus {source.name!r} yields no windows to collect")
    for state in run.states.values():
        state.fix_boundaries(min(run.windows_done, quantile_warmup))
    _attend(run, loaded, bos)
    run.checkpoint(finished=True)
    return Collection(out)
