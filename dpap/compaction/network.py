"""Compaction: a pruned network turned into a smaller dense one that computes the same.

Masks zero the weights of pruned units and synapses but keep every matrix's shape, so a
pruned network costs what the dense one costs. :func:`compact` builds a new
:class:`~dpap.snn.networks.SpikingNetwork` of the same kind and architecture pattern in
which every dead hidden unit is gone:

* a dead conv channel loses its filter, bias and BatchNorm entries (weight, bias,
  running mean and variance) and the input channel of the next conv layer that reads
  it; before an FC layer, the ``in_spatial`` columns (H·W positions) of that channel;
* a dead FC neuron loses its row, bias, BatchNorm entries and the column of the next
  layer that reads it;
* the output layer keeps all its units (a dead one keeps zero weights, so the class
  indices do not move).

Synapses pruned on their own inside living rows and columns (FC synapses, conv kernels)
cannot be cut out of a dense matrix: they stay, as zeros, and :class:`CompactNetwork`
keeps their masks (``synapse_masks``, in the compact shapes). :meth:`CompactNetwork.pruner`
attaches a :class:`~dpap.pruning.Pruner` holding those masks, so that training the
compact network further keeps them at zero. :func:`expand` puts a compact network back
into the larger shapes (zeros where units were removed).

Parameters. :func:`~dpap.pruning.compression.count_parameters` counts as *retained* the living
synapses (times the kernel size) plus bias and BN affine terms of living units. The
compact network has exactly those and, in addition, (a) the zeros of synapses pruned on
their own inside living rows and columns and (b) the rows, biases and BN terms of the
output layer's dead units (none unless a method prunes output units) and of the one dead
unit kept by a layer that lost all of them. :meth:`CompactNetwork.parameters_retained`
(the compact network's parameters minus those masked entries) equals the original
network's retained count exactly; :meth:`CompactNetwork.masked_parameters` is the
difference to ``sum(p.numel() for p in net.parameters())``. BN running statistics are
buffers, not parameters, in both counts.

Exactness. The compact network takes the masked weights (weights × the living-synapse
mask) and the biases and BN terms of kept units as they are; what it drops only ever
added exact zeros, so its currents equal the masked network's up to the order of float
summation, and a spike can flip only where a membrane potential sits within rounding of
the threshold.
"""

from __future__ import annotations

from dpap.errors import DPAPError

import copy
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from dpap.pruning.compression import count_parameters, live_synapses
from dpap.pruning.mechanics import Pruner
from dpap.pruning.method import PruningMethod
from dpap.snn.networks import AvgPool2d, Block, SpikingNetwork



class CompactionError(DPAPError, ValueError):
    """Masks that do not fit the network, or a network compaction cannot rebuild."""


@dataclass
class CompactNetwork:
    """The result of :func:`compact`.

    ``kept[i]``: indices (long, CPU) of the original units of block i that the compact
    block holds, in order; ``unit_masks[i]`` (bool ``[kept]``) and ``synapse_masks[i]``
    (bool ``[kept units, kept inputs]``, the living synapses as in
    :func:`~dpap.pruning.compression.live_synapses`): the masks in the compact shapes."""

    net: SpikingNetwork
    kept: list[Tensor]
    unit_masks: list[Tensor]
    synapse_masks: list[Tensor]

    def parameters_retained(self) -> int:
        """Parameters of the compact network that are not masked; equals
        :func:`~dpap.pruning.compression.count_parameters` ``.retained`` of the original."""
        return count_parameters(self.net, self.unit_masks, self.synapse_masks).retained

    def parameters_total(self) -> int:
        """All parameters of the compact network (its tensors' sizes)."""
        return sum(p.numel() for p in self.net.parameters())

    def masked_parameters(self) -> int:
        """Parameters the compact network holds as masked zeros (see the module docstring)."""
        return self.parameters_total() - self.parameters_retained()

    def pruner(self, method: Optional["PruningMethod"] = None) -> "Pruner":
        """A :class:`~dpap.pruning.Pruner` on the compact network holding its masks (by
        default with a method that never prunes): call ``mask_gradients`` /
        ``apply_masks`` around each optimizer step, as the training loop does, and the
        masked synapses stay at zero."""
        pruner = Pruner(self.net, method if method is not None else PruningMethod())
        device = pruner.device
        pruner.units = [u.to(device).clone() for u in self.unit_masks]
        pruner.synapses = [s.to(device).clone() for s in self.synapse_masks]
        pruner.refresh_masks()
        return pruner


