"""``collect`` and ``explain``: record a model over a corpus; explain one neuron."""

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
    CorpusHelp,
    Debug,
    Explainer,
    ModelArg,
    ModelCorpus,
    Quiet,
    ScoreSplit,
    Simulator,
    Split,
    SplitOpt,
    TextField,
    hidden_default,
    recording_options,
)
from neuron_explainer.cli._support import (
    Steps,
    Texts,
    bad_input,
    check_components,
    check_device,
    check_range,
    errors,
    open_corpus,
    print_result,
)

if TYPE_CHECKING:
    from neuron_explainer.records import NeuronRecord

# --- collect -------------------------------------------------------------------------------


@app.command()
@recording_options(
    "window_length", "top_k", "n_random", "batch_size", "device", "dtype", "bos", "max_windows"
)
def collect(
    model: ModelArg,
    corpus: Annotated[str, hidden_default("--corpus", CorpusHelp)],
    layers: Annotated[
        str,
        hidden_default("--layers", "Layers to record, all neurons of each: 0-3, 5 or 0,2,7."),
    ],
    out: Annotated[
        Path,
        hidden_default(
            "--out", "The collection folder (created). Rerunning with the same options resumes."
        ),
    ],
    *,
    recording: dict[str, Any],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a collection in --out that was made with other options."
        ),
    ] = False,
    split: SplitOpt = Split.file,
    text_field: TextField = "text",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Record every neuron of some layers over a corpus into a folder, in one resumable pass.

    Memory does not grow with the corpus. explain and run read records back from the folder
    (pass it as MODEL). Prints what was collected.
    """
    with errors(debug):
        from neuron_explainer.models.loading import model_shape
        from neuron_explainer.runs import parse_indices
        from neuron_explainer.subjects.collect import collect as collect_layers

        check_device(recording.get("device"))
        texts = open_corpus(corpus, split=split.value, text_field=text_field, count=False)
        model_type, n_layers, _ = model_shape(model)
        chosen = parse_indices(layers, limit=n_layers, what="layer")
        with Steps(quiet) as steps:
            loaded = load_model_step(steps, model, recording)
            layer_list = ",".join(map(str, chosen))
            total = recording.get("max_windows")
            with steps.step(f"collecting layers {layer_list} (excerpts)", total) as update:
                collection = collect_layers(
                    loaded,
                    texts.corpus,
                    out_dir=out,
                    layers=chosen,
                    overwrite=overwrite,
                    progress=update,
                    **recording,
                )
        neurons = {layer: collection.n_neurons(layer) for layer in collection.layers}
        typer.echo(
            f"collected {collection.windows_done} excerpts ({collection.tokens_done} tokens) of "
            f"{model_type} layers {layer_list} ({', '.join(map(str, neurons.values()))} neurons) "
            f"into {out}"
        )


# --- explain -------------------------------------------------------------------------------


@app.command()
@recording_options(*MODEL_OPTIONS, "bos")
def explain(
    model: ModelArg,
    layer: Annotated[int, hidden_default("--layer", "The neuron's layer.", min=0)],
    neuron: Annotated[
        int, typer.Option("--neuron", min=0, help="The neuron's index in its layer.")
    ],
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
    *,
    recording: dict[str, Any],
    split: SplitOpt = Split.file,
    text_field: TextField = "text",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Explain one MLP neuron and score the explanation on held-out excerpts.

    MODEL is recorded over --corpus (the model and corpus options apply), or, when MODEL is a
    collection folder written by collect, the neuron's record is read from it (no corpus).
    Prints the explanation and its score; --json prints the whole result.
    """
    with errors(debug):
        from neuron_explainer.options import ExplainOptions
        from neuron_explainer.runs.explain import explain_neuron

        check_components(explainer=explainer, simulator=simulator)
        options = ExplainOptions.build(
            best_of=best_of, score_split=score_split.value, calibration=calibration.value
        )
        source = collection_or_corpus(
            model, corpus, recording, split=split.value, text_field=text_field
        )
        if isinstance(source, Texts):
            check_range(model, [layer], [neuron])
        elif not 0 <= neuron < source.n_neurons(layer):
            raise bad_input(
                f"neuron {neuron} out of range: layer {layer} of the collection has neurons "
                f"0..{source.n_neurons(layer) - 1}"
            )
        with Steps(quiet) as steps:
            if isinstance(source, Texts):
                record = _record(steps, model, source, layer, neuron, recording)
                corpus_label = f"{corpus} ({source.documents} documents)"
            else:
                record = source.neuron_record(layer, neuron)
                corpus_label = record.provenance.dataset or "the collection's corpus"
            with steps.step("explaining and scoring"):
                result = explain_neuron(
                    record,
                    explainer=explainer,
                    simulator=simulator,
                    budget_usd=budget_usd,
                    explain_options=options,
                )
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        if json_output:
            typer.echo(result.model_dump_json(indent=2))
        else:
            print_result(result, corpus_label)


def _record(
    steps: Steps,
    model: str,
    texts: Texts,
    layer: int,
    neuron: int,
    options: dict[str, Any],
) -> NeuronRecord:
    """Load ``model`` and record one neuron over the corpus with the ``"hf"`` subject (from the
    registry), with progress."""
    from neuron_explainer.plugins import default_registry

    loaded = load_model_step(steps, model, options)
    with steps.step(f"recording layer {layer} (documents)", texts.documents) as update:
        subject = default_registry().subject(
            "hf", model=loaded, corpus=texts.counted(update), **options
        )
        return subject.neuron_record(subject.unit(layer, neuron))
