"""``explain_neuron``: split → explain (train) → simulate (held out) → calibrate → score.

Wiring only; every stage lives in its own module. The options are gathered once into an
`ExplainOptions`; a model to record is turned into a `Subject` by the registry (``subject=``,
default ``"hf"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from neuron_explainer._aio import gather_or_cancel, sync_twin
from neuron_explainer.errors import ExplanationError, InvalidInputError
from neuron_explainer.interfaces import (
    Explainer,
    Probe,
    Simulator,
    track_simulations,
    unit_context,
)
from neuron_explainer.llm.prompts import unit_noun
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.options import (
    DEFAULT_MAX_FAILED_FRACTION,
    DEFAULT_NEUTRAL_EXPLANATION,
    DEFAULT_TEST_SENTENCES,
    CalibrationName,
    ExplainOptions,
    RunOptions,
    ScoreSplit,
    ScoringName,
)
from neuron_explainer.plugins.registry import Registry, default_registry
from neuron_explainer.records import NeuronRecord, UnitId
from neuron_explainer.records.splits import Splits, split_records
from neuron_explainer.results import (
    Explanation,
    ExplanationResult,
    ScoredSimulation,
    ScorerScore,
)
from neuron_explainer.runs._recording import Recording, record_for
from neuron_explainer.runs.revision import arevise_explanation, check_can_revise
from neuron_explainer.runs.scoring import (
    DEFAULT_SCORERS,
    RunScorers,
    build_scorers,
    correlation_entry,
)
from neuron_explainer.scorers._memo import SimulationMemo, reusing_for_unit
from neuron_explainer.scorers.base import Scorer, ScoringData
from neuron_explainer.scorers.simulation import (
    NeutralBaseline,
    ascore_explanation,
    asimulate_neutral,
)

__all__ = ["aexplain_neuron", "explain_neuron", "explain_record"]


def _gather(given: ExplainOptions | Mapping[str, Any] | None, **keywords: Any) -> ExplainOptions:
    """The options from ``explain_options=`` or from the keywords (not both)."""
    if given is None:
        return ExplainOptions.build(keywords)
    fields = ExplainOptions.model_fields
    changed = sorted(k for k, v in keywords.items() if v != fields[k].default)
    if changed:
        raise InvalidInputError(
            f"{', '.join(changed)} given both as keywords and in explain_options=; give each "
            "option once"
        )
    return ExplainOptions.build(given)


NEUTRAL_MEMO_SIZE = 4096
"""The most neutral simulations a batch keeps for reuse, per unit noun (`neutral_memos`)."""


def neutral_memos(options: ExplainOptions) -> Callable[[UnitId], SimulationMemo | None]:
    """A batch's memos of the neutral explanation's simulations, by the unit they are for
    (``None`` for every unit when ``options`` need no neutral baseline): its simulation of an
    excerpt is the same for every unit the prompts call by the same word (`unit_noun`: the
    simulators' prompts name the unit's kind), and a collection's units share their random
    excerpts (one reservoir), so each is simulated once for the batch per such word."""
    memos: dict[str, SimulationMemo] = {}

    def memo(unit: UnitId) -> SimulationMemo | None:
        if not options.needs_neutral:
            return None
        noun = unit_noun(unit.kind)
        if noun not in memos:
            memos[noun] = SimulationMemo(
                capacity=NEUTRAL_MEMO_SIZE, texts={options.neutral_explanation}
            )
        return memos[noun]

    return memo


async def simulate_baseline(
    simulator: Simulator, splits: Splits, options: ExplainOptions
) -> NeutralBaseline | None:
    """The unit's neutral baseline when ``options`` need one (contrastive scoring or
    sensitivity), simulated once: on the scored split, and on the calibration split when
    contrastive scores fit or choose there; ``None`` when they need none."""
    if not options.needs_neutral:
        return None
    return await asimulate_neutral(
        simulator,
        splits,
        score_split=options.score_split,
        calibration=options.neutral_on_calibration,
        text=options.neutral_explanation,
    )


async def score_with_options(
    simulator: Simulator,
    explanation: Explanation,
    splits: Splits,
    options: ExplainOptions,
    neutral: NeutralBaseline | None,
) -> ScoredSimulation:
    """`ascore_explanation` with ``options`` (and the unit's baseline); the sensitivity is
    kept only when ``options`` ask for it."""
    scored = await ascore_explanation(
        simulator,
        explanation,
        splits,
        calibration=options.calibration,
        score_split=options.score_split,
        max_failed_fraction=options.max_failed_fraction,
        scoring=options.scoring,
        neutral=neutral,
    )
    if scored.sensitivity is not None and not options.measures_sensitivity:
        return scored.model_copy(update={"sensitivity": None})
    return scored


async def explain_record(
    record: NeuronRecord,
    explainer: Explainer,
    simulator: Simulator,
    options: ExplainOptions,
    *,
    shared: SimulationMemo | None = None,
    probe: Probe | None = None,
    scorers: RunScorers | None = None,
) -> ExplanationResult:
    """Explain ``record`` and score the explanation with the components given (built
    already) and the options (validated already); no usage meter of its own (``usage`` is
    left empty), but ``simulation`` holds how its simulations went (best-of-k candidates'
    included). `aexplain_neuron` and the batch runs do the rest around it.

    ``scorers`` (default: the simulation score alone) score the chosen explanation on the
    scored split, all at once. Without ``"correlation"`` among them nothing is simulated
    unless best-of-k or revision choose by simulation.

    An excerpt is simulated once per explanation text: the final score reuses best-of-k's and
    revision's calibration simulations of the chosen text. ``shared`` (a batch's memo of the
    neutral explanation) lends the neutral simulations of excerpts other units share.

    Raises:
        InsufficientRecordsError: too few records to fill the splits (or, for a
            classification scorer, no activating or non-activating excerpt to judge).
        ExplanationError / SimulationError: a component failed (a `SimulationError` also when
            more than ``options.max_failed_fraction`` of the excerpts could not be simulated).
    """
    if options.revise:
        check_can_revise(explainer)
    run = scorers or RunScorers(DEFAULT_SCORERS, {})
    splits = split_records(
        record,
        n_top_per_split=options.n_top_per_split,
        n_random_per_split=options.n_random_per_split,
    )
    contrastive_choice = options.scoring == "contrastive" and (
        options.best_of > 1 or options.revise
    )
    with track_simulations() as simulations, reusing_for_unit(shared), unit_context(record.unit):
        neutral = (
            await simulate_baseline(simulator, splits, options)
            if run.correlation or contrastive_choice
            else None
        )
        explanation = await _choose(explainer, simulator, splits, options, neutral, probe)
        data = ScoringData(record, splits, options.score_split)
        both = await gather_or_cancel(
            _simulation_score(run, simulator, explanation, splits, options, neutral),
            run.ascore(explanation, data),
        )
    scored = cast(ScoredSimulation | None, both[0])
    others = cast(dict[str, ScorerScore], both[1])
    entry = None if scored is None else correlation_entry(simulator, scored.correlation)
    return ExplanationResult(
        unit=record.unit,
        explanation=explanation,
        scored=scored,
        scores=run.in_order(others, entry),
        explainer=explainer.info,
        simulator=simulator.info,
        provenance=record.provenance,
        split_plan=splits.plan,
        simulation=simulations.stats,
    )


async def _simulation_score(
    run: RunScorers,
    simulator: Simulator,
    explanation: Explanation,
    splits: Splits,
    options: ExplainOptions,
    neutral: NeutralBaseline | None,
) -> ScoredSimulation | None:
    if not run.correlation:
        return None
    return await score_with_options(simulator, explanation, splits, options, neutral)


async def _choose(
    explainer: Explainer,
    simulator: Simulator,
    splits: Splits,
    options: ExplainOptions,
    neutral: NeutralBaseline | None,
    probe: Probe | None,
) -> Explanation:
    """The explanation: the explainer's (best of k, revised, as ``options`` say)."""
    # candidates (best-of-k, revision) are compared contrastively under contrastive scoring
    choice_baseline = (
        neutral.records_of("calibration")
        if neutral is not None and options.scoring == "contrastive"
        else None
    )
    if options.best_of > 1:
        from neuron_explainer.runs.best_of import abest_of_k

        explanation, _ = await abest_of_k(
            explainer,
            simulator,
            splits.train,
            splits.calibration.records,
            options.best_of,
            max_failed_fraction=options.max_failed_fraction,
            baseline=choice_baseline,
        )
    else:
        explanation = await explainer.aexplain(splits.train)
    if not isinstance(explanation, Explanation):
        raise ExplanationError(
            f"explainer {explainer.info.name!r} returned {type(explanation).__name__}, "
            "not an Explanation"
        )
    if options.revise:
        explanation = await arevise_explanation(
            explainer,
            simulator,
            explanation,
            splits.train,
            splits.calibration.records,
            max_failed_fraction=options.max_failed_fraction,
            baseline=choice_baseline,
            probe=probe,
            test_sentences=options.test_sentences,
        )
    return explanation


