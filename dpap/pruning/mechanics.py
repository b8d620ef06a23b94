"""The mechanics of pruning: masks, and how they are applied (no decision here).

A :class:`Pruner` attaches to a :class:`~dpap.snn.networks.SpikingNetwork`, forwards what the
network does (each block's input and output, every training batch) to a
:class:`~dpap.pruning.method.PruningMethod`, and once per epoch asks the method which
units and synapses die (or, for methods that regenerate, come back). It owns the masks:

* ``units[i]``: bool ``[units]``, the living neurons (FC) or channels (conv) of block i;
* ``synapses[i]``: bool ``[units, pre_units]``, the synapses not pruned on their own (an
  FC synapse, or a conv kernel: one input channel of one output channel).

A synapse *lives* when its own mask, its post-synaptic unit and its pre-synaptic unit (the
neuron of the previous FC layer, or the channel of the previous conv layer feeding that
column) are alive: :meth:`Pruner.synapse_mask`, the one definition used by the masks
applied to the weights, compression, synaptic operations and MLflow.

Masks are exact: :meth:`Pruner.apply_masks` after every optimizer step (the training loop
does) sets every dead weight, and the bias and BatchNorm affine terms of every dead unit,
to exactly 0, so a dead unit receives no current and never fires (LIF) or outputs 0
(ReLU); :meth:`Pruner.mask_gradients` before the step keeps optimizer moments of dead
entries at rest. A mask may turn back on (regeneration): the weight then starts from the
value the method gives it (0 unless it sets one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from dpap.pruning.method import PruningMethod
from dpap.snn.networks import Block, SpikingNetwork


@dataclass(frozen=True)
class LayerInfo:
    """Geometry of one block, as a pruning method sees it."""

    index: int
    layer_type: str  # conv | fc
    is_output: bool
    units: int
    pre_units: int
    in_spatial: int
    """Input columns per unit of the previous block (an FC layer after a conv block: H·W)."""
    reads_input: bool = False
    """The block reads the network's input (a network's first block; in a model
    ``dpap.attach`` found, a layer whose input is the model's own)."""


@dataclass
class LayerReport:
    """What one layer looks like after an epoch's decision."""

    index: int
    layer_type: str
    units: int
    units_alive: int
    synapses: int
    synapses_alive: int
    died_units: int
    died_synapses: int
    restored_synapses: int = 0


