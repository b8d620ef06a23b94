"""Compaction: pruned networks made physically smaller.

- :mod:`dpap.compaction.network`: :func:`compact` (a masked network → a smaller dense one
  computing the same, :class:`CompactNetwork`) and :func:`expand` (back);
- :mod:`dpap.compaction.state`: optimizer moments and pruner state cut or expanded with
  the network;
- :mod:`dpap.compaction.run`: compaction while training (:class:`CompactWhenShrunk`,
  :func:`compact_run`), compression counted against the dense network;
- :mod:`dpap.compaction.epoch`: one epoch trained compact, for a method that regrows
  (:func:`~dpap.compaction.epoch.compacted_epoch`).

>>> c = compact_pruned(pruner)            # or compact(net, unit_masks, synapse_masks)
>>> c.net, c.parameters_retained()
"""

from .network import CompactionError, CompactNetwork, compact, compact_arch, compact_model, compact_pruned, expand
from .run import CompactWhenShrunk, compact_run, dense_report, expand_run

__all__ = [
    "CompactNetwork",
    "CompactWhenShrunk",
    "CompactionError",
    "compact",
    "compact_arch",
    "compact_model",
    "compact_pruned",
    "compact_run",
    "dense_report",
    "expand",
    "expand_run",
]
