"""SD-SNN's settings (``params.yaml``: ``pruning.sdsnn``); defaults are the authors' constants."""

from __future__ import annotations

from typing import Literal, Optional

from dpap.schema import Flag, Integer, Number, Settings


class SDSNNConfig(Settings):
    """SD-SNN (``docs/spec/SDSNN.md``): synaptic constraint by dendritic-spine ranges,
    structured neuron pruning at "neurotrophic" rates, synaptic regeneration. Defaults are
    the authors' constants (spec §2.1). Epoch counts are in the authors' 600-epoch
    schedule; a shorter run compresses that schedule (:func:`dpap.pruning.sdsnn.rules.schedule`)."""

    protocol: Literal["fixed", "reference"] = "fixed"
    """``fixed`` (default): ranges adapt in every layer, stable ties, masks enforced every
    step, pruned units silent, regrowth by magnitude. ``reference``: the authors' code
    point by point (spec §3, Q1-Q6)."""
    spines: Integer("an integer >= 1", ge=1) = 18
    """K: consecutive epochs before a range adapts (>= K+1) or a site regrows (> K+1);
    clipping starts at epoch K+1, pruning at 2K+1."""
    schedule_epochs: Optional[Integer("an integer >= 1 or null", ge=1)] = 600
    """The run length the constants are written for. A run of E < this many epochs uses
    K' = max(2, round(K·E/schedule_epochs)) and counts each epoch as (K+2)/(K'+2) of the
    authors' epochs in the rate and percentile schedules. null = never scale (the authors'
    schedule as written)."""
    shrink: Number("a number in (0, 1]", gt=0, le=1) = 0.75
    """Factor both bounds of a range shrink by when a weight's magnitude kept falling."""
    conv_rate: Number("a percentage in [0, 100]", ge=0, le=100) = 0.5
    """Initial cumulative pruning rate p of a conv layer, in percent of its channels."""
    fc_rate: Number("a percentage in [0, 100]", ge=0, le=100) = 2.0
    """Initial cumulative pruning rate p of a hidden FC layer, in percent of its neurons."""
    conv_rate_tau: Number("a number > 0", gt=0) = 5.0
    """Time constant of a conv layer's rate increment e^{-t/τ}·ratio."""
    fc_rate_gain: Number("a number >= 0", ge=0) = 0.5
    """α's scale for FC layers (α = gain·e^{-t/τ}): the knob that sets how many neurons die."""
    fc_rate_tau: Number("a number > 0", gt=0) = 1.0
    fc_rate_late: Number("a number >= 0", ge=0) = 0.0005
    """α once ``fc_rate_switch`` schedule epochs of pruning have passed."""
    fc_rate_switch: Integer("an integer >= 0", ge=0) = 23
    """Schedule epochs after pruning starts at which α switches to ``fc_rate_late`` (the
    authors' epoch 60 = 2K+1 + 23)."""
    conv_dead: Integer("an integer >= 0", ge=0) = 20
    """A conv channel with fewer living weights than this counts as dead for the rates."""
    fc_dead: Integer("an integer >= 0", ge=0) = 50
    """An FC neuron with fewer living weights than this counts as dead for the rates."""
    conv_percentile: Number("a percentile in [0, 100]", ge=0, le=100) = 65.0
    """Regeneration percentile offset of conv layers: q = min(cap, offset + base^t)."""
    fc_percentile: Number("a percentile in [0, 100]", ge=0, le=100) = 60.0
    growth_base: Number("a number > 1", gt=1) = 1.1
    percentile_cap: Number("a percentile in (0, 100]", gt=0, le=100) = 99.0
    regenerate: Flag = True
    """Synaptic regeneration on (false: pruning only)."""

    def knob(self, name: str) -> float:
        """The value of a search knob (SD-SNN's knobs have no protocol defaults)."""
        return getattr(self, name)


SEARCH_KNOBS = ("spines", "shrink", "conv_rate", "fc_rate", "conv_rate_tau", "fc_rate_gain", "fc_rate_tau", "fc_rate_late",
                "conv_percentile", "fc_percentile", "growth_base")
"""Knobs of ``pruning.sdsnn`` a search may tune (``search.ranges``)."""
