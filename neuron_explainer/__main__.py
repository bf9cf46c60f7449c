"""``python -m neuron_explainer``: the ``neuron-explainer`` command line (see docs/cli.md)."""

from neuron_explainer.cli import main

main()
