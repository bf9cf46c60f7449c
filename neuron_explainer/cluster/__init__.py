"""Scale out on Dask distributed: the engine layer under batch runs (and collection) on a
cluster. See docs/cluster.md.

Public:

* `open_cluster` / `aopen_cluster`: connect to a running cluster by its scheduler's address,
  start a local one of N worker processes (on 127.0.0.1 only), or take a ``distributed.Client``;
* `worker_cache`: a value (a loaded model) kept per worker process across tasks.

The modules below are the machinery the runs use:

* `neuron_explainer.cluster.service`: the scheduler plugin keeping a run's shared LLM limits,
  its mailbox of results and its blobs, with the driver's and the workers' handles;
* `neuron_explainer.cluster.limits`: LLM clients on a worker made to ask those shared limits;
* `neuron_explainer.cluster.shipping`: components pickled for the workers (LLMs as settings).

Dask distributed is optional (``pip install 'neuron-explainer[dask]'``): importing this package
does not import it; opening a cluster without it raises `InvalidInputError` saying so.
"""

from neuron_explainer.cluster.cache import worker_cache as worker_cache
from neuron_explainer.cluster.engine import ClusterSpec as ClusterSpec
from neuron_explainer.cluster.engine import aopen_cluster as aopen_cluster
from neuron_explainer.cluster.engine import open_cluster as open_cluster

__all__ = ["ClusterSpec", "aopen_cluster", "open_cluster", "worker_cache"]
