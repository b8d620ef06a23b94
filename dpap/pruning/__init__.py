"""Pruning: the mechanics (masks, how they are applied, what they compress) apart from the
methods that decide which units and synapses to prune or restore.

- :mod:`dpap.pruning.mechanics`: :class:`Pruner`, the masks, the one definition of a
  living synapse, applying masks to weights and gradients, device, state;
- :mod:`dpap.pruning.compression`: counting what the masks remove (compression);
- :mod:`dpap.pruning.method`: :class:`PruningMethod`, what a method provides;
- :mod:`dpap.pruning.registry`: the methods by name, :func:`make_pruner`;
- one subpackage per method: :mod:`dpap.pruning.dpap` (DPAP with its protocols),
  :mod:`dpap.pruning.sdsnn` (SD-SNN: ranges, neuron pruning, regeneration), and the
  baselines :mod:`dpap.pruning.gmp`, :mod:`dpap.pruning.random`, :mod:`dpap.pruning.gradr`,
  :mod:`dpap.pruning.deepr`.

>>> pruner = make_pruner(net, "dpap", DPAPConfig(epsilon=0.6))
"""

from dpap.pruning.mechanics import LayerInfo, LayerReport, Pruner
from dpap.pruning.method import MethodSpec, PruningMethod
from dpap.pruning.dpap import DPAPConfig, DPAPMethod
from dpap.pruning.sdsnn import SDSNNConfig, SDSNNMethod
from dpap.pruning.gmp import GMPConfig, GMPMethod
from dpap.pruning.random import RandomConfig, RandomMethod
from dpap.pruning.gradr import GradRConfig, GradRMethod
from dpap.pruning.deepr import DeepRConfig, DeepRMethod
from dpap.pruning.registry import METHODS, make_method, make_pruner, method_spec
from dpap.pruning.config import PruningConfig

__all__ = ["DPAPConfig", "DPAPMethod", "DeepRConfig", "DeepRMethod", "GMPConfig", "GMPMethod", "GradRConfig", "GradRMethod",
           "RandomConfig", "RandomMethod", "LayerInfo", "LayerReport", "METHODS", "MethodSpec", "Pruner", "PruningConfig",
           "PruningMethod", "SDSNNConfig", "SDSNNMethod", "make_method", "make_pruner", "method_spec"]
