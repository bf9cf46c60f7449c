"""Activation data: what a subject recorded for one unit of a model.

* `ActivationRecord`: one text excerpt, its tokens and the unit's activation on each.
* `WindowId`: which window of the corpus an excerpt is (document and token offset).
* `UnitId`: which unit (model, layer, index, kind, hook site, and the SAE or direction).
* `AttendedToken`: where an attention head looked from an excerpt's top token.
* `Provenance`: how the records were produced (model, hook, dataset, window, ...).
* `NeuronRecord`: everything collected for one unit: top-activating excerpts, a random
  sample, per-quantile samples and moments.

All are pydantic v2 models: they validate on construction and round-trip exactly through JSON
(``model_dump_json`` / ``model_validate_json``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    JsonValue,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from neuron_explainer._version import __version__
from neuron_explainer.errors import InsufficientRecordsError, InvalidInputError

__all__ = [
    "UNIT_KINDS",
    "ActivationRecord",
    "AttendedToken",
    "NeuronRecord",
    "Provenance",
    "UnitId",
    "WindowId",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

UNIT_KINDS: tuple[str, ...] = (
    "mlp_neuron",
    "attention_head",
    "sae_latent",
    "transcoder_latent",
    "direction",
)
"""The unit kinds the library records (`UnitId.kind`; docs/units.md defines each one's
activation). Plugins may name others."""
SOURCE_DIGITS = 16
"""Hex digits of a sha256 in a `UnitId.source` named by content (`UnitId.content_source`)."""


def _drop_unset(data: Any, optional: tuple[str, ...]) -> Any:
    """``data`` (a model dumped by pydantic) without the ``optional`` keys whose value is
    ``None``: files of units and excerpts that do not use the fields added in 0.3 read as
    they did before (readers of earlier versions refuse unknown keys)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (k in optional and v is None)}
    return data


class WindowId(BaseModel):
    """Which window of the corpus an excerpt is: a property of its place in the corpus.

    A subject cuts each document's token sequence into consecutive windows
    (`neuron_explainer.subjects.corpus.iter_windows`); a window is named by the document it
    comes from and the offset of its first excerpt token in that document's tokens. The id does
    not depend on the order the windows were processed in, on batching or on the path that
    recorded them (`HFSubject` and a collection give the same window the same id). It names a
    window of one corpus cut one way (the `Provenance`'s ``dataset``, ``window_length`` and
    ``bos_policy``): compare ids of records of the same source only.

    Attributes:
        document: index of the document in the corpus's order (`Document.index`: every
            candidate document of the source counts, skipped empty ones too).
        start: offset of the window's first excerpt token in the document's token sequence
            (which begins with the BOS token under the ``"document"`` BOS policy).

    Raises:
        pydantic.ValidationError: a negative ``document`` or ``start``.
    """

    model_config = _STRICT

    document: int = Field(ge=0, description="Index of the document in the corpus.")
    start: int = Field(ge=0, description="Token offset of the window in its document.")

    def __str__(self) -> str:
        return f"document {self.document} token {self.start}"


class AttendedToken(BaseModel):
    """Where an attention head looked from one token of an excerpt: the source (key) token
    to which it gave the highest attention probability from the ``position`` (query) token.

    Attributes:
        position: the query token's position in the excerpt (for a top record of an
            attention head: its top-activating token).
        source: the source token's position in the excerpt, ``None`` when the source is a
            context-only token before the excerpt (the BOS token of ``bos="window"``).
        source_token: the source token as a string (as `ActivationRecord.tokens` shows it).
        weight: its attention probability, in [0, 1].
    """

    model_config = _STRICT

    position: int = Field(ge=0, description="The query token's position in the excerpt.")
    source: int | None = Field(
        ge=0, description="The source token's position in the excerpt (None: before it)."
    )
    source_token: str = Field(description="The source token as a string.")
    weight: float = Field(ge=0.0, le=1.0, description="Its attention probability.")

    @model_validator(mode="after")
    def _causal(self) -> Self:
        if self.source is not None and self.source > self.position:
            raise ValueError(
                f"source {self.source} comes after position {self.position}: causal attention "
                "looks back only"
            )
        return self


