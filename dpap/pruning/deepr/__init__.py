"""Deep R, deep rewiring (Bellec et al., ICLR 2018, "Deep Rewiring: Training very sparse
deep networks"): a fixed number of active connections per layer, rewired at every step
(:mod:`~dpap.pruning.deepr.method`); settings in :mod:`~dpap.pruning.deepr.config`."""

from dpap.pruning.deepr.config import SEARCH_KNOBS, DeepRConfig
from dpap.pruning.deepr.method import DeepRMethod
from dpap.pruning.method import MethodSpec

METHOD = MethodSpec(
    name="deepr",
    config=DeepRConfig,
    build=lambda cfg, epochs: DeepRMethod(cfg),
    search_knobs=SEARCH_KNOBS,
    summary="Deep R (Bellec et al. 2018): a fixed number of active connections per layer; one whose θ turns negative is replaced by a random dormant one",
)

__all__ = ["DeepRConfig", "DeepRMethod", "METHOD"]
