"""neuron_explainer: explain what a unit of a language model does, and score it honestly.

The public API is re-exported here. Importing this package never imports torch or
transformers; subjects that run models load them when they are used.
"""

from typing import TYPE_CHECKING

from neuron_explainer import errors as _errors
from neuron_explainer._compat import install as _install_moved_modules
from neuron_explainer._lazy import attach
from neuron_explainer._version import __version__ as __version__
from neuron_explainer.errors import AuthenticationError as AuthenticationError
from neuron_explainer.errors import BadRequestError as BadRequestError
from neuron_explainer.errors import CapabilityError as CapabilityError
from neuron_explainer.errors import DeadUnitError as DeadUnitError
from neuron_explainer.errors import DuplicateComponentError as DuplicateComponentError
from neuron_explainer.errors import ExplanationError as ExplanationError
from neuron_explainer.errors import FormatError as FormatError
from neuron_explainer.errors import InsufficientRecordsError as InsufficientRecordsError
from neuron_explainer.errors import InvalidInputError as InvalidInputError
from neuron_explainer.errors import InvalidRecordError as InvalidRecordError
from neuron_explainer.errors import InvalidResponseError as InvalidResponseError
from neuron_explainer.errors import LLMConnectionError as LLMConnectionError
from neuron_explainer.errors import LLMError as LLMError
from neuron_explainer.errors import LLMTimeoutError as LLMTimeoutError
from neuron_explainer.errors import NeuronExplainerError as NeuronExplainerError
from neuron_explainer.errors import PluginError as PluginError
from neuron_explainer.errors import PluginWarning as PluginWarning
from neuron_explainer.errors import RateLimitError as RateLimitError
from neuron_explainer.errors import ServerError as ServerError
from neuron_explainer.errors import SimulationError as SimulationError
from neuron_explainer.errors import UnknownComponentError as UnknownComponentError
from neuron_explainer.errors import UsageError as UsageError

_EXPORTS = {
    "aexplain_neurons": "neuron_explainer.runs.batch",
    "explain_neurons": "neuron_explainer.runs.batch",
    "build_neuron_record": "neuron_explainer.records.building",
    "Explainer": "neuron_explainer.interfaces",
    "Simulator": "neuron_explainer.interfaces",
    "Subject": "neuron_explainer.interfaces",
    "Scorer": "neuron_explainer.scorers.base",
    "ScoringData": "neuron_explainer.scorers.base",
    "BudgetExceededError": "neuron_explainer.llm.usage",
    "aexplain_neuron": "neuron_explainer.runs.explain",
    "explain_neuron": "neuron_explainer.runs.explain",
    "ExplainOptions": "neuron_explainer.options",
    "ActivationRecord": "neuron_explainer.records",
    "AttendedToken": "neuron_explainer.records",
    "NeuronRecord": "neuron_explainer.records",
    "Provenance": "neuron_explainer.records",
    "UnitId": "neuron_explainer.records",
    "WindowId": "neuron_explainer.records",
    "Calibration": "neuron_explainer.results",
    "ComponentInfo": "neuron_explainer.results",
    "Explanation": "neuron_explainer.results",
    "ExplanationResult": "neuron_explainer.results",
    "PromptScale": "neuron_explainer.results",
    "Score": "neuron_explainer.results",
    "ScoredSequence": "neuron_explainer.results",
    "ScoredSimulation": "neuron_explainer.results",
    "Sensitivity": "neuron_explainer.results",
    "SequenceSimulation": "neuron_explainer.results",
    "SimulationFailure": "neuron_explainer.results",
    "SimulationStats": "neuron_explainer.results",
    "UsageSummary": "neuron_explainer.results",
    "Splits": "neuron_explainer.records.splits",
    "RunStore": "neuron_explainer.runs.store",
    "split_records": "neuron_explainer.records.splits",
}
__getattr__, __dir__ = attach(__name__, _EXPORTS)
_install_moved_modules()  # the module paths of 0.1, deprecated (see _compat)

__all__ = [
    *_errors.__all__,
    "ActivationRecord",
    "AttendedToken",
    "BudgetExceededError",
    "Calibration",
    "ComponentInfo",
    "ExplainOptions",
    "Explainer",
    "Explanation",
    "ExplanationResult",
    "NeuronRecord",
    "PromptScale",
    "Provenance",
    "RunStore",
    "Score",
    "ScoredSequence",
    "ScoredSimulation",
    "Sensitivity",
    "SequenceSimulation",
    "SimulationFailure",
    "SimulationStats",
    "Scorer",
    "ScoringData",
    "Simulator",
    "Splits",
    "Subject",
    "UnitId",
    "UsageSummary",
    "WindowId",
    "__version__",
    "aexplain_neuron",
    "aexplain_neurons",
    "build_neuron_record",
    "explain_neuron",
    "explain_neurons",
    "split_records",
]

if TYPE_CHECKING:
    from neuron_explainer.interfaces import Explainer as Explainer
    from neuron_explainer.interfaces import Simulator as Simulator
    from neuron_explainer.interfaces import Subject as Subject
    from neuron_explainer.llm.usage import BudgetExceededError as BudgetExceededError
    from neuron_explainer.options import ExplainOptions as ExplainOptions
    from neuron_explainer.records import ActivationRecord as ActivationRecord
    from neuron_explainer.records import AttendedToken as AttendedToken
    from neuron_explainer.records import NeuronRecord as NeuronRecord
    from neuron_explainer.records import Provenance as Provenance
    from neuron_explainer.records import UnitId as UnitId
    from neuron_explainer.records import WindowId as WindowId
    from neuron_explainer.records.building import build_neuron_record as build_neuron_record
    from neuron_explainer.records.splits import Splits as Splits
    from neuron_explainer.records.splits import split_records as split_records
    from neuron_explainer.results import Calibration as Calibration
    from neuron_explainer.results import ComponentInfo as ComponentInfo
    from neuron_explainer.results import Explanation as Explanation
    from neuron_explainer.results import ExplanationResult as ExplanationResult
    from neuron_explainer.results import PromptScale as PromptScale
    from neuron_explainer.results import Score as Score
    from neuron_explainer.results import ScoredSequence as ScoredSequence
    from neuron_explainer.results import ScoredSimulation as ScoredSimulation
    from neuron_explainer.results import Sensitivity as Sensitivity
    from neuron_explainer.results import SequenceSimulation as SequenceSimulation
    from neuron_explainer.results import SimulationFailure as SimulationFailure
    from neuron_explainer.results import SimulationStats as SimulationStats
    from neuron_explainer.results import UsageSummary as UsageSummary
    from neuron_explainer.runs.batch import aexplain_neurons as aexplain_neurons
    from neuron_explainer.runs.batch import explain_neurons as explain_neurons
    from neuron_explainer.runs.explain import aexplain_neuron as aexplain_neuron
    from neuron_explainer.runs.explain import explain_neuron as explain_neuron
    from neuron_explainer.runs.store import RunStore as RunStore
    from neuron_explainer.scorers.base import Scorer as Scorer
    from neuron_explainer.scorers.base import ScoringData as ScoringData
