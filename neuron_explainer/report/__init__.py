"""A static HTML report of a run: one self-contained page, no server, no network.

* `write_report`: explained units (and failures) in, one HTML file out.
* `DEFAULT_MAX_EXCERPTS`: held-out excerpts shown per unit unless told otherwise.

See docs/report.md.
"""

from neuron_explainer.report._page import DEFAULT_MAX_EXCERPTS, write_report

__all__ = ["DEFAULT_MAX_EXCERPTS", "write_report"]
