"""Importance measures: spiking traces, trace-based BCM, dendritic spines (Eq. 5-11, 18-19).

Pure functions over traces, plus :class:`SlidingThreshold`, the one piece of state
(θ of Eq. 8-9). Hebb and STDP are the alternative rules of the paper's Fig. 4H ablation.

Shapes: a *trace* is ``[N, units]`` (N samples; units = neurons of an FC layer or
channels of a conv layer). A synapse matrix is ``[post_units, pre_units]``.
"""

from __future__ import annotations

from typing import Callable, Optional

import functools

import torch
from torch import Tensor

IMPORTANCE_RULES = ("bcm", "hebb", "stdp")


def trace_weights(T: int, tau: float, average: bool = False, device=None, dtype=torch.float32) -> Tensor:
    """Weights ``w_t = τ^(T−1−t)`` such that ``S^T = Σ_t w_t · o[t]`` solves Eq. 5
    (``S[t+1] = τ·S[t] + o[t+1]``, ``S[0] = 0``). ``average`` divides by T (reference code)."""
    w = tau ** torch.arange(T - 1, -1, -1, device=device, dtype=torch.float64)
    if average:
        w = w / T
    return w.to(dtype)


@functools.lru_cache(maxsize=64)
def _trace_weights_cached(T: int, tau: float, average: bool, device, dtype) -> Tensor:
    """:func:`trace_weights`, computed once per signature (the observer needs it for every
    layer of every batch); callers must not modify the result."""
    return trace_weights(T, tau, average, device, dtype)


@functools.lru_cache(maxsize=64)
def _trace_weight_sum(T: int, tau: float, average: bool) -> float:
    return float(trace_weights(T, tau, average).sum())


def population(x: Tensor, conv: bool) -> Tensor:
    """Sum a conv layer's activity over the N×N positions of each channel (Eq. 6, 19)."""
    return x.sum((-1, -2)) if conv and x.dim() >= 4 else x


def spike_trace(spikes: Tensor, tau: float, conv: bool = False, average: bool = False) -> Tensor:
    """Eq. 5-6 (SNN) / Eq. 18-19 (DNN, T=1): the trace S^T after the T steps of each sample.

    ``spikes``: ``[T, N, units]`` (FC) or ``[T, N, C, H, W]`` (conv, one population per
    channel). Returns ``[N, units]``."""
    x = population(spikes, conv)
    w = _trace_weights_cached(x.shape[0], float(tau), bool(average), x.device, x.dtype)
    return torch.tensordot(w, x, dims=([0], [0]))


def static_trace(x: Tensor, tau: float, T: int, conv: bool = False, average: bool = False) -> Tensor:
    """The trace of an input held constant over T steps (direct encoding): ``x · Σ_t w_t``."""
    return population(x, conv) * _trace_weight_sum(int(T), float(tau), bool(average))


def running_traces(spikes: Tensor, tau: float, conv: bool = False) -> Tensor:
    """``S[t]`` for every step t (Eq. 5-6), ``[T, N, units]``; used by STDP."""
    x = population(spikes, conv)
    out = torch.empty_like(x)
    s = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        s = tau * s + x[t]
        out[t] = s
    return out


def bcm_post(post: Tensor, theta: Tensor) -> Tensor:
    """The post-synaptic factor of Eq. 7, ``S_post[n,i]·(S_post[n,i] − θ_i)``, ``[N, units]``."""
    return post * (post - theta)


def bcm(pre: Tensor, post: Tensor, theta: Tensor) -> Tensor:
    """Eq. 7 summed over the samples of a batch: ``BCM[i,j] = Σ_n S_pre[n,j]·S_post[n,i]·(S_post[n,i] − θ_i)``."""
    return bcm_post(post, theta).t() @ pre


def hebb(pre: Tensor, post: Tensor) -> Tensor:
    """Hebbian importance: ``H[i,j] = Σ_n S_pre[n,j]·S_post[n,i]`` (Fig. 4H ablation)."""
    return post.t() @ pre


def stdp(pre_spikes: Tensor, post_spikes: Tensor, tau: float) -> Tensor:
    """Trace-based STDP summed over a batch (Fig. 4H ablation).

    Potentiation when the post neuron fires after the pre neuron (its trace from the
    previous step), depression when the pre neuron fires after the post neuron:
    ``STDP[i,j] = Σ_{n,t} o_post[t,n,i]·S_pre[t−1,n,j] − o_pre[t,n,j]·S_post[t−1,n,i]``.
    Inputs are ``[T, N, units]`` (already summed over positions for conv layers)."""
    s_pre = running_traces(pre_spikes, tau)
    s_post = running_traces(post_spikes, tau)
    T = pre_spikes.shape[0]
    if T < 2:
        return torch.zeros(post_spikes.shape[-1], pre_spikes.shape[-1], dtype=pre_spikes.dtype, device=pre_spikes.device)
    ltp = torch.einsum("tni,tnj->ij", post_spikes[1:], s_pre[:-1])
    ltd = torch.einsum("tnj,tni->ij", pre_spikes[1:], s_post[:-1])
    return ltp - ltd


def dendritic_spine(post_trace_sum: Tensor, synaptic_importance: Tensor) -> Tensor:
    """Eq. 11: ``D^e_i = (Σ_b S_post_i^T) · (Σ_j BCM^e[i,j])``."""
    return post_trace_sum * synaptic_importance.sum(1)


def minmax(x: Tensor) -> Tensor:
    """Linear normalisation to [0, 1]; a constant vector maps to 0.5."""
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return torch.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def dendritic_spine_reference(post_trace_sum: Tensor, synaptic_importance: Tensor) -> Tensor:
    """The authors' code: ``minmax(Σ_j BCM) · minmax(Σ_b S_post)`` (METHOD.md §5)."""
    return minmax(synaptic_importance.sum(1)) * minmax(post_trace_sum)


class SlidingThreshold:
    """θ of Eq. 8-9: the running mean of a layer's post-synaptic trace since training began.

    Eq. 8 averages one value per batch; with equal batches that is the mean over every
    sample seen. This class keeps that sample mean exactly, so a smaller last batch weighs
    what its samples weigh (the authors' code keeps θ per batch slot and breaks there)."""

    def __init__(self, units: int, device=None):
        self.value = torch.zeros(units, device=device, dtype=torch.float64)
        self.count = 0

    def update(self, post: Tensor, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """Fold the traces ``[N, units]`` of one batch in; returns θ (in ``post``'s dtype, for
        float traces).
        ``reduce`` (data-parallel training: a sum over ranks) folds in every rank's share of
        the batch, so θ is that of the whole batch on every rank."""
        return self.fold(post.sum(0), post.shape[0], reduce)

    def fold(self, batch_sum: Tensor, n: int, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """:meth:`update` from the batch's sum over its ``n`` samples (``[units]``), for a
        caller that needs that sum too; returns θ in ``batch_sum``'s dtype."""
        dtype = batch_sum.dtype
        sums = batch_sum.to(self.value.dtype)
        if reduce is not None:
            packed = reduce(torch.cat([sums, sums.new_tensor([float(n)])]))
            sums, n = packed[:-1], int(round(float(packed[-1])))
        total = self.count + n
        if total == 0:
            return self.value.to(dtype)
        self.value = (self.value * self.count + sums) / total
        self.count = total
        return self.value.to(dtype)

    def to(self, device) -> "SlidingThreshold":
        self.value = self.value.to(device)
        return self

    def state_dict(self) -> dict:
        return {"value": self.value.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"].to(self.value.device, torch.float64).clone()
        self.count = int(state["count"])
