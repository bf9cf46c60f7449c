"""Deterministic stand-ins for an explainer and a simulator, for users' unit tests.

* `MockSimulator`: predicts from a function, from keywords, or from the true activations
  (an oracle, optionally noisy); records every call.
* `MockExplainer`: returns a fixed explanation (or one computed from the records); records
  what it saw.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
from pydantic import JsonValue

from neuron_explainer.errors import ExplanationError, InvalidInputError, SimulationError
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.records import ActivationRecord, NeuronRecord
from neuron_explainer.results import (
    ActivationScale,
    ComponentInfo,
    Explanation,
    SequenceSimulation,
)

__all__ = ["MockExplainer", "MockSimulator"]

Predict = Callable[[Explanation, tuple[str, ...]], Iterable[float]]
_WORD = re.compile(r"[^\s,;:\"'`()\[\]]+")


def _describe(tokens: Sequence[str]) -> str:
    shown = ", ".join(repr(t) for t in tokens[:8])
    return f"[{shown}{', ...' if len(tokens) > 8 else ''}] ({len(tokens)} tokens)"


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _token_seed(tokens: Sequence[str]) -> int:
    """A stable 64-bit number for ``tokens`` (the same in every process, unlike ``hash``)."""
    digest = hashlib.sha256(json.dumps(list(tokens)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class MockSimulator(Simulator):
    """A deterministic simulator for tests. Build one with a constructor:

    * `from_function`: predictions from ``fn(tokens)``;
    * `from_keywords`: ``hit`` on keyword tokens, ``miss`` elsewhere (keywords given, or read
      from the explanation);
    * `from_truth`: the true activations of known excerpts, plus seeded Gaussian noise.

    Every call is appended to `calls` as ``(explanation text, tokens)`` before predicting,
    so failed calls are recorded too.

    The constructor itself takes the general form ``predict(explanation, tokens)``.

    Args:
        predict: returns one value per token.
        mode: a label recorded in ``info.settings["mode"]``.
        settings: more settings to record.
        scale: the units of the predictions (recorded in each `SequenceSimulation`).
    """

    name = "mock"

    def __init__(
        self,
        predict: Predict,
        *,
        mode: str = "custom",
        settings: Mapping[str, JsonValue] | None = None,
        scale: ActivationScale = "simulated_0_10",
    ) -> None:
        self._predict = predict
        self.mode = mode
        self.scale: ActivationScale = scale
        self._settings: dict[str, JsonValue] = {"mode": mode, **(settings or {})}
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    @property
    def info(self) -> ComponentInfo:
        """Name ``"mock"``; settings hold the mode and its parameters."""
        return ComponentInfo(name=self.name, settings=dict(self._settings))

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token of ``tokens``.

        Raises:
            SimulationError: the prediction does not have one finite number per token (it is
                never padded, truncated or zeroed), or `from_truth` does not know the excerpt.
        """
        excerpt = tuple(tokens)
        self.calls.append((explanation.text, excerpt))
        predicted = self._predict(explanation, excerpt)
        try:
            if isinstance(predicted, str | bytes):
                raise TypeError("got text")
            items = list(predicted)
            if any(isinstance(v, str | bytes) for v in items):
                raise TypeError("found text where numbers were expected")
            values = [float(v) for v in items]
        except (TypeError, ValueError) as exc:
            raise SimulationError(
                f"mock simulator ({self.mode}) returned something that is not a list of "
                f"numbers: {exc}"
            ) from exc
        if len(values) != len(excerpt):
            raise SimulationError(
                f"mock simulator ({self.mode}) returned {len(values)} values for "
                f"{len(excerpt)} tokens; give exactly one per token"
            )
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise SimulationError(
                f"mock simulator ({self.mode}) returned non-finite values at tokens {bad[:10]}"
            )
        return SequenceSimulation(
            tokens=excerpt, expected_activations=tuple(values), scale=self.scale
        )

    @classmethod
    def from_function(
        cls,
        fn: Callable[[Sequence[str]], Iterable[float]],
        *,
        scale: ActivationScale = "simulated_0_10",
    ) -> Self:
        """Predict ``fn(tokens)``, which must give one finite number per token.

        A wrong length or a non-finite value raises `SimulationError` when simulating.
        """
        name = getattr(fn, "__qualname__", None) or repr(fn)
        return cls(
            lambda _explanation, tokens: fn(tokens),
            mode="function",
            settings={"function": name},
            scale=scale,
        )

    @classmethod
    def from_keywords(
        cls,
        keywords: Iterable[str] | None = None,
        *,
        hit: float = 10.0,
        miss: float = 0.0,
        case_sensitive: bool = False,
    ) -> Self:
        """Predict ``hit`` on tokens whose stripped text is a keyword, ``miss`` elsewhere.

        With ``keywords=None`` the keywords are read from each explanation: every word of its
        text, split at whitespace, commas, semicolons, colons, quotes and brackets, with a
        trailing period dropped. ``"the words: red, green"`` gives ``the``, ``words``,
        ``red`` and ``green``, so a simulation is only as good as the words the explanation
        names. Common words count too; pass keywords to avoid that.

        Raises:
            InvalidInputError: an empty keyword list, or ``hit``/``miss`` not finite.
        """
        hit_value, miss_value = _finite(hit, "hit"), _finite(miss, "miss")

        def norm(word: str) -> str:
            word = word.strip()
            return word if case_sensitive else word.casefold()

        fixed: frozenset[str] | None = None
        if keywords is not None:
            if isinstance(keywords, str):
                keywords = [keywords]
            fixed = frozenset(norm(k) for k in keywords if k.strip())
            if not fixed:
                raise InvalidInputError(
                    "from_keywords needs at least one non-blank keyword (or None to read them "
                    "from the explanation)"
                )

        def predict(explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
            words = fixed
            if words is None:
                found = (w.removesuffix(".") for w in _WORD.findall(explanation.text))
                words = frozenset(norm(w) for w in found if w)
            return [hit_value if norm(t) in words else miss_value for t in tokens]

        listed: list[JsonValue] | str = "from explanation"
        if fixed is not None:
            listed = [*sorted(fixed)]
        settings: dict[str, JsonValue] = {
            "keywords": listed,
            "hit": hit_value,
            "miss": miss_value,
            "case_sensitive": case_sensitive,
        }
        return cls(predict, mode="keywords", settings=settings)

    @classmethod
    def from_truth(
        cls,
        records: NeuronRecord | ActivationRecord | Iterable[NeuronRecord | ActivationRecord],
        *,
        noise: float = 0.0,
        seed: int = 0,
    ) -> Self:
        """An oracle: the true activations of every excerpt in ``records``, plus noise.

        Excerpts are looked up by their exact tokens; a `NeuronRecord` contributes its top,
        random and quantile records. The noise is Gaussian with standard deviation ``noise``,
        drawn from a generator seeded with ``seed`` and a hash of the excerpt's tokens: the
        same excerpt always gets the same noise, whatever was simulated before it and in
        whichever process. With ``noise=0`` the predictions are the truth exactly (a
        correlation of 1). Predictions are in the unit's own units (scale
        ``"neuron_activations"``).

        Raises:
            InvalidInputError: no excerpts, the same tokens with different activations,
                ``noise`` negative or not finite, or ``seed`` not an int >= 0.
            SimulationError: when simulating an excerpt it was not given (raised then).
        """
        std = _finite(noise, "noise")
        if std < 0:
            raise InvalidInputError(f"noise is a standard deviation (>= 0), got {noise}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidInputError(f"seed must be an int >= 0, got {seed!r}")
        items = [records] if isinstance(records, NeuronRecord | ActivationRecord) else records
        truth: dict[tuple[str, ...], tuple[float, ...]] = {}
        for item in items:
            if isinstance(item, NeuronRecord):
                excerpts: Iterable[Any] = (
                    *item.top_records,
                    *item.random_sample,
                    *(r for sample in item.quantile_samples for r in sample),
                )
            elif isinstance(item, ActivationRecord):
                excerpts = (item,)
            else:
                raise InvalidInputError(
                    "from_truth takes NeuronRecords or ActivationRecords, got "
                    f"{type(item).__name__}"
                )
            for excerpt in excerpts:
                known = truth.setdefault(excerpt.tokens, excerpt.activations)
                if known != excerpt.activations:
                    raise InvalidInputError(
                        f"excerpt {_describe(excerpt.tokens)} appears twice with different "
                        "activations"
                    )
        if not truth:
            raise InvalidInputError("from_truth needs at least one excerpt")

        def predict(_explanation: Explanation, tokens: tuple[str, ...]) -> list[float]:
            values = truth.get(tokens)
            if values is None:
                raise SimulationError(
                    f"mock simulator (truth) does not know the excerpt {_describe(tokens)}; it "
                    f"knows {len(truth)} excerpts from the records it was given"
                )
            if std == 0:
                return list(values)
            rng = np.random.default_rng([seed, _token_seed(tokens)])
            noisy = np.asarray(values) + rng.normal(0.0, std, len(values))
            return [float(v) for v in noisy]

        settings: dict[str, JsonValue] = {"noise": std, "seed": seed, "n_excerpts": len(truth)}
        return cls(predict, mode="truth", settings=settings, scale="neuron_activations")


class MockExplainer(Explainer):
    """An explainer for tests that returns a fixed explanation and records what it saw.

    Args:
        text: the explanation's text.
        data: structured data to put in ``Explanation.data``.

    Attributes:
        calls: the records of each call, one tuple per call.
        seen: every record seen, over all calls, in order.

    Raises:
        InvalidInputError: ``text`` is blank.
    """

    name = "mock"

    def __init__(self, text: str, *, data: Mapping[str, JsonValue] | None = None) -> None:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"MockExplainer needs a non-blank text, got {text!r}")
        self.text = text
        self.data: dict[str, JsonValue] = dict(data or {})
        self._function: Callable[[Sequence[ActivationRecord]], str] | None = None
        self.calls: list[tuple[ActivationRecord, ...]] = []

    @classmethod
    def from_function(cls, fn: Callable[[Sequence[ActivationRecord]], str]) -> Self:
        """An explainer whose text is ``fn(records)``; a blank or non-string result raises
        `ExplanationError` when explaining."""
        explainer = cls(getattr(fn, "__qualname__", None) or "function")
        explainer._function = fn
        return explainer

    @property
    def seen(self) -> list[ActivationRecord]:
        """Every record passed to `aexplain`, over all calls, in order."""
        return [record for call in self.calls for record in call]

    @property
    def info(self) -> ComponentInfo:
        """Name ``"mock"``; settings hold the fixed text or the function's name."""
        if self._function is not None:
            name = getattr(self._function, "__qualname__", None) or repr(self._function)
            return ComponentInfo(name=self.name, settings={"mode": "function", "function": name})
        return ComponentInfo(name=self.name, settings={"mode": "fixed", "text": self.text})

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Record ``records`` and return the explanation.

        Raises:
            ExplanationError: `from_function`'s function returned a blank or non-string text.
        """
        self.calls.append(tuple(records))
        text = self.text
        if self._function is not None:
            produced = self._function(records)
            if not isinstance(produced, str) or not produced.strip():
                raise ExplanationError(
                    f"the mock explainer's function returned {produced!r}, not a non-blank text"
                )
            text = produced
        return Explanation(text=text, data=self.data, explainer=self.info)
