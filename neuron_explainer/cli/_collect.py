"""``collect``: record every neuron of some layers, every latent of an SAE, attention heads or
directions over a corpus into a folder, in one resumable pass (docs/collection.md,
docs/units.md); then say how many units are dead (`echo_unit_stats`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._model import load_model_step
from neuron_explainer.cli._options import (
    CorpusHelp,
    Debug,
    ModelArg,
    Quiet,
    Split,
    SplitOpt,
    TextField,
    cluster_option,
    hidden_default,
    recording_options,
)
from neuron_explainer.cli._support import Steps, check_device, errors, open_corpus
from neuron_explainer.cli._units import (
    DirectionsOpt,
    HeadsOpt,
    HookOpt,
    LatentsOpt,
    SaeOpt,
    batch_units,
)

if TYPE_CHECKING:
    from neuron_explainer.subjects.collection import Collection


def echo_unit_stats(collection: Collection | str | Path | None) -> None:
    """Print `Collection.unit_stats`'s summary line (nothing for ``None``, or a folder that
    holds no collection)."""
    from neuron_explainer.errors import InvalidInputError
    from neuron_explainer.subjects.collection import Collection

    if collection is None:
        return
    try:
        found = collection if isinstance(collection, Collection) else Collection(collection)
    except InvalidInputError:
        return
    typer.echo(found.unit_stats().summary())


@app.command()
@recording_options(
    "window_length", "top_k", "n_random", "batch_size", "device", "dtype", "bos", "max_windows"
)
def collect(
    model: ModelArg,
    corpus: Annotated[str, hidden_default("--corpus", CorpusHelp)],
    out: Annotated[
        Path,
        hidden_default(
            "--out", "The collection folder (created). Rerunning with the same options resumes."
        ),
    ],
    layers: Annotated[
        str | None,
        hidden_default("--layers", "Layers to record, all neurons of each: 0-3, 5 or 0,2,7."),
    ] = None,
    sae: SaeOpt = None,
    latents: LatentsOpt = None,
    heads: HeadsOpt = None,
    direction: DirectionsOpt = None,
    hook: HookOpt = None,
    latent_chunk: Annotated[
        int | None,
        hidden_default(
            "--latent-chunk",
            "Latents computed and kept per state file at once (default 4096): bounds memory.",
            min=1,
        ),
    ] = None,
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
    cluster: Annotated[
        str | None,
        hidden_default(
            "--cluster",
            "Fold the windows on the Dask cluster whose scheduler is at this address "
            "(tcp://HOST:PORT); the workers load MODEL by name (see docs/cluster.md).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        hidden_default(
            "--workers",
            "Fold the windows on a local Dask cluster of this many worker processes "
            "(127.0.0.1 only), started and stopped for the collection.",
            min=1,
        ),
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Record neurons, SAE latents, heads or directions over a corpus into a folder, in one
    resumable pass.

    The units are every neuron of some layers (--layers), every latent of an SAE (--sae, with
    --latents to pick some), attention heads (--heads 3.5,3.7) or directions (--direction
    F.npy --hook SITE).

    With --cluster ADDRESS or --workers N, Dask workers fold the windows and the result is the
    same collection. Memory does not grow with the corpus. explain and run read records back
    from the folder (pass it as MODEL). Prints what was collected and how many units are dead
    (never above 0) with the median firing density of the others.
    """
    with errors(debug):
        from neuron_explainer.models.loading import model_shape
        from neuron_explainer.runs import parse_indices
        from neuron_explainer.subjects.collect import collect as collect_units

        check_device(recording.get("device"))
        units = batch_units(layers, sae, latents, heads, hook, direction)
        if latent_chunk is not None:
            units["latent_chunk"] = latent_chunk
        on_cluster = cluster_option(cluster, workers)
        if on_cluster is not None:
            units["cluster"] = on_cluster
        texts = open_corpus(corpus, split=split.value, text_field=text_field, count=False)
        model_type, n_layers, _ = model_shape(model)
        if layers is not None:
            units["layers"] = parse_indices(layers, limit=n_layers, what="layer")
        with Steps(quiet) as steps:
            loaded = load_model_step(steps, model, recording)
            total = recording.get("max_windows")
            with steps.step("collecting (excerpts)", total) as update:
                collection = collect_units(
                    loaded,
                    texts.corpus,
                    out_dir=out,
                    overwrite=overwrite,
                    progress=update,
                    **units,
                    **recording,
                )
        done = f"collected {collection.windows_done} excerpts ({collection.tokens_done} tokens)"
        if collection.groups:
            where = ", ".join(f"{len(g['indices'])} at {g['site']}" for g in collection.groups)
            typer.echo(f"{done} of {model_type} {collection.kind} units ({where}) into {out}")
        else:
            neurons = {layer: collection.n_neurons(layer) for layer in collection.layers}
            layer_list = ",".join(map(str, collection.layers))
            typer.echo(
                f"{done} of {model_type} layers {layer_list} "
                f"({', '.join(map(str, neurons.values()))} neurons) into {out}"
            )
        echo_unit_stats(collection)