class ActivationRecord(BaseModel):
    """One text excerpt with the unit's activation on every token.

    ``window_id`` names the corpus window the excerpt is (`WindowId`): every record a subject
    of this library recorded over a corpus carries it. It is ``None`` for records built by
    hand, for texts that are not corpus windows (a probe's sentences), and in files written
    before window ids existed.

    ``attended`` (attention heads' top records only, else ``None`` and left out of the JSON)
    says which token the head attended to most from the excerpt's top token.

    Raises:
        pydantic.ValidationError: if ``activations`` (or ``token_ids``) do not have one entry per
            token, if the excerpt is empty, if an activation is NaN or infinite, or if
            ``attended`` points outside the excerpt.
    """

    model_config = _STRICT

    tokens: tuple[str, ...] = Field(min_length=1, description="Tokens as strings, in order.")
    activations: tuple[FiniteFloat, ...] = Field(
        description="Raw activation of the unit on each token (same length as tokens)."
    )
    token_ids: tuple[int, ...] | None = Field(
        default=None, description="Token ids, when the subject's tokenizer is known."
    )
    window_id: WindowId | None = Field(
        default=None, description="The corpus window the excerpt is, when it is one."
    )
    attended: AttendedToken | None = Field(
        default=None, description="An attention head's most attended source token."
    )

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        return _drop_unset(handler(self), ("attended",))

    @model_validator(mode="after")
    def _check_lengths(self) -> Self:
        if len(self.activations) != len(self.tokens):
            raise ValueError(
                f"activations has {len(self.activations)} values but tokens has "
                f"{len(self.tokens)}; give exactly one activation per token"
            )
        if self.token_ids is not None and len(self.token_ids) != len(self.tokens):
            raise ValueError(
                f"token_ids has {len(self.token_ids)} values but tokens has {len(self.tokens)}; "
                "give one id per token or leave token_ids out"
            )
        if self.attended is not None and self.attended.position >= len(self.tokens):
            raise ValueError(
                f"attended.position {self.attended.position} is outside the excerpt of "
                f"{len(self.tokens)} tokens"
            )
        return self

    @property
    def max_activation(self) -> float:
        """The largest activation in the excerpt."""
        return max(self.activations)

    def __len__(self) -> int:
        return len(self.tokens)


class UnitId(BaseModel):
    """Identifies one unit of a model: (model, hook site, kind, index).

    ``kind`` names what the unit is (`UNIT_KINDS`; docs/units.md): ``"mlp_neuron"`` (the
    default), ``"attention_head"`` (``index`` is the head), ``"sae_latent"`` and
    ``"transcoder_latent"`` (``index`` is the latent), ``"direction"`` (a user-given vector at
    a hook site; ``index`` 0, the vector's sha256 is in the record's provenance). Any lowercase
    identifier is accepted so plugins can add kinds.

    ``site`` is the hook site the unit reads, a TransformerLens-style name such as
    ``"blocks.6.hook_resid_pre"`` (or a sparsify hookpoint); ``None`` means the kind's default
    site (an MLP neuron's activation, an attention head's ``attn.hook_z``), which is every
    unit written before sites existed. It is left out of the JSON when ``None``, so such units
    are written as before. ``layer`` is the site's block.

    ``source`` names what the unit is read through when the kind and site do not say it: the
    SAE or transcoder of a latent, the vector (or array of vectors) of a direction, so that
    two SAEs at one site (a 16k and a 65k one) give different units. The library names it by
    content (`content_source`: ``"sha256:"`` and 16 hex digits of the SAE's files' sha256, or
    of the direction's vector). ``None``: not named (an MLP neuron, an attention head, and
    every unit written before sources existed); left out of the JSON then.
    """

    model_config = _STRICT

    model: str = Field(min_length=1, description="Model name or path, e.g. 'gpt2'.")
    layer: int = Field(ge=0, description="Layer index, 0 = first layer.")
    index: int = Field(ge=0, description="Index of the unit within its layer.")
    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "mlp_neuron"
    site: str | None = Field(
        default=None,
        min_length=1,
        description="Hook site, e.g. 'blocks.6.hook_resid_pre'; None: the kind's default.",
    )
    source: Annotated[str, Field(pattern=r"^\S+$", max_length=200)] | None = Field(
        default=None,
        description="The SAE, transcoder or direction the unit is read through, e.g. "
        "'sha256:0123456789abcdef'; None: not named.",
    )

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        return _drop_unset(handler(self), ("site", "source"))

    @staticmethod
    def content_source(sha256: str) -> str:
        """The `source` that names an SAE, a transcoder or a direction by its content:
        ``"sha256:"`` and the first 16 hex digits of ``sha256`` (a hex digest).

        Raises:
            InvalidInputError: ``sha256`` is not at least 16 hex digits.
        """
        digits = sha256.lower()
        if len(digits) < SOURCE_DIGITS or any(c not in "0123456789abcdef" for c in digits):
            raise InvalidInputError(f"{sha256!r} is not a hex sha256 digest")
        return f"sha256:{digits[:SOURCE_DIGITS]}"

    def __str__(self) -> str:
        at = f" at {self.site}" if self.site is not None else ""
        of = f" of {self.source}" if self.source is not None else ""
        return f"{self.model} layer {self.layer} {self.kind} {self.index}{at}{of}"


