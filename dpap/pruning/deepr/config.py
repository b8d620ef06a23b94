"""Deep R's settings (``params.yaml``: ``pruning.deepr``)."""

from __future__ import annotations

from dpap.schema import Flag, Integer, Number, Settings


class DeepRConfig(Settings):
    """Deep R, deep rewiring (Bellec et al., ICLR 2018): a fixed number of active
    connections per layer; one whose θ crosses 0 goes dormant and as many dormant ones,
    drawn at random, become active (:mod:`dpap.pruning.deepr.method`)."""

    density: Number("a share in (0, 1]", gt=0, le=1) = 0.3
    """The share of each rewired layer's weights that is active, from the start to the end:
    THE knob for how much is pruned (compression ≈ 1 − density in FC layers)."""
    l1: Number("a number >= 0", ge=0) = 0.001
    """α, the L1 penalty: every step each active θ moves α·η toward 0 (the authors'
    ``-penalty``; Chen et al.'s Deep R, as Bellec et al.'s, not normalised by Adam)."""
    temperature: Number("a number >= 0", ge=0) = 0.0
    """T: every step each active θ gets Gaussian noise of standard deviation √(2ηT)
    (Bellec et al.'s exploration term); 0 = none (Chen et al.'s default)."""
    lr: Number("a number > 0", gt=0) = 0.001
    """η, the step the L1 pull and the noise are scaled by (Bellec et al.'s learning rate):
    keep it equal to ``train.lr``."""
    seed: Integer("an integer >= 0", ge=0) = 0
    """Seed of the initial connections, the rewiring draws and the noise (the method's
    own generator)."""
    prune_output: Flag = False
    """Also rewire the output layer (at the same density)."""

    def knob(self, name: str) -> float:
        """The value of a search knob."""
        return getattr(self, name)


SEARCH_KNOBS = ("density", "l1", "temperature")
"""Knobs of ``pruning.deepr`` a search may tune (``search.ranges``; compression grows as
``density`` falls, so a search steers it by its range, not as the control knob)."""
