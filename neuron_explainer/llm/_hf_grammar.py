"""Constrained decoding for the ``hf`` provider: a chat request's ``response_format`` (a JSON
schema, or any JSON object) held by xgrammar's token masks while generating.

xgrammar (the ``hf-json`` extra: ``pip install "neuron-explainer[hf-json]"``) compiles the
schema into a grammar over the tokenizer's vocabulary once per schema; while generating, each
row of a batch has its own matcher, which gives a bitmask of the tokens that keep the text a
prefix of some valid document, and the logits of every other token are set to ``-inf`` before
the next token is chosen. The end-of-sequence tokens are allowed only once the document is
complete, so an answer that ends by itself parses; white space between JSON tokens is bounded
(`MAX_WHITESPACE`), so a model cannot pad until its token limit. The reported logprobs stay
those of the raw logits (what the model would have said), as without a schema.

Rows of one batch may follow different schemas (the chat simulators' schemas name each
excerpt's tokens, so no two are alike) or none: each has its own matcher.

Importing this module imports neither xgrammar nor torch; `available` tells, without importing
it, whether xgrammar is installed (the ``hf`` provider then declares ``json_schema``).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from neuron_explainer.errors import InvalidInputError

__all__ = ["MAX_WHITESPACE", "RowGrammars", "available", "schema_text"]

_compilers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_ANY_OBJECT = '{"type": "object"}'
MAX_WHITESPACE = 20
"""The most white space between two JSON tokens (llama.cpp's grammars allow a newline and 20
spaces or tabs): without a bound a small model can write white space until its token limit."""


def available() -> bool:
    """Whether xgrammar is installed (found without importing it)."""
    return importlib.util.find_spec("xgrammar") is not None


def schema_text(response_format: Mapping[str, Any] | None) -> str | None:
    """The JSON schema a ``response_format`` asks for, as canonical JSON text (``None``: no
    format): ``{"type": "json_schema", "json_schema": {"schema": ...}}`` or
    ``{"type": "json_object"}`` (any object).

    Raises:
        InvalidInputError: a format of another type, or a ``json_schema`` without a schema.
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return _ANY_OBJECT
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if kind == "json_schema" and isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise InvalidInputError(
            "the hf provider constrains output to a response_format of type 'json_schema' "
            "(with a 'schema') or 'json_object'; got "
            f"{json.dumps(response_format)[:200]}"
        )
    return json.dumps(schema, sort_keys=True)


def _compiler(engine: Any) -> Any:
    """The grammar compiler for ``engine``'s tokenizer (made once per engine)."""
    import xgrammar  # type: ignore[import-not-found, unused-ignore]

    with _lock:
        compiler = _compilers.get(engine)
        if compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                engine.tokenizer, vocab_size=engine.vocab_size, stop_token_ids=engine.eos_ids
            )
            compiler = _compilers[engine] = xgrammar.GrammarCompiler(info)
        return compiler


class RowGrammars:
    """One matcher per generated row, each following its own JSON schema (or none).

    Args:
        engine: the `neuron_explainer.llm._hf_engine.Engine` generating.
        schemas: per row, its schema as JSON text (`schema_text`), or ``None`` for a row that
            is not constrained. Rows with equal schemas share one compiled grammar.

    Raises:
        InvalidInputError: xgrammar is not installed, or cannot compile a schema.
    """

    def __init__(self, engine: Any, schemas: Sequence[str | None]) -> None:
        try:
            import xgrammar  # type: ignore[import-not-found, unused-ignore]
        except ImportError:  # pragma: no cover - the provider declares json_schema only with it
            raise InvalidInputError(
                'constrained JSON output with hf needs xgrammar: pip install "neuron-explainer'
                '[hf-json]"'
            ) from None
        self._xgrammar = xgrammar
        compiled: dict[str, Any] = {}
        for schema in schemas:
            if schema is None or schema in compiled:
                continue
            try:
                compiled[schema] = _compiler(engine).compile_json_schema(
                    schema, max_whitespace_cnt=MAX_WHITESPACE
                )
            except (RuntimeError, ValueError) as exc:
                raise InvalidInputError(f"xgrammar cannot compile the JSON schema: {exc}") from None
        self.vocab_size = int(engine.vocab_size)
        self.matchers = [
            None if schema is None else xgrammar.GrammarMatcher(compiled[schema])
            for schema in schemas
        ]

    def mask(self, logits: Any, active: Sequence[int]) -> Any:
        """``logits`` (one row per ``active`` row, in order) with every token the rows'
        grammars forbid at ``-inf`` (a masked copy; a row without a schema is left as it is)."""
        bitmask = self._xgrammar.allocate_token_bitmask(len(active), self.vocab_size)
        for i, row in enumerate(active):
            matcher = self.matchers[row]
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask, i)
        masked = logits.clone()
        self._xgrammar.apply_token_bitmask_inplace(masked, bitmask.to(masked.device))
        return masked

    def accept(self, row: int, token: int) -> bool:
        """Advance ``row``'s matcher by ``token``; whether its document is complete (ended
        by an end-of-sequence token) or the token broke the grammar (never, as masked).
        Always ``False`` for a row without a schema."""
        matcher = self.matchers[row]
        if matcher is None:
            return False
        if not matcher.accept_token(token):
            return True
        return bool(matcher.is_terminated())
