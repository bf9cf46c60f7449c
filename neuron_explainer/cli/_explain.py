"""``explain``: explain one unit (an MLP neuron, an SAE or transcoder latent, an attention head
or a direction: docs/units.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._model import collection_or_corpus, load_model_step
from neuron_explainer.cli._options import (
    MODEL_OPTIONS,
    BudgetUSD,
    Calibration,
    Debug,
    Explainer,
    MaxFailedFraction,
    ModelArg,
    ModelCorpus,
    Quiet,
    ReviseOpt,
    ScorerOpt,
    ScoreSplit,
    Scoring,
    ScoringOpt,
    SensitivityOpt,
    Simulator,
    Split,
    SplitOpt,
    TestSentencesOpt,
    TextField,
    hidden_default,
    llm_options,
    recording_options,
)
from neuron_explainer.cli._support import (
    Steps,
    Texts,
    bad_input,
    check_components,
    check_range,
    errors,
    print_result,
)
from neuron_explainer.cli._units import UnitChoice, unit_choice
from neuron_explainer.options import DEFAULT_TEST_SENTENCES

if TYPE_CHECKING:
    from neuron_explainer.interfaces import Probe
    from neuron_explainer.options import ExplainOptions
    from neuron_explainer.records import NeuronRecord
    from neuron_explainer.results import ExplanationResult
    from neuron_explainer.runs.estimate import NeuronEstimate

# --- explain -------------------------------------------------------------------------------


@app.command()
@llm_options
@recording_options(*MODEL_OPTIONS, "bos")
def explain(
    model: ModelArg,
    layer: Annotated[
        int | None, hidden_default("--layer", "The MLP neuron's layer (with --neuron).", min=0)
    ] = None,
    neuron: Annotated[
        int | None,
        hidden_default("--neuron", "The MLP neuron's index in its layer (with --layer).", min=0),
    ] = None,
    sae: Annotated[
        Path | None,
        hidden_default(
            "--sae",
            "An SAE or transcoder (a SAELens, sparsify or Gemma Scope folder): explain its "
            "latent --latent, read at the SAE's hook site.",
        ),
    ] = None,
    latent: Annotated[
        int | None, hidden_default("--latent", "The latent's index in --sae.", min=0)
    ] = None,
    head: Annotated[
        str | None,
        hidden_default(
            "--head",
            "An attention head, LAYER.HEAD (e.g. 3.5): its activation is the norm of its "
            "write to the residual stream.",
        ),
    ] = None,
    direction: Annotated[
        Path | None,
        hidden_default(
            "--direction",
            "A .npy file of one [d_model] vector: explain the activation at --hook dotted with it.",
        ),
    ] = None,
    hook: Annotated[
        str | None,
        hidden_default(
            "--hook",
            "The hook site of --direction (or of an SAE whose files do not name it), "
            "TransformerLens-style: blocks.6.hook_resid_pre.",
        ),
    ] = None,
    corpus: ModelCorpus = None,
    explainer: Explainer = "token-table",
    simulator: Simulator = "token-table",
    out: Annotated[
        Path | None,
        hidden_default(
            "--out", "Also write the full result (ExplanationResult) to this JSON file."
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the full result as JSON instead of a summary."),
    ] = False,
    best_of: Annotated[
        int,
        typer.Option(
            "--best-of",
            min=1,
            help="Generate this many explanations and keep the one that best predicts the "
            "calibration split.",
        ),
    ] = 1,
    budget_usd: BudgetUSD = None,
    score_split: Annotated[
        ScoreSplit,
        typer.Option("--score-split", help="The held-out split the score is computed on."),
    ] = ScoreSplit.valid,
    calibration: Annotated[
        Calibration,
        typer.Option(
            "--calibration", help="How simulated activations are calibrated before scoring."
        ),
    ] = Calibration.linear,
    max_failed_fraction: MaxFailedFraction = 0.1,
    scoring: ScoringOpt = Scoring.plain,
    scorer: ScorerOpt = None,
    sensitivity: SensitivityOpt = None,
    revise: ReviseOpt = False,
    test_sentences: TestSentencesOpt = DEFAULT_TEST_SENTENCES,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Estimate the LLM requests, tokens and cost of each component and print them; "
            "call no LLM, need no API key, write nothing. The neuron is still recorded (or read "
            "from the collection), since the estimate counts its excerpts.",
        ),
    ] = False,
    *,
    recording: dict[str, Any],
    split: SplitOpt = Split.file,
    text_field: TextField = "text",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Explain one unit and score the explanation on held-out excerpts.

    The unit: an MLP neuron (--layer and --neuron), an SAE or transcoder latent (--sae and
    --latent), an attention head (--head) or a direction (--direction and --hook). MODEL is
    recorded over --corpus (the model and corpus options apply), or, when MODEL is a
    collection folder written by collect, the neuron's record is read from it (no corpus).
    Prints the explanation and its score; --json prints the whole result. --dry-run prints what
    explaining it with LLMs would cost instead.
    """
    with errors(debug):
        from neuron_explainer.options import ExplainOptions
        from neuron_explainer.runs.explain import explain_neuron

        check_components(
            explainer=explainer, simulator=simulator, need_key=not dry_run, scorers=scorer
        )
        if revise:
            from neuron_explainer.plugins import default_registry as components
            from neuron_explainer.runs.revision import check_can_revise

            check_can_revise(components().explainer(explainer))
        options = ExplainOptions.build(
            best_of=best_of,
            score_split=score_split.value,
            calibration=calibration.value,
            max_failed_fraction=max_failed_fraction,
            scoring=scoring.value,
            sensitivity="auto" if sensitivity is None else sensitivity,
            revise=revise,
            test_sentences=test_sentences,
        )
        unit = unit_choice(layer, neuron, sae, latent, head, direction, hook)
        source = collection_or_corpus(
            model, corpus, recording, split=split.value, text_field=text_field
        )
        if isinstance(source, Texts):
            if unit.kind == "mlp_neuron":
                check_range(model, [unit.layer], [unit.neuron])
        elif unit.kind != "mlp_neuron":
            raise bad_input("a collection holds MLP neurons: give --layer and --neuron")
        elif not 0 <= unit.neuron < source.n_neurons(unit.layer):
            raise bad_input(
                f"neuron {unit.neuron} out of range: layer {unit.layer} of the collection has "
                f"neurons 0..{source.n_neurons(unit.layer) - 1}"
            )
        with Steps(quiet) as steps:
            probe = None
            if isinstance(source, Texts):
                record, probe = _record(steps, model, source, unit, recording)
                corpus_label = f"{corpus} ({source.documents} documents)"
            else:
                record = source.neuron_record(unit.layer, unit.neuron)
                corpus_label = record.provenance.dataset or "the collection's corpus"
            if dry_run:
                estimate = _estimate(steps, record, explainer, simulator, options, scorer)
            else:
                from neuron_explainer.cli._progress import Phases
                from neuron_explainer.plugins import default_registry

                phases = Phases(steps)
                registry = default_registry()
                result = explain_neuron(
                    record,
                    explainer=phases.explainer(registry.explainer(explainer)),
                    simulator=phases.simulator(registry.simulator(simulator)),
                    budget_usd=budget_usd,
                    explain_options=options,
                    probe=probe,
                    scorers=scorer or None,
                )
                phases.finish()
        if dry_run:
            print_estimate(estimate, json_output=json_output)
            return
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        if json_output:
            typer.echo(result.model_dump_json(indent=2))
        else:
            print_result(result, corpus_label)
            for line in baseline_note(result):
                typer.echo(line)


