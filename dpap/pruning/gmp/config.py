"""GMP's settings (``params.yaml``: ``pruning.gmp``)."""

from __future__ import annotations

from dpap.pruning.schedule import SEARCH_KNOBS, ScheduleConfig


class GMPConfig(ScheduleConfig):
    """Gradual magnitude pruning (Zhu & Gupta 2017): every prunable layer pruned to the
    cubic schedule's sparsity at each epoch end, the smallest magnitudes first
    (:mod:`dpap.pruning.schedule`). ``target`` is the final sparsity s_f."""


__all__ = ["GMPConfig", "SEARCH_KNOBS"]
