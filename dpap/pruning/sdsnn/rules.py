"""SD-SNN's rules as pure functions (``docs/spec/SDSNN.md``, §2.3): the schedule of a
short run, consecutive-epoch counters, percentiles, range widths and the neurotrophic
rate increments. :mod:`dpap.pruning.sdsnn.method` applies them to a network."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from dpap.pruning.sdsnn.config import SDSNNConfig


@dataclass(frozen=True)
class Schedule:
    """When things happen, in training epochs, and how many of the authors' epochs one
    training epoch stands for (``scale``)."""

    spines: int
    """K in training epochs."""
    scale: float

    @property
    def clip_from(self) -> int:
        """First epoch whose end clips the weights (K+1)."""
        return self.spines + 1

    @property
    def prune_from(self) -> int:
        """First epoch whose end regenerates and prunes (2K+1)."""
        return 2 * self.spines + 1

    def steps(self, epoch: int) -> list[float]:
        """t = e − (2K+1) in the authors' epochs, for each of their epochs this training
        epoch stands for (one value when ``scale`` is 1)."""
        n = max(1, round(self.scale))
        t0 = (epoch - self.prune_from) * self.scale
        return [t0 + k * self.scale / n for k in range(n)]


MIN_SPINES = 2
"""The smallest K' a compressed schedule ever uses (``min_spines`` is capped to fit the
run, never below this). With K' = 1 the shrink rule fires whenever a weight's magnitude
fell twice in a row, which noise alone does every few epochs: the ranges then shrink again
and again and clipping drags the weights down (docs/pruning.md, "SD-SNN")."""


def schedule(cfg: SDSNNConfig, epochs: int) -> Schedule:
    """The schedule of a run of ``epochs`` epochs (module docstring, "Short runs"):
    K' = max(round(K·E/schedule_epochs), min(min_spines, (E − 5) // 3), 2), at most K.
    The floor ``min_spines`` keeps the range rules from firing on noise (K'+1 consecutive
    falls of a weight's magnitude); the cap (E − 5) // 3 keeps the earliest regrowth of
    the units pruned at the second pruning epoch (epoch 2K'+2 + K'+2) inside a short run.
    The time scale s = (K+2)/(K'+2) maps the earliest regrowth (K'+2 epochs after pruning
    starts) onto the authors' (K+2 epochs after). With s = K/K' instead, q had reached 91
    by then and nothing regrew on digits."""
    if cfg.schedule_epochs is None or epochs >= cfg.schedule_epochs:
        return Schedule(cfg.spines, 1.0)
    floor = max(MIN_SPINES, min(cfg.min_spines, (epochs - 5) // 3))
    spines = min(cfg.spines, max(floor, round(cfg.spines * epochs / cfg.schedule_epochs)))
    return Schedule(spines, (cfg.spines + 2) / (spines + 2))


def consecutive(count: Tensor, now: Tensor, prev: Tensor) -> Tensor:
    """The consecutive-counter rule (§2.2): sites in this epoch's set ``now`` and last
    epoch's ``prev`` count one more epoch; every other site starts again from 0. (A site's
    first epoch in the set only arms it: ``count >= K`` needs K+1 epochs in a row.)"""
    return torch.where(now & prev, count + 1, torch.zeros_like(count))


def percentile(x: Tensor, q: float) -> Tensor:
    """The ``q``-th percentile of ``x`` with linear interpolation (``numpy.percentile``'s
    default), for any size (``torch.quantile`` stops at 2^24 elements)."""
    flat = x.reshape(-1).double()
    pos = (flat.numel() - 1) * q / 100.0
    lo = math.floor(pos)
    frac = pos - lo
    low = torch.kthvalue(flat, lo + 1).values
    if frac == 0.0:
        return low
    high = torch.kthvalue(flat, min(lo + 2, flat.numel())).values
    return low + (high - low) * frac


def regeneration_percentile(offset: float, t: float, base: float = 1.1, cap: float = 99.0) -> float:
    """q_e = min(cap, offset + base^t) (§2.3, 4a)."""
    return min(cap, offset + base ** t) if t < 200 else cap


def normalized_width(r_plus: Tensor, r_minus: Tensor) -> Tensor:
    """ρ = min-max of the range widths r⁺ + |r⁻| over the layer; 0.5 where they are all
    equal (the authors' ``unit``, §2.3 4b)."""
    width = r_plus + r_minus.abs()
    lo, hi = width.min(), width.max()
    if float(hi - lo) <= 0.0:
        return torch.full_like(width, 0.5)
    return (width - lo) / (hi - lo)


def fc_alpha(t: float, cfg: SDSNNConfig) -> float:
    """α of an FC layer's rate increment: gain·e^{-t/τ} until ``fc_rate_switch``, then
    ``fc_rate_late`` (the authors' jump at epoch 60, Q8)."""
    return cfg.fc_rate_gain * math.exp(-t / cfg.fc_rate_tau) if t <= cfg.fc_rate_switch else cfg.fc_rate_late


def rate_increment(layer_type: str, steps: list[float], alive: int, next_alive: int, cfg: SDSNNConfig,
                   units: Optional[int] = None, rate: Optional[float] = None, next_units: Optional[int] = None) -> float:
    """How much the cumulative rate p (percent) grows after this epoch's pruning (§2.3,
    4b.5): conv Σ e^{-t/τ}·(C−d)/(C'−d'), FC Σ α(t)·(C−d)/(C'−d') over ``steps``, where
    ``alive`` = C−d of this layer and ``next_alive`` = C'−d' of the next one (the
    authors' (512−d)/10 for fc1 before a 10-way classifier). 0 when the next layer is
    dead (the authors divide by zero there, Q12).

    With ``units`` and ``next_units`` (C and C') and ``fc_ratio_scale`` set, an FC
    layer's ratio is rescaled so that its initial C/C' reads as ``fc_ratio_scale`` (the
    authors' 512/10): ``fc_ratio_scale``·((C−d)/(C'−d'))/(C/C'). On the authors' fc1 this
    is their ratio; elsewhere p then follows the same course as theirs whatever the
    layer's width (the absolute ratio gives 128/10 on ``digits``, 300/10 on ``mnist-snn``).

    With ``units`` and ``rate`` (C and p before this increment), a compressed schedule's
    later steps see the layer as the authors' schedule would have left it: in theirs each
    step is an epoch whose pruning to the new p has removed ⌊C·p/100⌋ units before the next
    increment, so step k uses min(C−d, C − ⌊C·p_k/100⌋). Without it all s steps of one
    epoch read the same C−d and p overshoots (``digits``, ``fc_rate_gain`` 3 on the
    absolute ratio: 57 % instead of 51 %)."""
    if next_alive <= 0:
        return 0.0
    scale = 1.0
    if layer_type != "conv" and cfg.fc_ratio_scale is not None and units and next_units:
        scale = cfg.fc_ratio_scale * next_units / units
    total = 0.0
    for k, t in enumerate(steps):
        here = alive
        if k and units is not None and rate is not None:
            here = min(alive, units - int(units * min(100.0, rate + total) / 100.0 + 1e-9))
        factor = math.exp(-t / cfg.conv_rate_tau) if layer_type == "conv" else fc_alpha(t, cfg)
        total += factor * scale * max(0, here) / next_alive
    return total


def bound_rule(now: Tensor, overshoot: Tensor, bound: Tensor, count: Tensor, acc: Tensor, prev: Tensor, K: int):
    """One bound's rule (§2.3, step 2.1/2.2): sites at or beyond the bound this epoch and
    the last count on and add their overshoot; after K counted epochs the bound moves by
    the mean overshoot and the site starts again. Returns the new (bound, count, acc, set)."""
    both = now & prev
    acc = torch.where(both, acc + overshoot.double(), torch.zeros_like(acc))
    count = consecutive(count, now, prev)
    fire = count >= K
    bound = bound + torch.where(fire, acc / K, torch.zeros_like(acc)).to(bound.dtype)
    count = torch.where(fire, torch.zeros_like(count), count)
    acc = torch.where(fire, torch.zeros_like(acc), acc)
    return bound, count, acc, now
