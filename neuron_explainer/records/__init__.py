"""Records: what a subject recorded for one unit, and the pure functions over them.

* `UnitId` (and `UNIT_KINDS`), `ActivationRecord`, `AttendedToken`, `WindowId`, `Provenance`,
  `NeuronRecord` (defined in ``_types``): the pydantic models every stage passes on.
* `neuron_explainer.records.building`: a `NeuronRecord` from excerpts held in memory
  (`build_neuron_record`), and the activation moments.
* `neuron_explainer.records.splits`: the train / calibration / valid / test split that keeps
  what the explainer saw out of what it is scored on.
* `neuron_explainer.records.lookup`: the token lookup table fitted to records (the offline
  token-table baseline's model of a unit).

This is the bottom of the pipeline: it imports nothing of the package but its errors and version.
"""

from neuron_explainer.records._types import UNIT_KINDS as UNIT_KINDS
from neuron_explainer.records._types import ActivationRecord as ActivationRecord
from neuron_explainer.records._types import AttendedToken as AttendedToken
from neuron_explainer.records._types import NeuronRecord as NeuronRecord
from neuron_explainer.records._types import Provenance as Provenance
from neuron_explainer.records._types import UnitId as UnitId
from neuron_explainer.records._types import WindowId as WindowId

__all__ = [
    "UNIT_KINDS",
    "ActivationRecord",
    "AttendedToken",
    "NeuronRecord",
    "Provenance",
    "UnitId",
    "WindowId",
]