class Provenance(BaseModel):
    """How a `NeuronRecord` was produced, so that any result built on it can be traced."""

    model_config = _STRICT

    model: str = Field(description="Model name, path or hub id.")
    hook_point: str | None = Field(
        default=None, description="Where the activation was read, e.g. 'transformer.h.5.mlp.act'."
    )
    dataset: str | None = Field(default=None, description="Corpus name or path.")
    window_length: int | None = Field(default=None, ge=1, description="Tokens per excerpt.")
    bos_policy: str | None = Field(
        default=None, description="How a beginning-of-sequence token was handled."
    )
    dtype: str | None = None
    device: str | None = None
    library: str = "neuron_explainer"
    library_version: str | None = __version__
    extra: dict[str, JsonValue] = Field(default_factory=dict)


class NeuronRecord(BaseModel):
    """Everything a subject collected for one unit.

    Attributes:
        unit: which unit.
        top_records: excerpts with the highest max activation, most activating first.
        random_sample: excerpts drawn uniformly at random from the corpus.
        quantile_boundaries: activation values cutting the distribution into bins (ascending);
            ``quantile_samples[i]`` lies between boundaries ``i - 1`` and ``i`` (the first bin is
            unbounded below, the last unbounded above), so there is one more sample than
            boundaries. Both empty when quantiles were not tracked.
        quantile_levels: the probability level of each boundary (e.g. 0.5, 0.9, 0.99, 0.999),
            when known.
        mean: mean activation over every token of the corpus (``None`` when unknown).
        variance: population variance of the activation (``None`` when unknown).
        skewness: skewness of the activation (``None`` when unknown or undefined).
        kurtosis: excess kurtosis of the activation (``None`` when unknown or undefined).
        provenance: how the records were produced.

    Raises:
        pydantic.ValidationError: if the quantile fields are inconsistent.
    """

    model_config = _STRICT

    unit: UnitId
    top_records: tuple[ActivationRecord, ...] = ()
    random_sample: tuple[ActivationRecord, ...] = ()
    quantile_boundaries: tuple[FiniteFloat, ...] = ()
    quantile_levels: tuple[FiniteFloat, ...] | None = None
    quantile_samples: tuple[tuple[ActivationRecord, ...], ...] = ()
    mean: FiniteFloat | None = None
    variance: FiniteFloat | None = None
    skewness: FiniteFloat | None = None
    kurtosis: FiniteFloat | None = None
    provenance: Provenance

    @model_validator(mode="before")
    @classmethod
    def _nan_moments_are_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("mean", "variance", "skewness", "kurtosis"):
                value = data.get(key)
                if isinstance(value, float) and math.isnan(value):
                    data = {**data, key: None}
        return data

    @model_validator(mode="after")
    def _check_quantiles(self) -> Self:
        bounds = self.quantile_boundaries
        n_samples = len(self.quantile_samples)
        if self.quantile_samples and len(self.quantile_samples) != len(bounds) + 1:
            raise ValueError(
                f"{n_samples} quantile samples need {n_samples - 1} quantile boundaries, "
                f"got {len(bounds)}"
            )
        if bounds and not self.quantile_samples:
            raise ValueError("quantile_boundaries given without quantile_samples")
        if any(b > a for a, b in zip(bounds[1:], bounds[:-1], strict=True)):
            raise ValueError(f"quantile_boundaries must be ascending, got {list(bounds)}")
        if self.quantile_levels is not None:
            levels = self.quantile_levels
            if len(levels) != len(bounds):
                raise ValueError(
                    f"quantile_levels has {len(levels)} values but there are {len(bounds)} "
                    "quantile_boundaries"
                )
            if any(not 0.0 <= q <= 1.0 for q in levels) or list(levels) != sorted(levels):
                raise ValueError(f"quantile_levels must ascend within [0, 1], got {list(levels)}")
        if self.variance is not None and self.variance < 0:
            raise ValueError(f"variance must be >= 0, got {self.variance}")
        return self

    @property
    def max_activation(self) -> float:
        """The largest activation over the top records.

        Raises:
            InsufficientRecordsError: if there are no top records.
        """
        if not self.top_records:
            raise InsufficientRecordsError(f"{self.unit} has no top-activating records")
        return max(r.max_activation for r in self.top_records)
