"""Random pruning, the floor every method should beat: GMP's cubic schedule and counts
(:mod:`dpap.pruning.schedule`), random choices among the living synapses or units
(:mod:`~dpap.pruning.random.method`); settings in :mod:`~dpap.pruning.random.config`."""

from dpap.pruning.method import MethodSpec
from dpap.pruning.random.config import SEARCH_KNOBS, RandomConfig
from dpap.pruning.random.method import RandomMethod

METHOD = MethodSpec(
    name="random",
    config=RandomConfig,
    build=lambda cfg, epochs: RandomMethod(cfg, epochs),
    search_knobs=SEARCH_KNOBS,
    summary="random: GMP's cubic schedule and counts, synapses (or units) drawn at random; the floor",
)

__all__ = ["METHOD", "RandomConfig", "RandomMethod"]
