"""Compaction: pruned networks made physically smaller (compaction removes what pruning
masked; *compression*, :mod:`dpap.pruning.compression`, only counts it).

- :mod:`dpap.compaction.network`: :func:`compact` (a masked network → a smaller dense one
  computing the same, :class:`CompactNetwork`) and :func:`expand` (back);
- :mod:`dpap.compaction.state`: optimizer moments and pruner state cut or expanded with
  the network.

Compaction while training lives with the loop that uses it
(:mod:`dpap.training.compact_run`, :mod:`dpap.training.compact_epoch`); a saved model is
compacted by :func:`dpap.training.model_file.compact_model`.

>>> c = compact_pruned(pruner)            # or compact(net, unit_masks, synapse_masks)
>>> c.net, c.parameters_retained()
"""

from dpap.compaction.network import CompactionError, CompactNetwork, compact, compact_arch, compact_pruned, expand

__all__ = ["CompactNetwork", "CompactionError", "compact", "compact_arch", "compact_pruned", "expand"]