def _record(
    steps: Steps,
    model: str,
    texts: Texts,
    choice: UnitChoice,
    options: dict[str, Any],
) -> tuple[NeuronRecord, Probe | None]:
    """Load ``model`` and record one unit over the corpus with the ``"hf"`` subject (from the
    registry), with progress: the tokens the model has read, of those the corpus holds. Also
    the subject's probe of the unit (its activations on new text), when it has one."""
    from neuron_explainer.plugins import default_registry
    from neuron_explainer.subjects.hf import HFSubject

    loaded = load_model_step(steps, model, options)
    task = steps.task(f"recording {choice.label()} (tokens)")
    subject = default_registry().subject(
        "hf", model=loaded, corpus=texts.corpus, progress=task.update, **choice.subject, **options
    )
    if isinstance(subject, HFSubject):
        task.update(0, subject.count_tokens())
    unit = choice.unit(subject)
    record = subject.neuron_record(unit)
    task.finish()
    return record, subject.probe(unit) if isinstance(subject, HFSubject) else None


def _estimate(
    steps: Steps,
    record: NeuronRecord,
    explainer: str,
    simulator: str,
    options: ExplainOptions,
    scorers: list[str] | None,
) -> NeuronEstimate:
    """What explaining ``record`` with the named components would cost (nothing is sent)."""
    from neuron_explainer.plugins import default_registry
    from neuron_explainer.runs.estimate import estimate_neuron
    from neuron_explainer.runs.scoring import build_scorers

    registry = default_registry()
    the_simulator = registry.simulator(simulator)
    with steps.step("estimating"):
        return estimate_neuron(
            record,
            registry.explainer(explainer),
            the_simulator,
            scorers=build_scorers(scorers, registry, the_simulator) if scorers else None,
            **options.model_dump(include=_ESTIMATED),
        )


