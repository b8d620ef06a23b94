"""SD-SNN as a pruning method: a synaptic constraint by dendritic-spine ranges, structured
neuron pruning at "neurotrophic" rates, and synaptic regeneration
(``docs/spec/SDSNN.md``; section numbers below are the spec's).

Nothing is observed per batch: every statistic comes from the weights at the end of an
epoch. Per epoch e (from 0), in the spec's order (§2.3):

1. e = 0: each synapse gets a range [r⁻, r⁺] = [−max W, max W] (the layer's maximum).
2. e ≥ 1: ranges adapt (:func:`consecutive`): a bound the weight keeps reaching for more
   than K epochs moves by the mean overshoot; a range whose weight's magnitude kept
   falling shrinks by ``shrink``.
3. e ≥ K+1: weights are clipped into their ranges.
4. e ≥ 2K+1, layer by layer: regeneration of pruned kernels (conv) or synapses (FC) that
   stayed above the rising percentile q = min(cap, offset + base^t) for more than K
   epochs; then the units with the smallest summed normalised range width are pruned up
   to the cumulative rate p, which then grows by the neurotrophic increment (:func:`rate_increment`).

Two protocols: ``fixed`` (default) and ``reference``, the authors' code point by point.
What ``fixed`` changes (spec §3): ranges adapt in every layer, not only the last (Q1);
ties are broken stably (Q2); masks hold at every step, not only at the end of an epoch
(Q3); a pruned unit's bias and BatchNorm are silenced (Q4); regrowth is by magnitude,
not by signed weight (Q6). With masks enforced a pruned site has no weight of its own, so
``fixed`` keeps the value each site had when it was pruned (its *shadow*) and scores and
restores regrowth from it, shrinking it by ``shrink`` every K+1 epochs it stays pruned; the
reference's shadow weights instead train on, unmasked, during each epoch.

Short runs: the constants are written for 600 epochs (K = 18: pruning from epoch 37).
:func:`schedule` compresses that schedule for a run of E < 600 epochs: K becomes
K' = max(round(K·E/600), min_spines) (min_spines 4, lowered to (E−5)//3 but never below 2
in very short runs), and each epoch counts as s = (K+2)/(K'+2) of the authors' epochs, so
the rate increments and the regeneration percentile advance s steps per epoch and the
earliest possible regrowth (K+2 epochs after a unit is pruned) meets the same percentile as
in the authors' schedule (30 epochs: K' = 4, s = 3.33, pruning from epoch 9, earliest
regrowth at epoch 15 with q = 80 + 1.1^20 = 86.7 in FC layers at the default offset). The s
steps of one epoch add their increments one after the other, each seeing the layer as the
authors' epoch-by-epoch schedule would have left it (:func:`rate_increment`).

Departures of the defaults from the authors' constants (``config.py``; docs/pruning.md,
"SD-SNN"): ``min_spines`` 4, ``fc_ratio_scale`` 51.2 (an FC layer's neurotrophic ratio
rescaled to the authors' 512/10, so p does not depend on the layer's width),
``fc_rate_gain`` 0.9 and ``fc_percentile`` 80. In ``fixed`` a layer keeps at least one unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from dpap.pruning.method import PruningMethod
from dpap.pruning.sdsnn.config import SDSNNConfig
from dpap.pruning.sdsnn.rules import (
    bound_rule,
    consecutive,
    normalized_width,
    percentile,
    rate_increment,
    regeneration_percentile,
    schedule,
)

if TYPE_CHECKING:  # pragma: no cover
    from dpap.pruning.mechanics import LayerInfo, Pruner



class LayerState:
    """SD-SNN state of one prunable block (§2.2)."""

    def __init__(self, layer: "LayerInfo", cfg: SDSNNConfig, shape: torch.Size, device):
        self.index = layer.index
        self.layer_type = layer.layer_type
        self.units = layer.units
        self.rate = cfg.conv_rate if layer.layer_type == "conv" else cfg.fc_rate
        self.dead_threshold = cfg.conv_dead if layer.layer_type == "conv" else cfg.fc_dead
        self.percentile_offset = cfg.conv_percentile if layer.layer_type == "conv" else cfg.fc_percentile
        z = lambda dtype=torch.float32: torch.zeros(shape, device=device, dtype=dtype)  # noqa: E731
        self.initialised = False
        self.r_plus, self.r_minus, self.previous = z(), z(), z()
        self.c_plus, self.c_minus, self.c_zero = (z(torch.int32) for _ in range(3))
        self.a_plus, self.a_minus = z(torch.float64), z(torch.float64)
        self.s_plus, self.s_minus, self.s_zero = (z(torch.bool) for _ in range(3))
        self.shadow = z()
        """fixed: each pruned weight's value when it was pruned, × shrink per K+1 epochs since."""
        self.unit_shadow: dict[str, Tensor] = {}
        """fixed: a pruned unit's bias / BatchNorm terms when it was pruned."""
        self.ever_pruned = torch.zeros(layer.units, dtype=torch.bool, device=device)
        """H, the units ever pruned."""
        sites = (layer.units, layer.pre_units)
        self.g = torch.zeros(sites, dtype=torch.int32, device=device)
        self.g_prev = torch.zeros(sites, dtype=torch.bool, device=device)
        self.pruned_now = 0
        self.regenerated_now = 0

    _TENSORS = ("r_plus", "r_minus", "previous", "c_plus", "c_minus", "c_zero", "a_plus", "a_minus",
                "s_plus", "s_minus", "s_zero", "shadow", "ever_pruned", "g", "g_prev")

    def to(self, device) -> None:
        for name in self._TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        self.unit_shadow = {k: v.to(device) for k, v in self.unit_shadow.items()}

    def state_dict(self) -> dict:
        out = {name: getattr(self, name).clone() for name in self._TENSORS}
        out.update(initialised=self.initialised, rate=self.rate, unit_shadow={k: v.clone() for k, v in self.unit_shadow.items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        for name in self._TENSORS:
            getattr(self, name).copy_(state[name])
        self.initialised = state["initialised"]
        self.rate = state["rate"]
        self.unit_shadow = {k: v.clone() for k, v in state["unit_shadow"].items()}


# ------------------------------------------------------------------------ method


class SDSNNMethod(PruningMethod):
    """SD-SNN (``cfg``: ``params.yaml``'s ``dpap.sdsnn``) for a run of ``epochs`` epochs."""

    name = "sdsnn"
    value_name = "range_width"

    def __init__(self, cfg: SDSNNConfig, epochs: int):
        self.cfg = cfg
        self.reference = cfg.protocol == "reference"
        self.masks_every_step = not self.reference  # Q3
        self.silence_units = not self.reference  # Q4
        self.permanent = not cfg.regenerate
        self.still_between_decisions = True  # nothing observed; reference: masks_every_step is False anyway
        self.schedule = schedule(cfg, epochs)
        self.layers: list[LayerState] = []

    def attach(self, pruner: "Pruner") -> None:
        self.layers = [
            LayerState(info, self.cfg, pruner.net.blocks[info.index].synapse.weight.shape, pruner.device)
            for info in pruner.layers
            if not info.is_output
        ]

    def to(self, device) -> None:
        for layer in self.layers:
            layer.to(device)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _weight(pruner: "Pruner", index: int) -> Tensor:
        return pruner.net.blocks[index].synapse.weight

    @staticmethod
    def _unit_params(pruner: "Pruner", index: int) -> dict[str, Tensor]:
        block = pruner.net.blocks[index]
        out = {}
        if block.synapse.bias is not None:
            out["bias"] = block.synapse.bias
        if block.norm is not None and block.norm.affine:
            out["norm.weight"], out["norm.bias"] = block.norm.weight, block.norm.bias
        return out

    def _alive_weights(self, pruner: "Pruner", index: int) -> Tensor:
        """Living weights per unit (a conv unit's kernels count k·k each)."""
        per_site = pruner.weight_mask(index)
        return per_site.reshape(per_site.shape[0], -1).sum(1)

    def _alive_units(self, pruner: "Pruner", index: int, threshold: Optional[int] = None) -> int:
        """C − d: units with at least the dead threshold of living weights (the output
        layer: all its units)."""
        if pruner.layers[index].is_output:
            return pruner.layers[index].units
        if threshold is None:
            threshold = self._state(index).dead_threshold
        return int((self._alive_weights(pruner, index) >= threshold).sum())

    def _state(self, index: int) -> LayerState:
        for layer in self.layers:
            if layer.index == index:
                return layer
        raise KeyError(index)

    # -------------------------------------------------------------------- epoch

    @torch.no_grad()
    def end_epoch(self, pruner: "Pruner", epoch: int) -> None:
        sch = self.schedule
        for layer in self.layers:
            layer.pruned_now = layer.regenerated_now = 0
        adapting = self.layers if not self.reference else self.layers[-1:]  # Q1
        for layer in self.layers:
            w = self._weight(pruner, layer.index)
            if not layer.initialised:  # step 1
                top = w.max()
                layer.r_plus.fill_(float(top))
                layer.r_minus.fill_(-float(top))  # Q5: −max, not min
                layer.previous.copy_(w.abs())
                layer.initialised = True
            elif layer in adapting:  # step 2
                self._adapt_ranges(layer, w * pruner.weight_mask(layer.index), sch.spines)
        if epoch >= sch.clip_from:  # step 3
            for layer in self.layers:
                w = self._weight(pruner, layer.index)
                w.copy_(torch.maximum(torch.minimum(w, layer.r_plus), layer.r_minus))
                if not self.reference:
                    layer.shadow.copy_(torch.maximum(torch.minimum(layer.shadow, layer.r_plus), layer.r_minus))
        if epoch < sch.prune_from:
            return
        steps = sch.steps(epoch)
        for k, layer in enumerate(self.layers):  # step 4, layer by layer
            if self.cfg.regenerate:
                self._regenerate(pruner, layer, steps[0], sch.spines)
            self._prune(pruner, layer)
            # rates: this layer after its pruning, the next one before its own (§2.3 4b.5)
            nxt = layer.index + 1
            nxt_threshold = layer.dead_threshold if self.reference else None  # Q8: the last conv reads fc1 at 20
            next_alive = self._alive_units(pruner, nxt, nxt_threshold)
            layer.rate += rate_increment(layer.layer_type, steps, self._alive_units(pruner, layer.index), next_alive, self.cfg,
                                         units=layer.units, rate=layer.rate, next_units=pruner.layers[nxt].units)

    def _adapt_ranges(self, layer: LayerState, w_hat: Tensor, K: int) -> None:
        """Step 2: the three range rules, in order, on the same masked weights Ŵ."""
        # 1. upper bound, 2. lower bound: each moves by the mean overshoot of K consecutive hits
        layer.r_plus, layer.c_plus, layer.a_plus, layer.s_plus = bound_rule(
            w_hat >= layer.r_plus, w_hat - layer.r_plus, layer.r_plus, layer.c_plus, layer.a_plus, layer.s_plus, K)
        layer.r_minus, layer.c_minus, layer.a_minus, layer.s_minus = bound_rule(
            w_hat <= layer.r_minus, w_hat - layer.r_minus, layer.r_minus, layer.c_minus, layer.a_minus, layer.s_minus, K)
        # 3. shrink where the magnitude kept falling
        mag = w_hat.abs()
        now = mag < layer.previous
        layer.c_zero = consecutive(layer.c_zero, now, layer.s_zero)
        layer.s_zero = now
        fire = layer.c_zero >= K
        layer.r_plus[fire] *= self.cfg.shrink
        layer.r_minus[fire] *= self.cfg.shrink
        layer.c_zero[fire] = 0
        layer.previous.copy_(mag)

    def _regenerate(self, pruner: "Pruner", layer: LayerState, t: float, K: int) -> None:
        """Step 4a: pruned kernels (conv) or synapses (FC) above the q-th percentile of all
        sites for more than K consecutive epochs grow back."""
        i = layer.index
        w = self._weight(pruner, i)
        if self.reference:
            value = w  # Q6: the signed shadow weight
        else:
            # a pruned site is silent: its frozen value shrinks as the shrink rule shrinks a
            # range whose weight keeps falling (× shrink every K+1 epochs), so only a site
            # well above the percentile outlasts the K+2 epochs; without this, 39 % of a
            # pruned neuron's synapses sit above q = 61 for ever and every pruned neuron
            # came back (docs/pruning.md, "SD-SNN")
            layer.shadow.mul_(self.cfg.shrink ** (1.0 / (K + 1)))
            site_alive = pruner.weight_mask(i)
            value = torch.where(site_alive, w, layer.shadow).abs()
        score = value.reshape(value.shape[0], value.shape[1], -1).sum(2) if w.dim() > 2 else value
        candidates = ~pruner.synapses[i] & pruner.input_mask(i)[None, :]
        q = regeneration_percentile(layer.percentile_offset, t, self.cfg.growth_base, self.cfg.percentile_cap)
        above = candidates & (score > percentile(score, q).to(score.dtype))
        layer.g = consecutive(layer.g, above, layer.g_prev)
        layer.g_prev = above
        grown = layer.g > K
        layer.g[grown] = 0
        if not bool(grown.any()):
            return
        revived = grown.any(1) & ~pruner.units[i]
        pruner.restore_synapses(i, grown, w.detach().clone() if self.reference else layer.shadow)
        layer.regenerated_now += int(grown.sum())
        if not self.reference and bool(revived.any()):
            for name, p in self._unit_params(pruner, i).items():
                if name in layer.unit_shadow:
                    p[revived] = layer.unit_shadow[name][revived].to(p)

    def _prune(self, pruner: "Pruner", layer: LayerState) -> None:
        """Step 4b: prune the units with the smallest Σ M·ρ up to the cumulative rate."""
        i = layer.index
        rho = normalized_width(layer.r_plus, layer.r_minus)
        mask = pruner.weight_mask(i) if not self.reference else (pruner.synapses[i] & pruner.units[i][:, None])
        if mask.dim() < rho.dim():
            mask = mask.view(*mask.shape, *([1] * (rho.dim() - mask.dim()))).expand_as(rho)
        score = (rho * mask).reshape(rho.shape[0], -1).sum(1)
        n = int(layer.units * layer.rate / 100.0 + 1e-9)
        if not self.reference:  # a layer keeps at least one unit (the reference's p may pass 100 %)
            n = min(n, layer.units - 1)
        if n <= 0:
            return
        order = torch.argsort(score, stable=not self.reference)  # Q2
        new = torch.zeros_like(layer.ever_pruned)
        new[order[:n]] = True
        new &= ~layer.ever_pruned
        if not bool(new.any()):
            return
        if not self.reference:
            w = self._weight(pruner, i)
            layer.shadow[new] = w[new].detach()
            for name, p in self._unit_params(pruner, i).items():
                store = layer.unit_shadow.setdefault(name, torch.zeros_like(p.detach()))
                store[new] = p.detach()[new]
        pruner.kill_units(i, new)
        pruner.kill_synapses(i, new[:, None].expand_as(pruner.synapses[i]))
        layer.ever_pruned |= new
        layer.pruned_now += int(new.sum())

    # ------------------------------------------------------------------ reports

    def layer_stats(self, pruner: "Pruner") -> dict[int, dict[str, float]]:
        """Per prunable block: the cumulative rate p (percent), units pruned and sites
        regenerated this epoch."""
        return {
            layer.index: {"rate": layer.rate, "pruned_now": layer.pruned_now, "regenerated_now": layer.regenerated_now}
            for layer in self.layers
        }

    def values(self, pruner: "Pruner") -> dict[str, Tensor]:
        """Range widths r⁺ + |r⁻| of each layer's living weights, for histograms."""
        out = {}
        for layer in self.layers:
            if not layer.initialised:
                continue
            alive = pruner.weight_mask(layer.index)
            what = "kernels" if layer.layer_type == "conv" else "synapses"
            out[f"layer{layer.index}.{layer.layer_type}.{what}"] = (layer.r_plus + layer.r_minus.abs())[alive].cpu()
        return out

    # -------------------------------------------------------------- serialisation

    def state_dict(self) -> dict:
        return {"layers": [layer.state_dict() for layer in self.layers], "protocol": self.cfg.protocol}

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise ValueError(f"SD-SNN state has {len(state['layers'])} layers, the network {len(self.layers)} prunable ones")
        for layer, s in zip(self.layers, state["layers"]):
            layer.load_state_dict(s)
