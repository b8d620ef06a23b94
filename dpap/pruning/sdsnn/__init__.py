"""SD-SNN: dendritic-spine ranges constrain synapses, neurons are pruned at
"neurotrophic" rates, and pruned synapses regenerate (``docs/spec/SDSNN.md``). Pure rules
in :mod:`~dpap.pruning.sdsnn.rules`, the method in :mod:`~dpap.pruning.sdsnn.method`,
settings in :mod:`~dpap.pruning.sdsnn.config`."""

from dpap.pruning.method import MethodSpec
from dpap.pruning.sdsnn.config import SEARCH_KNOBS, SDSNNConfig
from dpap.pruning.sdsnn.method import SDSNNMethod

METHOD = MethodSpec(
    name="sdsnn",
    config=SDSNNConfig,
    build=lambda cfg, epochs: SDSNNMethod(cfg, epochs if epochs is not None else (cfg.schedule_epochs or 600)),
    search_knobs=SEARCH_KNOBS,
    summary="SD-SNN: dendritic-spine ranges, neuron pruning at neurotrophic rates, synaptic regeneration",
)

__all__ = ["METHOD", "SDSNNConfig", "SDSNNMethod"]
