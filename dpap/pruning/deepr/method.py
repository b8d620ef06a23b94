"""Deep R as a pruning method (Bellec et al., ICLR 2018, Algorithm 1; Chen et al.'s
``deeprewire.py`` for the SNN baseline the DPAP paper quotes).

Each weight is a potential connection w = s·θ while it is active, 0 while it is dormant;
s = ±1 is its sign at initialisation, fixed. Each rewired layer holds exactly
K = round(density·n) active connections of its n weights, from the first step to the last:

* at attachment, K weights drawn uniformly at random are active (θ = |w|), the others
  dormant (w = 0);
* every training step, only active θ learn: the gradient of a dormant weight is zeroed
  (:meth:`DeepRMethod.after_backward`), then after the optimizer's step
  (:meth:`DeepRMethod.after_step`) θ = s·w − η·α + √(2ηT)·ν for active weights (L1 pull
  and Gaussian noise ν, the parts of Bellec's update the run's optimizer does not do);
  every active connection whose θ crossed below 0 goes dormant, and as many dormant
  connections, drawn uniformly at random among all dormant ones, become active with θ = 0.

Rewiring runs at every step, as in the paper (not at epoch ends): a connection that
crosses zero is replaced at once, so the layer never computes with fewer than K
connections. At the end of an epoch the pruner's masks are set from the active sets
(an FC synapse is pruned while dormant, a conv kernel while all its k×k weights are), so
compression, MLflow and checkpoints see what the network computes.

Where this departs from the papers, and why:

* Only the synapse weights of prunable blocks are rewired (biases and BatchNorm stay
  dense): the mechanics count and compact synapses and units.
* The gradient step is the run's optimizer (Adam in the recipes, as Chen et al.'s Deep R;
  Bellec et al. use SGD); the L1 pull and the noise are scaled by the ``lr`` setting, as a
  method does not see the optimizer (a learning-rate schedule does not scale them).
* Conv layers: connections are single weights, as in the papers; the pruner's conv synapse
  is a kernel, so a kernel counts as pruned only when all its weights are dormant (the
  fixed count is of weights).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dpap.pruning.deepr.config import DeepRConfig
from dpap.pruning.rewiring import HiddenParameterMethod

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner


def active_synapses(active: Tensor) -> Tensor:
    """Pruner synapses ``[units, pre_units]`` with an active weight (a conv kernel: any)."""
    return active if active.dim() == 2 else active.reshape(active.shape[0], active.shape[1], -1).any(-1)


class DeepRMethod(HiddenParameterMethod):
    """Deep R (``cfg``: ``params.yaml``'s ``pruning.deepr``)."""

    name = "deepr"
    masks_every_step = False  # its own masks change at every step (after_step)
    permanent = False  # dormant connections come back
    value_name = "theta"

    def __init__(self, cfg: DeepRConfig):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.noise = math.sqrt(2.0 * cfg.lr * cfg.temperature)
        self.layers: list[dict] = []
        """Per block: ``active`` (bool) and ``sign`` (weight-shaped) for a rewired block, else empty."""
        self.rewired: list[int] = []
        """Connections activated per block during the current epoch."""
        self.last_rewired: list[int] = []
        """... during the last finished epoch."""

    @torch.no_grad()
    def attach(self, pruner: "Pruner") -> None:
        self.layers = []
        for info in pruner.layers:
            if info.is_output and not self.cfg.prune_output:
                self.layers.append({})
                continue
            w = pruner.net.blocks[info.index].synapse.weight
            n = w.numel()
            k = min(n, max(1, round(self.cfg.density * n)))
            pick = torch.randperm(n, generator=self.generator)[:k].to(w.device)
            active = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
            active.view(-1)[pick] = True
            self.layers.append({"active": active, "sign": torch.where(w < 0, -1.0, 1.0).to(w.dtype)})
            w.mul_(active)
            pruner.kill_synapses(info.index, ~active_synapses(active))
        self.rewired = [0] * len(self.layers)
        self.last_rewired = [0] * len(self.layers)

    # ------------------------------------------------------------------- steps

    @torch.no_grad()
    def after_backward(self, pruner: "Pruner") -> None:
        """Dormant connections do not learn: their gradients are zeroed."""
        for _, w, layer in self._rewired(pruner):
            if w.grad is not None:
                w.grad.mul_(layer["active"])

    @torch.no_grad()
    def after_step(self, pruner: "Pruner") -> None:
        """L1 pull and noise on active θ, then the rewiring (module docstring)."""
        pull = self.cfg.lr * self.cfg.l1
        for i, w, layer in self._rewired(pruner):
            active, sign = layer["active"], layer["sign"]
            theta = sign * w
            if pull:
                theta -= pull
            if self.noise:
                theta += self.noise * torch.randn(w.shape, generator=self.generator, dtype=w.dtype).to(w.device)
            died = active & (theta < 0)
            k = int(died.sum())
            if k:
                active = active & ~died
                dormant = torch.nonzero(~active.reshape(-1)).squeeze(1)
                pick = dormant[torch.randperm(dormant.numel(), generator=self.generator)[:k].to(dormant.device)]
                active.view(-1)[pick] = True
                theta.view(-1)[pick] = 0.0
                layer["active"] = active
                self.rewired[i] += k
            w.copy_(sign * theta.clamp(min=0) * active)

    # ------------------------------------------------------------------- epoch

    @torch.no_grad()
    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        """The pruner's masks from the active sets: dormant synapses pruned, active ones restored."""
        for i, w, layer in self._rewired(pruner):
            alive = active_synapses(layer["active"])
            pruner.kill_synapses(i, ~alive)
            pruner.restore_synapses(i, alive, weights=w)  # their weights are already s·θ
        self.last_rewired, self.rewired = self.rewired, [0] * len(self.layers)

    # -------------------------------------------------------------- inspection

    def active_counts(self) -> list[int]:
        """Active connections (weights) per block; -1 for a block that is not rewired."""
        return [int(layer["active"].sum()) if layer else -1 for layer in self.layers]

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """θ of the active connections, for histograms."""
        return {f"layer{i}.{pruner.layers[i].layer_type}.synapses": (layer["sign"] * w.detach())[layer["active"]].cpu()
                for i, w, layer in self._rewired(pruner)}

    def layer_stats(self, pruner: "Pruner") -> dict[int, dict[str, float]]:
        """Per rewired block: connections activated by rewiring in the last epoch."""
        return {i: {"rewired": self.last_rewired[i]} for i, _, _ in self._rewired(pruner)} if self.last_rewired else {}

    # ----------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {"layers": [{k: v.clone() for k, v in layer.items()} for layer in self.layers], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"Deep R state has {len(state['layers'])} layers, the network {len(self.layers)}")
        self.layers = [{k: v.clone() for k, v in layer.items()} for layer in state["layers"]]  # the pruner moves them next
        self.generator.set_state(state["generator"])
