"""Counting what pruning removed: parameters retained, compression, per layer.

Compression = 1 − (parameters of the network with its pruned units removed) ÷
(parameters of the dense network). A weight that only feeds or reads a pruned unit
counts as removed: pruning an FC neuron removes its row, and the column of the next
layer that reads it; pruning a conv channel removes its filter, bias and BN terms, and
whatever reads that channel downstream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor

from dpap.snn.networks import SpikingNetwork


@dataclass
class LayerCount:
    index: int
    layer_type: str
    dense: int
    retained: int
    units: int
    units_alive: int
    synapses: int
    synapses_alive: int

    @property
    def compression(self) -> float:
        return 1.0 - self.retained / self.dense if self.dense else 0.0


@dataclass
class CompressionReport:
    dense: int
    retained: int
    zero_weight_share: float
    layers: list[LayerCount]

    @property
    def compression(self) -> float:
        return 1.0 - self.retained / self.dense if self.dense else 0.0

    def as_dict(self) -> dict:
        return {
            "compression": self.compression,
            "params_dense": self.dense,
            "params_retained": self.retained,
            "zero_weight_share": self.zero_weight_share,
            "layers": [dict(asdict(c), compression=c.compression) for c in self.layers],
        }


def live_synapses(
    net: SpikingNetwork,
    unit_masks: Optional[list[Tensor]] = None,
    synapse_masks: Optional[list[Tensor]] = None,
) -> list[Tensor]:
    """Per block, the synapses that are alive (bool ``[units, pre_units]``, on the CPU): a
    synapse lives when its own mask, its post-synaptic unit and its pre-synaptic unit (a
    neuron of the previous FC layer, or every position of a channel of the previous conv
    layer) all live. The one definition of "alive" that compression, synaptic operations
    and the pruner's masks share."""
    out = []
    alive: list[Tensor] = []
    for i, block in enumerate(net.blocks):
        units, pre_units = block.synapse.weight.shape[:2]
        unit_alive = unit_masks[i].bool().cpu() if unit_masks is not None else torch.ones(units, dtype=torch.bool)
        syn = synapse_masks[i].bool().cpu() if synapse_masks is not None else torch.ones(units, pre_units, dtype=torch.bool)
        source = getattr(block, "source", i - 1)  # the block it reads (Pruner.input_mask)
        prev_alive: Optional[Tensor] = alive[source] if source is not None and source >= 0 else None
        if prev_alive is None:
            in_alive = torch.ones(pre_units, dtype=torch.bool)
        elif block.in_spatial > 1:
            in_alive = prev_alive.repeat_interleave(block.in_spatial)
        else:
            in_alive = prev_alive
        out.append(syn & unit_alive[:, None] & in_alive[None, :])
        alive.append(unit_alive)
    return out


def unit_extras(block) -> int:
    """Parameters a unit of ``block`` holds besides its synapses: its bias and its
    BatchNorm's affine pair."""
    return (block.synapse.bias is not None) + (2 if block.norm is not None and block.norm.affine else 0)


def count_parameters(
    net: SpikingNetwork,
    unit_masks: Optional[list[Tensor]] = None,
    synapse_masks: Optional[list[Tensor]] = None,
) -> CompressionReport:
    """Dense and retained parameter counts of ``net`` given per-block boolean masks
    (``unit_masks[i]``: ``[units]``; ``synapse_masks[i]``: ``[units, pre_units]``).
    Without masks the network is dense."""
    layers = []
    zero = total_w = 0
    live = live_synapses(net, unit_masks, synapse_masks)
    for i, block in enumerate(net.blocks):
        w = block.synapse.weight
        units, pre_units = w.shape[:2]
        kernel = w[0, 0].numel()
        unit_alive = unit_masks[i].bool().cpu() if unit_masks is not None else torch.ones(units, dtype=torch.bool)
        live_syn = live[i]
        extra_per_unit = unit_extras(block)
        dense = w.numel() + units * extra_per_unit
        retained = int(live_syn.sum()) * kernel + int(unit_alive.sum()) * extra_per_unit
        layers.append(LayerCount(i, block.layer_type, dense, retained, units, int(unit_alive.sum()), units * pre_units, int(live_syn.sum())))
        zero += int((w == 0).sum())
        total_w += w.numel()
    dense_total = sum(c.dense for c in layers)
    retained_total = sum(c.retained for c in layers)
    return CompressionReport(dense_total, retained_total, zero / total_w if total_w else 0.0, layers)


def compression_of(net: SpikingNetwork, pruner=None) -> CompressionReport:
    """:func:`count_parameters` with the masks of a :class:`~dpap.pruning.Pruner` (or dense)."""
    if pruner is None:
        return count_parameters(net)
    n = len(net.blocks)
    return count_parameters(net, [pruner.unit_mask(i) for i in range(n)], [pruner.synapse_mask(i) for i in range(n)])
