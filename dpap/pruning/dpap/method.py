"""DPAP as a pruning method: traces, BCM and dendritic spines decide through survival
functions (Eq. 5-17) which units and synapses die; no unit comes back (``regrow_share``
swaps synapses between living units after the last decision, at a fixed count).

Data flows one way: batch → network → spikes per layer → traces (reduced at once,
memory independent of T) → importance accumulators → once per epoch survival update
(:mod:`dpap.pruning.dpap.survival`) → deaths, told to the :class:`~dpap.pruning.Pruner`.

The protocols are variants of this one method (``pruning.dpap.protocol``, docs/pruning.md "Pruning
protocols"): ``gradual`` (default: rank normalisation, survival bounded by β, at most
``max_death_share`` of a layer lost per epoch, units decided before synapses, spines over
living synapses), ``paper`` (Eq. 12-17 as written) and ``reference`` (the authors' code:
75th-percentile normalisation, the spine as a product of normalised terms, the step decay
from epoch 5, traces averaged over T).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from dpap.pruning.compression import compression_of, unit_extras
from dpap.pruning.dpap.config import DPAPConfig
from dpap.pruning.dpap.importance import (
    bcm_post,
    dendritic_spine,
    dendritic_spine_reference,
    population,
    spike_trace,
    static_trace,
    stdp,
)
from dpap.pruning.dpap.state import LayerState
from dpap.pruning.dpap.survival import cap_deaths, decay_factor
from dpap.pruning.method import PruningMethod
from dpap.pruning.regrowth import GradientRegrowth, swap_share

if TYPE_CHECKING:  # pragma: no cover
    from dpap.snn.networks import Block
    from dpap.pruning.mechanics import Pruner


def conv_mode_of(cfg: DPAPConfig, net) -> str:
    """``channels`` or ``kernels``: how ``cfg`` prunes the conv layers of ``net`` (a
    network of blocks), from the share of its prunable parameters they hold
    (:meth:`DPAPConfig.resolved_conv_mode`)."""
    counts = compression_of(net).layers
    conv_share = sum(c.dense for c in counts if c.layer_type == "conv") / max(1, sum(c.dense for c in counts))
    return cfg.resolved_conv_mode(conv_share)


class DPAPMethod(PruningMethod):
    """Developmental plasticity-inspired adaptive pruning (``cfg``: ``params.yaml``'s
    ``dpap`` group)."""

    name = "dpap"

    def __init__(self, cfg: DPAPConfig, epochs: Optional[int] = None):
        self.cfg = cfg
        self.last_decision = cfg.last_decision_epoch(epochs)
        """The last epoch whose end decides (``end_fraction``); None: every epoch."""
        self.swaps = cfg.regrowth_swaps(epochs) if cfg.regrow_share is not None else 0
        """``regrow_share``: how many epochs after the last decision swap synapses."""
        self.regrowth: Optional[GradientRegrowth] = None
        """... and the swaps' gradients (built in :meth:`attach`)."""
        self.needs_dead_gradients = cfg.regrow_share is not None
        self.protocol = cfg.protocol
        self.reference = cfg.protocol == "reference"
        self.gradual = cfg.protocol == "gradual"
        self.layers: list[LayerState] = []
        self.conv_mode = "channels"
        self.kind = "snn"
        self._prev_pop: Optional[Tensor] = None  # the previous block's population activity [T, N, units]
        self._prev_trace: Optional[Tensor] = None  # ... and its trace (before pooling)
        self._waiting: Optional[tuple] = None  # a block whose observation waits for its pooled output
        self._retained_at_start = 0  # the network's retained parameters when this epoch's decision began

    def attach(self, pruner: "Pruner") -> None:
        self.kind = pruner.net.kind
        self.conv_mode = conv_mode_of(self.cfg, pruner.net)
        """``channels`` or ``kernels``: how this network's conv layers are pruned (``conv_mode``)."""
        self.layers = [LayerState(layer, self.cfg, pruner.device, self.conv_mode) for layer in pruner.layers]
        if self.cfg.regrow_share is not None:
            self.regrowth = GradientRegrowth(layer.index for layer in self.layers if layer.prune_synapses)

    def to(self, device) -> None:
        for layer in self.layers:
            layer.to(device)

    # ------------------------------------------------------------------ observation

    def _trace(self, x: Tensor, conv: bool, T: int) -> Tensor:
        tau, avg = self.cfg.tau, self.reference
        if x.dim() == (4 if conv else 2):  # static input, held over T steps
            return static_trace(x, tau, T, conv, avg)
        return spike_trace(x, tau, conv, avg)

    def observe(self, pruner: "Pruner", index: int, block: "Block", pre: Tensor, post: Tensor) -> None:
        # A conv block of an SNN followed by 2×2 (4×4, ...) average pooling is observed
        # when the next block sees its pooled spikes: each channel's spike count is
        # k²·(sum of the pooled map), exactly (counts of 0/1 spikes divided by a power of
        # two), and reading the pooled map costs a quarter of reading the spikes.
        waiting, self._waiting = self._waiting, None
        if waiting is not None and waiting[0] == index - 1:
            w_index, w_block, w_pre, (T, N, C), k = waiting
            self._observe(pruner, w_index, w_block, w_pre, None, pre.reshape(T, N, C, -1).sum(-1) * (k * k))
        layer = self.layers[index]
        if not (layer.prune_units or layer.prune_synapses):
            return  # the output layer (unless pruning.dpap.prune_output): its accumulators would decide nothing
        k = self._pooling_factor(block, post)
        if k:
            # only the shape is kept, not the spikes: holding them would keep tens of
            # megabytes alive through the next layer's forward pass
            self._waiting = (index, block, pre, tuple(post.shape[:3]), k)
        else:
            self._observe(pruner, index, block, pre, post, None)

    def _pooling_factor(self, block: "Block", post: Tensor) -> int:
        """k where ``block``'s spikes go through exactly one ``AvgPool2d(k)`` that tiles the
        map (stride k, no padding) and k² is a power of two; else 0 (observe at once)."""
        if self.kind != "snn" or block.is_output or block.layer_type != "conv" or len(block.post) != 1 or post.dim() != 5:
            return 0
        pool = block.post[0]
        if not isinstance(pool, torch.nn.AvgPool2d) or pool.ceil_mode or pool.divisor_override is not None:
            return 0
        k = pool.kernel_size
        k = k[0] if isinstance(k, tuple) and len(set(k)) == 1 else k
        stride = pool.stride if not isinstance(pool.stride, tuple) or len(set(pool.stride)) != 1 else pool.stride[0]
        if not isinstance(k, int) or k not in (2, 4, 8) or stride != k or pool.padding not in (0, (0, 0)):
            return 0
        return k if post.shape[-1] % k == 0 and post.shape[-2] % k == 0 else 0

    def _observe(self, pruner: "Pruner", index: int, block: "Block", pre: Tensor, post: Optional[Tensor], post_pop: Optional[Tensor]) -> None:
        """Fold one batch of block ``index`` into its accumulators: its input ``pre``, its
        neurons' output ``post`` or, when already known, their population activity
        ``post_pop`` (``[T, N, units]``)."""
        layer = self.layers[index]
        conv = layer.layer_type == "conv"
        if post_pop is None:
            if block.is_output and self.kind == "dnn":
                post = torch.relu(post)  # logits stand in for an activation (Eq. 18)
            post_pop = population(post, conv)
        T = post_pop.shape[0]
        post_tr = spike_trace(post_pop, self.cfg.tau, False, self.reference)  # Eq. 5-6
        batch_sum = post_tr.sum(0)  # Σ_b S_post (Eq. 11) and θ's share of this batch (Eq. 8)
        layer.post_sum += batch_sum  # float64 += float32: promoted in place, no temporary
        # A conv synapse links channel c_in of the previous layer to c_out (Eq. 6): its
        # pre-synaptic trace is the previous layer's channel trace, over all N×N neurons
        # of the channel *before* pooling (what the pre-synaptic neurons fired). An FC
        # synapse reads one input column: its pre-synaptic trace is that column's (after
        # pooling and flattening, what the synapse transmits).
        # (a block that reads another block than the one before it, dpap.adapters' ``source``,
        # takes its pre-synaptic trace from its own input)
        from_prev = conv and index > 0 and self._prev_trace is not None and getattr(block, "source", index - 1) == index - 1
        prev_pop, prev_trace = self._prev_pop, self._prev_trace
        self._prev_pop, self._prev_trace = post_pop, post_tr
        rule = self.cfg.importance
        if rule == "stdp":
            pre_seq = prev_pop if from_prev else population(pre, conv)
            if pre_seq.dim() == 2:
                pre_seq = pre_seq.unsqueeze(0).expand(T, *pre_seq.shape)
            layer.importance += stdp(pre_seq, post_pop, self.cfg.tau).to(torch.float64)
            return
        pre_tr = prev_trace if from_prev else self._trace(pre, conv, T)
        if rule == "hebb":  # post_trᵀ @ pre_tr (importance.hebb)
            layer.accumulate(post_tr, pre_tr)
        else:  # Eq. 7 (importance.bcm): bcm_postᵀ @ pre_tr
            theta = layer.theta.fold(batch_sum, post_tr.shape[0], reduce=pruner.reduce)
            layer.accumulate(bcm_post(post_tr, theta), pre_tr)

    # -------------------------------------------------------------------- decision

    def _unit_cost(self, pruner: "Pruner", index: int, before: list[Tensor], budgets: list[Optional[int]], share: float) -> dict:
        """What each unit of block ``index`` would take with it if it died now (its living
        synapses in this block and in the next) and what is left of those two blocks'
        synapse budgets this epoch: arguments for :func:`cap_deaths`."""
        if budgets[index] is None:
            return {}
        here = pruner.synapse_mask(index)
        left = [budgets[index] - (int(before[index].sum()) - int(here.sum()))]
        cost = [here.sum(1)]
        blocks = pruner.net.blocks  # the blocks that read this one's units: the next (or its ``source`` readers)
        readers = [j for j in range(index + 1, len(self.layers)) if getattr(blocks[j], "source", j - 1) == index]
        for j in readers:
            nxt = pruner.synapse_mask(j)
            spatial = pruner.layers[j].in_spatial
            cost.append(nxt.sum(0).view(self.layers[index].units, spatial).sum(1))
            left.append(budgets[j] - (int(before[j].sum()) - int(nxt.sum())))
        # a unit bigger than the whole budget may die alone, in an epoch nothing else took
        # from it, if the parameters it takes keep the network's own loss this epoch within
        # the share (a channel of a narrow first conv layer can hold more than 10 % of the
        # next layer's weights)
        untouched = all(l == budgets[j] for j, l in zip([index, *readers], left))
        kernels = [self._kernel(pruner, j) for j in [index, *readers]]
        params = sum(c.double() * k for c, k in zip(cost, kernels)) + unit_extras(pruner.net.blocks[index])
        report = compression_of(pruner.net, pruner)
        alone_budget = share * report.dense - (self._retained_at_start - report.retained)
        return {"cost": torch.stack(cost, 1), "budget": torch.tensor(left, dtype=torch.float64), "at_least_one": untouched,
                "alone_cost": params, "alone_budget": alone_budget}

    @staticmethod
    def _kernel(pruner: "Pruner", index: int) -> int:
        """Parameters per synapse of block ``index`` (k·k for a conv kernel, 1 for FC)."""
        return pruner.net.blocks[index].synapse.weight[0, 0].numel()

    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        """Eq. 10-17 for every layer: update the survival functions from the epoch's
        importance and prune every synapse and unit whose survival fell below 0.

        Units (neurons, channels) are decided first, then the synapses of the living ones.
        With ``max_death_share`` s < 1, no block loses more than s of its living synapses
        in one epoch, whatever removes them (their own survival, the death of the unit
        they feed or of the unit they read), and no more than s of its living units die;
        the candidates with the lowest survival go first. Resets the epoch accumulators
        (θ is kept)."""
        self._prev_pop = self._prev_trace = None
        self._waiting = None
        if self.last_decision is not None and epoch > self.last_decision:
            for layer in self.layers:  # past end_fraction: the pruned network only trains
                layer.reset_epoch()
            if self.regrowth is not None:  # ... and, in the first half of those epochs, swaps synapses
                q = epoch - self.last_decision - 1
                self.regrowth.swap(pruner, swap_share(self.cfg.regrow_share, q, self.swaps) if q < self.swaps else 0.0)
            return
        if self.regrowth is not None:
            self.regrowth.reset()
        cfg = self.cfg
        start = cfg.resolved_start_epoch()
        norm = cfg.resolved_normalization()
        ceiling_on = cfg.resolved_bounded()
        share = cfg.resolved_max_death_share()
        before = [pruner.synapse_mask(i) for i in range(len(self.layers))]
        budgets = [int(share * int(b.sum())) if share < 1.0 else None for b in before]
        self._retained_at_start = compression_of(pruner.net, pruner).retained if share < 1.0 else 0
        for layer in self.layers:
            i = layer.index

            def knobs_of(k):
                ceiling = k.beta if ceiling_on else None
                factor = decay_factor(epoch, k.eta, start, step=self.reference)
                return dict(epsilon=k.epsilon, protect=k.protect, gamma=cfg.gamma, factor=factor, ceiling=ceiling)

            knobs = knobs_of(layer.knobs)
            if layer.prune_units:
                if self.reference:
                    spine = dendritic_spine_reference(layer.post_sum, layer.importance)
                    unit_norm = cfg.normalization or ("minmax" if layer.layer_type == "conv" else "percentile75")
                else:
                    # gradual: a neuron's spine sums the BCM of its living synapses only, so a
                    # neuron that lost synapses is weaker (the paper's Fig. 4 observation)
                    synaptic = layer.importance * before[i] if self.gradual else layer.importance
                    spine = dendritic_spine(layer.post_sum, synaptic)
                    unit_norm = norm
                sf = layer.unit_survival
                live = sf.update(spine, normalization=unit_norm, eligible=pruner.units[i], **knobs)
                if live is not None:
                    most = None if share >= 1.0 else max(1, int(share * int(live.sum())))
                    pruner.kill_units(i, cap_deaths(sf.values, sf.candidates(live), most, **self._unit_cost(pruner, i, before, budgets, share)))
            if layer.synapse_survival is not None:
                # a synapse competes while it, its post-synaptic unit and its pre-synaptic
                # unit live (this epoch's unit deaths included)
                eligible = pruner.synapse_mask(i)
                sf = layer.synapse_survival
                live = sf.update(layer.importance, normalization=norm, eligible=eligible, **knobs_of(layer.synapse_knobs))
                if live is not None:
                    most = None if budgets[i] is None else max(0, budgets[i] - (int(before[i].sum()) - int(eligible.sum())))
                    pruner.kill_synapses(i, cap_deaths(sf.values, sf.candidates(live), most))
        for layer in self.layers:
            layer.reset_epoch()

    def mid_epoch(self) -> bool:
        return self.regrowth is not None and self.regrowth.pending

    def after_backward(self, pruner: "Pruner") -> None:
        """``regrow_share``: the step's gradients (dead synapses' included) for the swap."""
        if self.regrowth is not None and self.last_decision is not None:
            self.regrowth.accumulate(pruner)

    def reduce_statistics(self, pruner: "Pruner", reduce) -> None:
        """Importance and post-synaptic sums are sums over samples: add the ranks' (θ is
        already the whole batches', :meth:`SlidingThreshold.update`)."""
        for layer in self.layers:
            reduce(layer.importance)
            reduce(layer.post_sum)

    def can_still_prune(self, pruner: "Pruner", epochs_left: range) -> bool:
        """Whether any living synapse or unit can still die in ``epochs_left`` (Eq. 12-17).

        δ = 2·Normalized − ε ≥ −ε, so after r more epochs ``F ≥ γ^r·F − ε·Σ decay(k)``
        (the ceiling and the cap on deaths only delay); when that bound stays ≥ 0 for the
        smallest living F of every layer, compression is final."""
        if self.last_decision is not None:
            epochs_left = range(epochs_left.start, min(epochs_left.stop, self.last_decision + 1))
        if not epochs_left:
            return False
        start = self.cfg.resolved_start_epoch()
        keep = self.cfg.gamma ** len(epochs_left)
        for layer in self.layers:
            functions = []
            if layer.prune_units:
                functions.append((layer.unit_survival, pruner.units[layer.index], layer.knobs))
            if layer.synapse_survival is not None:
                functions.append((layer.synapse_survival, pruner.synapse_mask(layer.index), layer.synapse_knobs))
            for sf, alive, k in functions:
                drop = k.epsilon * sum(decay_factor(e, k.eta, start, step=self.reference) for e in epochs_left)
                vals = sf.values[alive]
                if vals.numel() and float(vals.min()) * keep - drop < 1e-9:
                    return True
        return False

    # ------------------------------------------------------------------- inspection

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """Survival values of living units/synapses per layer (alive as in
        :meth:`~dpap.pruning.Pruner.synapse_mask`), for histograms."""
        out = {}
        for layer in self.layers:
            if layer.prune_units:
                out[f"layer{layer.index}.{layer.layer_type}.units"] = layer.unit_survival.values[pruner.units[layer.index]].cpu()
            if layer.synapse_survival is not None:
                out[f"layer{layer.index}.{layer.layer_type}.synapses"] = layer.synapse_survival.values[pruner.synapse_mask(layer.index)].cpu()
        return out

    # -------------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {"layers": [layer.state_dict() for layer in self.layers], "protocol": self.protocol}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"DPAP state has {len(state['layers'])} layers, the network {len(self.layers)}")
        for layer, s in zip(self.layers, state["layers"]):
            layer.load_state_dict(s)