def compact(
    net: SpikingNetwork,
    unit_masks: Optional[Sequence[Tensor]] = None,
    synapse_masks: Optional[Sequence[Tensor]] = None,
) -> CompactNetwork:
    """A smaller dense copy of ``net`` without its dead hidden units (module docstring).

    ``unit_masks[i]``: bool ``[units]`` of block i; ``synapse_masks[i]``: bool
    ``[units, pre_units]`` (a pruner's own synapse masks or its ``synapse_mask(i)``: dead
    units are folded in either way). None: nothing pruned. ``net`` is not changed; the
    copy is on the same device, in the same train/eval mode."""
    blocks = list(net.blocks)
    unit_masks = _check_masks(net, unit_masks, synapse_masks)
    live = live_synapses(net, unit_masks, synapse_masks)
    kept: list[Tensor] = []
    for i, block in enumerate(blocks):
        units = block.units
        alive = unit_masks[i].bool().cpu() if unit_masks is not None else torch.ones(units, dtype=torch.bool)
        if block.is_output:
            rows = torch.arange(units)
        else:
            rows = alive.nonzero().flatten()
            if rows.numel() == 0:  # a layer cannot be empty: keep one dead unit (zero weights)
                rows = torch.zeros(1, dtype=torch.long)
        kept.append(rows)

    new_blocks, new_units, new_synapses = [], [], []
    for i, block in enumerate(blocks):
        rows = kept[i]
        cols = _input_columns(block, kept[i - 1] if i > 0 else None)
        alive = unit_masks[i].bool().cpu()[rows] if unit_masks is not None else torch.ones(len(rows), dtype=torch.bool)
        syn = live[i][rows][:, cols]
        new_blocks.append(_compact_block(block, rows, cols, live[i], i))
        new_units.append(alive)
        new_synapses.append(syn)

    out = SpikingNetwork(new_blocks, net.input_shape, net.num_classes, net.kind, net.time_steps, compact_arch(new_blocks))
    out.time_steps = net.time_steps
    out.train(net.training)
    return CompactNetwork(out, kept, new_units, new_synapses)


def compact_pruned(pruner: "Pruner") -> CompactNetwork:
    """:func:`compact` with the masks of ``pruner`` (its network, as it is now)."""
    n = len(pruner.net.blocks)
    return compact(pruner.net, [pruner.unit_mask(i) for i in range(n)], [pruner.synapse_mask(i) for i in range(n)])


@torch.no_grad()
def expand(net: SpikingNetwork, kept: Sequence[Tensor], template: SpikingNetwork) -> SpikingNetwork:
    """The inverse of :func:`compact`: a copy of ``template`` (a network with the larger
    shapes, e.g. the dense one; its values are not used) holding ``net``'s parameters and
    BN statistics at the units ``kept[i]`` of each block, and a removed unit's weights,
    bias and BN affine terms at 0 (its BN running mean 0, variance 1): the masked network
    that ``net`` was compacted from, up to the values of what was dead."""
    if len(kept) != len(net.blocks) or len(template.blocks) != len(net.blocks):
        raise CompactionError(f"expand: {len(net.blocks)} blocks, {len(kept)} kept index sets, a template of {len(template.blocks)} blocks")
    out = copy.deepcopy(template)
    for i, (small, big) in enumerate(zip(net.blocks, out.blocks)):
        w = big.synapse.weight
        rows = kept[i].to(w.device)
        cols = _input_columns(big, kept[i - 1] if i > 0 else None).to(w.device)
        if tuple(small.synapse.weight.shape) != (len(rows), len(cols), *w.shape[2:]):
            raise CompactionError(
                f"expand: block {i} has weight {tuple(small.synapse.weight.shape)}, the kept units and inputs need "
                f"{(len(rows), len(cols), *w.shape[2:])}"
            )
        w.zero_()
        w[rows[:, None], cols[None, :]] = small.synapse.weight.to(w)
        if big.synapse.bias is not None:
            big.synapse.bias.zero_()
            big.synapse.bias[rows] = small.synapse.bias.to(w)
        if big.norm is not None:
            bn, src = big.norm, small.norm
            if bn.affine:
                bn.weight.zero_()
                bn.bias.zero_()
                bn.weight[rows] = src.weight.to(bn.weight)
                bn.bias[rows] = src.bias.to(bn.bias)
            if bn.track_running_stats and bn.running_mean is not None:
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0)
                bn.running_mean[rows] = src.running_mean.to(bn.running_mean)
                bn.running_var[rows] = src.running_var.to(bn.running_var)
                bn.num_batches_tracked.copy_(src.num_batches_tracked)
    out.time_steps = net.time_steps
    out.train(net.training)
    return out


def input_columns(block: Block, prev_kept: Optional[Tensor]) -> Tensor:
    """Input columns of ``block`` that read the units ``prev_kept`` of the previous block
    (every column of the first block, ``prev_kept`` None; an FC layer after a conv block:
    each kept channel's ``in_spatial`` positions, channel-major as ``flatten`` lays them out)."""
    return _input_columns(block, prev_kept)


# ----------------------------------------------------------------------- internals


