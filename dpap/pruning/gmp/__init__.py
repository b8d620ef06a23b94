"""GMP, gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the
cubic sparsity schedule (:mod:`dpap.pruning.schedule`), the smallest magnitudes first,
unstructured or per channel (:mod:`~dpap.pruning.gmp.method`); settings in
:mod:`~dpap.pruning.gmp.config`."""

from dpap.pruning.gmp.config import SEARCH_KNOBS, GMPConfig
from dpap.pruning.gmp.method import GMPMethod
from dpap.pruning.method import MethodSpec

METHOD = MethodSpec(
    name="gmp",
    config=GMPConfig,
    build=lambda cfg, epochs: GMPMethod(cfg, epochs),
    search_knobs=SEARCH_KNOBS,
    summary="GMP (Zhu & Gupta 2017): cubic sparsity schedule to a target, smallest magnitudes (or channel L1 norms) first; nothing regrows",
)

__all__ = ["GMPConfig", "GMPMethod", "METHOD"]
