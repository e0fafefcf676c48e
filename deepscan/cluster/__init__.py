"""Scans (and evaluations) spread over a Ray cluster: ``deepscan scan --ray auto|ADDRESS``.

- :mod:`deepscan.cluster.connect`: joining the cluster (or starting a local instance), sizing the actors to its nodes;
- :mod:`deepscan.cluster.parcel`: the judge as it travels to the nodes, and the weights check on each of them;
- :mod:`deepscan.cluster.worker`: the detector actor (a ``Scanner`` held for the whole scan) and the ledger of tries;
- :mod:`deepscan.cluster.scan`: the driver: files streamed to the actors, results streamed back, custody;
- :mod:`deepscan.cluster.evaluate`: ``deepscan evaluate --ray``: the evaluation's face and score caches filled on the
  cluster.

Ray is an optional extra (``pip install "deepscan[ray]"``); nothing here imports it until a cluster is asked for.
"""

from deepscan.cluster.connect import ClusterError
from deepscan.cluster.scan import ClusterOptions, ClusterOutcome, ClusterScan

__all__ = ["ClusterError", "ClusterOptions", "ClusterOutcome", "ClusterScan"]