def _check_masks(net: SpikingNetwork, unit_masks, synapse_masks) -> Optional[list[Tensor]]:
    n = len(net.blocks)
    for name, masks in (("unit_masks", unit_masks), ("synapse_masks", synapse_masks)):
        if masks is not None and len(masks) != n:
            raise CompactionError(f"{name}: {len(masks)} masks for a network of {n} blocks; give one per block")
    for i, block in enumerate(net.blocks):
        units, pre_units = block.synapse.weight.shape[:2]
        if unit_masks is not None and tuple(unit_masks[i].shape) != (units,):
            raise CompactionError(f"unit_masks[{i}]: shape {tuple(unit_masks[i].shape)}, block {i} has {units} units; use masks of this network")
        if synapse_masks is not None and tuple(synapse_masks[i].shape) != (units, pre_units):
            raise CompactionError(
                f"synapse_masks[{i}]: shape {tuple(synapse_masks[i].shape)}, block {i} needs ({units}, {pre_units}); use masks of this network"
            )
        if isinstance(block.synapse, nn.Conv2d) and block.synapse.groups != 1:
            raise CompactionError(f"block {i}: grouped convolutions cannot be compacted")
    return list(unit_masks) if unit_masks is not None else None


def _input_columns(block: Block, prev_kept: Optional[Tensor]) -> Tensor:
    """Input columns of ``block`` read from the kept units of the previous block (every
    column of the first block; an FC layer after a conv block: each kept channel's
    ``in_spatial`` positions, channel-major as ``flatten`` lays them out)."""
    pre_units = block.synapse.weight.shape[1]
    if prev_kept is None:
        return torch.arange(pre_units)
    if block.in_spatial > 1:
        return (prev_kept[:, None] * block.in_spatial + torch.arange(block.in_spatial)[None, :]).flatten()
    return prev_kept


@torch.no_grad()
def _compact_block(block: Block, rows: Tensor, cols: Tensor, live: Tensor, index: int) -> Block:
    syn = block.synapse
    w = syn.weight
    dev_rows, dev_cols = rows.to(w.device), cols.to(w.device)
    mask = live.to(device=w.device, dtype=w.dtype)
    mask = mask.view(*mask.shape, *([1] * (w.dim() - 2)))
    weight = (w * mask).index_select(0, dev_rows).index_select(1, dev_cols)
    has_bias = syn.bias is not None
    if isinstance(syn, nn.Conv2d):
        new_syn: nn.Module = skip_init(
            nn.Conv2d, len(cols), len(rows), syn.kernel_size, syn.stride, syn.padding, syn.dilation, 1, has_bias, syn.padding_mode,
            device=w.device, dtype=w.dtype,
        )
    elif isinstance(syn, nn.Linear):
        new_syn = skip_init(nn.Linear, len(cols), len(rows), has_bias, device=w.device, dtype=w.dtype)
    else:
        raise CompactionError(f"block {index}: cannot compact a {type(syn).__name__} synapse (conv or FC only)")
    new_syn.weight.copy_(weight)
    new_syn.weight.requires_grad_(w.requires_grad)
    if has_bias:
        new_syn.bias.copy_(syn.bias.index_select(0, dev_rows))
        new_syn.bias.requires_grad_(syn.bias.requires_grad)
    norm = None
    if block.norm is not None:
        norm = _compact_norm(block.norm, dev_rows, index)
    return Block(new_syn, norm, copy.deepcopy(block.neuron), [copy.deepcopy(m) for m in block.post], block.flatten, block.in_spatial, block.is_output)


def _compact_norm(bn: nn.Module, rows: Tensor, index: int) -> nn.Module:
    if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        raise CompactionError(f"block {index}: cannot compact a {type(bn).__name__} normalisation (BatchNorm only)")
    ref = bn.weight if bn.affine else bn.running_mean
    device = ref.device if ref is not None else rows.device
    dtype = ref.dtype if ref is not None else None
    new = skip_init(type(bn), len(rows), bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device=device, dtype=dtype)
    if bn.affine:
        new.weight.copy_(bn.weight.index_select(0, rows))
        new.bias.copy_(bn.bias.index_select(0, rows))
        new.weight.requires_grad_(bn.weight.requires_grad)
        new.bias.requires_grad_(bn.bias.requires_grad)
    if bn.track_running_stats and bn.running_mean is not None:
        new.running_mean.copy_(bn.running_mean.index_select(0, rows))
        new.running_var.copy_(bn.running_var.index_select(0, rows))
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def compact_arch(blocks: Sequence[Block]) -> str:
    """The architecture string (paper notation) of ``blocks``: ``8C3-AP2-20C3-AP2-150FC-10FC``
    for a compacted ``mnist-snn``. :func:`~dpap.snn.networks.build_network` of it has the
    compact network's shapes."""
    tokens = []
    for block in blocks:
        syn = block.synapse
        if isinstance(syn, nn.Conv2d):
            k = syn.kernel_size[0]
            tokens.append(f"{syn.out_channels}C{k}")
        else:
            tokens.append(f"{syn.out_features}FC")
        if block.norm is not None:
            tokens.append("BN")
        for m in block.post:
            if isinstance(m, (nn.AvgPool2d, AvgPool2d)):
                tokens.append(f"AP{_size(m.kernel_size)}")
            elif isinstance(m, nn.MaxPool2d):
                tokens.append(f"MP{_size(m.kernel_size)}")
            elif isinstance(m, nn.Dropout):
                tokens.append(f"DO{round(m.p * 100)}")
    return "-".join(tokens)


def _size(k) -> int:
    return k if isinstance(k, int) else k[0]
