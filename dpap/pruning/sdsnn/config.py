"""SD-SNN's settings (``params.yaml``: ``pruning.sdsnn``): the authors' constants, but for
four defaults that make a short run prune what the paper reports (docs/pruning.md, "SD-SNN";
docs/results/2026-12-06-sdsnn-default.md)."""

from __future__ import annotations

from typing import Literal, Optional

from dpap.schema import Flag, Integer, Number, Settings


class SDSNNConfig(Settings):
    """SD-SNN (``docs/spec/SDSNN.md``): synaptic constraint by dendritic-spine ranges,
    structured neuron pruning at "neurotrophic" rates, synaptic regeneration. Defaults are
    the authors' constants (spec §2.1) except four departures, each measured on ``digits``
    (docs/results/2026-12-06-sdsnn-default.md): ``min_spines`` 4 (not a defined constant
    of theirs: their K is 18), ``fc_ratio_scale`` 51.2 (theirs: the absolute ratio, null),
    ``fc_rate_gain`` 0.9 (theirs: 0.5) and ``fc_percentile`` 80 (theirs: 60). Epoch counts
    are in the authors' 600-epoch schedule; a shorter run compresses that schedule
    (:func:`dpap.pruning.sdsnn.rules.schedule`)."""

    protocol: Literal["fixed", "reference"] = "fixed"
    """``fixed`` (default): ranges adapt in every layer, stable ties, masks enforced every
    step, pruned units silent, regrowth by magnitude. ``reference``: the authors' code
    point by point (spec §3, Q1-Q6)."""
    spines: Integer("an integer >= 1", ge=1) = 18
    """K: consecutive epochs before a range adapts (>= K+1) or a site regrows (> K+1);
    clipping starts at epoch K+1, pruning at 2K+1."""
    schedule_epochs: Optional[Integer("an integer >= 1 or null", ge=1)] = 600
    """The run length the constants are written for. A run of E < this many epochs uses
    K' = max(round(K·E/schedule_epochs), min_spines) (at most K; see ``min_spines``) and
    counts each epoch as (K+2)/(K'+2) of the authors' epochs in the rate and percentile
    schedules. null = never scale (the authors' schedule as written)."""
    min_spines: Integer("an integer >= 2", ge=2) = 4
    """The smallest K' of a compressed schedule (lowered to (E − 5) // 3, never below 2, so
    that a short run still sees the units pruned at epoch 2K'+2 regrow, from 3K'+4; never
    above K).
    Departure (the authors' schedule has K = 18): with K' = 2 the shrink rule fires on 3
    falls of a weight's magnitude in a row, which noise does often, and clipping alone cost
    ``digits`` 3.5 points at 30 epochs (K' = 4: none)."""
    shrink: Number("a number in (0, 1]", gt=0, le=1) = 0.75
    """Factor both bounds of a range shrink by when a weight's magnitude kept falling."""
    conv_rate: Number("a percentage in [0, 100]", ge=0, le=100) = 0.5
    """Initial cumulative pruning rate p of a conv layer, in percent of its channels."""
    fc_rate: Number("a percentage in [0, 100]", ge=0, le=100) = 2.0
    """Initial cumulative pruning rate p of a hidden FC layer, in percent of its neurons."""
    conv_rate_tau: Number("a number > 0", gt=0) = 5.0
    """Time constant of a conv layer's rate increment e^{-t/τ}·ratio."""
    fc_rate_gain: Number("a number >= 0", ge=0) = 0.9
    """α's scale for FC layers (α = gain·e^{-t/τ}): the knob that sets how many neurons die.
    Departure: the authors' 0.5 ends at p ≈ 37 % of a layer's neurons in a 30-epoch run
    (≈ 46 % in their 600 epochs), 0.9 at ≈ 59 %."""
    fc_ratio_scale: Optional[Number("a number > 0 or null", gt=0)] = 51.2
    """An FC layer's neurotrophic ratio (alive here / alive next) is rescaled so that its
    initial value reads as this (the authors' fc1: 512/10 = 51.2), so p follows the same
    course whatever the layer's width; null = the absolute ratio (the authors' code: the
    same constants then prune 12 % of ``digits``' 128 neurons, 25 % of ``mnist-snn``'s 300
    and every neuron of a layer much wider than 512). Identical on the authors' fc1."""
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
    fc_percentile: Number("a percentile in [0, 100]", ge=0, le=100) = 80.0
    """Regeneration percentile offset of FC layers. Departure (the authors': 60): at 60 the
    ``fixed`` protocol regrew some synapses of nearly every pruned neuron, undoing a sixth
    to a quarter of the pruning; at 80 only the strongest sites regrow."""
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
