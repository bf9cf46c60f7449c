"""Other tools' files from and to a run: Neuronpedia upload batches from a run database
(`export_neuronpedia`), and records from a delphi latent cache (`import_delphi`).

The file formats themselves live in `neuron_explainer.formats` (`write_neuronpedia`,
`read_delphi_cache`); these functions add what needs the run database, a collection or a
tokenizer. See docs/interop.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.formats.delphi import DELPHI_VERSION, read_delphi_cache
from neuron_explainer.formats.neuronpedia import write_neuronpedia
from neuron_explainer.formats.records_jsonl import RECORDS_FILE, write_records_jsonl
from neuron_explainer.records import ActivationRecord, UnitId

__all__ = ["export_neuronpedia", "import_delphi"]


def export_neuronpedia(
    db: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model_id: str,
    source: str | None = None,
    collection: str | os.PathLike[str] | None = None,
    method_name: str | None = None,
    explanation_model: str | None = None,
) -> list[Path]:
    """Export the done units of the run database ``db`` as Neuronpedia upload batches in
    ``out_dir`` (see `neuron_explainer.formats.write_neuronpedia`): files of at most 128
    features, each a body for Neuronpedia's ``POST /api/feature/upload-batch``, and the scores
    in ``scores.jsonl``. Returns the batch files.

    Args:
        db: the run database.
        out_dir: the folder to write (created).
        model_id: Neuronpedia's model id, e.g. ``"gpt2-small"``.
        source: Neuronpedia's source (``"{layer}"`` is replaced by each unit's layer); ``None``
            gives an MLP neuron its layer number, Neuronpedia's name for a layer of neurons.
        collection: a collection folder whose records give each unit's excerpts (its top
            records, then its random sample); ``None``: the excerpts each result holds (the
            held-out excerpts it was scored on).
        method_name: Neuronpedia's explanation type (e.g. ``"oai_token-act-pair"``), or null.
        explanation_model: Neuronpedia's explainer model name, or null.

    Raises:
        InvalidInputError: no done unit, or bad arguments (see `write_neuronpedia`).
        FormatError: a limit of Neuronpedia's is exceeded; the message names the unit.
    """
    from neuron_explainer.runs.store import RunStore

    with RunStore(db) as store:
        results = list(store.results())
    if not results:
        raise InvalidInputError(f"{db} holds no done unit to export")
    excerpts: dict[UnitId, tuple[ActivationRecord, ...]] | None = None
    if collection is not None:
        from neuron_explainer.subjects.collection import Collection

        found = Collection(collection)
        excerpts = {}
        for result in results:
            record = found.neuron_record(result.unit.layer, result.unit.index)
            excerpts[result.unit] = record.top_records + record.random_sample
    return write_neuronpedia(
        results,
        out_dir,
        model_id=model_id,
        source=source,
        excerpts=excerpts,
        method_name=method_name,
        explanation_model=explanation_model,
    )


def _token_strings(cache_dir: Path, tokenizer: Any) -> Any:
    """A function of token ids giving their strings, from ``tokenizer`` (a tokenizer, a name
    or path to load, or ``None``: the ``model_name`` of the cache's first module config)."""
    from neuron_explainer.subjects.tokens import token_strings

    if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
        name = tokenizer
        if name is None:
            configs = sorted(cache_dir.glob("*/config.json"))
            if not configs:
                raise InvalidInputError(f"{cache_dir} holds no delphi module folder")
            name = json.loads(configs[0].read_text(encoding="utf-8")).get("model_name")
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(name))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot load the tokenizer {name!r} to read the cache's token ids: {exc}; give "
                "tokenizer= (--tokenizer) a local tokenizer folder"
            ) from None
    return lambda ids: token_strings(tokenizer, ids)


def import_delphi(
    cache_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    modules: list[str] | None = None,
    latents: list[int] | None = None,
    kind: str | None = None,
    window_length: int | None = None,
    top_k: int = 40,
    n_random: int = 30,
    seed: int = 0,
) -> Path:
    """Read delphi's latent cache (`neuron_explainer.formats.read_delphi_cache`) and write the
    records to ``out_dir/records.jsonl`` (the folder is created), with ``import.json`` saying
    what was read; returns the records file. Explain them with
    ``explain_neurons(records=RecordsFile(out_dir), db=...)`` or ``neuron-explainer run
    --records OUT_DIR``.

    Args:
        cache_dir: delphi's ``latents`` folder (one folder per module).
        out_dir: the folder to write.
        tokenizer: the tokenizer of the cache's token ids: a Hugging Face tokenizer, or a name
            or local path to load; ``None``: the ``model_name`` of the cache's config.
        modules, latents, kind, window_length, top_k, n_random, seed: as
            `read_delphi_cache` takes them.

    Raises:
        FormatError: a malformed cache file.
        InvalidInputError: no cache there, no such module, a tokenizer that cannot be loaded,
            no latent that fires.
    """
    root = Path(cache_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder (give delphi's latents folder)")
    records = read_delphi_cache(
        root,
        token_strings=_token_strings(root, tokenizer),
        modules=modules,
        latents=latents,
        kind=kind,
        window_length=window_length,
        top_k=top_k,
        n_random=n_random,
        seed=seed,
    )
    if not records:
        raise InvalidInputError(f"{root}: no latent fires in the cache (nothing to import)")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORDS_FILE
    write_records_jsonl(records.values(), path)
    about = {
        "source_format": "delphi-latent-cache",
        "delphi_version": DELPHI_VERSION,
        "cache_dir": str(root.resolve()),
        "units": len(records),
        "layers": sorted({u.layer for u in records}),
        "kinds": sorted({u.kind for u in records}),
        "settings": {"window_length": window_length, "top_k": top_k, "n_random": n_random},
    }
    (folder / "import.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    return path