async def aexplain_neuron(
    record: NeuronRecord | Mapping[str, Any] | Any,
    *,
    layer: int | None = None,
    neuron: int | None = None,
    sae: str | os.PathLike[str] | Any = None,
    latent: int | None = None,
    head: tuple[int, int] | None = None,
    direction: str | os.PathLike[str] | Any = None,
    hook: str | None = None,
    corpus: Any = None,
    subject_options: Mapping[str, Any] | None = None,
    explainer: Explainer | str = "token-table",
    simulator: Simulator | str = "token-table",
    calibration: CalibrationName = "linear",
    score_split: ScoreSplit = "valid",
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
    registry: Registry | None = None,
    best_of: int = 1,
    budget_usd: float | None = None,
    subject: str = "hf",
    explain_options: ExplainOptions | Mapping[str, Any] | None = None,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    scoring: ScoringName = "plain",
    sensitivity: bool | Literal["auto"] = "auto",
    neutral_explanation: str = DEFAULT_NEUTRAL_EXPLANATION,
    revise: bool = False,
    test_sentences: int = DEFAULT_TEST_SENTENCES,
    probe: Probe | None = None,
    scorers: Sequence[Scorer | str] | None = None,
) -> ExplanationResult:
    """Explain one unit and score the explanation on held-out records.

    `aexplain_neuron` is the coroutine: await it inside a running event loop. `explain_neuron`
    runs it from synchronous code; both take the same arguments.

    The record is split (see `neuron_explainer.records.splits`); the explainer sees only the train
    split; the simulator predicts the calibration split (to fit ``calibration``) and the
    ``score_split``; the scores compare those predictions with the true activations.

    Args:
        record: the unit's `NeuronRecord` (or its dict form); or a `Subject` (e.g. an
            `neuron_explainer.subjects.hf.HFSubject`) with the unit; or a model to record — a
            name (``"gpt2"``), a local directory or ``.gguf`` file, a model object, or
            whatever the ``subject`` understands — with the unit and ``corpus``. The unit is
            named one way (docs/units.md): ``layer`` and ``neuron``; ``sae`` and ``latent``;
            ``head``; or ``direction`` and ``hook``.
        layer: with a model or subject: the layer of the MLP neuron.
        neuron: with a model or subject: the neuron's index in the layer.
        sae: with a model: an SAE or transcoder (a folder or file
            `neuron_explainer.models.sae.load_sae` reads: SAELens, sparsify, Gemma Scope);
            its latent ``latent`` is explained, read at the SAE's hook site (``hook`` names
            the site when the files do not); the unit's ``source`` names the SAE by its
            files' sha256, so two SAEs at one site give two units.
        latent: with ``sae`` (or a subject that has one): the latent's index.
        head: ``(layer, head)``: an attention head; its activation is the norm of its write
            to the residual stream.
        direction: with a model: a ``[d_model]`` vector (a ``.npy`` file or an array) read at
            ``hook``: the activation is the site's activation dotted with it (the unit's
            ``source`` names the vector by its sha256).
        hook: the hook site of ``direction`` (``"blocks.6.hook_resid_pre"``).
        corpus: with a model: the text to record it over (for ``"hf"``: anything
            `neuron_explainer.subjects.corpus.corpus_from` takes).
        subject_options: with a model: options for the subject (for ``"hf"``, `HFSubject`'s:
            dtype, device, window_length, bos, batch_size, top_k, n_random, tokenizer, ...).
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
        subject: with a model: the registered subject that records it (default ``"hf"``, a
            Hugging Face causal LM; ``"collection"`` reads a collection folder); it is built
            as ``factory(model=record, corpus=corpus, **subject_options)``.
        explain_options: ``calibration`` … ``best_of``, ``max_failed_fraction``,
            ``scoring``, ``sensitivity``, ``neutral_explanation``, ``revise`` and
            ``test_sentences`` as one `ExplainOptions` (or a mapping), instead of the
            keywords.
        max_failed_fraction: the share of the excerpts whose simulation may fail (default
            0.10): fewer failures leave the unit scored on the excerpts simulated (listed in
            ``scored.failed``, counted in ``simulation``), more fail it.
        scoring: ``"plain"`` (default): the simulation is scored; ``"contrastive"``: the
            simulation minus the simulation of a neutral explanation (simulated once per
            unit, shared by best-of-k's candidates) is scored, so only what the explanation
            changed counts (docs/scoring.md says when it helps).
        sensitivity: measure how much the prediction depends on the explanation
            (``scored.sensitivity``: 1 - Pearson r against the neutral prediction, flagged
            below 0.1): ``True``, ``False`` or ``"auto"`` (with contrastive scoring or
            ``best_of >= 5``, where it costs at most a sixth more simulation).
        neutral_explanation: the explanation that says nothing (default
            ``"an unknown pattern"``).
        revise: after explaining, show the explainer where the simulation of its
            explanation disagreed most with the train records (misses and false alarms) and
            keep its revision only if it scores better on the calibration split; both texts
            and scores are in ``explanation.data["revision"]``. Needs an explainer that can
            revise (the LLM explainer).
        test_sentences: with ``revise`` and the unit's model at hand (``probe``), the
            explainer first writes this many sentences (0-20, default 6; 0: none) to test its
            explanation; the model runs them, and where the simulation disagrees with the
            truth on them is shown too (``data["revision"]["tests"]``).
        probe: the unit's true activations on new text (`neuron_explainer.interfaces.Probe`,
            e.g. ``HFSubject.probe(unit)``), for revision's test sentences; taken from the
            subject when this call records the unit itself (with a record, give it here).
        scorers: the scorers to run, by name or as `Scorer` objects, in order (the first is
            the headline, ``result.score``): ``"correlation"`` (the default alone: the
            simulation score, configured by ``simulator=`` and the options above),
            ``"detection"``, ``"fuzzing"`` or a plugin's. A named LLM scorer borrows the
            simulator's LLM. Without ``"correlation"``, nothing is simulated (unless
            best-of-k or revision choose by simulation) and ``result.scored`` is ``None``.
            Every score is in ``result.scores`` under its name
            (docs/classification-scorers.md).

    Returns:
        The explanation, its scores and everything that produced them, with the token usage
        and estimated cost of its LLM calls in ``usage`` and how its simulations went
        (attempted, failed by reason, constant, retried, tokens) in ``simulation``.

    Raises:
        UnknownComponentError: no explainer/simulator/scorer/subject has that name.
        DuplicateComponentError: two plugins registered that name.
        CapabilityError: a component needs something its LLM does not offer.
        LLMError: a call to an LLM provider failed (`BudgetExceededError` when the budget
            would be exceeded).
        InsufficientRecordsError: too few records to fill the splits.
        InvalidRecordError: the record (given as a dict) does not validate.
        InvalidInputError: an option out of range, an option given twice, arguments for
            recording a model given with a record, the unit named in none or several ways,
            an SAE setting that cannot be honoured (docs/units.md), or ``revise`` with an
            explainer that cannot revise.
        ExplanationError / SimulationError: a component failed (a `SimulationError` also when
            more than ``max_failed_fraction`` of the excerpts could not be simulated: it says
            how many of how many, and why).
        UsageError: called inside a running event loop (await `aexplain_neuron` there).
    """
    options = _gather(
        explain_options,
        calibration=calibration,
        score_split=score_split,
        n_top_per_split=n_top_per_split,
        n_random_per_split=n_random_per_split,
        best_of=best_of,
        max_failed_fraction=max_failed_fraction,
        scoring=scoring,
        sensitivity=sensitivity,
        neutral_explanation=neutral_explanation,
        revise=revise,
        test_sentences=test_sentences,
    )
    budget = RunOptions.build(budget_usd=budget_usd).budget_usd
    components = registry or default_registry()
    the_explainer = components.explainer(explainer)
    if options.revise:
        check_can_revise(the_explainer)
    the_simulator = components.simulator(simulator)
    the_scorers = build_scorers(scorers, components, the_simulator)
    with track_usage(budget) as meter:
        how = Recording(
            layer, neuron, corpus, subject_options, subject, sae, latent, head, direction, hook
        )
        neuron_record, recorded_probe = await record_for(record, how, components)
        result = await explain_record(
            neuron_record,
            the_explainer,
            the_simulator,
            options,
            probe=probe or recorded_probe,
            scorers=the_scorers,
        )
    return result.model_copy(update={"usage": meter.summary})


explain_neuron = sync_twin(aexplain_neuron)
