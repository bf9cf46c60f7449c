"""What the OpenAI test server writes on the wire: JSON bodies, OpenAI-style errors, the faults
it injects, and streamed answers (server-sent events in a chunked body, one event at a time)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from neuron_explainer.testing._replies import Fault


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer with ``data`` as a JSON body."""
    payload = json.dumps(data).encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)
    handler.wfile.flush()


def send_error(
    handler: BaseHTTPRequestHandler,
    status: int,
    message: str,
    error_type: str | None = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer with HTTP ``status`` and OpenAI's error body."""
    error = {"message": message, "type": error_type, "param": None, "code": code}
    send_json(handler, status, {"error": error}, headers)


def send_fault(handler: BaseHTTPRequestHandler, fault: Fault, stopping: threading.Event) -> None:
    """Answer with ``fault`` (any kind but ``garbage``, which is an answer)."""
    if fault.kind == "status":
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        send_error(handler, fault.status, fault.message, fault.error_type, fault.code, headers)
    elif fault.kind in ("timeout", "stall"):
        stopping.wait(fault.hold)
        handler.close_connection = True
    elif fault.kind == "disconnect":
        handler.close_connection = True
    elif fault.kind == "invalid_json":
        payload = b'{"id": "chatcmpl-1", "choices": [{"message": <html>Bad gateway</html>'
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    elif fault.kind in ("truncated", "cut"):
        payload = json.dumps({"id": "chatcmpl-1", "choices": [], "padding": "x" * 64}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload) + 100))
        handler.end_headers()
        handler.wfile.write(payload[: len(payload) // 2])
        handler.wfile.flush()
        handler.close_connection = True


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    """One piece of a chunked body, sent at once."""
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def send_stream(
    handler: BaseHTTPRequestHandler,
    events: Sequence[dict[str, Any]],
    *,
    delay: float,
    stopping: threading.Event,
    fault: Fault | None = None,
) -> None:
    """Stream ``events`` as server-sent events (``data: {...}``, then ``data: [DONE]``), waiting
    ``delay`` seconds before each. With a ``stall`` or ``cut`` ``fault``, only its first
    ``after`` events are sent; then the server goes silent for ``hold`` seconds (stall) or
    closes the connection mid-body (cut), and the stream never ends properly."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.flush()
    shown = events if fault is None else events[: fault.after]
    for event in shown:
        if delay > 0 and stopping.wait(delay):
            handler.close_connection = True  # the server is stopping
            return
        _chunk(handler, b"data: " + json.dumps(event).encode("utf-8") + b"\n\n")
    if fault is not None:
        if fault.kind == "stall":
            stopping.wait(fault.hold)
        handler.close_connection = True
        return
    _chunk(handler, b"data: [DONE]\n\n")
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()
