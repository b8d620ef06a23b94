"""Pruning: the mechanics (masks and how they are applied) apart from the methods that
decide which units and synapses to prune or restore.

- :mod:`dpap.pruning.mechanics`: :class:`Pruner`, the masks, the one definition of a
  living synapse, applying masks to weights and gradients, device, state;
- :mod:`dpap.pruning.method`: :class:`PruningMethod`, what a method provides;
- :mod:`dpap.pruning.dpap`: :class:`DPAPMethod`, DPAP with its protocols;
- :mod:`dpap.pruning.sdsnn`: :class:`SDSNNMethod`, SD-SNN (ranges, neuron pruning,
  regeneration) with its ``fixed`` and ``reference`` protocols.

>>> pruner = make_pruner(net, cfg)              # the method named by params.yaml
>>> pruner = DPAPPruner(net, cfg.dpap)          # the same for DPAP, from its config
"""

from __future__ import annotations

from ..config import Config, DPAPConfig
from ..networks import SpikingNetwork
from .dpap import DPAPMethod
from .mechanics import LayerInfo, LayerReport, Pruner
from .method import PruningMethod
from .sdsnn import SDSNNMethod


class DPAPPruner(Pruner):
    """A :class:`Pruner` running :class:`DPAPMethod` with ``cfg`` (``params.yaml``'s
    ``dpap`` group)."""

    def __init__(self, net: SpikingNetwork, cfg: DPAPConfig):
        super().__init__(net, DPAPMethod(cfg))


def make_pruner(net: SpikingNetwork, cfg: Config) -> Pruner | None:
    """The pruner ``cfg`` asks for, attached to ``net``; None for the unpruned baseline."""
    if not cfg.dpap.enabled:
        return None
    if cfg.dpap.method == "sdsnn":
        return Pruner(net, SDSNNMethod(cfg.dpap.sdsnn, cfg.train.epochs))
    return DPAPPruner(net, cfg.dpap)


__all__ = ["DPAPMethod", "DPAPPruner", "SDSNNMethod", "LayerInfo", "LayerReport", "Pruner", "PruningMethod", "make_pruner"]
