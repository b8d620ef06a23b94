"""Grad R's settings (``params.yaml``: ``pruning.gradr``)."""

from __future__ import annotations

from dpap.schema import Flag, Number, Settings


class GradRConfig(Settings):
    """Grad R, gradient rewiring (Chen et al., IJCAI 2021): each synapse w = s·ReLU(θ) with
    its sign s fixed at initialisation; the hidden θ trains on s·∂L/∂w whether the synapse
    is on or off, and a Laplace prior pulls it toward μ < 0 (:mod:`dpap.pruning.gradr.method`)."""

    alpha: Number("a number >= 0", ge=0) = 0.1
    """α, the prior's rate (the authors' ``-penalty``): every step θ moves α·η toward μ, and
    μ = ln(2(1 − s))/α. THE knob for how much is pruned (larger = more); 0 = no prior (only
    the gradient switches synapses off and on)."""
    sparsity: Number("a sparsity in [0.5, 1)", ge=0.5, lt=1) = 0.95
    """s of the prior's centre μ = ln(2(1 − s))/α: under the prior alone a share s of the θ
    would be < 0 (the authors' ``-s``)."""
    lr: Number("a number > 0", gt=0) = 0.001
    """η, the step the prior's pull is scaled by: the authors scale it by their Adam step
    size, the learning rate, so keep it equal to ``train.lr``."""
    prune_output: Flag = False
    """Also rewire the output layer's synapses."""

    def knob(self, name: str) -> float:
        """The value of a search knob."""
        return getattr(self, name)


SEARCH_KNOBS = ("alpha", "sparsity")
"""Knobs of ``pruning.gradr`` a search may tune (``search.ranges``)."""
