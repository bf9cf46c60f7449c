"""Errors raised by neuron_explainer.

Every error the library raises on purpose derives from one root, so
``except NeuronExplainerError`` catches them all:

    NeuronExplainerError
    ├── InvalidInputError            (also a ValueError) bad data or arguments from the caller
    │   ├── InvalidRecordError       a record or result does not validate (lengths, NaN, ...)
    │   ├── InsufficientRecordsError too few records to fill the train/held-out splits
    │   │   └── DeadUnitError        a collected unit never activated (> 0) on the corpus
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
        ├── AuthenticationError      no API key, or the server refused it (HTTP 401/403)
        ├── BadRequestError          the server rejected the request (HTTP 400/404/422, ...)
        ├── RateLimitError           rate limited (HTTP 429) on every attempt, or out of quota
        ├── ServerError              the server failed (HTTP 5xx, 408, 409) on every attempt
        ├── LLMTimeoutError          the server did not answer in time, on every attempt
        ├── LLMConnectionError       no connection, or it dropped, on every attempt
        ├── InvalidResponseError     an answer that does not follow the protocol (not JSON,
        │                            cut short, missing fields, prompt logprobs misaligned)
        └── BudgetExceededError      a call would exceed a usage meter's budget (refused before
                                     it is sent; defined in `neuron_explainer.llm.usage`)

Warnings: `PluginWarning` reports a plugin that failed to load outside strict mode;
`neuron_explainer.records.splits.HeldOutOverlapWarning` reports held-out excerpts that repeat
train ones.

Constructing a data model directly (``ActivationRecord(...)``) validates with pydantic and so
raises ``pydantic.ValidationError`` (a ``ValueError``) whose message names the field to fix.
Library functions that take records as plain data (dicts, files) convert that into
`InvalidRecordError` or `FormatError`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "CapabilityError",
    "DeadUnitError",
    "DuplicateComponentError",
    "ExplanationError",
    "FormatError",
    "InsufficientRecordsError",
    "InvalidInputError",
    "InvalidRecordError",
    "InvalidResponseError",
    "LLMConnectionError",
    "LLMError",
    "LLMTimeoutError",
    "NeuronExplainerError",
    "PluginError",
    "PluginWarning",
    "RateLimitError",
    "ServerError",
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


class DeadUnitError(InsufficientRecordsError):
    """A collected unit never activated above 0 on the corpus: nothing to explain
    (`neuron_explainer.subjects.collection.Collection.record`); a batch run records it as
    failed with this reason and goes on."""


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

    A failed simulation is reported, never scored as zeros. Raised for one sequence, it is
    counted as that sequence's failure; a unit fails only when too many of its sequences fail
    (``max_failed_fraction``).

    Attributes:
        reason: the failure's class, a short stable label (``"misaligned"``,
            ``"unparseable"``, ``"empty"``, ... see `neuron_explainer.interfaces`), or
            ``None`` (counted as ``"other"``).
    """

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_simulation_error, (type(self), self.args, self.reason))


def _rebuild_simulation_error(
    cls: type[SimulationError], args: tuple[object, ...], reason: str | None
) -> SimulationError:
    """``cls(*args, reason=reason)``: how a pickled `SimulationError` is rebuilt."""
    return cls(*args, reason=reason)


class CapabilityError(NeuronExplainerError):
    """A component needs a capability (logprobs, JSON output, ...) that its backend lacks."""


class LLMError(NeuronExplainerError):
    """A call to an LLM provider failed: network, server, authentication, rate limit or quota.

    Providers raise it (or a subclass) from `LLM.achat` instead of their client's own errors.

    Attributes:
        status_code: the HTTP status of the last failed attempt, if the server answered.
        attempts: how many times the request was sent (``None`` if not known).
    """

    def __init__(
        self, *args: object, status_code: int | None = None, attempts: int | None = None
    ) -> None:
        super().__init__(*args)
        self.status_code = status_code
        self.attempts = attempts


class AuthenticationError(LLMError):
    """No API key was found, or the server refused the one sent (HTTP 401/403). Not retried."""


class BadRequestError(LLMError):
    """The server rejected the request itself (HTTP 400, 404, 422 or another 4xx that retrying
    cannot fix): an unknown model, a bad parameter, a prompt too long. Not retried; the message
    quotes the server's."""


class RateLimitError(LLMError):
    """The server answered HTTP 429 to every attempt, or said the account is out of quota (not
    retried)."""


class ServerError(LLMError):
    """The server failed (HTTP 5xx, 408 or 409) on every attempt."""


class LLMTimeoutError(LLMError):
    """The server did not answer within the timeout, on every attempt."""


class LLMConnectionError(LLMError):
    """The server could not be reached, or it closed the connection without a complete
    answer, on every attempt."""


class InvalidResponseError(LLMError):
    """The server answered HTTP 200 with something that does not follow the protocol: a body
    that is not JSON (retried), or JSON without the expected fields, or prompt logprobs whose
    tokens and offsets do not line up with the prompt (not retried)."""
