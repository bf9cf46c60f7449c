"""EleutherAI delphi's latent cache, read as `NeuronRecord` objects and written from them.

Followed from delphi's source, ``EleutherAI/delphi`` at tag ``v0.1.1`` (PyPI ``eai-delphi``
0.1.1, commit ``a5581d73fa71ed6fb84227d67ae732aed5133897``; the cache code is the same at
``3c2e139378b56ca02a632697b541a11aebf03855``, 2025-11-29). ``delphi/latents/cache.py``
(``LatentCache.save_splits``, ``save_config``) writes, per hookpoint (module)::

    {cache_dir}/{module}/{start}_{end}.safetensors    latents start..end (inclusive)
        locations    uint16 or uint32 [n, 3]: (batch row, position, latent - start)
        activations  float16 [n]: the activation there (only |a| > 1e-5 is kept)
        tokens       int [rows, cache_ctx_len]: the token ids of every row (in every file)
    {cache_dir}/{module}/config.json                  CacheConfig.to_dict() + "model_name"

and ``delphi/latents/loader.py`` (``TensorBuffer.load``, ``LatentDataset._edges``) reads it
back: the file name's ``start`` is added to ``locations[:, 2]``, a missing ``tokens`` means the
dataset is re-tokenised. This module reads and writes exactly that layout (``tokens`` in every
file; activations written as float32, which delphi reads as it reads float16).

Reading (`read_delphi_cache`): each row is cut into windows of ``window_length`` tokens (the
row length by default; delphi's examples are 32-token windows, ``example_ctx_len``). A
latent's record holds its ``top_k`` windows with the highest max activation that fire at all
(ties: the earlier window), a random sample of ``n_random`` other windows (any windows, firing
or not; seeded per latent) and the moments of its activation over every token of the cache
(absent entries are 0). Each excerpt's `WindowId` is (row, offset in the row). The unit is
(``model_name``, the first integer of the module name as layer, the latent, ``kind``); the
module name is the provenance's ``hook_point``. Token strings come from ``token_strings``
(delphi stores ids only). Lost: quantile samples (none), the rows' documents (a row is a chunk
of delphi's token stream, not a document), the dataset's text.

Writing (`write_delphi_cache`): every distinct excerpt of the records (by window id, else by
token ids) becomes a row; each latent's activations on its own excerpts are written; on rows
that are not its excerpts a latent's activation is unknown and reads as 0 in delphi (so
delphi may take such a row as a non-activating example). Needs token ids (the records', or
``vocabulary=``) and excerpts of one length. Lost: moments, quantiles, the top/random split
(read back, the top records are re-ranked from the activations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import PathLike, load_json_file, write_text
from neuron_explainer.formats._window import LatentData, latent_record, module_arrays
from neuron_explainer.records import NeuronRecord, Provenance, UnitId

__all__ = [
    "DELPHI_COMMIT",
    "DELPHI_VERSION",
    "delphi_unit",
    "read_delphi_cache",
    "write_delphi_cache",
]

DELPHI_VERSION = "0.1.1"
"""The delphi release (``eai-delphi`` on PyPI, tag ``v0.1.1``) whose layout is followed."""
DELPHI_COMMIT = "a5581d73fa71ed6fb84227d67ae732aed5133897"
"""The commit of ``EleutherAI/delphi`` that tag is."""
SOURCE_FORMAT = "delphi-latent-cache"
_SPLIT = re.compile(r"^(\d+)_(\d+)\.safetensors$")
_LAYER = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
TokenStrings = Callable[[Sequence[int]], Sequence[str]] | Sequence[str]
"""Token strings: a function of token ids (one string per id), or a list indexed by id."""


def delphi_unit(module: str, latent: int, model: str, kind: str = "sae_latent") -> UnitId:
    """The unit of ``latent`` of delphi's ``module`` (its layer is the first integer in the
    module's dotted name: ``layers.6.mlp`` is layer 6).

    Raises:
        InvalidInputError: the module name holds no layer number, or a bad model or kind.
    """
    match = _LAYER.search(module)
    if match is None:
        raise InvalidInputError(
            f"delphi module {module!r} names no layer (e.g. 'layers.6.mlp'); rename its folder"
        )
    try:
        return UnitId(model=model, layer=int(match[1]), index=latent, kind=kind)
    except ValueError as exc:
        raise InvalidInputError(f"bad model or kind for {module!r}: {exc}") from None


def _load_split(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(locations int64 [n, 3] with absolute latents, activations float64, tokens or None)."""
    try:
        data = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a safetensors file delphi wrote: {exc}") from None
    for name in ("locations", "activations"):
        if name not in data:
            raise FormatError(f"{path}: {name}: required tensor is missing")
    locations, activations = data["locations"], data["activations"]
    if locations.dtype.kind not in "iu" or locations.ndim != 2 or locations.shape[1] != 3:
        raise FormatError(
            f"{path}: locations: expected integers of shape [n, 3], got {locations.dtype} "
            f"{list(locations.shape)}"
        )
    if activations.shape != (len(locations),):
        raise FormatError(
            f"{path}: activations: shape {list(activations.shape)} does not match "
            f"{len(locations)} locations"
        )
    values = activations.astype(np.float64)
    if not np.isfinite(values).all():
        raise FormatError(f"{path}: activations: holds NaN or infinite values")
    start = int(_SPLIT.match(path.name)[1])  # type: ignore[index]
    located = locations.astype(np.int64)
    located[:, 2] += start
    tokens = data.get("tokens")
    if tokens is not None and (tokens.ndim != 2 or tokens.dtype.kind not in "iu"):
        raise FormatError(f"{path}: tokens: expected integers of shape [rows, ctx_len]")
    return located, values, tokens


