"""Read and write other tools' file formats.

OpenAI's public neuron-explainer data (``openaipublic/neuron-explainer``):

* neuron records (one JSON object per neuron): `read_openai_neuron_record`,
  `write_openai_neuron_record` and the dict converters `neuron_record_from_openai` /
  `neuron_record_to_openai`;
* scored explanations (JSONL, one ``NeuronSimulationResults`` per line):
  `read_openai_explanations`, `write_openai_explanations`, the
  ``OpenAI*`` models that hold them, and `explanation_results_to_openai` to export this
  library's own results.

Other tools (see docs/interop.md):

* Neuronpedia's feature upload batches: `write_neuronpedia`, `neuronpedia_batches`,
  `neuronpedia_scores`, `neuronpedia_source` and its limits (``NEURONPEDIA_*``);
* EleutherAI delphi's latent cache: `read_delphi_cache`, `write_delphi_cache`, `delphi_unit`;
  its explanation and score files: `read_delphi_explanations`, `read_delphi_scores`;
* records as JSONL (what an import writes): `read_records_jsonl`, `write_records_jsonl`,
  `RecordsFile` (read one record at a time).

Every reader raises `FormatError` naming the file, the line
(JSONL) and the JSON path of what is wrong.
"""

from neuron_explainer.formats import delphi as _delphi
from neuron_explainer.formats import delphi_results as _delphi_results
from neuron_explainer.formats import neuronpedia as _neuronpedia
from neuron_explainer.formats import openai as _openai
from neuron_explainer.formats import openai_explanations as _openai_explanations
from neuron_explainer.formats import records_jsonl as _records_jsonl
from neuron_explainer.formats.delphi import DELPHI_COMMIT as DELPHI_COMMIT
from neuron_explainer.formats.delphi import DELPHI_VERSION as DELPHI_VERSION
from neuron_explainer.formats.delphi import delphi_unit as delphi_unit
from neuron_explainer.formats.delphi import read_delphi_cache as read_delphi_cache
from neuron_explainer.formats.delphi import write_delphi_cache as write_delphi_cache
from neuron_explainer.formats.delphi_results import DelphiScore as DelphiScore
from neuron_explainer.formats.delphi_results import (
    read_delphi_explanations as read_delphi_explanations,
)
from neuron_explainer.formats.delphi_results import read_delphi_scores as read_delphi_scores
from neuron_explainer.formats.neuronpedia import NEURONPEDIA_COMMIT as NEURONPEDIA_COMMIT
from neuron_explainer.formats.neuronpedia import (
    NEURONPEDIA_MAX_EXPLANATION_CHARS as NEURONPEDIA_MAX_EXPLANATION_CHARS,
)
from neuron_explainer.formats.neuronpedia import (
    NEURONPEDIA_MAX_FEATURES as NEURONPEDIA_MAX_FEATURES,
)
from neuron_explainer.formats.neuronpedia import NEURONPEDIA_MAX_TOKENS as NEURONPEDIA_MAX_TOKENS
from neuron_explainer.formats.neuronpedia import neuronpedia_batches as neuronpedia_batches
from neuron_explainer.formats.neuronpedia import neuronpedia_scores as neuronpedia_scores
from neuron_explainer.formats.neuronpedia import neuronpedia_source as neuronpedia_source
from neuron_explainer.formats.neuronpedia import write_neuronpedia as write_neuronpedia
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
from neuron_explainer.formats.records_jsonl import RECORDS_FILE as RECORDS_FILE
from neuron_explainer.formats.records_jsonl import RecordsFile as RecordsFile
from neuron_explainer.formats.records_jsonl import read_records_jsonl as read_records_jsonl
from neuron_explainer.formats.records_jsonl import write_records_jsonl as write_records_jsonl

__all__ = [
    *_openai.__all__,
    *_openai_explanations.__all__,
    *_neuronpedia.__all__,
    *_delphi.__all__,
    *_delphi_results.__all__,
    *_records_jsonl.__all__,
]
