"""``plugins``: what the registry holds, and which plugins failed to load."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from neuron_explainer.cli._app import app
from neuron_explainer.cli._options import Debug
from neuron_explainer.cli._support import errors

# --- plugins -------------------------------------------------------------------------------


@app.command()
def plugins(
    json_output: Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")] = False,
    debug: Debug = False,
) -> None:
    """List the registered explainers, simulators, subjects and LLM providers, and the plugins.

    Each component shows the plugin that registered it and its description; plugins that
    failed to load show their error.
    """
    with errors(debug):
        from neuron_explainer.plugins import default_registry

        registry = default_registry()
        components = registry.components()
        statuses = registry.plugins()
        if json_output:
            listing = {
                "components": [
                    {
                        "kind": c.kind,
                        "name": c.name,
                        "aliases": list(c.aliases),
                        "plugin": c.plugin,
                        "description": c.description,
                    }
                    for c in components
                ],
                "plugins": [
                    {"name": p.name, "status": p.status, "source": p.source, "error": p.error}
                    for p in statuses
                ],
            }
            typer.echo(json.dumps(listing, indent=2))
            return
        kinds = {
            "explainer": "Explainers",
            "simulator": "Simulators",
            "subject": "Subjects",
            "llm_provider": "LLM providers (use as provider:model)",
        }
        width = max((len(c.name) for c in components), default=0) + 2
        for kind, heading in kinds.items():
            rows = [c for c in components if c.kind == kind]
            if not rows:
                continue
            typer.echo(f"{heading}:")
            for c in rows:
                aliases = f" (also {', '.join(c.aliases)})" if c.aliases else ""
                typer.echo(f"  {c.name:<{width}}[{c.plugin}] {c.description}{aliases}")
        typer.echo("Plugins:")
        for p in statuses:
            error = f": {p.error}" if p.error else ""
            typer.echo(f"  {p.name} ({p.source}): {p.status}{error}")
