"""Errors raised by neuron_explainer.

Every error the library raises on purpose derives from one root, so
``except NeuronExplainerError`` catches them all:

    NeuronExplainerError
    ├── InvalidInputError            (also a ValueError) bad data or arguments from the caller
    │   ├── InvalidRecordError       a record or result does not validate (lengths, NaN, ...)
    │   ├── InsufficientRecordsError too few records to fill the train/held-out splits
    │   └── FormatError              a file is not in the format it claims to be
    ├── UnknownComponentError        (also a LookupError) no component registered by that name
    ├── PluginError                  a plugin failed to load or register (strict mode), or
    │   │                            returned something unusable
    │   └── DuplicateComponentError  two plugins registered the same name
    ├── UsageError                   the API was called in a way that cannot work
    │                                (e.g. a sync call inside a running event loop)
    ├── ExplanationError             an explainer could not produce an explanation
    ├── SimulationError              a simulator could not produce a usable simulation
    │                                (never replaced by zeros)
    ├── CapabilityError              a component needs something its backend does not offer
    └── LLMError                     a call to an LLM provider failed (network, server, quota)

Warnings: `PluginWarning` reports a plugin that failed to load outside strict mode;
`neuron_explainer.splits.HeldOutOverlapWarning` reports held-out excerpts that repeat train ones.

Constructing a data model directly (``ActivationRecord(...)``) validates with pydantic and so
raises ``pydantic.ValidationError`` (a ``ValueError``) whose message names the field to fix.
Library functions that take records as plain data (dicts, files) convert that into
`InvalidRecordError` or `FormatError`.
"""

from __future__ import annotations

__all__ = [
    "CapabilityError",
    "DuplicateComponentError",
    "ExplanationError",
    "FormatError",
    "InsufficientRecordsError",
    "InvalidInputError",
    "InvalidRecordError",
    "LLMError",
    "NeuronExplainerError",
    "PluginError",
    "PluginWarning",
    "SimulationError",
    "UnknownComponentError",
    "UsageError",
]


class NeuronExplainerError(Exception):
    """Root of every error neuron_explainer raises on purpose."""


class InvalidInputError(NeuronExplainerError, ValueError):
    """The caller passed data or arguments that cannot be used; the message says what to fix."""


class InvalidRecordError(InvalidInputError):
    """A record, simulation or result does not validate (mismatched lengths, non-finite values)."""


class InsufficientRecordsError(InvalidInputError):
    """There are too few activation records to fill the splits that were asked for."""


class FormatError(InvalidInputError):
    """A file or document is not valid in the format it was read as."""


class UnknownComponentError(NeuronExplainerError, LookupError):
    """No explainer, simulator or other component is known under the requested name.

    Attributes:
        kind: what was looked up ("explainer", "simulator", ...).
        name: the name that was asked for.
        available: the names that are known for that kind.
    """

    def __init__(
        self, kind: str, name: str, available: list[str], plugins: list[str] | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        self.plugins = sorted(plugins or [])
        listing = ", ".join(repr(n) for n in self.available) or "none"
        message = f"unknown {kind} {name!r}; available {kind}s: {listing}"
        if plugins is not None:
            message += f" (plugins loaded: {', '.join(self.plugins) or 'none'})"
        super().__init__(message)


class PluginError(NeuronExplainerError):
    """A plugin failed to load or register (in strict mode), or a factory returned junk."""


class DuplicateComponentError(PluginError):
    """Two plugins registered the same component name; the message names both."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register and was skipped; everything else keeps working."""


class UsageError(NeuronExplainerError):
    """The API was used in a way that cannot work, e.g. a sync call inside an event loop."""


class ExplanationError(NeuronExplainerError):
    """An explainer could not produce an explanation from the records it was given."""


class SimulationError(NeuronExplainerError):
    """A simulator could not produce a usable simulation for a sequence.

    A failed simulation is reported, never scored as zeros.
    """


class CapabilityError(NeuronExplainerError):
    """A component needs a capability (logprobs, JSON output, ...) that its backend lacks."""


class LLMError(NeuronExplainerError):
    """A call to an LLM provider failed: network, server, authentication, rate limit or quota.

    Providers raise it (or a subclass) from `LLM.achat` instead of their client's own errors.
    """
