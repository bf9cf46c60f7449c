"""How one failed attempt of `neuron_explainer.llm.transport.RetryingClient` is classified:
the typed error it becomes, whether it is retried, and the wait the server asked for."""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from neuron_explainer.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from neuron_explainer.llm.protocol import error_message

_QUOTA_CODES = ("insufficient_quota", "billing_hard_limit_reached")


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: the error class to raise, what went wrong, the status, the wait the
    server asked for, and whether another attempt may help."""

    error: type[LLMError]
    reason: str
    status: int | None = None
    retry_after: float | None = None
    retry: bool = True


def _retry_after(headers: httpx.Headers, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After`` as seconds
    or as an HTTP date; ``None`` if neither is usable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now())
    return value if math.isfinite(value) and value >= 0 else None


def _classify(response: httpx.Response, auth_hint: str) -> _Failure:
    """The failure an HTTP status other than 200 means."""
    status = response.status_code
    message, code = error_message(response.text, response.reason_phrase or "no message")
    reason = f"HTTP {status}: {message}"
    if status in (401, 403):
        return _Failure(AuthenticationError, reason + auth_hint, status, retry=False)
    if status == 429 and code in _QUOTA_CODES:
        return _Failure(RateLimitError, reason + " (out of quota)", status, retry=False)
    retried = {429: RateLimitError, 408: LLMTimeoutError, 409: ServerError}
    error = retried.get(status, ServerError if status >= 500 else None)
    if error is not None:
        return _Failure(error, reason, status, _retry_after(response.headers))
    if 400 <= status < 500:
        return _Failure(BadRequestError, reason, status, retry=False)
    return _Failure(InvalidResponseError, f"unexpected {reason}", status, retry=False)


def _decode(response: httpx.Response) -> dict[str, Any] | _Failure:
    """The JSON object of a 200 answer, or the failure to retry (not JSON, not an object)."""
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        start = response.content[:60].decode("utf-8", "replace")
        reason = f"the body is not valid JSON ({exc}; it begins {start!r})"
        return _Failure(InvalidResponseError, reason, 200)
    if not isinstance(data, dict):
        return _Failure(
            InvalidResponseError, f"the body is JSON {type(data).__name__}, not an object", 200
        )
    return data


def _redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (at least 4 characters) replaced by ``***``."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text
