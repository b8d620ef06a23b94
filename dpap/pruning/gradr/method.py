"""Grad R as a pruning method (Chen et al., IJCAI 2021; the authors' ``gradrewire.py``).

Each synapse weight is w = s·ReLU(θ): s = ±1 its sign at initialisation, fixed; θ a hidden
parameter, |w| at the start. The synapse is on while θ > 0 and off (w = 0) while θ ≤ 0.
Training descends on θ with the gradient of the loss *without* the ReLU's gate,

    ∂L/∂θ := s·∂L/∂w   (evaluated at the actual w, 0 for a synapse that is off),

so a synapse that is off still feels the loss and comes back when the gradient lifts θ
above 0 (the rewiring), plus a Laplace prior p(θ) ∝ exp(−α|θ − μ|) with
μ = ln(2(1 − s_p))/α < 0, which pulls θ toward μ by α per unit step (the authors' update:
θ ← θ − η·Adam(s·∂L/∂w) − α·η·sign(θ − μ), the prior not normalised by Adam).

Within the training loop (:mod:`dpap.training.loop`), with the hooks of
:class:`~dpap.pruning.method.PruningMethod`, at every step:

1. forward and backward with w (0 for every synapse that is off): the gradient of an off
   synapse is ∂L/∂w at w = 0;
2. :meth:`GradRMethod.after_backward`: the weight of every synapse that is off is set to
   s·θ (< 0·s), so the run's optimizer (Adam on w = s·θ, the same update as Adam on θ, the
   sign being fixed) moves every θ by its gradient, on or off;
3. the optimizer step;
4. :meth:`GradRMethod.after_step`: θ = s·w, the prior's pull, then w = s·ReLU(θ).

At the end of an epoch the pruner's masks are set from θ (an FC synapse is pruned while
θ ≤ 0, a conv kernel while every θ of its k×k weights is ≤ 0; see below), so compression,
MLflow and checkpoints see what the network computes; synapses that came back are
``restored``.

Where this departs from the authors' code, and why:

* Only the synapse weights of prunable blocks are rewired (the authors rewire every
  parameter, biases and BatchNorm too): the mechanics count and compact synapses and units.
* The prior's step is α·``lr`` with ``lr`` a setting (the authors use their optimizer's
  learning rate divided by Adam's bias correction 1 − β₁ᵗ, which is 1 after a few hundred
  steps): a method does not see the optimizer. A learning-rate schedule does not scale it.
* Weight decay, if the run has any, acts on s·θ of an off synapse as on a living weight
  (the authors apply it to w, 0 there).
* Conv layers: θ per weight, as the authors'; the pruner's conv synapse is a kernel, so a
  kernel counts as pruned (in compression) only when all its weights are off; weights that
  are off inside a living kernel are zeros of the network (``zero_weight_share``), not
  compression.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dpap.pruning.gradr.config import GradRConfig
from dpap.pruning.rewiring import HiddenParameterMethod

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner

PRIOR_EPS = 1e-8
"""α at or below this means no prior (the authors' test ``alpha > eps``)."""


def off_synapses(theta: Tensor) -> Tensor:
    """Pruner synapses ``[units, pre_units]`` that are off: θ ≤ 0 (a conv kernel: every θ
    of its weights)."""
    off = theta <= 0
    return off if off.dim() == 2 else off.reshape(off.shape[0], off.shape[1], -1).all(-1)


class GradRMethod(HiddenParameterMethod):
    """Grad R (``cfg``: ``params.yaml``'s ``pruning.gradr``)."""

    name = "gradr"
    masks_every_step = False  # its own masks change at every step (after_step)
    permanent = False  # synapses come back
    value_name = "theta"

    def __init__(self, cfg: GradRConfig):
        self.cfg = cfg
        self.prior = cfg.alpha > PRIOR_EPS
        self.mu = math.log(2.0 * (1.0 - cfg.sparsity)) / cfg.alpha if self.prior else 0.0
        """μ, the prior's centre."""
        self.layers: list[dict] = []
        """Per block: ``theta`` and ``sign`` (weight-shaped) for a rewired block, else empty."""
        self._loaded = False  # after_backward put the θ of off synapses into the weights

    def attach(self, pruner: "Pruner") -> None:
        self.layers = []
        for info in pruner.layers:
            if info.is_output and not self.cfg.prune_output:
                self.layers.append({})
                continue
            w = pruner.net.blocks[info.index].synapse.weight.detach()
            sign = torch.where(w < 0, -1.0, 1.0).to(w.dtype)
            self.layers.append({"theta": w.abs().clone(), "sign": sign})

    # ------------------------------------------------------------------- steps

    @torch.no_grad()
    def after_backward(self, pruner: "Pruner") -> None:
        """The weight of every synapse that is off takes s·θ, so the optimizer's step moves
        its θ by its gradient (taken at w = 0)."""
        for _, w, layer in self._rewired(pruner):
            theta, sign = layer["theta"], layer["sign"]
            w.copy_(torch.where(theta <= 0, sign * theta, w))
        self._loaded = True

    @torch.no_grad()
    def after_step(self, pruner: "Pruner") -> None:
        """θ = s·w after the optimizer's step, the prior's pull, then w = s·ReLU(θ)."""
        step = self.cfg.alpha * self.cfg.lr
        for _, w, layer in self._rewired(pruner):
            old, sign = layer["theta"], layer["sign"]
            theta = sign * w
            if not self._loaded:  # no after_backward this step: an off θ was not in the weight
                theta = torch.where(old <= 0, old, theta)
            if self.prior:
                theta -= step * torch.sign(old - self.mu)
            layer["theta"] = theta
            w.copy_(sign * theta.clamp(min=0))
        self._loaded = False

    # ------------------------------------------------------------------- epoch

    @torch.no_grad()
    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        """The pruner's masks from θ: synapses that are off are pruned, those back on restored."""
        for i, w, layer in self._rewired(pruner):
            off = off_synapses(layer["theta"])
            pruner.kill_synapses(i, off)
            pruner.restore_synapses(i, ~off, weights=w)  # their weights are already s·θ

    # -------------------------------------------------------------- inspection

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """θ of every rewired weight (on and off), for histograms."""
        return {f"layer{i}.{pruner.layers[i].layer_type}.synapses": layer["theta"].reshape(-1).cpu() for i, _, layer in self._rewired(pruner)}

    def layer_stats(self, pruner: "Pruner") -> dict[int, dict[str, float]]:
        """Per rewired block: the share of its weights that are off (θ ≤ 0)."""
        return {i: {"weights_off": float((layer["theta"] <= 0).float().mean())} for i, _, layer in self._rewired(pruner)}

    # ----------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {"layers": [{k: v.clone() for k, v in layer.items()} for layer in self.layers], "alpha": self.cfg.alpha}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"Grad R state has {len(state['layers'])} layers, the network {len(self.layers)}")
        self.layers = [{k: v.clone() for k, v in layer.items()} for layer in state["layers"]]  # the pruner moves them next
        self._loaded = False
