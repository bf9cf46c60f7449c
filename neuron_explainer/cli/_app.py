"""The typer app, its root options (``--version``) and the console entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from neuron_explainer._version import __version__

app = typer.Typer(
    name="neuron-explainer",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help is plain text, shown as written: "markdown" ate <db stem>, "rich" ate [tags].
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neuron-explainer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Explain what a neuron of a language model responds to, and score the explanation.

    Results go to stdout; progress bars and errors to stderr. Exit codes: 0 success, 1 runtime
    failure (an LLM or network error, a failed unit in a batch), 2 bad input (unknown model,
    layer or neuron out of range, unreadable corpus, unknown component, missing API key).
    LLM components named openai:MODEL read OPENAI_API_KEY and OPENAI_BASE_URL (a server on
    localhost needs no key).
    """


def main() -> None:
    """The console entry point: run the app, named ``neuron-explainer`` in its help."""
    app(prog_name="neuron-explainer")
