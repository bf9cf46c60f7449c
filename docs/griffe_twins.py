"""A griffe extension for the docs build: ``explain_neuron = sync_twin(aexplain_neuron)`` is
documented as a function with ``aexplain_neuron``'s parameters, return type and docstring.

`neuron_explainer._aio.sync_twin` gives the twin the same signature and docstring at run time
(``functools.wraps``); griffe reads the source without running it, so without this extension
the docs would show the twin as a plain attribute. Used from mkdocs.yml (``extensions:``).
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


class SyncTwins(griffe.Extension):
    """Turn ``name = sync_twin(afunc)`` attributes into functions shaped like ``afunc``."""

    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            return
        call = node.value
        if not (
            isinstance(call.func, ast.Name)
            and call.func.id == "sync_twin"
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Name)
        ):
            return
        parent = attr.parent
        if parent is None:
            return
        target = parent.members.get(call.args[0].id)
        if not isinstance(target, griffe.Function):
            return
        twin = griffe.Function(
            attr.name,
            parameters=target.parameters,
            returns=target.returns,
            docstring=target.docstring,
            lineno=attr.lineno,
            endlineno=attr.endlineno,
        )
        twin.labels = {label for label in target.labels if label != "async"}
        parent.set_member(attr.name, twin)
