"""GMP as a pruning method: at each epoch end of the cubic schedule
(:mod:`dpap.pruning.schedule`), the living synapses with the smallest magnitude, or with
``structure: channel`` the units with the smallest L1 norm, die until the layer is at the
scheduled sparsity.

Magnitude of a synapse: |w| of an FC weight; the L1 norm of a conv kernel (the mechanics'
conv synapse, k×k weights: Zhu & Gupta prune single weights; the pruner's finest conv
granularity is the kernel). L1 norm of a unit: the sum of |w| over its living incoming
synapses (a conv channel: all its living kernels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dpap.pruning.gmp.config import GMPConfig
from dpap.pruning.schedule import ScheduledPruning

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import Pruner


def synapse_magnitudes(weight: Tensor) -> Tensor:
    """|w| per synapse ``[units, pre_units]`` (a conv kernel: the L1 norm of its weights)."""
    w = weight.detach().abs()
    return w if w.dim() == 2 else w.reshape(w.shape[0], w.shape[1], -1).sum(-1)


class GMPMethod(ScheduledPruning):
    """Gradual magnitude pruning (``cfg``: ``params.yaml``'s ``pruning.gmp``)."""

    name = "gmp"
    value_name = "magnitude"

    def __init__(self, cfg: GMPConfig, epochs):
        super().__init__(cfg, epochs)

    def scores(self, pruner: "Pruner", index: int, what: str) -> Tensor:
        magnitude = synapse_magnitudes(pruner.net.blocks[index].synapse.weight) * pruner.synapse_mask(index)
        return magnitude.sum(1) if what == "units" else magnitude

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """Magnitudes of the living synapses of each pruned layer, for histograms."""
        out = {}
        for i, layer in enumerate(pruner.layers):
            if self.structure(pruner, i) is None:
                continue
            with torch.no_grad():
                m = synapse_magnitudes(pruner.net.blocks[i].synapse.weight)
            out[f"layer{i}.{layer.layer_type}.synapses"] = m[pruner.synapse_mask(i)].cpu()
        return out
