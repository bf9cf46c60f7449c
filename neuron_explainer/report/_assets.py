"""The report's inline stylesheet and script, and a Content-Security-Policy that allows only them.

The stylesheet and the script are ``templates/style.css`` and ``templates/script.js``, with
their placeholders filled (``${shades}``: the shading classes; ``${levels}``: the number of
shading steps). The policy (``default-src 'none'``, the style and the script allowed by the
SHA-256 hashes of their text exactly as inlined) makes the browser refuse any external
resource, and any script or style a bad token might smuggle in, so the page provably works
from ``file://`` with nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from string import Template

from neuron_explainer.report._templates import Html, resource_text
from neuron_explainer.report._tokens import LEVELS

__all__ = ["CSP", "SCRIPT", "STYLE", "csp_hash"]

_TRUE_RGB = (34, 197, 94)  # green: the unit's true activation
_SIM_RGB = (59, 130, 246)  # blue: the simulator's prediction
_NEG_RGB = (239, 68, 68)  # red: negative values, either row


def _levels(prefix: str, rgb: tuple[int, int, int], top_alpha: float) -> str:
    r, g, b = rgb
    return "".join(
        f".{prefix}{level}{{background:rgba({r},{g},{b},{top_alpha * level / LEVELS:.3f})}}"
        for level in range(1, LEVELS + 1)
    )


STYLE = Html(
    Template(resource_text("style.css")).substitute(
        shades=_levels("a", _TRUE_RGB, 0.85)
        + _levels("s", _SIM_RGB, 0.75)
        + _levels("n", _NEG_RGB, 0.75)
    )
)
"""The page's stylesheet: ``a1``-``a10`` shade true activations, ``s1``-``s10`` simulations,
``n1``-``n10`` negative values."""

SCRIPT = Html(Template(resource_text("script.js")).substitute(levels=str(LEVELS)))
"""The page's script: sortable table, row filter, expand/collapse all, open the linked unit,
draw a unit's shaded excerpts when it is first opened."""


def csp_hash(text: str) -> str:
    """``'sha256-…'``: the CSP source that allows an inline style or script of this text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CSP = Html(
    f"default-src 'none'; style-src {csp_hash(STYLE)}; script-src {csp_hash(SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
"""Content-Security-Policy of the page: only its own inline style and script run."""
