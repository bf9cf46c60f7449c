"""Neuronpedia's feature upload format: explanations and activation excerpts, in batches.

Followed from Neuronpedia's source, ``hijohnnylin/neuronpedia`` at commit
``ebb8426fc550ad5d1f76d52c271a624af3c08a57`` (2026-08-20; the upload route last changed in
``1e8e576fa1ab04e16f759791a8c6ac79e18444a2``, 2025-05-29):

* ``apps/webapp/app/api/feature/upload-batch/route.tsx`` (``POST /api/feature/upload-batch``)
  validates this body (yup schema ``uploadBatchSchema``)::

      {"modelId": str, "source": str,                      # both lower-cased by the server
       "features": [                                       # 1 to 128 features
         {"index": int (0..10,000,000),                    # unique within the batch
          "density": float | null, "topLogits": [...] | null, "bottomLogits": [...] | null,
          "explanations": [{"text": str (1..512 characters),
                            "methodName": str | null, "modelName": str | null}],
          "activations": [                                 # at least one
            {"tokens": [str] (1..1,024), "values": [float] (same length),
             "quantileMax": ..., "quantileMin": ..., "quantileFraction": ...}]}]}

  ``methodName`` must name an explanation type Neuronpedia knows (e.g.
  ``"oai_token-act-pair"``) and ``modelName`` an explainer model it knows, or the whole batch
  is refused; both are ``null`` unless given (``method_name=``, ``explanation_model=``).
* ``webapp-python-client/neuronpedia/requests/feature_request.py`` sends the same body
  (``MAX_FEATURES_PER_BATCH = 128``).
* ``apps/webapp/lib/utils/source.ts``: a source is ``"{layer}-{source set}"`` (e.g.
  ``"6-res-jb"``); a source that is a bare integer is a layer of MLP neurons (source set
  ``"neurons"``), which ``apps/inference/neuronpedia_inference/sae_manager.py`` reads at
  ``blocks.{layer}.mlp.hook_post``. So an ``mlp_neuron`` unit's source is ``str(layer)``
  (``gpt2-small/5/131`` is GPT-2 small's layer 5 neuron 131); any other kind needs
  ``source=``.

The upload route has no field for scores. `write_neuronpedia` writes them beside the batches,
in ``scores.jsonl``: one line per explanation with the feature's ``modelId``, ``source`` and
``index``, the explanation ``text``, the explainer and simulator (name, version, prompt
version), and every scorer's score (``name``, ``kind``, ``scorer``, ``value``; an undefined
score has ``value`` null and its ``reason``), close to Neuronpedia's ``ExplanationScore`` rows
(``explanationScoreTypeName``, ``explanationScoreModelName``, ``value``).

Activation excerpts are the records a result holds (the held-out excerpts it was scored on,
top then random; for a result with no simulation score, the excerpts its classification
scorers judged), or the records given per unit (``excerpts=``, e.g. a collection's top
records). Limits are checked before anything is written: a batch of more than 128 features is
split into several files; an excerpt over 1,024 tokens or an explanation over 512 characters
raises `FormatError` naming the unit and what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import PathLike, dump_json, write_text
from neuron_explainer.records import ActivationRecord, UnitId
from neuron_explainer.results import ComponentInfo, ExplanationResult

__all__ = [
    "NEURONPEDIA_COMMIT",
    "NEURONPEDIA_MAX_EXPLANATION_CHARS",
    "NEURONPEDIA_MAX_FEATURES",
    "NEURONPEDIA_MAX_TOKENS",
    "neuronpedia_batches",
    "neuronpedia_scores",
    "neuronpedia_source",
    "write_neuronpedia",
]

NEURONPEDIA_COMMIT = "ebb8426fc550ad5d1f76d52c271a624af3c08a57"
"""The commit of ``hijohnnylin/neuronpedia`` whose upload code this module follows."""
NEURONPEDIA_MAX_FEATURES = 128
"""Features in one upload batch, at most (``features: array().max(128)``)."""
NEURONPEDIA_MAX_TOKENS = 1024
"""Tokens in one activation excerpt, at most (``tokens: array().max(1024)``)."""
NEURONPEDIA_MAX_EXPLANATION_CHARS = 512
"""Characters in one explanation, at most (``text: string().max(512)``)."""
_MAX_INDEX = 10_000_000
SCORES_FILE = "scores.jsonl"


def neuronpedia_source(unit: UnitId, source: str | None = None) -> str:
    """The Neuronpedia source (layer / SAE id) of ``unit``, lower-cased as Neuronpedia stores it.

    Args:
        unit: the unit.
        source: the source to use; ``"{layer}"`` in it is replaced by the unit's layer (so
            ``"{layer}-res-jb"`` serves units of several layers). ``None``: ``str(layer)`` for an
            ``mlp_neuron`` (Neuronpedia's MLP neurons), an error for any other kind.

    Raises:
        InvalidInputError: no ``source`` for a unit that is not an MLP neuron, or an empty one.
    """
    if source is None:
        if unit.kind != "mlp_neuron":
            raise InvalidInputError(
                f"{unit}: Neuronpedia names the source of a {unit.kind!r} unit by its SAE or "
                "hook (e.g. '6-res-jb'); give source= (--source), e.g. '{layer}-res-jb'"
            )
        return str(unit.layer)
    found = source.replace("{layer}", str(unit.layer)).strip().lower()
    if not found:
        raise InvalidInputError("source is empty; give e.g. '6-res-jb' or '{layer}-res-jb'")
    return found


def _result_excerpts(result: ExplanationResult) -> tuple[ActivationRecord, ...]:
    """The excerpts ``result`` holds: its scored held-out records, else the records its
    classification scorers judged (each once, in order)."""
    if result.scored is not None:
        return result.scored.held_out_records()
    seen: dict[tuple[str, ...], ActivationRecord] = {}
    for score in result.scores.values():
        for judgement in getattr(score, "judgements", ()):
            seen.setdefault(judgement.record.tokens, judgement.record)
    return tuple(seen.values())


def _activations(unit: UnitId, records: Sequence[ActivationRecord]) -> list[dict[str, Any]]:
    """The ``activations`` of a feature, each excerpt checked against the token limit."""
    if not records:
        raise FormatError(
            f"{unit}: no activation excerpts to upload (Neuronpedia needs at least one a "
            "feature); pass the unit's records (excerpts=, or --collection on the command line)"
        )
    out = []
    for i, record in enumerate(records):
        if len(record.tokens) > NEURONPEDIA_MAX_TOKENS:
            raise FormatError(
                f"{unit}: excerpt {i} has {len(record.tokens)} tokens; Neuronpedia takes at "
                f"most {NEURONPEDIA_MAX_TOKENS} an activation: record with a window length of "
                f"at most {NEURONPEDIA_MAX_TOKENS}, or pass shorter excerpts (excerpts=)"
            )
        out.append(
            {"tokens": list(record.tokens), "values": [float(a) for a in record.activations]}
        )
    return out


def _explanation(
    result: ExplanationResult, method_name: str | None, explanation_model: str | None
) -> dict[str, Any]:
    """One ``explanations`` item, checked against the length limit."""
    text = result.explanation.text
    if len(text) > NEURONPEDIA_MAX_EXPLANATION_CHARS:
        raise FormatError(
            f"{result.unit}: the explanation has {len(text)} characters; Neuronpedia takes at "
            f"most {NEURONPEDIA_MAX_EXPLANATION_CHARS}: shorten it (re-explain with a shorter "
            f"answer, or edit the result) before exporting: {text[:60]!r}..."
        )
    return {
        "text": text,
        "methodName": None if method_name is None else method_name.lower(),
        "modelName": None if explanation_model is None else explanation_model.lower(),
    }


def _grouped(
    results: Iterable[ExplanationResult], model_id: str, source: str | None
) -> dict[str, dict[int, list[ExplanationResult]]]:
    """The results by Neuronpedia source, then by index (checked: one model, one unit an
    index)."""
    if not model_id.strip():
        raise InvalidInputError("model_id is empty; give Neuronpedia's model id, e.g. 'gpt2-small'")
    groups: dict[str, dict[int, list[ExplanationResult]]] = {}
    owner: dict[tuple[str, int], UnitId] = {}
    models: set[str] = set()
    for i, result in enumerate(results):
        if not isinstance(result, ExplanationResult):
            raise InvalidInputError(f"results[{i}] is a {type(result).__name__}, not a result")
        unit = result.unit
        models.add(unit.model)
        if len(models) > 1:
            raise InvalidInputError(
                f"the results are of several models ({sorted(models)}); Neuronpedia files one "
                "model an upload: export each model's results separately"
            )
        if unit.index > _MAX_INDEX:
            raise FormatError(f"{unit}: Neuronpedia takes indices up to {_MAX_INDEX:,}")
        src = neuronpedia_source(unit, source)
        first = owner.setdefault((src, unit.index), unit)
        if first != unit:
            raise InvalidInputError(
                f"{first} and {unit} would both be feature {unit.index} of source {src!r}; give "
                "each layer or kind its own source (e.g. source='{layer}-res-jb'), and export "
                "the latents of each SAE (UnitId.source) separately, each with its source"
            )
        groups.setdefault(src, {}).setdefault(unit.index, []).append(result)
    if not groups:
        raise InvalidInputError("no results to export")
    return groups


def neuronpedia_batches(
    results: Iterable[ExplanationResult],
    *,
    model_id: str,
    source: str | None = None,
    excerpts: Mapping[UnitId, Sequence[ActivationRecord]] | None = None,
    method_name: str | None = None,
    explanation_model: str | None = None,
) -> list[dict[str, Any]]:
    """The upload bodies of ``results``: one ``POST /api/feature/upload-batch`` body per source
    and at most `NEURONPEDIA_MAX_FEATURES` features, in (source, index) order.

    Args:
        results: the results; several results of one unit become that feature's explanations.
        model_id: Neuronpedia's model id (e.g. ``"gpt2-small"``; lower-cased).
        source: the source (see `neuronpedia_source`).
        excerpts: each unit's activation excerpts to upload; a unit not in it uploads the
            excerpts its first result holds.
        method_name: Neuronpedia's explanation type of every explanation (``None``: null).
        explanation_model: Neuronpedia's explainer model name (``None``: null).

    Raises:
        InvalidInputError: no results, results of several models, no source for a unit that is
            not an MLP neuron, two units on one feature.
        FormatError: an excerpt over 1,024 tokens, an explanation over 512 characters, an index
            over 10,000,000 or a unit with no excerpts; the message names the unit.
    """
    bodies = []
    for src, by_index in sorted(_grouped(results, model_id, source).items()):
        features = []
        for index, found in sorted(by_index.items()):
            unit = found[0].unit
            given = excerpts.get(unit) if excerpts is not None else None
            records = tuple(given) if given is not None else _result_excerpts(found[0])
            features.append(
                {
                    "index": index,
                    "explanations": [
                        _explanation(r, method_name, explanation_model) for r in found
                    ],
                    "activations": _activations(unit, records),
                }
            )
        for start in range(0, len(features), NEURONPEDIA_MAX_FEATURES):
            chunk = features[start : start + NEURONPEDIA_MAX_FEATURES]
            bodies.append({"modelId": model_id.strip().lower(), "source": src, "features": chunk})
    return bodies


def _component(info: ComponentInfo) -> dict[str, Any]:
    return {"name": info.name, "version": info.version, "prompt_version": info.prompt_version}


def neuronpedia_scores(
    results: Iterable[ExplanationResult], *, model_id: str, source: str | None = None
) -> list[dict[str, Any]]:
    """One entry per result for ``scores.jsonl``: the feature (``modelId``, ``source``,
    ``index``), the explanation ``text``, the ``explainer`` and ``simulator``, and ``scores``
    (every scorer's, in the result's order: ``name``, ``kind``, ``scorer``, ``value`` and, when
    undefined, ``reason``).

    Raises:
        InvalidInputError: as `neuronpedia_source` does.
    """
    entries = []
    for result in results:
        scores = []
        for name, score in result.scores.items():
            entry: dict[str, Any] = {
                "name": name,
                "kind": score.kind,
                "scorer": _component(score.scorer),
                "value": score.value.value,
            }
            if score.value.reason is not None:
                entry["reason"] = score.value.reason
            scores.append(entry)
        entries.append(
            {
                "modelId": model_id.strip().lower(),
                "source": neuronpedia_source(result.unit, source),
                "index": result.unit.index,
                "text": result.explanation.text,
                "explainer": _component(result.explainer),
                "simulator": _component(result.simulator),
                "scores": scores,
            }
        )
    return entries


def _file_name(body: Mapping[str, Any], number: int) -> str:
    safe = re.sub(r"[^a-z0-9._-]+", "_", f"{body['modelId']}_{body['source']}")
    return f"{safe}_{number:04d}.json"


def write_neuronpedia(
    results: Iterable[ExplanationResult],
    out_dir: PathLike,
    *,
    model_id: str,
    source: str | None = None,
    excerpts: Mapping[UnitId, Sequence[ActivationRecord]] | None = None,
    method_name: str | None = None,
    explanation_model: str | None = None,
) -> list[Path]:
    """Write ``results`` as Neuronpedia upload batches into ``out_dir`` (created): one JSON file
    per batch of at most 128 features (``{model}_{source}_{n}.json``, each a body for
    ``POST /api/feature/upload-batch``), and ``scores.jsonl`` beside them (see the module).
    Every limit is checked before a file is written. Returns the batch files, in order.

    Raises:
        InvalidInputError, FormatError: as `neuronpedia_batches` does.
        OSError: a file cannot be written.
    """
    chosen = list(results)
    bodies = neuronpedia_batches(
        chosen,
        model_id=model_id,
        source=source,
        excerpts=excerpts,
        method_name=method_name,
        explanation_model=explanation_model,
    )
    scores = neuronpedia_scores(chosen, model_id=model_id, source=source)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    counts: dict[str, int] = {}
    for body in bodies:
        number = counts[body["source"]] = counts.get(body["source"], -1) + 1
        path = folder / _file_name(body, number)
        write_text(path, dump_json(body) + "\n")
        paths.append(path)
    write_text(folder / SCORES_FILE, "".join(dump_json(s) + "\n" for s in scores))
    return paths
