"""A corpus every Python installation has: the English docstrings of its standard library.

`python_docstrings` yields the docstrings (at least 200 characters each) of well-documented
standard-library modules and of their public classes and functions, in a fixed order, until
``max_chars`` characters are reached. The text depends on the Python version, which
`docstrings_corpus` records in the corpus name. The command line reads it as
``--corpus python-docstrings`` (or ``python-docstrings:CHARS``, ``python-docstrings:all``).
"""

from __future__ import annotations

import importlib
import inspect
import platform
import warnings
from collections.abc import Iterator

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects.corpus import Corpus, Document

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DOCSTRINGS_CORPUS",
    "STDLIB_MODULES",
    "docstrings_corpus",
    "python_docstrings",
]

DOCSTRINGS_CORPUS = "python-docstrings"
"""The corpus name the command line gives this corpus."""
DEFAULT_MAX_CHARS = 80_000
"""About 20,000 tokens: enough to explain one neuron (recording one layer of Gemma-3-270M over
them took 1-2 minutes on 2 busy CPU cores; see the README)."""

STDLIB_MODULES = tuple(
    (
        "argparse ast asyncio base64 bisect calendar cmd codecs collections colorsys configparser "
        "contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum fnmatch "
        "fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http imaplib "
        "importlib inspect ipaddress itertools json locale logging mimetypes numbers operator "
        "optparse pathlib pickle platform poplib pprint queue random re reprlib secrets shelve "
        "shlex shutil smtplib socket sqlite3 ssl statistics string struct subprocess tarfile "
        "tempfile textwrap threading timeit tomllib trace traceback types typing unicodedata "
        "unittest urllib uuid warnings wave weakref xml zipfile zipimport"
    ).split()
)
"""Well-documented standard-library modules with no import side effects, in reading order."""


def python_docstrings(max_chars: int | None = DEFAULT_MAX_CHARS) -> Iterator[str]:
    """Docstrings of `STDLIB_MODULES` and their public members, in a fixed order.

    Args:
        max_chars: stop once this many characters have been yielded (the docstring that
            crosses the limit is kept whole); ``None``: every docstring.
    """
    total = 0
    seen: set[int] = set()
    for name in STDLIB_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except ImportError:  # a Python built without it (e.g. no _ssl or _sqlite3)
            continue
        members = [module] + [
            obj
            for attr, obj in sorted(vars(module).items(), key=lambda kv: kv[0])
            if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
        ]
        for obj in members:
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 200 or id(doc) in seen:
                continue
            seen.add(id(doc))
            yield doc
            total += len(doc)
            if max_chars is not None and total >= max_chars:
                return


def docstrings_corpus(max_chars: int | None = DEFAULT_MAX_CHARS) -> Corpus:
    """`python_docstrings` as a `Corpus` named after the Python version and the size.

    Raises:
        InvalidInputError: ``max_chars`` is below 1.
    """
    if max_chars is not None and max_chars < 1:
        raise InvalidInputError(f"max_chars must be at least 1, got {max_chars}")
    texts = list(python_docstrings(max_chars))
    size = "all" if max_chars is None else str(max_chars)
    name = f"{DOCSTRINGS_CORPUS}:{size} (Python {platform.python_version()})"
    details = {"source": DOCSTRINGS_CORPUS, "max_chars": max_chars, "documents": len(texts)}
    return Corpus(name, lambda: (Document(i, t) for i, t in enumerate(texts)), details=details)
