"""``export neuronpedia`` and ``import delphi``: other tools' files from a run database, and
records from another tool's cache (see docs/interop.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._options import Debug
from neuron_explainer.cli._support import errors

export_app = typer.Typer(
    name="export",
    no_args_is_help=True,
    help="Write a run database's results in another tool's format.",
)
import_app = typer.Typer(
    name="import",
    no_args_is_help=True,
    help="Read another tool's activation cache as records to explain.",
)
app.add_typer(export_app)
app.add_typer(import_app)

Out = Annotated[
    Path, typer.Option("--out", help="The folder to write (created).", show_default=False)
]


@export_app.command("neuronpedia")
def export_neuronpedia(
    db: Annotated[Path, typer.Argument(metavar="DB", help="The run database.", show_default=False)],
    out: Out,
    model_id: Annotated[
        str, typer.Option("--model-id", help="Neuronpedia's model id, e.g. gpt2-small.")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Neuronpedia's source, e.g. 6-res-jb; {layer} is each unit's layer (default for "
            "MLP neurons: the layer number, Neuronpedia's name for a layer of neurons).",
        ),
    ] = None,
    collection: Annotated[
        Path | None,
        typer.Option(
            "--collection",
            help="Upload each unit's top and random records from this collection folder "
            "(default: the held-out excerpts each result was scored on).",
        ),
    ] = None,
    method_name: Annotated[
        str | None,
        typer.Option("--method", help="Neuronpedia's explanation type, e.g. oai_token-act-pair."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Write the done units of DB as Neuronpedia upload batches (at most 128 features a file,
    each a body for POST /api/feature/upload-batch) and their scores in scores.jsonl.

    Prints each file written. Exits with 2 when a limit of Neuronpedia's is exceeded (an
    excerpt over 1,024 tokens, an explanation over 512 characters), naming the unit.
    """
    with errors(debug):
        from neuron_explainer.runs.interop import export_neuronpedia as export

        paths = export(
            db,
            out,
            model_id=model_id,
            source=source,
            collection=collection,
            method_name=method_name,
        )
        for path in paths:
            typer.echo(f"wrote {path}")
        typer.echo(f"wrote {out / 'scores.jsonl'}")


@import_app.command("delphi")
def import_delphi(
    cache: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="delphi's latent cache: its latents folder (one folder per module).",
            show_default=False,
        ),
    ],
    out: Out,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="The tokenizer of the cache's token ids: a name or local folder (default: the "
            "cache config's model_name).",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="The units' kind (default sae_latent; transcoder_latent)."),
    ] = None,
    window_length: Annotated[
        int | None,
        typer.Option("--window-length", min=1, help="Tokens per excerpt (default: a cache row)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Read delphi's latent cache as records: OUT/records.jsonl, one NeuronRecord a line
    (each latent's top windows, a random sample, its moments), and OUT/import.json.

    Explain them with: neuron-explainer run --records OUT --db RUN.sqlite (from Python:
    explain_neurons(records=RecordsFile(OUT), db=...)).
    """
    with errors(debug):
        from neuron_explainer.runs.interop import import_delphi as read

        path = read(cache, out, tokenizer=tokenizer, kind=kind, window_length=window_length)
        typer.echo(f"wrote {path}")
