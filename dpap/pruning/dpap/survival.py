"""Survival functions and the adaptive pruning decision (Eq. 12-17).

Each synapse (``F_BCM``) and neuron or conv channel (``F_D``) starts at β; after every
epoch it moves by ``F ← γ·F + decay(epoch)·ΔF`` and the unit dies when ``F < 0``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

NORMALIZATIONS = ("minmax", "percentile75", "rank")


def normalized(x: Tensor, alive: Optional[Tensor] = None, method: str = "minmax") -> Tensor:
    """Linear normalisation of a layer's importance to [0, 1] (Eq. 12-13).

    Statistics come from the ``alive`` entries only (pruned units no longer compete).

    - ``minmax``: ``(x − min) / (max − min)``, the paper.
    - ``percentile75``: ``(x − min) / (p75 − min)`` clipped to [0, 1], the authors' code.
    - ``rank``: the mid-rank of each value among the living ones, ``(#below + (#equal − 1)/2)
      / (n − 1)``. Not in the paper: importance is heavy-tailed (most BCM values sit near
      the minimum), so under ``minmax`` nearly every unit gets the same δ ≈ −ε and they die
      in one epoch; under ``rank`` the share with δ < 0 is ε/2, whatever the tail.

    A constant layer maps to 0.5."""
    vals = x[alive] if alive is not None else x.reshape(-1)
    if vals.numel() == 0:
        return torch.zeros_like(x)
    if method == "rank":
        if vals.numel() == 1:
            return torch.full_like(x, 0.5)
        ordered = vals.reshape(-1).sort().values
        flat = x.reshape(-1).contiguous()
        below = torch.searchsorted(ordered, flat, right=False)
        upto = torch.searchsorted(ordered, flat, right=True)
        mid = (below + upto - 1).to(x.dtype) / 2
        return (mid / (vals.numel() - 1)).clamp(0.0, 1.0).view_as(x)
    lo = vals.min()
    if method == "minmax":
        hi = vals.max()
    elif method == "percentile75":
        hi = torch.quantile(vals.double(), 0.75).to(vals.dtype) if vals.numel() <= 16_000_000 else vals.float().kthvalue(int(0.75 * vals.numel()) or 1).values
    else:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {NORMALIZATIONS}")
    if hi <= lo:
        return torch.full_like(x, 0.5)
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def delta(norm: Tensor, epsilon: float) -> Tensor:
    """Eq. 12-13: ``δ = 2·Normalized(·) − ε``."""
    return 2.0 * norm - epsilon


def survival_increment(d: Tensor, protect: float) -> Tensor:
    """Eq. 14-15: ``ΔF = δ + C`` where ``δ ≥ 0``, else ``δ``."""
    return torch.where(d >= 0, d + protect, d)


def decay_factor(epoch: int, eta: float, start_epoch: int = 0, step: bool = False) -> float:
    """The schedule of Eq. 16-17: ``exp(−epoch/η)``.

    ``step=True`` is the authors' code: ``exp(−floor((epoch − start)/η))``. Epochs are
    counted from 0; before ``start_epoch`` nothing is updated (factor 0)."""
    if epoch < start_epoch:
        return 0.0
    if step:
        return math.exp(-math.floor((epoch - start_epoch) / eta))
    return math.exp(-epoch / eta)


def update_survival(F: Tensor, dF: Tensor, gamma: float, factor: float) -> Tensor:
    """Eq. 16-17: ``F ← γ·F + factor·ΔF``."""
    return gamma * F + factor * dF


def cap_deaths(
    values: Tensor,
    candidates: Tensor,
    max_deaths: Optional[int] = None,
    cost: Optional[Tensor] = None,
    budget: Optional[Tensor] = None,
    at_least_one: bool = True,
    alone_cost: Optional[Tensor] = None,
    alone_budget: float = math.inf,
) -> Tensor:
    """The units that die this epoch: of the ``candidates`` (``F < 0``), the lowest survival
    values first (ties by position, so the result is deterministic), at most ``max_deaths``
    of them (None = no limit) and, with ``cost`` (``[*values.shape, m]``: what each death
    removes, e.g. synapses in two layers) and ``budget`` (``[m]``), the longest such prefix
    whose summed cost stays within the budget; with ``at_least_one`` the first candidate
    may die even if it alone exceeds the budget, so a layer with fewer units than 1/share
    is not frozen for ever, unless its ``alone_cost`` (e.g. the parameters it takes from
    the whole network) exceeds ``alone_budget``.
    Not in the paper; see :class:`SurvivalFunction`."""
    flat = candidates.reshape(-1)
    idx = flat.nonzero().squeeze(1)
    if max_deaths is None and cost is None:
        return candidates
    out = torch.zeros_like(candidates)
    if idx.numel() == 0 or (max_deaths is not None and max_deaths <= 0):
        return out
    order = idx[torch.sort(values.reshape(-1)[idx].double(), stable=True).indices]
    if max_deaths is not None:
        order = order[:max_deaths]
    if cost is not None:
        spent = cost.reshape(flat.numel(), -1)[order].double().cumsum(0)
        within = (spent <= budget.to(spent).reshape(1, -1)).all(1)
        n = int(within.long().cumprod(0).sum())
        if n == 0 and at_least_one and (alone_cost is None or float(alone_cost.reshape(-1)[order[0]]) <= alone_budget):
            n = 1
        order = order[:n]
    out.view(-1)[order] = True
    return out


class SurvivalFunction:
    """The survival values of a layer's synapses or units and the mask they imply.

    ``values`` start at β; :meth:`step` applies Eq. 12-17 to an epoch's importance and
    returns the units that died this epoch. Dead units stay dead (pruning is permanent).

    Two options, both off in the paper's protocol, make deaths gradual (the ``gradual``
    protocol turns them on):

    - ``ceiling``: after the update ``F ≤ ceiling`` (β): a unit cannot bank credit beyond
      its initial survival value, so the protection C of Eq. 14-15 restores a unit that
      does well instead of making it immortal; a later run of bad epochs can still kill it.
    - ``max_deaths``: at most this many of the units with ``F < 0`` die in one epoch, the
      lowest ``F`` first; the others keep their (negative) values and are first in line
      at the next epoch unless their importance lifts them."""

    def __init__(self, shape, beta: float, device=None, track_alive: bool = True):
        self.values = torch.full(tuple(shape), float(beta), device=device)
        self.alive: Optional[Tensor] = torch.ones(tuple(shape), dtype=torch.bool, device=device) if track_alive else None
        """Which entries live; None when the caller keeps the masks (a
        :class:`~dpap.pruning.Pruner`) and passes them as ``eligible``."""

    def step(
        self,
        importance: Tensor,
        *,
        epsilon: float,
        protect: float,
        gamma: float,
        factor: float,
        normalization: str = "minmax",
        eligible: Optional[Tensor] = None,
        ceiling: Optional[float] = None,
        max_deaths: Optional[int] = None,
    ) -> Tensor:
        """One epoch's update (:meth:`update`, then :meth:`kill` of the candidates, at most
        ``max_deaths``). Returns the mask of new deaths."""
        live = self.update(importance, epsilon=epsilon, protect=protect, gamma=gamma, factor=factor, normalization=normalization, eligible=eligible, ceiling=ceiling)
        if live is None:
            return torch.zeros_like(self.values, dtype=torch.bool)
        died = cap_deaths(self.values, self.candidates(live), max_deaths)
        self.kill(died)
        return died

    def update(
        self,
        importance: Tensor,
        *,
        epsilon: float,
        protect: float,
        gamma: float,
        factor: float,
        normalization: str = "minmax",
        eligible: Optional[Tensor] = None,
        ceiling: Optional[float] = None,
    ) -> Optional[Tensor]:
        """Eq. 12-17 on the living entries (``eligible`` restricts them further, e.g. to
        synapses of living neurons). Returns the entries updated, or None when nothing was
        (factor 0 before the start epoch, or nothing alive)."""
        if self.alive is None:
            if eligible is None:
                raise ValueError("a SurvivalFunction without its own alive mask needs `eligible`")
            live = eligible
        else:
            live = self.alive if eligible is None else self.alive & eligible
        if factor == 0.0 or not bool(live.any()):
            return None
        d = delta(normalized(importance, live, normalization), epsilon)
        new = update_survival(self.values, survival_increment(d, protect), gamma, factor)
        if ceiling is not None:
            new = new.clamp(max=ceiling)
        self.values = torch.where(live, new.to(self.values.dtype), self.values)
        return live

    def candidates(self, live: Tensor) -> Tensor:
        """Living entries whose survival fell below 0."""
        return live & (self.values < 0)

    def kill(self, died: Tensor) -> None:
        """Prune ``died`` for good (only for a function that tracks its own alive mask)."""
        if self.alive is None:
            raise ValueError("this SurvivalFunction does not track alive entries; its owner's masks do")
        self.alive &= ~died

    def to(self, device) -> "SurvivalFunction":
        self.values = self.values.to(device)
        if self.alive is not None:
            self.alive = self.alive.to(device)
        return self

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "alive": self.alive.clone() if self.alive is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"].to(self.values.device).clone()
        if self.alive is not None:
            self.alive = state["alive"].to(self.alive.device).clone()
