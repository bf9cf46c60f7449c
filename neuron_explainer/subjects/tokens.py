"""Token strings for activation records: one readable, lossless string per token id.

A byte-level BPE token (GPT-2, Llama 3, Qwen2, GPT-NeoX) stands for raw bytes, and a
multi-byte UTF-8 character (an accent, an emoji) may be split over several tokens, so a token
is not always text on its own. `token_strings` turns each token into bytes and then into a
string with one fixed rule:

* the token's bytes are decoded as UTF-8 where they are valid UTF-8;
* each byte that is not part of a valid UTF-8 sequence *within that token* becomes the
  character with the same code point (the byte read as latin-1), e.g. the GPT-2 token for
  ``" \\xe2\\x80"`` (the first two bytes of "—" after a space) reads ``" \\u00e2\\u0080"``.
  This is how OpenAI's published neuron data shows such fragments.

So joining the strings gives the text back whenever every token is valid UTF-8 on its own,
and a fragment's bytes can always be recovered with ``.encode("latin-1")``.

How a token becomes bytes depends on the tokenizer:

* byte-level BPE (a fast tokenizer whose decoder is ``ByteLevel``, or a slow one with a
  ``byte_decoder``): each character of the token maps back through GPT-2's byte table;
* otherwise (SentencePiece-style: Gemma, Llama 2, T5, ...): the token from
  ``convert_ids_to_tokens`` with the ``"▁"`` marker turned into a space, and a byte-fallback
  token such as ``"<0xE2>"`` turned into that byte;
* added and special tokens (``<|endoftext|>``, ``<bos>``) are shown as their text, verbatim.

A SentencePiece tokenizer that adds a dummy prefix space shows it on the first token, so
joining can give ``" " + text``; decoding the ids (``tokenizer.decode``) is the reference.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Sequence
from functools import cache
from typing import Any

__all__ = ["decode_token_bytes", "token_strings"]

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_METASPACE = "▁"


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Return one string per token id, following the module's rule.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or slow), or anything with
            ``convert_ids_to_tokens``.
        ids: token ids, e.g. a window's ``excerpt_ids``.

    Raises:
        TypeError: if ``tokenizer`` has no ``convert_ids_to_tokens``.
    """
    return _table_for(tokenizer).strings(ids)


def decode_token_bytes(data: bytes) -> str:
    """Decode ``data`` as UTF-8, reading each byte outside a valid UTF-8 sequence as latin-1.

    ``decode_token_bytes(" \\xe2\\x80".encode("latin-1"))`` is ``" \\u00e2\\u0080"``;
    ``decode_token_bytes("café".encode())`` is ``"café"``. Never raises.
    """
    parts: list[str] = []
    while data:
        try:
            parts.append(data.decode("utf-8"))
            break
        except UnicodeDecodeError as error:
            parts.append(data[: error.start].decode("utf-8"))
            parts.append(data[error.start : error.end].decode("latin-1"))
            data = data[error.end :]
    return "".join(parts)


@cache
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte table, inverted: the printable character that stands for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class _TokenTable:
    """Caches each token id's string for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        if not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise TypeError(
                f"token_strings needs a tokenizer with convert_ids_to_tokens, "
                f"got {type(tokenizer).__name__}"
            )
        self._tokenizer = weakref.proxy(tokenizer) if _weakrefable(tokenizer) else tokenizer
        self._byte_decoder = _byte_decoder(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        self._added = {int(i): str(getattr(t, "content", t)) for i, t in added.items()}
        self._cache: dict[int, str] = {}

    def strings(self, ids: Sequence[int]) -> list[str]:
        ids = [int(i) for i in ids]
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            pieces = self._tokenizer.convert_ids_to_tokens(missing)
            for i, piece in zip(missing, pieces, strict=True):
                self._cache[i] = self._string(i, piece)
        return [self._cache[i] for i in ids]

    def _string(self, token_id: int, piece: str | None) -> str:
        if token_id in self._added:
            return self._added[token_id]
        if piece is None:  # an id outside the vocabulary
            return ""
        if self._byte_decoder is not None:
            table = self._byte_decoder
            data = b"".join(bytes([table[c]]) if c in table else c.encode("utf-8") for c in piece)
            return decode_token_bytes(data)
        match = _BYTE_FALLBACK.fullmatch(piece)
        if match:
            return decode_token_bytes(bytes([int(match.group(1), 16)]))
        return piece.replace(_METASPACE, " ")


def _byte_decoder(tokenizer: Any) -> dict[str, int] | None:
    """The char → byte table when ``tokenizer`` is byte-level BPE, else ``None``."""
    decoder = getattr(tokenizer, "byte_decoder", None)
    if isinstance(decoder, dict):  # slow byte-level tokenizers (transformers 4)
        return {str(k): int(v) for k, v in decoder.items()}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and "ByteLevel(" in repr(getattr(backend, "decoder", None)):
        return _unicode_to_byte()
    return None


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


_TABLES: weakref.WeakKeyDictionary[Any, _TokenTable] = weakref.WeakKeyDictionary()


def _table_for(tokenizer: Any) -> _TokenTable:
    if not _weakrefable(tokenizer):
        return _TokenTable(tokenizer)
    try:
        return _TABLES[tokenizer]
    except (KeyError, TypeError):  # TypeError: an unhashable tokenizer
        table = _TokenTable(tokenizer)
        with contextlib.suppress(TypeError):
            _TABLES[tokenizer] = table
        return table
