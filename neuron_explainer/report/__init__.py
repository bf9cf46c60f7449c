"""A static HTML report of a run: one self-contained page, no server, no network.

* `write_report`: explained units (and failures) in, one HTML file out.
* `DEFAULT_MAX_EXCERPTS`: held-out excerpts shown per unit unless told otherwise.

The page's markup, style and script are template files in ``templates/`` (read with
`importlib.resources`, filled with `string.Template` by ``_templates``; every value is
HTML-escaped unless the code marks it as markup); ``_page`` (the page), ``_table`` (the units
table), ``_neuron`` (a unit's section), ``_scorers`` (its classification and plugin scores),
``_svg``, ``_stats`` and ``_tokens`` build the parts. See docs/report.md.
"""

from neuron_explainer.report._page import DEFAULT_MAX_EXCERPTS, write_report

__all__ = ["DEFAULT_MAX_EXCERPTS", "write_report"]