_ESTIMATED = {
    "calibration",
    "score_split",
    "n_top_per_split",
    "n_random_per_split",
    "best_of",
    "scoring",
    "sensitivity",
    "revise",
    "test_sentences",
}
"""The `ExplainOptions` fields `estimate_neuron` takes."""


def print_estimate(estimate: NeuronEstimate, *, json_output: bool) -> None:
    """Print a dry run's estimate on stdout: as JSON, or its totals, one line per component
    and their notes."""
    if json_output:
        typer.echo(estimate.model_dump_json(indent=2))
        return
    typer.echo(
        f"dry run: about {estimate.requests} LLM requests, {estimate.prompt_tokens} prompt + "
        f"{estimate.completion_tokens} completion tokens, estimated ${estimate.cost_usd:.4f}"
    )
    for part in estimate.parts:
        llm = f" ({part.llm})" if part.llm else ""
        typer.echo(
            f"  {part.role} {part.component}{llm}: {part.requests} "
            f"request{'s' * (part.requests != 1)}, {part.prompt_tokens} prompt + "
            f"{part.completion_tokens} completion tokens, ${part.cost_usd or 0.0:.4f}"
            + (f" ({part.note})" if part.note else "")
        )
    if estimate.requests:
        typer.echo("note: tokens are estimated as characters / 3.5; retries are not counted")
    typer.echo("nothing was sent to an LLM and nothing was written")


BASELINE = "token-table"
"""The offline baseline's name, as explainer and as simulator."""


def baseline_note(result: ExplanationResult) -> list[str]:
    """The lines that say the offline baseline, not an LLM, explained (or simulated) the
    neuron, with the options that switch to an LLM; none when LLMs did both."""
    explained = result.explainer.name == BASELINE
    simulated = result.simulator.name == BASELINE
    if not (explained or simulated):
        return []
    done = "explained" if explained else "simulated"
    if explained and simulated:
        done = "explained and simulated"
    flag = "--explainer" if explained else "--simulator"
    also = "; --simulator takes the same names" if explained and simulated else ""
    return [
        f"note: {done} by the offline {BASELINE} baseline, not an LLM.",
        f"For an LLM: {flag} openai:gpt-4o-mini (with OPENAI_API_KEY set, or with "
        "OPENAI_BASE_URL=http://127.0.0.1:8080/v1 for a local server, no key), or "
        f"{flag} hf:PATH (a local model folder or .gguf file){also}.",
    ]
