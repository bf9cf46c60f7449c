"""The report's markup, read from the template files in ``templates/`` beside this module.

Every ``*.html`` file there holds named fragments, each written
``<template id="NAME">…</template>``: the fragment is the text between the tags, exactly,
newlines included, except that a backslash at the end of a line joins it to the next (so long
lines of markup can be wrapped). Anything outside the tags, such as comments, is ignored.
Fragments are `string.Template` text: ``$name`` or ``${name}`` is replaced by a value, ``$$``
is a ``$``.

* `Html`: a string of markup, substituted as it is.
* `render`: a fragment with its values; a plain ``str`` value is HTML-escaped
  (`html.escape`, quotes included), an `Html` value is not.
* `write_fragment`: the same, written piece by piece, with some placeholders filled by
  callbacks that write their part (long parts streamed from files).
* `resource_text`: a file of ``templates/`` as text (the stylesheet, the script).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from html import escape
from importlib import resources
from string import Template

__all__ = [
    "TEMPLATES",
    "Html",
    "fragment_names",
    "parse_fragments",
    "render",
    "resource_text",
    "write_fragment",
]

TEMPLATES = "templates"
"""The folder of the template files, inside the ``neuron_explainer.report`` package."""

_FRAGMENT = re.compile(r'<template id="([a-z0-9-]+)">(.*?)</template>', re.DOTALL)
_FILES = ("page.html", "unit.html", "scores.html", "histogram.html")


class Html(str):
    """Markup that is safe as it is: `render` substitutes it without escaping."""

    __slots__ = ()


def resource_text(name: str) -> str:
    """The text of ``templates/<name>``, read with `importlib.resources` (so it is found in
    a wheel or a zip as well as in a source tree).

    Raises:
        FileNotFoundError: there is no such file (the package was installed without it).
    """
    package = __name__.rpartition(".")[0]
    return resources.files(package).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def parse_fragments(text: str) -> dict[str, str]:
    """The ``<template id="NAME">`` fragments of a template file, by name, with backslash line
    continuations joined.

    Raises:
        ValueError: two fragments have the same name.
    """
    fragments: dict[str, str] = {}
    for match in _FRAGMENT.finditer(text):
        name, body = match.groups()
        if name in fragments:
            raise ValueError(f"fragment {name!r} is defined twice")
        fragments[name] = body.replace("\\\n", "")
    return fragments


@functools.cache
def _fragments() -> dict[str, Template]:
    """Every fragment of every template file, parsed once."""
    templates: dict[str, Template] = {}
    for file in _FILES:
        for name, body in parse_fragments(resource_text(file)).items():
            if name in templates:
                raise ValueError(f"fragment {name!r} is defined twice ({file})")
            templates[name] = Template(body)
    return templates


def fragment_names() -> frozenset[str]:
    """The names of every fragment in the template files."""
    return frozenset(_fragments())


def _values(values: Mapping[str, str]) -> dict[str, str]:
    return {k: v if isinstance(v, Html) else escape(v) for k, v in values.items()}


def render(fragment: str, /, **values: str) -> Html:
    """Fragment ``fragment`` with ``values`` substituted: `Html` values as they are, other
    strings HTML-escaped.

    Raises:
        KeyError: there is no such fragment, or it has a placeholder with no value.
        ValueError: the fragment has a ``$`` that starts no placeholder (write ``$$``).
    """
    return Html(_fragments()[fragment].substitute(_values(values)))


def write_fragment(
    write: Callable[[str], object],
    fragment: str,
    streams: Mapping[str, Callable[[], object]],
    /,
    **values: str,
) -> None:
    """Write fragment ``fragment`` like `render`, except that at each placeholder named in
    ``streams`` the callback is called to write that part itself.

    Raises:
        KeyError: there is no such fragment, or it has a placeholder with no value.
        ValueError: the fragment has a ``$`` that starts no placeholder (write ``$$``).
    """
    source = _fragments()[fragment].template
    mapping = _values(values)
    start = 0
    for match in Template.pattern.finditer(source):
        key = match.group("named") or match.group("braced")
        if key in streams:
            write(Template(source[start : match.start()]).substitute(mapping))
            streams[key]()
            start = match.end()
    write(Template(source[start:]).substitute(mapping))
