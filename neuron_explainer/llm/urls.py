"""Base URLs of HTTP APIs: whether one is usable (`check_base_url`), and whether it points at
this machine or a private network (`is_private_url`), judged from the URL alone.

`neuron_explainer.llm.openai.OpenAILLM` checks its base URL here once, whether it came from
``base_url=`` or from ``OPENAI_BASE_URL``, so a typo is one `InvalidInputError` naming where the
URL came from and what is wrong, not a failure deep inside the HTTP client.
"""

from __future__ import annotations

import ipaddress

import httpx

from neuron_explainer.errors import InvalidInputError

__all__ = ["check_base_url", "is_private_url"]


def is_private_url(url: str) -> bool:
    """Whether ``url`` points at this machine or a private network, judged from the URL alone
    (no name is looked up): a loopback, private (``10.x``, ``172.16-31.x``, ``192.168.x``,
    ``fc00::/7``) or link-local address, ``localhost`` or a name under it, a name ending in
    ``.local`` or ``.internal``, or a single-label name (``http://llama:8080``, as in a
    compose network). Local servers (llama.cpp, Ollama, vLLM) live there; the OpenAI backend
    streams their answers and asks them for their slot count by default."""
    try:
        host = (httpx.URL(url).host or "").lower().rstrip(".")
    except httpx.InvalidURL:
        return False
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            host == "localhost"
            or "." not in host
            or host.endswith((".localhost", ".local", ".internal"))
        )
    return address.is_private or address.is_loopback or address.is_link_local


def check_base_url(url: str, source: str) -> str:
    """``url`` as a usable base URL of an HTTP API, or one error saying why not.

    Args:
        url: the base URL, e.g. ``http://localhost:8080/v1``.
        source: where it came from, for the message: ``"base_url="``, ``"OPENAI_BASE_URL"``.

    Returns:
        ``url`` without the white space around it.

    Raises:
        InvalidInputError: naming ``source`` and what is wrong: empty, no ``http``/``https``
            scheme, no host, a port that is not a number from 1 to 65535, or unparseable.
    """
    text = url.strip()
    shown = _without_credentials(text)
    if not text:
        raise InvalidInputError(
            f"{source} is empty: give the server's base URL, e.g. http://localhost:8080/v1"
        )
    problem = _url_problem(text)
    if problem is not None:
        raise InvalidInputError(f"{source}={shown!r} is not a usable base URL: {problem}")
    return text


def _url_problem(text: str) -> str | None:
    """What is wrong with the base URL ``text``, or ``None``."""
    if "://" not in text:
        return f"it has no scheme (did you mean 'http://{_without_credentials(text)}'?)"
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        return str(exc).lower().rstrip(".")
    if parsed.scheme not in ("http", "https"):
        return f"the scheme is {parsed.scheme!r}, not 'http' or 'https'"
    if not parsed.host:
        return "it names no host"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"the port {parsed.port} is out of range (1-65535)"
    if any(c.isspace() for c in text):
        return "it contains white space"
    return None


def _without_credentials(text: str) -> str:
    """``text`` with a ``user:password@`` part replaced by ``***@``."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"
