"""The DPAP pruner: attaches to a network, observes it, owns θ, accumulators, survival
functions and masks, and applies the masks (the *mechanics*).

Data flows one way: batch → network → spikes per layer → traces (reduced at once,
memory independent of T) → importance accumulators → once per epoch survival update
(:mod:`dpap.survival`) → masks → weights.

Pruning is permanent and exact: call :meth:`DPAPPruner.apply_masks` after every
optimizer step (the training loop does) and a pruned synapse, and every weight, bias and
BatchNorm affine term of a pruned neuron or channel, is exactly 0 again; a pruned unit's
input current is therefore 0 and it never fires (LIF) or outputs 0 (ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .config import DPAPConfig
from .importance import (
    SlidingThreshold,
    bcm,
    dendritic_spine,
    dendritic_spine_reference,
    hebb,
    population,
    spike_trace,
    static_trace,
    stdp,
)
from .networks import Block, SpikingNetwork
from .survival import SurvivalFunction, decay_factor


@dataclass
class LayerReport:
    """What one layer looks like after an epoch's survival update."""

    index: int
    layer_type: str
    units: int
    units_alive: int
    synapses: int
    synapses_alive: int
    died_units: int
    died_synapses: int


class LayerState:
    """DPAP state of one block: θ, epoch accumulators, survival functions, masks."""

    def __init__(self, index: int, block: Block, cfg: DPAPConfig, device):
        self.index = index
        self.layer_type = block.layer_type
        self.is_output = block.is_output
        self.in_spatial = block.in_spatial
        w = block.synapse.weight
        self.units = w.shape[0]
        # pre-synaptic populations: input channels (conv) or input features (fc)
        self.pre_units = w.shape[1]
        self.knobs = cfg.resolved(self.layer_type)
        self.theta = SlidingThreshold(self.units, device)
        self.importance = torch.zeros(self.units, self.pre_units, device=device, dtype=torch.float64)
        self.post_sum = torch.zeros(self.units, device=device, dtype=torch.float64)
        # conv layers are pruned a channel at a time; FC layers lose synapses and neurons;
        # the output layer never loses neurons and loses synapses only if asked.
        self.prune_units = not self.is_output
        self.prune_synapses = self.layer_type == "fc" and (not self.is_output or cfg.prune_output)
        self.unit_survival = SurvivalFunction((self.units,), self.knobs.beta, device)
        self.synapse_survival = SurvivalFunction((self.units, self.pre_units), self.knobs.beta, device) if self.prune_synapses else None

    def reset_epoch(self) -> None:
        self.importance.zero_()
        self.post_sum.zero_()

    def state_dict(self) -> dict:
        return {
            "theta": self.theta.state_dict(),
            "importance": self.importance.clone(),
            "post_sum": self.post_sum.clone(),
            "unit_survival": self.unit_survival.state_dict(),
            "synapse_survival": self.synapse_survival.state_dict() if self.synapse_survival else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.theta.load_state_dict(state["theta"])
        self.importance.copy_(state["importance"])
        self.post_sum.copy_(state["post_sum"])
        self.unit_survival.load_state_dict(state["unit_survival"])
        if self.synapse_survival is not None:
            self.synapse_survival.load_state_dict(state["synapse_survival"])


class DPAPPruner:
    """Developmental plasticity-inspired adaptive pruning of a :class:`SpikingNetwork`.

    >>> pruner = DPAPPruner(net, cfg.dpap)          # attaches an observer
    >>> for x, y in batches:
    ...     loss = ...; loss.backward()
    ...     pruner.mask_gradients(); opt.step(); pruner.apply_masks()
    >>> reports = pruner.end_epoch(epoch)            # Eq. 10-17, prunes F < 0

    Importance is accumulated only while the network is in training mode and
    :attr:`observing` is true."""

    def __init__(self, net: SpikingNetwork, cfg: DPAPConfig):
        self.net = net
        self.cfg = cfg
        self.reference = cfg.protocol == "reference"
        self.observing = True
        device = next(net.parameters()).device
        self.layers = [LayerState(i, b, cfg, device) for i, b in enumerate(net.blocks)]
        self._weight_masks: list[Optional[Tensor]] = [None] * len(self.layers)
        self._remove = net.observe(self._observe)
        self._refresh_masks()

    def detach(self) -> None:
        """Stop observing the network (masks already applied stay applied)."""
        self._remove()

    # ------------------------------------------------------------------ observation

    def _trace(self, x: Tensor, conv: bool, T: int) -> Tensor:
        tau, avg = self.cfg.tau, self.reference
        if x.dim() == (4 if conv else 2):  # static input, held over T steps
            return static_trace(x, tau, T, conv, avg)
        return spike_trace(x, tau, conv, avg)

    @torch.no_grad()
    def _observe(self, index: int, block: Block, pre: Tensor, post: Tensor) -> None:
        if not (self.observing and self.net.training):
            return
        layer = self.layers[index]
        conv = layer.layer_type == "conv"
        T = post.shape[0]
        if block.is_output and self.net.kind == "dnn":
            post = torch.relu(post)  # logits stand in for an activation (Eq. 18)
        post_tr = self._trace(post, conv, T)
        layer.post_sum += post_tr.sum(0)  # float64 += float32: promoted in place, no temporary
        rule = self.cfg.importance
        if rule == "stdp":
            pre_seq = population(pre, conv)
            if pre_seq.dim() == 2:
                pre_seq = pre_seq.unsqueeze(0).expand(T, *pre_seq.shape)
            layer.importance += stdp(pre_seq, population(post, conv), self.cfg.tau).to(torch.float64)
            return
        pre_tr = self._trace(pre, conv, T)
        if rule == "hebb":
            layer.importance += hebb(pre_tr, post_tr).to(torch.float64)
        else:
            theta = layer.theta.update(post_tr)
            layer.importance += bcm(pre_tr, post_tr, theta)

    # -------------------------------------------------------------------- decision

    def end_epoch(self, epoch: int) -> list[LayerReport]:
        """Eq. 10-17 for every layer: update the survival functions from the epoch's
        importance and prune every synapse and unit whose survival fell below 0.

        ``epoch`` counts from 0. Resets the epoch accumulators (θ is kept)."""
        reports = []
        start = self.cfg.resolved_start_epoch()
        for layer in self.layers:
            k = layer.knobs
            factor = decay_factor(epoch, k.eta, start, step=self.reference)
            died_syn = died_units = 0
            unit_alive_before = layer.unit_survival.alive.clone()
            if layer.synapse_survival is not None:
                norm = self.cfg.normalization or ("percentile75" if self.reference else "minmax")
                died = layer.synapse_survival.step(
                    layer.importance, epsilon=k.epsilon, protect=k.protect, gamma=self.cfg.gamma, factor=factor,
                    normalization=norm, eligible=unit_alive_before[:, None].expand_as(layer.synapse_survival.alive),
                )
                died_syn = int(died.sum())
            if layer.prune_units:
                if self.reference:
                    spine = dendritic_spine_reference(layer.post_sum, layer.importance)
                    norm = self.cfg.normalization or ("minmax" if layer.layer_type == "conv" else "percentile75")
                else:
                    spine = dendritic_spine(layer.post_sum, layer.importance)
                    norm = self.cfg.normalization or "minmax"
                died = layer.unit_survival.step(spine, epsilon=k.epsilon, protect=k.protect, gamma=self.cfg.gamma, factor=factor, normalization=norm)
                died_units = int(died.sum())
            layer.reset_epoch()
            alive_units = layer.unit_survival.alive
            syn = layer.synapse_survival.alive if layer.synapse_survival is not None else torch.ones(layer.units, layer.pre_units, dtype=torch.bool, device=alive_units.device)
            syn_alive = int((syn & alive_units[:, None]).sum())
            reports.append(LayerReport(layer.index, layer.layer_type, layer.units, int(alive_units.sum()), layer.units * layer.pre_units, syn_alive, died_units, died_syn))
        self._refresh_masks()
        self.apply_masks()
        return reports

    # ------------------------------------------------------------------- mechanics

    def unit_mask(self, index: int) -> Tensor:
        """Alive neurons/channels of block ``index`` (bool ``[units]``)."""
        return self.layers[index].unit_survival.alive

    def synapse_mask(self, index: int) -> Tensor:
        """Alive synapses of block ``index`` (bool ``[units, pre_units]``), its dead
        neurons' rows included as dead."""
        layer = self.layers[index]
        alive = layer.unit_survival.alive[:, None]
        if layer.synapse_survival is None:
            return alive.expand(layer.units, layer.pre_units).clone()
        return layer.synapse_survival.alive & alive

    def _refresh_masks(self) -> None:
        for i, (layer, block) in enumerate(zip(self.layers, self.net.blocks)):
            w = block.synapse.weight
            if layer.synapse_survival is None and bool(layer.unit_survival.alive.all()):
                self._weight_masks[i] = None
                continue
            alive = self.synapse_mask(i)
            if bool(alive.all()):  # nothing pruned in this layer yet: masking would be a no-op
                self._weight_masks[i] = None
                continue
            m = alive.to(w.dtype)
            self._weight_masks[i] = m.view(*m.shape, *([1] * (w.dim() - 2))).expand_as(w).contiguous() if w.dim() > 2 else m

    def _params_and_masks(self):
        for layer, block, wmask in zip(self.layers, self.net.blocks, self._weight_masks):
            if wmask is None:
                continue
            yield block.synapse.weight, wmask
            unit = layer.unit_survival.alive
            if bool(unit.all()):
                continue
            unit = unit.to(block.synapse.weight.dtype)
            if block.synapse.bias is not None:
                yield block.synapse.bias, unit
            if block.norm is not None and block.norm.affine:
                yield block.norm.weight, unit
                yield block.norm.bias, unit

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight, bias and BN affine term (once per optimizer step)."""
        for p, m in self._params_and_masks():
            p.mul_(m)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned parameters (before the optimizer step), so
        momentum and adaptive moments of pruned entries do not build up."""
        for p, m in self._params_and_masks():
            if p.grad is not None:
                p.grad.mul_(m)

    # ------------------------------------------------------------------- inspection

    def survival_values(self) -> dict[str, Tensor]:
        """Survival values of living units/synapses per layer, for histograms."""
        out = {}
        for layer in self.layers:
            if layer.prune_units:
                out[f"layer{layer.index}.{layer.layer_type}.units"] = layer.unit_survival.values[layer.unit_survival.alive].cpu()
            if layer.synapse_survival is not None:
                s = layer.synapse_survival
                out[f"layer{layer.index}.{layer.layer_type}.synapses"] = s.values[s.alive].cpu()
        return out

    def masks(self) -> dict[str, Tensor]:
        """Boolean masks per layer: ``layer{i}.units`` and ``layer{i}.synapses``."""
        out = {}
        for i in range(len(self.layers)):
            out[f"layer{i}.units"] = self.unit_mask(i).cpu()
            out[f"layer{i}.synapses"] = self.synapse_mask(i).cpu()
        return out

    # -------------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {"layers": [layer.state_dict() for layer in self.layers], "protocol": self.cfg.protocol}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"pruner state has {len(state['layers'])} layers, the network {len(self.layers)}")
        for layer, s in zip(self.layers, state["layers"]):
            layer.load_state_dict(s)
        self._refresh_masks()
        self.apply_masks()
