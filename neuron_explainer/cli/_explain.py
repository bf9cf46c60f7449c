"""``collect`` and ``explain``: record a model over a corpus; explain one neuron."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._options import (
    BOS,
    BOS_HELP,
    BatchSize,
    BOSOpt,
    BudgetUSD,
    Calibration,
    CorpusHelp,
    Debug,
    Device,
    DType,
    DTypeOpt,
    Explainer,
    ModelArg,
    NRandom,
    Quiet,
    ScoreSplit,
    Simulator,
    Split,
    SplitOpt,
    TextField,
    TopK,
    WindowLength,
    given_options,
)
from neuron_explainer.cli._support import (
    Steps,
    Texts,
    bad_input,
    check_components,
    check_device,
    check_range,
    errors,
    load_model_quietly,
    open_corpus,
    print_result,
    read_collection,
)

if TYPE_CHECKING:
    from neuron_explainer.records import NeuronRecord

# --- collect -------------------------------------------------------------------------------


@app.command()
def collect(
    model: ModelArg,
    corpus: Annotated[str, typer.Option("--corpus", help=CorpusHelp, show_default=False)],
    layers: Annotated[
        str,
        typer.Option(
            "--layers",
            help="Layers to record, all neurons of each: 0-3, 5 or 0,2,7.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The collection folder (created). Rerunning with the same options resumes.",
            show_default=False,
        ),
    ],
    window_length: Annotated[
        int, typer.Option("--window-length", min=1, help="Tokens per excerpt.")
    ] = 64,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="Top-activating excerpts kept per neuron.")
    ] = 40,
    n_random: Annotated[
        int, typer.Option("--n-random", min=0, help="Random excerpts kept per neuron.")
    ] = 30,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Excerpts per forward pass.")
    ] = 16,
    device: Device = None,
    dtype: Annotated[DType, typer.Option("--dtype", help="The model's dtype.")] = DType.float32,
    bos: Annotated[BOS, typer.Option("--bos", help=BOS_HELP)] = BOS.none,
    max_windows: Annotated[
        int | None,
        typer.Option(
            "--max-windows", min=1, help="Stop after this many excerpts.", show_default=False
        ),
    ] = None,
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

        check_device(device)
        texts = open_corpus(corpus, split=split.value, text_field=text_field, count=False)
        model_type, n_layers, _ = model_shape(model)
        chosen = parse_indices(layers, limit=n_layers, what="layer")
        with Steps(quiet) as steps:
            with steps.step(f"loading {model}"):
                loaded = load_model_quietly(model, dtype=dtype.value, device=device)
            layer_list = ",".join(map(str, chosen))
            with steps.step(f"collecting layers {layer_list} (excerpts)", max_windows) as update:
                collection = collect_layers(
                    loaded,
                    texts.corpus,
                    out_dir=out,
                    layers=chosen,
                    window_length=window_length,
                    bos=bos.value,
                    batch_size=batch_size,
                    top_k=top_k,
                    n_random=n_random,
                    max_windows=max_windows,
                    overwrite=overwrite,
                    progress=update,
                )
        neurons = {layer: collection.n_neurons(layer) for layer in collection.layers}
        typer.echo(
            f"collected {collection.windows_done} excerpts ({collection.tokens_done} tokens) of "
            f"{model_type} layers {layer_list} ({', '.join(map(str, neurons.values()))} neurons) "
            f"into {out}"
        )


# --- explain -------------------------------------------------------------------------------


@app.command()
def explain(
    model: ModelArg,
    layer: Annotated[
        int, typer.Option("--layer", min=0, help="The neuron's layer.", show_default=False)
    ],
    neuron: Annotated[
        int, typer.Option("--neuron", min=0, help="The neuron's index in its layer.")
    ],
    corpus: Annotated[
        str | None,
        typer.Option(
            "--corpus",
            help=CorpusHelp + " Required unless MODEL is a collection folder.",
            show_default=False,
        ),
    ] = None,
    explainer: Explainer = "token-table",
    simulator: Simulator = "token-table",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the full result (ExplanationResult) to this JSON file.",
            show_default=False,
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
    device: Device = None,
    dtype: DTypeOpt = None,
    window_length: WindowLength = None,
    batch_size: BatchSize = None,
    top_k: TopK = None,
    n_random: NRandom = None,
    bos: BOSOpt = None,
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
        from neuron_explainer.runs.explain import explain_neuron

        check_components(explainer=explainer, simulator=simulator)
        subject_options = given_options(
            device=device,
            dtype=dtype,
            window_length=window_length,
            batch_size=batch_size,
            top_k=top_k,
            n_random=n_random,
            bos=bos,
        )
        collection = read_collection(model)
        if collection is not None:
            if corpus is not None or subject_options:
                given = ["--corpus"] * (corpus is not None) + [
                    "--" + key.replace("_", "-") for key in subject_options
                ]
                raise bad_input(
                    f"{model} is a collection folder, which holds its records already: "
                    f"{', '.join(given)} apply to a model only"
                )
            if not 0 <= neuron < collection.n_neurons(layer):
                raise bad_input(
                    f"neuron {neuron} out of range: layer {layer} of the collection has neurons "
                    f"0..{collection.n_neurons(layer) - 1}"
                )
        elif corpus is None:
            raise bad_input(
                "--corpus is required to record a model (or pass a collection folder written "
                "by collect as MODEL)"
            )
        else:
            check_device(device)
            texts = open_corpus(corpus, split=split.value, text_field=text_field)
            check_range(model, [layer], [neuron])
        with Steps(quiet) as steps:
            if collection is not None:
                record = collection.neuron_record(layer, neuron)
                corpus_label = record.provenance.dataset or "the collection's corpus"
            else:
                record = _record(steps, model, texts, layer, neuron, subject_options)
                corpus_label = f"{corpus} ({texts.documents} documents)"
            with steps.step("explaining and scoring"):
                result = explain_neuron(
                    record,
                    explainer=explainer,
                    simulator=simulator,
                    best_of=best_of,
                    budget_usd=budget_usd,
                    score_split=score_split.value,
                    calibration=calibration.value,
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
    """Load ``model`` and record one neuron over the corpus, with progress."""
    from neuron_explainer.subjects.hf import HFSubject

    load = {key: options.pop(key) for key in ("device", "dtype") if key in options}
    with steps.step(f"loading {model}"):
        loaded = load_model_quietly(model, **load)
    with steps.step(f"recording layer {layer} (documents)", texts.documents) as update:
        subject = HFSubject(loaded, texts.counted(update), **options)
        return subject.neuron_records(layer, [neuron])[neuron]
