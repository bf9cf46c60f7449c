"""The ``neuron-explainer`` command line (also ``python -m neuron_explainer``).

Commands: ``collect`` (record every neuron of some layers, an SAE's latents or attention
heads into a folder), ``explain`` (one unit), ``run`` (a resumable batch into a database),
``score`` (re-score a database with another simulator), ``report`` (a static HTML report),
``migrate`` (upgrade stored files), ``plugins`` (what is installed), ``export neuronpedia`` and
``import delphi`` (other tools' files).
Results go to stdout, progress bars and errors to stderr. Exit codes (`exit_code`): 0 success,
1 a runtime failure, 2 bad input, 130 interrupted; ``--debug`` shows the traceback. See
docs/cli.md.

This package imports typer and rich; ``import neuron_explainer`` never imports it. The heavy
parts (torch, transformers, the batch runner) are imported by the commands that use them.
"""

from neuron_explainer.cli import (  # noqa: F401  (registers commands)
    _batch,
    _collect,
    _explain,
    _interop,
    _migrate,
    _plugins,
)
from neuron_explainer.cli._app import app as app
from neuron_explainer.cli._app import main as main
from neuron_explainer.cli._support import exit_code as exit_code

__all__ = ["app", "exit_code", "main"]
