"""Read and write other tools' file formats.

OpenAI's public neuron-explainer data (``openaipublic/neuron-explainer``):

* neuron records (one JSON object per neuron): `read_openai_neuron_record`,
  `write_openai_neuron_record` and the dict converters `neuron_record_from_openai` /
  `neuron_record_to_openai`;
* scored explanations (JSONL, one ``NeuronSimulationResults`` per line):
  `read_openai_explanations`, `write_openai_explanations`, the
  ``OpenAI*`` models that hold them, and `explanation_results_to_openai` to export this
  library's own results.

Every reader raises `FormatError` naming the file, the line
(JSONL) and the JSON path of what is wrong.
"""

from neuron_explainer.formats import openai as _openai
from neuron_explainer.formats import openai_explanations as _openai_explanations
from neuron_explainer.formats.openai import OPENAI_DATASET as OPENAI_DATASET
from neuron_explainer.formats.openai import neuron_record_from_openai as neuron_record_from_openai
from neuron_explainer.formats.openai import neuron_record_to_openai as neuron_record_to_openai
from neuron_explainer.formats.openai import read_openai_neuron_record as read_openai_neuron_record
from neuron_explainer.formats.openai import (
    write_openai_neuron_record as write_openai_neuron_record,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAIActivationScale as OpenAIActivationScale,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAINeuronSimulationResults as OpenAINeuronSimulationResults,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAIScoredExplanation as OpenAIScoredExplanation,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAIScoredSequence as OpenAIScoredSequence,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAIScoredSimulation as OpenAIScoredSimulation,
)
from neuron_explainer.formats.openai_explanations import (
    OpenAISequenceSimulation as OpenAISequenceSimulation,
)
from neuron_explainer.formats.openai_explanations import (
    explanation_results_to_openai as explanation_results_to_openai,
)
from neuron_explainer.formats.openai_explanations import (
    read_openai_explanations as read_openai_explanations,
)
from neuron_explainer.formats.openai_explanations import (
    simulation_results_from_openai as simulation_results_from_openai,
)
from neuron_explainer.formats.openai_explanations import (
    simulation_results_to_openai as simulation_results_to_openai,
)
from neuron_explainer.formats.openai_explanations import (
    write_openai_explanations as write_openai_explanations,
)

__all__ = [*_openai.__all__, *_openai_explanations.__all__]
