"""``migrate``: upgrade run databases, collection folders and result JSON files in place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._options import Debug
from neuron_explainer.cli._support import errors


@app.command()
def migrate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            help="Run databases, collection folders or result JSON files.",
            show_default=False,
        ),
    ],
    debug: Debug = False,
) -> None:
    """Upgrade stored files to the formats this version writes, in place.

    Prints one line per path: its kind and versions before and after (a current file is left
    as it is). Every rewritten file is kept beside it as `NAME.vOLD.bak`. Reading never needs
    this (older files are read as they are); it makes them current ahead of time. Stops at the
    first path that cannot be migrated (exit code 2: missing, not a stored file, or written by
    a newer version).
    """
    with errors(debug):
        from neuron_explainer.runs.migration import migrate as migrate_path

        for path in paths:
            typer.echo(migrate_path(path).describe())
