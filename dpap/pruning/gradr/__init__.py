"""Grad R, gradient rewiring (Chen et al., IJCAI 2021, "Pruning of Deep Spiking Neural
Networks through Gradient Rewiring"): synapses switch off when their hidden parameter θ
falls below 0 and on again when the gradient lifts it back (:mod:`~dpap.pruning.gradr.method`);
settings in :mod:`~dpap.pruning.gradr.config`."""

from dpap.pruning.gradr.config import SEARCH_KNOBS, GradRConfig
from dpap.pruning.gradr.method import GradRMethod
from dpap.pruning.method import MethodSpec

METHOD = MethodSpec(
    name="gradr",
    config=GradRConfig,
    build=lambda cfg, epochs: GradRMethod(cfg),
    search_knobs=SEARCH_KNOBS,
    summary="Grad R (Chen et al. 2021): w = s·ReLU(θ), θ trained by the gradient even while off, a Laplace prior pulls it below 0; synapses regrow",
)

__all__ = ["GradRConfig", "GradRMethod", "METHOD"]
