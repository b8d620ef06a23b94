"""Neurons: the multi-step LIF of the SNN (Eq. 1-2, 4) and the ReLU of the DNN.

Tensors are time-major, ``[T, N, ...]``. The time loop lives here and only here: every
other layer is a plain batched op over ``T·N`` samples (see :mod:`dpap.layers`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from dpap.snn import fused_lif


def rectangle_surrogate(u: Tensor, threshold: float, width: float) -> Tensor:
    """Eq. 4: ∂o/∂u ≈ (1/a) · 1[|u − V_th| < a/2]."""
    return (torch.abs(u - threshold) < width / 2).to(u.dtype) / width


def lif_reference(
    current: Tensor, decay: float, threshold: float, width: float, detach_reset: bool = False
) -> Tensor:
    """Eq. 1-2 written as plain autograd ops, one step at a time.

    Slow; kept as the executable statement of the equations that :class:`LIFFunction`
    (the fast path) is tested against."""

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):  # type: ignore[override]
            ctx.save_for_backward(u)
            return (u >= threshold).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):  # type: ignore[override]
            (u,) = ctx.saved_tensors
            return grad * rectangle_surrogate(u, threshold, width)

    u = torch.zeros_like(current[0])
    o = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        reset = o.detach() if detach_reset else o
        u = decay * u * (1 - reset) + current[t]
        o = _Spike.apply(u)
        out.append(o)
    return torch.stack(out)


class LIFFunction(torch.autograd.Function):
    """Multi-step LIF with hard reset (Eq. 1-2) and the rectangle surrogate (Eq. 4).

    ``u[t] = λ·u[t−1]·(1 − o[t−1]) + I[t]``, ``o[t] = 1[u[t] ≥ V_th]``.

    Forward runs without building an autograd graph per step; backward is the exact
    back-propagation through time of those two lines (including the reset term, unless
    ``detach_reset``), so one call replaces ``4·T`` autograd nodes by one.

    Speed: three float ops per step forward, at most eight backward, written into preallocated
    outputs; no boolean masks (slow on CPU), no per-step copies. Forward saves the
    membranes and the reset masks ``1 − o``; backward recomputes the surrogate window.
    Forward is bit-identical to :func:`lif_reference`, and backward rounds as the
    equations do.
    """

    @staticmethod
    def forward(ctx, current: Tensor, decay: float, threshold: float, width: float, detach_reset: bool, fused: bool = False):  # type: ignore[override]
        ctx.params = (decay, threshold, width, detach_reset)
        if fused:  # the compiled kernels of dpap.snn.fused_lif: the same numbers in two passes
            out = fused_lif.forward(current, decay, threshold)
            if out is not None:
                spikes, membranes = out
                ctx.fused = True
                ctx.save_for_backward(membranes)
                return spikes
        ctx.fused = False
        T = current.shape[0]
        spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        membranes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        # keep[t] = 1 − o[t] as a float mask, for the next step and for backward
        keep = torch.empty((max(T - 1, 0), *current.shape[1:]), dtype=current.dtype, device=current.device)
        for t in range(T):
            u = membranes[t]
            if t == 0:
                u.copy_(current[0])
            else:
                # I[t] + (λ·u[t−1])·keep[t−1]: keep is 0 or 1, so this rounds exactly as
                # λ·u·(1 − o) + I does (only λ·u is inexact), fused or not
                torch.addcmul(current[t], membranes[t - 1], keep[t - 1], value=decay, out=u)
            torch.ge(u, threshold, out=spikes[t])
            if t < T - 1:
                torch.lt(u, threshold, out=keep[t])
        ctx.save_for_backward(membranes, keep)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        decay, threshold, width, detach_reset = ctx.params
        if ctx.fused:
            (membranes,) = ctx.saved_tensors
            return fused_lif.backward(grad_spikes, membranes, decay, threshold, width, detach_reset), None, None, None, None, None
        membranes, keep = ctx.saved_tensors
        T = membranes.shape[0]
        grad_current = torch.empty(membranes.shape, dtype=membranes.dtype, device=membranes.device)
        sg = torch.empty(membranes.shape[1:], dtype=membranes.dtype, device=membranes.device)
        tmp = torch.empty_like(sg)
        half = width / 2
        for t in range(T - 1, -1, -1):
            g, u = grad_current[t], membranes[t]
            # Eq. 4: (1/a)·1[|u − V_th| < a/2]
            torch.sub(u, threshold, out=sg)
            sg.abs_()
            torch.lt(sg, half, out=sg)
            if width != 1.0:
                sg.div_(width)
            if t < T - 1 and not detach_reset:
                # ∂L/∂u[t+1] through u[t+1] = λ·u[t]·(1 − o[t]) + I[t+1]; three ops rather
                # than one addcmul so that the rounding is that of the equations
                torch.mul(grad_current[t + 1], decay, out=tmp)
                tmp.mul_(u)
                torch.sub(grad_spikes[t], tmp, out=g)
                g.mul_(sg)
            else:
                torch.mul(grad_spikes[t], sg, out=g)
            if t < T - 1:
                g.addcmul_(grad_current[t + 1], keep[t], value=decay)
        return grad_current, None, None, None, None, None


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron (Eq. 1-2), surrogate gradient Eq. 4.

    Input: the synaptic current ``[T, N, ...]``; output: binary spikes of the same shape.
    """

    def __init__(self, decay: float = 0.2, threshold: float = 0.5, surrogate_width: float = 1.0, detach_reset: bool = False, kernel: str = "eager"):
        super().__init__()
        self.decay = float(decay)
        self.threshold = float(threshold)
        self.surrogate_width = float(surrogate_width)
        self.detach_reset = bool(detach_reset)
        self.kernel = kernel
        """``neuron.kernel``: ``eager``, ``compiled`` (:mod:`dpap.snn.fused_lif`) or ``auto``
        (compiled on CPU for large layers). The results are the same; only the speed differs."""

    def forward(self, current: Tensor) -> Tensor:
        fused = self.kernel != "eager" and fused_lif.use_compiled(self.kernel, current.device, current[0].numel())
        if fused and not (current.requires_grad and torch.is_grad_enabled()):
            out = fused_lif.spikes(current, self.decay, self.threshold)  # inference: no membranes kept
            if out is not None:
                return out
        return LIFFunction.apply(current, self.decay, self.threshold, self.surrogate_width, self.detach_reset, fused)

    def pooled(self, current: Tensor, k: int) -> Optional[Tensor]:
        """Inference only (no gradient): the spikes followed by k×k average pooling in one
        compiled kernel (:func:`dpap.snn.fused_lif.pooled_spikes`), ``[T, N, C, H // k, W // k]``;
        None where this neuron does not use the compiled kernels or the current is not on
        the CPU (then run the LIF and the pooling apart: the same result)."""
        if (
            self.kernel == "eager" or current.dim() != 5 or current.device.type != "cpu"
            or (current.requires_grad and torch.is_grad_enabled())
            or not fused_lif.use_compiled(self.kernel, current.device, current[0].numel())
        ):
            return None
        return fused_lif.pooled_spikes(current, self.decay, self.threshold, k)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, threshold={self.threshold}, surrogate_width={self.surrogate_width}"


class ReLUNeuron(nn.ReLU):
    """The DNN's neuron; its output stands in for the spiking trace (Eq. 18-19)."""


def firing_rate_mse(spikes: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Eq. 3: ‖Y − (1/T) Σ_t o^{t,N}‖², averaged over the batch.

    ``spikes``: ``[T, N, classes]``; ``target``: class indices ``[N]``."""
    rate = spikes.mean(0)
    onehot = torch.nn.functional.one_hot(target, num_classes).to(rate.dtype)
    return ((rate - onehot) ** 2).sum(1).mean()
