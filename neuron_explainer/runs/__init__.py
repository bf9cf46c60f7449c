"""Runs: the wiring that takes units through the pipeline, one or many at a time.

* `neuron_explainer.runs.explain`: `explain_neuron` for one unit: record (or take) the
  record, split it, explain on train, score on held-out records.
* `neuron_explainer.runs.best_of`: best-of-k explanations picked on the calibration split.
* `neuron_explainer.runs.batch`: `explain_neurons`, many units, resumable, in a run database.
* `neuron_explainer.runs.rescore`: re-score a finished run with another simulator.
* `neuron_explainer.runs.store`: `RunStore`, the SQLite run database (versioned).
* `neuron_explainer.runs.interop`: `export_neuronpedia` (a run database to Neuronpedia's
  upload batches) and `import_delphi` (a delphi latent cache to records).
* `neuron_explainer.runs.estimate`: what a unit or a run would cost, with nothing sent (each
  component answers its own part: `Explainer.estimate`, `Simulator.estimate`).
* ``_runner`` (the unit runner: concurrency, budget, commits), ``_sources`` (where a batch's
  records come from) and ``_files`` (opening the database's file without harming it, the run
  lock) are private.

Each takes its options as one `neuron_explainer.options.ExplainOptions` (what a result depends
on) and `neuron_explainer.options.RunOptions` (how the run goes), validated once.

Runs sit above the stages (subjects, explainers, simulators, scorers) and the plugin registry;
only the report, the CLI and the testing tools import them.
"""

from neuron_explainer.runs._files import DatabaseAccessError as DatabaseAccessError
from neuron_explainer.runs._runner import FailedUnit as FailedUnit
from neuron_explainer.runs._runner import RunEvent as RunEvent
from neuron_explainer.runs._runner import RunSummary as RunSummary
from neuron_explainer.runs._sources import RecordSource as RecordSource
from neuron_explainer.runs._sources import parse_indices as parse_indices
from neuron_explainer.runs.batch import EXPLAIN_OPTIONS as EXPLAIN_OPTIONS
from neuron_explainer.runs.batch import RunEstimate as RunEstimate
from neuron_explainer.runs.batch import aexplain_neurons as aexplain_neurons
from neuron_explainer.runs.batch import explain_neurons as explain_neurons
from neuron_explainer.runs.explain import aexplain_neuron as aexplain_neuron
from neuron_explainer.runs.explain import explain_neuron as explain_neuron
from neuron_explainer.runs.interop import export_neuronpedia as export_neuronpedia
from neuron_explainer.runs.interop import import_delphi as import_delphi
from neuron_explainer.runs.rescore import arescore as arescore
from neuron_explainer.runs.rescore import rescore as rescore
from neuron_explainer.runs.store import RunStore as RunStore

__all__ = [
    "EXPLAIN_OPTIONS",
    "DatabaseAccessError",
    "FailedUnit",
    "RecordSource",
    "RunEstimate",
    "RunEvent",
    "RunStore",
    "RunSummary",
    "aexplain_neuron",
    "aexplain_neurons",
    "arescore",
    "explain_neuron",
    "explain_neurons",
    "export_neuronpedia",
    "import_delphi",
    "parse_indices",
    "rescore",
]
