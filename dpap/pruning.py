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
from .survival import SurvivalFunction, cap_deaths, decay_factor


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

    def to(self, device) -> None:
        self.theta.to(device)
        self.importance = self.importance.to(device)
        self.post_sum = self.post_sum.to(device)
        self.unit_survival.to(device)
        if self.synapse_survival is not None:
            self.synapse_survival.to(device)

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
        self.gradual = cfg.protocol == "gradual"
        self.observing = True
        self.device = next(net.parameters()).device
        self.layers = [LayerState(i, b, cfg, self.device) for i, b in enumerate(net.blocks)]
        self._weight_masks: list[Optional[Tensor]] = [None] * len(self.layers)
        self._unit_masks: list[Optional[Tensor]] = [None] * len(self.layers)  # None: all alive
        self._prev_post: Optional[Tensor] = None  # the previous block's neurons' output
        self._prev_trace: Optional[Tensor] = None  # ... and its trace (pre-pooling)
        self._remove = net.observe(self._observe)
        self._refresh_masks()

    def detach(self) -> None:
        """Stop observing the network (masks already applied stay applied)."""
        self._remove()

    def to(self, device) -> "DPAPPruner":
        """Move θ, accumulators, survival functions and masks to ``device``. Called by
        itself whenever the network has moved (``net.to(device)`` after attaching)."""
        device = torch.device(device)
        for layer in self.layers:
            layer.to(device)
        self.device = device
        self._refresh_masks()
        return self

    def _follow(self) -> None:
        device = self.net.blocks[0].synapse.weight.device
        if device != self.device:
            self.to(device)

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
        self._follow()
        layer = self.layers[index]
        conv = layer.layer_type == "conv"
        T = post.shape[0]
        if block.is_output and self.net.kind == "dnn":
            post = torch.relu(post)  # logits stand in for an activation (Eq. 18)
        post_tr = self._trace(post, conv, T)
        layer.post_sum += post_tr.sum(0)  # float64 += float32: promoted in place, no temporary
        # A conv synapse links channel c_in of the previous layer to c_out (Eq. 6): its
        # pre-synaptic trace is the previous layer's channel trace, over all N×N neurons
        # of the channel *before* pooling (what the pre-synaptic neurons fired). An FC
        # synapse reads one input column: its pre-synaptic trace is that column's (after
        # pooling and flattening, what the synapse transmits).
        from_prev = conv and index > 0 and self._prev_trace is not None
        prev_post, prev_trace = self._prev_post, self._prev_trace
        self._prev_post, self._prev_trace = post, post_tr
        rule = self.cfg.importance
        if rule == "stdp":
            pre_seq = population(prev_post if from_prev else pre, conv)
            if pre_seq.dim() == 2:
                pre_seq = pre_seq.unsqueeze(0).expand(T, *pre_seq.shape)
            layer.importance += stdp(pre_seq, population(post, conv), self.cfg.tau).to(torch.float64)
            return
        pre_tr = prev_trace if from_prev else self._trace(pre, conv, T)
        if rule == "hebb":
            layer.importance += hebb(pre_tr, post_tr).to(torch.float64)
        else:
            theta = layer.theta.update(post_tr)
            layer.importance += bcm(pre_tr, post_tr, theta)

    # -------------------------------------------------------------------- decision

    def _unit_cost(self, index: int, before: list[Tensor], budgets: list[Optional[int]]) -> dict:
        """What each unit of block ``index`` would take with it if it died now (its living
        synapses in this block and in the next) and what is left of those two blocks'
        synapse budgets this epoch: arguments for :func:`cap_deaths`."""
        if budgets[index] is None:
            return {}
        here = self.synapse_mask(index)
        rows = here.sum(1)
        left = [budgets[index] - (int(before[index].sum()) - int(here.sum()))]
        cost = [rows]
        if index + 1 < len(self.layers):
            nxt = self.synapse_mask(index + 1)
            spatial = self.net.blocks[index + 1].in_spatial
            cost.append(nxt.sum(0).view(self.layers[index].units, spatial).sum(1))
            left.append(budgets[index + 1] - (int(before[index + 1].sum()) - int(nxt.sum())))
        # a unit bigger than the whole budget may die alone, in an epoch nothing else took from it
        untouched = all(l == budgets[index + j] for j, l in enumerate(left))
        return {"cost": torch.stack(cost, 1), "budget": torch.tensor(left, dtype=torch.float64), "at_least_one": untouched}

    def end_epoch(self, epoch: int) -> list[LayerReport]:
        """Eq. 10-17 for every layer: update the survival functions from the epoch's
        importance and prune every synapse and unit whose survival fell below 0.

        Units (neurons, channels) are decided first, then the synapses of the living ones.
        With ``max_death_share`` s < 1, no block loses more than s of its living synapses
        in one epoch, whatever removes them (their own survival, the death of the unit
        they feed or of the unit they read), and no more than s of its living units die;
        the candidates with the lowest survival go first. ``epoch`` counts from 0. Resets
        the epoch accumulators (θ is kept)."""
        self._follow()
        self._prev_post = self._prev_trace = None
        start = self.cfg.resolved_start_epoch()
        norm = self.cfg.resolved_normalization()
        ceiling_on = self.cfg.resolved_bounded()
        share = self.cfg.resolved_max_death_share()
        before = [self.synapse_mask(i) for i in range(len(self.layers))]
        budgets = [int(share * int(b.sum())) if share < 1.0 else None for b in before]
        died_units = [0] * len(self.layers)
        died_syn = [0] * len(self.layers)
        for layer in self.layers:
            i, k = layer.index, layer.knobs
            ceiling = k.beta if ceiling_on else None
            factor = decay_factor(epoch, k.eta, start, step=self.reference)
            knobs = dict(epsilon=k.epsilon, protect=k.protect, gamma=self.cfg.gamma, factor=factor, ceiling=ceiling)
            if layer.prune_units:
                if self.reference:
                    spine = dendritic_spine_reference(layer.post_sum, layer.importance)
                    unit_norm = self.cfg.normalization or ("minmax" if layer.layer_type == "conv" else "percentile75")
                else:
                    # gradual: a neuron's spine sums the BCM of its living synapses only, so a
                    # neuron that lost synapses is weaker (the paper's Fig. 4 observation)
                    synaptic = layer.importance * before[i] if self.gradual else layer.importance
                    spine = dendritic_spine(layer.post_sum, synaptic)
                    unit_norm = norm
                sf = layer.unit_survival
                live = sf.update(spine, normalization=unit_norm, **knobs)
                if live is not None:
                    most = None if share >= 1.0 else max(1, int(share * int(live.sum())))
                    died = cap_deaths(sf.values, sf.candidates(live), most, **self._unit_cost(i, before, budgets))
                    sf.kill(died)
                    died_units[i] = int(died.sum())
            if layer.synapse_survival is not None:
                # a synapse competes while it, its post-synaptic unit and its pre-synaptic
                # unit live (this epoch's unit deaths included)
                eligible = self.synapse_mask(i)
                sf = layer.synapse_survival
                live = sf.update(layer.importance, normalization=norm, eligible=eligible, **knobs)
                if live is not None:
                    most = None if budgets[i] is None else max(0, budgets[i] - (int(before[i].sum()) - int(eligible.sum())))
                    died = cap_deaths(sf.values, sf.candidates(live), most)
                    sf.kill(died)
                    died_syn[i] = int(died.sum())
        reports = []
        for layer in self.layers:
            layer.reset_epoch()
            reports.append(self._report(layer, died_units[layer.index], died_syn[layer.index]))
        self._refresh_masks()
        self.apply_masks()
        return reports

    def _report(self, layer: LayerState, died_units: int, died_synapses: int) -> LayerReport:
        alive_units = layer.unit_survival.alive
        syn_alive = int(self.synapse_mask(layer.index).sum())
        return LayerReport(layer.index, layer.layer_type, layer.units, int(alive_units.sum()), layer.units * layer.pre_units, syn_alive, died_units, died_synapses)

    # ------------------------------------------------------------------- mechanics

    def unit_mask(self, index: int) -> Tensor:
        """Alive neurons/channels of block ``index`` (bool ``[units]``)."""
        return self.layers[index].unit_survival.alive

    def input_mask(self, index: int) -> Tensor:
        """Alive inputs of block ``index`` (bool ``[pre_units]``): the previous block's
        living units (an FC layer after a conv block: every position of a living channel);
        all inputs of the first block."""
        layer = self.layers[index]
        if index == 0:
            return torch.ones(layer.pre_units, dtype=torch.bool, device=self.unit_mask(0).device)
        prev = self.unit_mask(index - 1)
        spatial = self.net.blocks[index].in_spatial
        return prev.repeat_interleave(spatial) if spatial > 1 else prev

    def synapse_mask(self, index: int) -> Tensor:
        """Alive synapses of block ``index`` (bool ``[units, pre_units]``): the one
        definition of a living synapse everywhere (masks, compression, survival values,
        MLflow): its own survival function (FC layers), its post-synaptic unit and its
        pre-synaptic unit all alive."""
        layer = self.layers[index]
        alive = layer.unit_survival.alive[:, None] & self.input_mask(index)[None, :]
        if layer.synapse_survival is None:
            return alive
        return layer.synapse_survival.alive & alive

    def _refresh_masks(self) -> None:
        for i, (layer, block) in enumerate(zip(self.layers, self.net.blocks)):
            w = block.synapse.weight
            alive = self.synapse_mask(i)
            units = layer.unit_survival.alive
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
            if unit is None:
                continue
            if block.synapse.bias is not None:
                yield block.synapse.bias, unit
            if block.norm is not None and block.norm.affine:
                yield block.norm.weight, unit
                yield block.norm.bias, unit

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight, bias and BN affine term (once per optimizer step)."""
        self._follow()
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
        """Survival values of living units/synapses per layer (alive as in
        :meth:`synapse_mask`), for histograms."""
        out = {}
        for layer in self.layers:
            if layer.prune_units:
                out[f"layer{layer.index}.{layer.layer_type}.units"] = layer.unit_survival.values[layer.unit_survival.alive].cpu()
            if layer.synapse_survival is not None:
                out[f"layer{layer.index}.{layer.layer_type}.synapses"] = layer.synapse_survival.values[self.synapse_mask(layer.index)].cpu()
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
        self._follow()
        for layer, s in zip(self.layers, state["layers"]):
            layer.load_state_dict(s)
        self._refresh_masks()
        self.apply_masks()
