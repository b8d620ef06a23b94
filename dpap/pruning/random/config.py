"""Random pruning's settings (``params.yaml``: ``pruning.random``)."""

from __future__ import annotations

from dpap.pruning.schedule import SEARCH_KNOBS, ScheduleConfig
from dpap.schema import Integer


class RandomConfig(ScheduleConfig):
    """Random pruning, the floor: GMP's cubic schedule and counts
    (:mod:`dpap.pruning.schedule`), the synapses (or units) that die drawn uniformly at
    random among the living ones."""

    seed: Integer("an integer >= 0", ge=0) = 0
    """Seed of the draws (the method's own generator: the run's other random numbers are
    untouched)."""


__all__ = ["RandomConfig", "SEARCH_KNOBS"]