def _read_module(folder: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """A module folder's config, locations, activations and tokens."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FormatError(
            f"{folder}: no config.json; delphi writes one per module (LatentCache.save_config)"
        )
    config, name = load_json_file(config_path)
    if not isinstance(config, dict) or not isinstance(config.get("model_name"), str):
        raise FormatError(f"{name}: model_name: required string is missing")
    splits = sorted(
        (p for p in folder.iterdir() if _SPLIT.match(p.name)),
        key=lambda p: int(_SPLIT.match(p.name)[1]),  # type: ignore[index]
    )
    if not splits:
        raise FormatError(f"{folder}: no {{start}}_{{end}}.safetensors split files")
    loaded = [_load_split(p) for p in splits]
    tokens = next((t for _, _, t in loaded if t is not None), None)
    if tokens is None:
        raise FormatError(
            f"{folder}: no split file holds tokens; re-run delphi's cache with save_tokens=True"
        )
    locations = np.concatenate([loc for loc, _, _ in loaded])
    values = np.concatenate([v for _, v, _ in loaded])
    rows, width = tokens.shape
    bad = (locations[:, 0] >= rows) | (locations[:, 1] >= width) | (locations < 0).any(axis=1)
    if bad.any():
        raise FormatError(
            f"{folder}: locations[{int(np.argmax(bad))}] lies outside tokens "
            f"({rows} rows of {width})"
        )
    return config, locations, values, tokens.astype(np.int64)


def _strings(token_strings: TokenStrings, ids: np.ndarray) -> dict[int, str]:
    """Each id of ``ids`` with its string."""
    wanted = [int(i) for i in np.unique(ids)]
    if callable(token_strings):
        found = list(token_strings(wanted))
    else:
        try:
            found = [token_strings[i] for i in wanted]
        except IndexError:
            raise InvalidInputError(
                f"token id {wanted[-1]} is not in the vocabulary of {len(token_strings)} strings"
            ) from None
    if len(found) != len(wanted):
        raise InvalidInputError(f"token_strings gave {len(found)} strings for {len(wanted)} ids")
    return dict(zip(wanted, found, strict=True))


def read_delphi_cache(
    cache_dir: PathLike,
    *,
    token_strings: TokenStrings,
    modules: Sequence[str] | None = None,
    latents: Iterable[int] | None = None,
    kind: str | None = None,
    window_length: int | None = None,
    top_k: int = 40,
    n_random: int = 30,
    seed: int = 0,
) -> dict[UnitId, NeuronRecord]:
    """Read delphi's latent cache (the ``latents`` folder of a delphi run) as records.

    Args:
        cache_dir: the folder holding one folder per module.
        token_strings: the string of each token id (see `TokenStrings`).
        modules: the modules to read (default: every folder with a ``config.json``).
        latents: the latents to read (default: every latent that fires in the cache).
        kind: the units' kind (``"transcoder_latent"`` for transcoders); ``None``: the
            config's ``unit_kind`` (which `write_delphi_cache` adds), else ``"sae_latent"``.
        window_length: tokens per excerpt; divides the cache's row length (default: a row).
        top_k: top windows a record keeps, at most. n_random: random windows, at most.
        seed: the random sample's seed.

    Returns:
        The records by unit, in (module, latent) order.

    Raises:
        FormatError: a missing or malformed file (the message names it and what is wrong).
        InvalidInputError: no such folder or module, a window length that does not divide the
            rows, a token id ``token_strings`` does not know, or bad arguments.
    """
    root = Path(cache_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder (give delphi's latents folder)")
    names = sorted(modules or (p.name for p in root.iterdir() if (p / "config.json").is_file()))
    if not names:
        raise InvalidInputError(f"{root} holds no delphi module folder (with a config.json)")
    wanted = None if latents is None else {int(i) for i in latents}
    records: dict[UnitId, NeuronRecord] = {}
    for module in names:
        if not (root / module).is_dir():
            raise InvalidInputError(f"{root} has no module folder {module!r}")
        config, locations, values, tokens = _read_module(root / module)
        width = window_length or tokens.shape[1]
        if width < 1 or tokens.shape[1] % width:
            raise InvalidInputError(
                f"window_length {width} does not divide the cache's rows of {tokens.shape[1]}"
            )
        strings = _strings(token_strings, tokens)
        unit_kind = kind or str(config.get("unit_kind") or "sae_latent")
        provenance = _provenance(root, module, config, width)
        order = np.argsort(locations[:, 2], kind="stable")
        locations, values = locations[order], values[order]
        found, starts = np.unique(locations[:, 2], return_index=True)
        ends = [*starts[1:], len(locations)]
        for latent, a, b in zip(found.tolist(), starts.tolist(), ends, strict=True):
            if wanted is not None and latent not in wanted:
                continue
            unit = delphi_unit(module, latent, config["model_name"], unit_kind)
            data = LatentData(locations[a:b, :2], values[a:b], tokens, width)
            records[unit] = latent_record(
                unit, data, strings, provenance, top_k=top_k, n_random=n_random, seed=seed
            )
    return records


def _provenance(root: Path, module: str, config: Mapping[str, Any], width: int) -> Provenance:
    dataset = config.get("dataset_repo")
    if dataset and config.get("dataset_split"):
        dataset = (
            f"{dataset} ({config.get('dataset_name') or 'default'}, {config['dataset_split']})"
        )
    return Provenance(
        model=config["model_name"],
        hook_point=module,
        dataset=dataset or None,
        window_length=width,
        library_version=None,
        extra={
            "source_format": SOURCE_FORMAT,
            "source": str(root / module),
            "delphi_version": DELPHI_VERSION,
            "cache_config": json.loads(json.dumps(dict(config))),
        },
    )


def write_delphi_cache(
    records: Iterable[NeuronRecord],
    cache_dir: PathLike,  # delphi's latents folder
    *,
    module: str | None = None,
    model_name: str | None = None,
    vocabulary: Mapping[str, int] | None = None,
) -> list[Path]:
    """Write ``records`` in delphi's latent cache layout, one split file per module (``0_{N-1}``,
    ``N`` = the highest latent + 1) with its ``config.json``; returns the split files.

    Args:
        records: the records (their units' indices are the latents).
        cache_dir: delphi's ``latents`` folder (created).
        module: the module name of every record (default: each record's provenance
            ``hook_point``, else ``layers.{layer}``).
        model_name: the config's ``model_name`` (default: the units' model), which delphi
            loads the tokenizer of.
        vocabulary: token string to id, for records without ``token_ids``.

    Raises:
        InvalidInputError: no records, two records of one latent in a module, a record with
            no token ids and no ``vocabulary`` (or a token it lacks), excerpts of several
            lengths in a module.
    """
    by_module: dict[str, dict[int, NeuronRecord]] = {}
    for record in records:
        name = module or record.provenance.hook_point or f"layers.{record.unit.layer}"
        held = by_module.setdefault(name, {})
        if record.unit.index in held:
            raise InvalidInputError(
                f"{record.unit} and {held[record.unit.index].unit} are both latent "
                f"{record.unit.index} of module {name!r}; give each its own module"
            )
        held[record.unit.index] = record
    if not by_module:
        raise InvalidInputError("no records to write")
    paths = []
    for name, held in sorted(by_module.items()):
        folder = Path(cache_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        arrays, n_latents = module_arrays(name, held, vocabulary)
        path = folder / f"0_{n_latents - 1}.safetensors"
        save_file(arrays, str(path))
        first = next(iter(held.values()))
        config = {
            "dataset_repo": first.provenance.dataset or "",
            "dataset_split": "",
            "dataset_name": "",
            "dataset_column": "text",
            "batch_size": int(arrays["tokens"].shape[0]),
            "cache_ctx_len": int(arrays["tokens"].shape[1]),
            "n_tokens": int(arrays["tokens"].size),
            "n_splits": 1,
            "model_name": model_name or first.unit.model,
            "unit_kind": first.unit.kind,
        }
        write_text(folder / "config.json", json.dumps(config, indent=4) + "\n")
        paths.append(path)
    return paths
