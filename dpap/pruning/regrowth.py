"""Regrowth at a fixed count: dead synapses grow back where the loss pulls hardest, and as
many living ones of the smallest magnitude die, so compression does not move.

This is RigL's drop-and-grow step (Evci et al., ICML 2020, "Rigging the Lottery"), taken
once per epoch instead of every ΔT steps, with its cosine-decayed share
``α/2 · (1 + cos(π q / Q))`` at the q-th of Q epochs that swap, and a synapse's pull
measured over the whole epoch rather than one batch:

* grow: of the dead synapses whose two units live, the ``k`` with the largest
  ``|Σ_batches ∂L/∂w|`` (a conv kernel: the sum of that over its k×k entries); the
  gradient of a dead weight is the gradient at 0, which backpropagation gives like any
  other. A grown synapse starts from weight 0.
* drop: of the living synapses, the ``k`` with the smallest ``|w|`` (a kernel: its L1 norm).

``k`` is the share times the layer's living synapses, at most the number of candidates
with a pull above 0: a synapse the loss does not pull (its input never spikes while its
neuron's error is 0) would stay at 0 once grown, spending the count for nothing, and the
choice among such ties would be arbitrary.
A method uses it (:mod:`dpap.pruning.dpap`: ``pruning.dpap.regrow_share``) and tells the
:class:`~dpap.pruning.mechanics.Pruner` through ``kill_synapses`` / ``restore_synapses``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner


def swap_share(alpha: float, q: int, epochs: int) -> float:
    """RigL's cosine-decayed share of a layer's living synapses swapped at the q-th (from 0)
    of ``epochs`` swapping epochs: ``α/2 · (1 + cos(π q / epochs))``."""
    return alpha / 2 * (1 + math.cos(math.pi * q / epochs))


class GradientRegrowth:
    """The epoch's summed gradients of the blocks in ``indices`` and the swap they decide."""

    def __init__(self, indices: Iterable[int]):
        self.indices = tuple(indices)
        self._grad: dict[int, Tensor] = {}

    @property
    def pending(self) -> bool:
        """Gradients summed since the last swap or reset (in the dense shapes: a network
        compacted now would leave them behind)."""
        return bool(self._grad)

    def accumulate(self, pruner: "Pruner") -> None:
        """Add this step's gradient of every tracked weight (before the pruner masks it)."""
        for i in self.indices:
            g = pruner.net.blocks[i].synapse.weight.grad
            if g is None:
                continue
            if i in self._grad:
                self._grad[i] += g
            else:
                self._grad[i] = g.detach().clone()

    def reset(self) -> None:
        self._grad = {}

    def swap(self, pruner: "Pruner", share: float) -> None:
        """Drop and grow ``share`` of each tracked block's living synapses (module docstring),
        then forget the epoch's gradients."""
        for i in self.indices:
            g = self._grad.get(i)
            if g is None or share <= 0:
                continue
            alive = pruner.synapse_mask(i)
            dead = ~pruner.synapses[i] & pruner.units[i][:, None] & pruner.input_mask(i)[None, :]
            pull = g.abs().flatten(2).sum(2) if g.dim() > 2 else g.abs()
            candidates = dead & (pull > 0)
            k = min(int(share * int(alive.sum())), int(candidates.sum()))
            if k <= 0:
                continue
            w = pruner.net.blocks[i].synapse.weight.detach()
            size = w.abs().flatten(2).sum(2) if w.dim() > 2 else w.abs()
            grow = _top(pull.masked_fill(~candidates, -math.inf), k)
            drop = _top((-size).masked_fill(~alive, -math.inf), k)
            pruner.kill_synapses(i, drop)
            pruner.restore_synapses(i, grow)
        self.reset()


def _top(score: Tensor, k: int) -> Tensor:
    """bool mask of the ``k`` largest entries of ``score`` (ties broken by ``torch.topk``)."""
    flat = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    flat[torch.topk(score.flatten(), k).indices] = True
    return flat.view(score.shape)