class Pruner:
    """Masks of a network and their application; decisions come from ``method``.

    >>> pruner = Pruner(net, DPAPMethod(cfg.pruning.dpap))   # attaches an observer
    >>> for x, y in batches:
    ...     loss = ...; loss.backward()
    ...     pruner.mask_gradients(); opt.step(); pruner.apply_masks()
    >>> reports = pruner.end_epoch(epoch)

    Activity is forwarded to the method only while the network is in training mode and
    :attr:`observing` is true."""

    def __init__(self, net: SpikingNetwork, method: "PruningMethod"):
        self.net = net
        self.method = method
        self.observing = True
        self.device = next(net.parameters()).device
        self.layers = [
            LayerInfo(i, b.layer_type, b.is_output, b.synapse.weight.shape[0], b.synapse.weight.shape[1], b.in_spatial,
                      getattr(b, "reads_input", i == 0))
            for i, b in enumerate(net.blocks)
        ]
        self.units = [torch.ones(l.units, dtype=torch.bool, device=self.device) for l in self.layers]
        self.synapses = [torch.ones(l.units, l.pre_units, dtype=torch.bool, device=self.device) for l in self.layers]
        self._weight_masks: list[Optional[Tensor]] = [None] * len(self.layers)
        self._unit_masks: list[Optional[Tensor]] = [None] * len(self.layers)  # None: all alive
        self._died_units = [0] * len(self.layers)
        self._died_synapses = [0] * len(self.layers)
        self._restored = [0] * len(self.layers)
        self.last_reports: list[LayerReport] = []
        self.reduce = None
        """Data-parallel training: an in-place sum over the ranks (:mod:`dpap.training.distributed`);
        the method's statistics go through it, so every rank decides the same."""
        method.attach(self)
        self._remove = net.observe(self._observe, training_only=True)
        self.refresh_masks()

    def detach(self) -> None:
        """Stop observing the network (masks already applied stay applied)."""
        self._remove()

    def reattach(self) -> None:
        """Observe the network again after :meth:`detach`."""
        self._remove()
        self._remove = self.net.observe(self._observe, training_only=True)

    # ------------------------------------------------------------------ device

    def to(self, device) -> "Pruner":
        """Move masks and the method's state to ``device``. Done by the pruner itself
        whenever the network has moved (``net.to(device)`` after attaching)."""
        device = torch.device(device)
        self.units = [u.to(device) for u in self.units]
        self.synapses = [s.to(device) for s in self.synapses]
        self.method.to(device)
        self.device = device
        self.refresh_masks()
        return self

    def _follow(self) -> None:
        device = self.net.blocks[0].synapse.weight.device
        if device != self.device:
            self.to(device)

    # ------------------------------------------------------------------ observation

    @torch.no_grad()
    def _observe(self, index: int, block: Block, pre: Tensor, post: Tensor) -> None:
        if not (self.observing and self.net.training):
            return
        self._follow()
        self.method.observe(self, index, block, pre, post)

    # --------------------------------------------------------------------- decision

    def end_epoch(self, epoch: int) -> list[LayerReport]:
        """Let the method decide for the epoch just trained (``epoch`` counts from 0),
        then refresh and apply the masks. Returns one report per block."""
        self._follow()
        self._died_units = [0] * len(self.layers)
        self._died_synapses = [0] * len(self.layers)
        self._restored = [0] * len(self.layers)
        if self.reduce is not None:
            self.method.reduce_statistics(self, self.reduce)
        self.method.end_epoch(self, epoch)
        self.refresh_masks()
        self._apply_masks()
        self.last_reports = [self._report(l) for l in self.layers]
        return self.last_reports

    def kill_units(self, index: int, died: Tensor) -> None:
        """Prune the units ``died`` (bool ``[units]``) of block ``index``."""
        new = died & self.units[index]
        self.units[index] &= ~new
        self._died_units[index] += int(new.sum())

    def kill_synapses(self, index: int, died: Tensor) -> None:
        """Prune the synapses ``died`` (bool ``[units, pre_units]``) of block ``index``."""
        new = died & self.synapses[index]
        self.synapses[index] &= ~new
        self._died_synapses[index] += int(new.sum())

    def restore_synapses(self, index: int, grown: Tensor, weights: Optional[Tensor] = None) -> None:
        """Regeneration: synapses ``grown`` of block ``index`` live again, and so does
        every unit they belong to. The weights of grown synapses are set from ``weights``
        (same shape as the layer's weight) where given, else to 0."""
        grown = grown & ~self.synapse_mask(index)
        if not bool(grown.any()):
            return
        self.synapses[index] |= grown
        self.units[index] |= grown.any(1)
        self._restored[index] += int(grown.sum())
        w = self.net.blocks[index].synapse.weight
        with torch.no_grad():
            m = grown.to(w.device)
            m = m.view(*m.shape, *([1] * (w.dim() - 2))).expand_as(w)
            w[m] = weights.to(w)[m] if weights is not None else 0.0

    def _report(self, layer: LayerInfo) -> LayerReport:
        i = layer.index
        return LayerReport(
            i, layer.layer_type, layer.units, int(self.units[i].sum()), layer.units * layer.pre_units, int(self.synapse_mask(i).sum()),
            self._died_units[i], self._died_synapses[i], self._restored[i],
        )

    # ------------------------------------------------------------------ the masks

    def unit_mask(self, index: int) -> Tensor:
        """Alive neurons/channels of block ``index`` (bool ``[units]``)."""
        return self.units[index]

    def input_mask(self, index: int) -> Tensor:
        """Alive inputs of block ``index`` (bool ``[pre_units]``): the previous block's
        living units (an FC layer after a conv block: every position of a living channel);
        all inputs of the first block. A block may name the block it reads, ``source``
        (:mod:`dpap.adapters`: None when no single block's units feed it, e.g. after a
        residual addition; then all its inputs)."""
        layer = self.layers[index]
        source = getattr(self.net.blocks[index], "source", index - 1)
        if source is None or source < 0:
            return torch.ones(layer.pre_units, dtype=torch.bool, device=self.units[0].device)
        prev = self.units[source]
        return prev.repeat_interleave(layer.in_spatial) if layer.in_spatial > 1 else prev

    def synapse_mask(self, index: int) -> Tensor:
        """Alive synapses of block ``index`` (bool ``[units, pre_units]``): its own mask,
        its post-synaptic unit and its pre-synaptic unit all alive."""
        return self.synapses[index] & self.units[index][:, None] & self.input_mask(index)[None, :]

    def masks(self) -> dict[str, Tensor]:
        """Boolean masks per layer: ``layer{i}.units`` and ``layer{i}.synapses``, copies
        (the unit masks change in place at the next death)."""
        out = {}
        for i in range(len(self.layers)):
            out[f"layer{i}.units"] = self.unit_mask(i).to("cpu", copy=True)
            out[f"layer{i}.synapses"] = self.synapse_mask(i).to("cpu", copy=True)
        return out

    def survival_values(self) -> dict[str, Tensor]:
        """The method's per-unit/per-synapse values of living entries, for histograms
        (what they are: ``method.value_name``)."""
        return self.method.values(self)

    def weight_mask(self, index: int) -> Tensor:
        """:meth:`synapse_mask` broadcast to the shape of block ``index``'s weight."""
        w = self.net.blocks[index].synapse.weight
        m = self.synapse_mask(index).to(w.device)
        return m.view(*m.shape, *([1] * (w.dim() - 2))).expand_as(w)

    def refresh_masks(self) -> None:
        """Rebuild the float masks applied to the weights from ``units``/``synapses``
        (after changing those directly)."""
        for i, block in enumerate(self.net.blocks):
            w = block.synapse.weight
            alive = self.synapse_mask(i)
            units = self.units[i]
            self._unit_masks[i] = None if bool(units.all()) else units.to(device=w.device, dtype=w.dtype)
            if bool(alive.all()):  # nothing pruned in this layer yet: masking would be a no-op
                self._weight_masks[i] = None
                continue
            m = alive.to(device=w.device, dtype=w.dtype)
            self._weight_masks[i] = m.view(*m.shape, *([1] * (w.dim() - 2))).expand_as(w).contiguous() if w.dim() > 2 else m

    def _params_and_masks(self):
        for block, wmask, unit in zip(self.net.blocks, self._weight_masks, self._unit_masks):
            if wmask is None:
                continue
            yield block.synapse.weight, wmask
            if unit is None or not self.method.silence_units:
                continue
            if block.synapse.bias is not None:
                yield block.synapse.bias, unit
            if block.norm is not None and block.norm.affine:
                yield block.norm.weight, unit
                yield block.norm.bias, unit

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight, bias and BN affine term (once per optimizer step; a
        no-op for a method that masks only at the end of an epoch). The method's
        :meth:`~dpap.pruning.method.PruningMethod.after_step` runs first."""
        self._follow()
        self.method.after_step(self)
        if self.method.masks_every_step:
            self._apply_masks()

    @torch.no_grad()
    def _apply_masks(self) -> None:
        self._follow()
        for p, m in self._params_and_masks():
            p.mul_(m)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned parameters (before the optimizer step), so
        momentum and adaptive moments of pruned entries do not build up. The method's
        :meth:`~dpap.pruning.method.PruningMethod.after_backward` runs first."""
        self._follow()
        self.method.after_backward(self)
        if not self.method.masks_every_step:
            return
        for p, m in self._params_and_masks():
            if p.grad is not None:
                p.grad.mul_(m)

    # -------------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {
            "method": self.method.name,
            "units": [u.clone() for u in self.units],
            "synapses": [s.clone() for s in self.synapses],
            "state": self.method.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.method.name:
            raise ValueError(f"pruner state is from method {state.get('method')!r}, this pruner runs {self.method.name!r}")
        if len(state["units"]) != len(self.layers):
            raise ValueError(f"pruner state has {len(state['units'])} layers, the network {len(self.layers)}")
        self._follow()
        self.units = [u.to(self.device).clone() for u in state["units"]]
        self.synapses = [s.to(self.device).clone() for s in state["synapses"]]
        self.method.load_state_dict(state["state"])
        self.method.to(self.device)
        self.refresh_masks()
        self._apply_masks()
