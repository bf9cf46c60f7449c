"""A persistent response cache for LLM providers, in one SQLite file.

A rerun of the same requests against the same server and model is answered from the cache and
costs nothing. The key is the SHA-256 of the canonical JSON of the endpoint, the base URL (with
any credentials removed), the model and the full request body (so ``n``, ``temperature`` and
every other field count); API keys and headers are never part of a key or a stored value. Only
successful, well-formed answers are stored, never errors.

The file uses SQLite's write-ahead log, so several processes (and threads) can read and write it
at once; the async variants run each operation in a worker thread so the event loop never
blocks on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["ResponseCache", "cache_key", "public_url"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_FORMAT = 1
_SECRET_PARAMS = ("key", "token", "secret", "sig", "signature", "password", "auth")


def public_url(url: str) -> str:
    """``url`` without credentials: no ``user:password@``, and no query parameter whose name
    suggests a secret (``api-key``, ``token``, ``sig``, ...). Other query parameters, such as
    Azure's ``api-version``, are kept."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    query = urlencode(
        [
            (name, value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
            if not any(word in name.lower() for word in _SECRET_PARAMS)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def cache_key(endpoint: str, base_url: str, model: str, body: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of what identifies a request.

    Args:
        endpoint: the path called, e.g. ``"chat/completions"``.
        base_url: the server's base URL (credentials are removed with `public_url`).
        model: the model name.
        body: the full JSON request body.
    """
    canonical = json.dumps(
        {
            "format": _FORMAT,
            "endpoint": endpoint,
            "base_url": public_url(base_url),
            "model": model,
            "body": body,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Stored answers of LLM requests, by `cache_key`, in the SQLite file at ``path``.

    Safe to share between threads, event loops and processes: in a process, one connection
    serves every caller in turn (each operation takes well under a millisecond); between
    processes, SQLite's locks order the writers. The file and its folder are created on first
    use (the file readable by its owner only); the connection is closed by `close` or when the
    cache is garbage-collected.

    Args:
        path: the SQLite file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    @classmethod
    def from_option(
        cls, option: str | os.PathLike[str] | ResponseCache | Literal[False] | None, env: str
    ) -> ResponseCache | None:
        """The cache a provider's ``cache=`` option names: a `ResponseCache` as it is, a path
        opened, ``False`` (or ``""``) none, and ``None`` the path in the environment variable
        ``env``, read now (unset or empty: none)."""
        if option is None:
            option = os.environ.get(env) or False
        if isinstance(option, ResponseCache):
            return option
        return None if option is False or option == "" else cls(option)

    def _connection(self) -> sqlite3.Connection:
        """The open connection (call with the lock held)."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch(mode=0o600)
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # With the write-ahead log, NORMAL never corrupts the file; a power cut may
                # lose the last answers stored, which a cache can afford.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
            self._finalizer = weakref.finalize(self, db.close)
        return self._db

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response for ``key``, or ``None``."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT response FROM responses WHERE key = ?", (key,))
                .fetchone()
            )
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:  # a damaged row is a miss; the next answer replaces it
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, response: dict[str, Any], *, endpoint: str, model: str) -> None:
        """Store ``response`` (a JSON object) under ``key``, replacing any earlier one."""
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO responses (key, endpoint, model, response, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, endpoint, model, text, time.time()),
            )

    async def aget(self, key: str) -> dict[str, Any] | None:
        """`get` in a worker thread."""
        return await asyncio.to_thread(self.get, key)

    async def aput(self, key: str, response: dict[str, Any], *, endpoint: str, model: str) -> None:
        """`put` in a worker thread."""
        await asyncio.to_thread(self.put, key, response, endpoint=endpoint, model=model)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def clear(self) -> None:
        """Delete every stored response."""
        with self._lock:
            self._connection().execute("DELETE FROM responses")

    def close(self) -> None:
        """Close the connection (a later operation opens it again)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._db = self._finalizer = None
