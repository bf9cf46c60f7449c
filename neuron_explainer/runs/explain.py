"""``explain_neuron``: split → explain (train) → simulate (held out) → calibrate → score.

Wiring only; every stage lives in its own module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from neuron_explainer._aio import run_sync
from neuron_explainer.errors import (
    ExplanationError,
    InvalidInputError,
    InvalidRecordError,
)
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.plugins.registry import Registry, default_registry
from neuron_explainer.records import NeuronRecord
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import (
    Explanation,
    ExplanationResult,
)
from neuron_explainer.scorers.correlation import CalibrationMethod
from neuron_explainer.scorers.simulation import ascore_explanation

__all__ = ["aexplain_neuron", "explain_neuron"]


def _coerce_record(record: NeuronRecord | Mapping[str, Any]) -> NeuronRecord:
    if isinstance(record, NeuronRecord):
        return record
    try:
        return NeuronRecord.model_validate(record)
    except ValidationError as exc:
        raise InvalidRecordError(f"the neuron record does not validate:\n{exc}") from None


async def _record_for(
    source: Any,
    layer: int | None,
    neuron: int | None,
    corpus: Any,
    subject_options: Mapping[str, Any] | None,
) -> NeuronRecord:
    """The NeuronRecord to explain: given directly, or recorded from a model over a corpus."""
    direct = isinstance(source, NeuronRecord | Mapping)
    if direct:
        if layer is not None or neuron is not None or corpus is not None or subject_options:
            raise InvalidInputError(
                "layer, neuron, corpus and subject_options are for recording a model; a "
                "NeuronRecord is explained as it is"
            )
        return _coerce_record(source)
    if layer is None or neuron is None:
        raise InvalidInputError(
            f"to explain a neuron of model {source!r}, give layer= and neuron= (and corpus=)"
        )
    from neuron_explainer.subjects.hf import HFSubject

    if isinstance(source, HFSubject):
        if corpus is not None or subject_options:
            raise InvalidInputError("an HFSubject has its corpus and options already")
        subject = source
    else:
        if corpus is None:
            raise InvalidInputError(
                f"to explain a neuron of model {source!r}, give corpus= (text files, a folder, "
                "JSONL, a list of strings or a datasets.Dataset)"
            )
        subject = HFSubject(source, corpus, **dict(subject_options or {}))
    return await subject.aneuron_record(subject.unit(layer, neuron))


async def aexplain_neuron(
    record: NeuronRecord | Mapping[str, Any] | Any,
    *,
    layer: int | None = None,
    neuron: int | None = None,
    corpus: Any = None,
    subject_options: Mapping[str, Any] | None = None,
    explainer: Explainer | str = "token-table",
    simulator: Simulator | str = "token-table",
    calibration: CalibrationMethod = "linear",
    score_split: Literal["valid", "test"] = "valid",
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
    registry: Registry | None = None,
    best_of: int = 1,
    budget_usd: float | None = None,
) -> ExplanationResult:
    """Async twin of `explain_neuron`; use it inside a running event loop."""
    if best_of < 1:
        raise InvalidInputError(f"best_of must be at least 1, got {best_of}")
    if budget_usd is not None and not budget_usd >= 0:
        raise InvalidInputError(f"budget_usd must be >= 0, got {budget_usd}")
    with track_usage(budget_usd) as meter:
        result = await _explain(
            record,
            layer=layer,
            neuron=neuron,
            corpus=corpus,
            subject_options=subject_options,
            explainer=explainer,
            simulator=simulator,
            calibration=calibration,
            score_split=score_split,
            n_top_per_split=n_top_per_split,
            n_random_per_split=n_random_per_split,
            registry=registry,
            best_of=best_of,
        )
    return result.model_copy(update={"usage": meter.summary})


async def _explain(
    record: NeuronRecord | Mapping[str, Any] | Any,
    *,
    layer: int | None,
    neuron: int | None,
    corpus: Any,
    subject_options: Mapping[str, Any] | None,
    explainer: Explainer | str,
    simulator: Simulator | str,
    calibration: CalibrationMethod,
    score_split: Literal["valid", "test"],
    n_top_per_split: int | None,
    n_random_per_split: int | None,
    registry: Registry | None,
    best_of: int,
) -> ExplanationResult:
    if score_split not in ("valid", "test"):
        raise InvalidInputError(
            f"score_split must be 'valid' or 'test', got {score_split!r} (the calibration split "
            "fits the calibration and the train split is what the explainer saw)"
        )
    if calibration not in ("none", "linear", "percentile"):
        raise InvalidInputError(
            f"unknown calibration {calibration!r}; choose 'none', 'linear' or 'percentile'"
        )
    neuron_record = await _record_for(record, layer, neuron, corpus, subject_options)
    components = registry or default_registry()
    the_explainer = components.explainer(explainer)
    the_simulator = components.simulator(simulator)
    splits = split_records(
        neuron_record, n_top_per_split=n_top_per_split, n_random_per_split=n_random_per_split
    )

    if best_of > 1:
        from neuron_explainer.runs.best_of import abest_of_k

        explanation, _ = await abest_of_k(
            the_explainer, the_simulator, splits.train, splits.calibration.records, best_of
        )
    else:
        explanation = await the_explainer.aexplain(splits.train)
    if not isinstance(explanation, Explanation):
        raise ExplanationError(
            f"explainer {the_explainer.info.name!r} returned {type(explanation).__name__}, "
            "not an Explanation"
        )

    scored = await ascore_explanation(
        the_simulator, explanation, splits, calibration=calibration, score_split=score_split
    )
    return ExplanationResult(
        unit=neuron_record.unit,
        explanation=explanation,
        scored=scored,
        explainer=the_explainer.info,
        simulator=the_simulator.info,
        provenance=neuron_record.provenance,
        split_plan=splits.plan,
    )


def explain_neuron(
    record: NeuronRecord | Mapping[str, Any] | Any,
    *,
    layer: int | None = None,
    neuron: int | None = None,
    corpus: Any = None,
    subject_options: Mapping[str, Any] | None = None,
    explainer: Explainer | str = "token-table",
    simulator: Simulator | str = "token-table",
    calibration: CalibrationMethod = "linear",
    score_split: Literal["valid", "test"] = "valid",
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
    registry: Registry | None = None,
    best_of: int = 1,
    budget_usd: float | None = None,
) -> ExplanationResult:
    """Explain one unit and score the explanation on held-out records.

    The record is split (see `neuron_explainer.records.splits`); the explainer sees only the train
    split; the simulator predicts the calibration split (to fit ``calibration``) and the
    ``score_split``; the scores compare those predictions with the true activations.

    Args:
        record: the unit's `NeuronRecord` (or its dict form); or a model to record — a name
            (``"gpt2"``), a local directory or ``.gguf`` file, a model object, or an
            `neuron_explainer.subjects.hf.HFSubject` — together with ``layer``, ``neuron`` and
            ``corpus``.
        layer: with a model: the layer of the MLP neuron.
        neuron: with a model: the neuron's index in the layer.
        corpus: with a model: the text to record it over (see
            `neuron_explainer.subjects.corpus.corpus_from`).
        subject_options: with a model: options for `HFSubject` (dtype, device, window_length,
            bos, batch_size, top_k, n_random, tokenizer, ...).
        explainer: an `Explainer` or a registered name (default ``"token-table"``).
        simulator: a `Simulator` or a registered name (default ``"token-table"``).
        calibration: ``"none"``, ``"linear"`` or ``"percentile"``; fitted on calibration only.
        score_split: ``"valid"`` (default) or ``"test"``.
        n_top_per_split: top records per split; default as many as divide evenly.
        n_random_per_split: random records per split; default as many as divide evenly.
        registry: where names are looked up (default: `default_registry()`, which loads the
            installed plugins).
        best_of: generate this many candidate explanations and keep the one whose simulation
            correlates best with the calibration split (never the scored split); the
            candidates and their calibration scores are kept in ``explanation.data``.
        budget_usd: stop before any LLM call that could push this neuron's estimated cost past
            this many USD (`neuron_explainer.llm.usage`); ``None``: no cap.

    Returns:
        The explanation, its scores and everything that produced them, with the token usage
        and estimated cost of its LLM calls in ``usage``.

    Raises:
        UnknownComponentError: no explainer/simulator has that name.
        DuplicateComponentError: two plugins registered that name.
        CapabilityError: a component needs something its LLM does not offer.
        LLMError: a call to an LLM provider failed (`BudgetExceededError` when the budget
            would be exceeded).
        InsufficientRecordsError: too few records to fill the splits.
        InvalidRecordError: the record (given as a dict) does not validate.
        InvalidInputError: other bad arguments.
        ExplanationError / SimulationError: a component failed.
        UsageError: called inside a running event loop (use `aexplain_neuron`).
    """
    return run_sync(
        aexplain_neuron(
            record,
            layer=layer,
            neuron=neuron,
            corpus=corpus,
            subject_options=subject_options,
            explainer=explainer,
            simulator=simulator,
            calibration=calibration,
            score_split=score_split,
            n_top_per_split=n_top_per_split,
            n_random_per_split=n_random_per_split,
            registry=registry,
            best_of=best_of,
            budget_usd=budget_usd,
        )
    )
