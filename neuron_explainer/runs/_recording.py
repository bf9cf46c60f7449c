"""How `neuron_explainer.runs.explain.explain_neuron` gets the record to explain: given, or
recorded by a subject from a model, for one unit of any kind (docs/units.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from neuron_explainer.errors import InvalidInputError, InvalidRecordError
from neuron_explainer.interfaces import Probe, Subject
from neuron_explainer.plugins.registry import Registry
from neuron_explainer.records import NeuronRecord, UnitId

__all__ = ["Recording", "record_for"]

UNIT_FORMS = (
    "layer= and neuron= (an MLP neuron), sae= and latent= (an SAE or transcoder latent), "
    "head=(layer, head) (an attention head), or direction= and hook= (a direction at a hook "
    "site)"
)
"""The ways to name one unit, for error messages."""


def _coerce_record(record: NeuronRecord | Mapping[str, Any]) -> NeuronRecord:
    if isinstance(record, NeuronRecord):
        return record
    try:
        return NeuronRecord.model_validate(record)
    except ValidationError as exc:
        raise InvalidRecordError(f"the neuron record does not validate:\n{exc}") from None


@dataclass(frozen=True)
class Recording:
    """How to record the unit when `explain_neuron` is given a model (or a subject)."""

    layer: int | None
    neuron: int | None
    corpus: Any
    subject_options: Mapping[str, Any] | None
    subject: str
    sae: str | os.PathLike[str] | Any = None
    latent: int | None = None
    head: tuple[int, int] | None = None
    direction: str | os.PathLike[str] | Any = None
    hook: str | None = None

    def unit_arguments(self) -> dict[str, Any]:
        """The unit arguments given (not ``None``), by name."""
        named = {
            "layer": self.layer,
            "neuron": self.neuron,
            "sae": self.sae,
            "latent": self.latent,
            "head": self.head,
            "direction": self.direction,
            "hook": self.hook,
        }
        return {key: value for key, value in named.items() if value is not None}

    def given(self) -> bool:
        """Whether any of it was given (a record needs none of it)."""
        given = (self.corpus, self.subject_options or None)
        return given != (None, None) or self.subject != "hf" or bool(self.unit_arguments())

    def kind(self, source: Any) -> str:
        """The unit kind the arguments name, checked: exactly one form of `UNIT_FORMS`
        (``source``: the model, for the message).

        Raises:
            InvalidInputError: none or several forms, or a form half given.
        """
        names = set(self.unit_arguments())
        forms = {
            "mlp_neuron": {"layer", "neuron"},
            "sae_latent": {"sae", "latent"},
            "attention_head": {"head"},
            "direction": {"direction", "hook"},
        }
        for kind, form in forms.items():
            if names == form:
                return kind
        if names == {"sae", "latent", "hook"}:
            return "sae_latent"  # the site of an SAE whose files do not name it
        got = ", ".join(f"{name}=" for name in sorted(names)) or "none of them"
        raise InvalidInputError(
            f"to explain a unit of model {source!r}, give {UNIT_FORMS} (and corpus=); got {got}"
        )


def _unit(recorder: Any, how: Recording, kind: str) -> UnitId:
    """The unit ``how`` names, made by ``recorder`` (its ``unit``, ``head_unit``,
    ``latent_unit`` or ``direction_unit``)."""
    if kind == "mlp_neuron":
        return recorder.unit(how.layer, how.neuron)  # type: ignore[no-any-return]
    method = {
        "attention_head": "head_unit",
        "sae_latent": "latent_unit",
        "direction": "direction_unit",
    }[kind]
    make = getattr(recorder, method, None)
    if not callable(make):
        raise InvalidInputError(
            f"a {type(recorder).__name__} records MLP neurons only (it has no {method})"
        )
    if kind == "attention_head":
        assert how.head is not None
        if len(how.head) != 2:
            raise InvalidInputError(f"head= is (layer, head), got {how.head!r}")
        return make(int(how.head[0]), int(how.head[1]))  # type: ignore[no-any-return]
    if kind == "sae_latent":
        return make(how.latent)  # type: ignore[no-any-return]
    return make()  # type: ignore[no-any-return]


def _subject(source: Any, how: Recording, kind: str, registry: Registry) -> Any:
    """The subject that records the unit: ``source`` when it is one, else built by the
    registry with the SAE or direction of ``how``."""
    if isinstance(source, Subject):
        extra = [name for name in ("sae", "direction", "hook") if getattr(how, name) is not None]
        if how.corpus is not None or how.subject_options or how.subject != "hf" or extra:
            raise InvalidInputError(
                f"a {type(source).__name__} has its corpus and options already (and its SAE or "
                "direction): corpus=, subject=, subject_options=, sae=, direction= and hook= are "
                "for recording a model (with a subject, give latent= alone for its SAE's latents)"
            )
        return source
    options = dict(how.subject_options or {})
    clash = sorted({"model", "corpus", "sae", "direction", "hook"} & set(options))
    if clash:
        raise InvalidInputError(
            f"subject_options cannot set {clash}: give the model first, corpus=, and the unit "
            "as explain_neuron's own arguments"
        )
    units = {"sae": how.sae, "direction": how.direction, "hook": how.hook}
    options.update({key: value for key, value in units.items() if value is not None})
    return registry.subject(how.subject, model=source, corpus=how.corpus, **options)


async def record_for(
    source: Any, how: Recording, registry: Registry
) -> tuple[NeuronRecord, Probe | None]:
    """The NeuronRecord to explain: given directly, or recorded by a subject (given, or built
    by the registry from ``how.subject``'s name) over a corpus; and the subject's probe of the
    unit when it has one (``probe(unit)``: its true activations on new text).

    Raises:
        InvalidInputError: recording arguments with a record, or the unit named wrongly.
        InvalidRecordError: a record (as a dict) that does not validate.
    """
    if isinstance(source, NeuronRecord | Mapping):
        if how.given():
            raise InvalidInputError(
                "layer, neuron, sae, latent, head, direction, hook, corpus, subject and "
                "subject_options are for recording a model; a NeuronRecord is explained as it is"
            )
        return _coerce_record(source), None
    if isinstance(source, Subject) and set(how.unit_arguments()) == {"latent"}:
        kind = "sae_latent"
    else:
        kind = how.kind(source)
    recorder = _subject(source, how, kind, registry)
    unit = _unit(recorder, how, kind)
    make_probe = getattr(recorder, "probe", None)
    probe = make_probe(unit) if callable(make_probe) else None
    return await recorder.aneuron_record(unit), probe
