"""Neurons: the multi-step LIF of the SNN (Eq. 1-2, 4) and the ReLU of the DNN.

Tensors are time-major, ``[T, N, ...]``. The time loop lives here and only here: every
other layer is a plain batched op over ``T·N`` samples (see :mod:`dpap.layers`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


# CPU: elements of one time step processed together, so that the T steps of a chunk stay
# in cache (one pass over memory rather than one per elementwise op).
_CHUNK = 1 << 16


class LIFFunction(torch.autograd.Function):
    """Multi-step LIF with hard reset (Eq. 1-2) and the rectangle surrogate (Eq. 4).

    ``u[t] = λ·u[t−1]·(1 − o[t−1]) + I[t]``, ``o[t] = 1[u[t] ≥ V_th]``.

    Forward runs without building an autograd graph per step; backward is the exact
    back-propagation through time of those two lines (including the reset term, unless
    ``detach_reset``), so one call replaces ``4·T`` autograd nodes by one.

    Speed (CPU): the loop runs over chunks of each step's elements, T steps per chunk, with
    in-place float ops only (boolean masks are slow on CPU): forward saves the membranes
    and nothing else; backward recomputes the surrogate window and the reset mask from
    them. Forward is bit-identical to :func:`lif_reference`.
    """

    @staticmethod
    def forward(ctx, current: Tensor, decay: float, threshold: float, width: float, detach_reset: bool):  # type: ignore[override]
        T = current.shape[0]
        spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        membranes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        cur, s, m = current.reshape(T, -1), spikes.view(T, -1), membranes.view(T, -1)
        n = cur.shape[1]
        chunk = _CHUNK if current.device.type == "cpu" else max(n, 1)
        keep = torch.empty(min(n, chunk), dtype=current.dtype, device=current.device)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            kp = keep[: hi - lo]  # 1 − o[t−1], as a float mask
            for t in range(T):
                u = m[t, lo:hi]
                if t == 0:
                    u.copy_(cur[0, lo:hi])
                else:
                    torch.mul(m[t - 1, lo:hi], decay, out=u)
                    u.mul_(kp)
                    u.add_(cur[t, lo:hi])
                torch.ge(u, threshold, out=s[t, lo:hi])
                if t < T - 1:
                    torch.lt(u, threshold, out=kp)
        ctx.save_for_backward(membranes)
        ctx.params = (decay, threshold, width, detach_reset)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (membranes,) = ctx.saved_tensors
        decay, threshold, width, detach_reset = ctx.params
        T = membranes.shape[0]
        grad_current = torch.empty(membranes.shape, dtype=membranes.dtype, device=membranes.device)
        go, m, gc = grad_spikes.reshape(T, -1), membranes.view(T, -1), grad_current.view(T, -1)
        n = m.shape[1]
        chunk = _CHUNK if m.device.type == "cpu" else max(n, 1)
        sg_buf = torch.empty(min(n, chunk), dtype=m.dtype, device=m.device)
        keep_buf = torch.empty(min(n, chunk), dtype=m.dtype, device=m.device)
        half = width / 2
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            sg, kp = sg_buf[: hi - lo], keep_buf[: hi - lo]
            for t in range(T - 1, -1, -1):
                g, u = gc[t, lo:hi], m[t, lo:hi]
                if t < T - 1 and not detach_reset:
                    # ∂L/∂u[t+1] through u[t+1] = λ·u[t]·(1 − o[t]) + I[t+1]; three ops
                    # rather than one addcmul so the rounding is that of the equations
                    torch.mul(gc[t + 1, lo:hi], decay, out=kp)
                    kp.mul_(u)
                    torch.sub(go[t, lo:hi], kp, out=g)
                else:
                    g.copy_(go[t, lo:hi])
                # Eq. 4: (1/a)·1[|u − V_th| < a/2]
                torch.sub(u, threshold, out=sg)
                sg.abs_()
                torch.lt(sg, half, out=sg)
                if width != 1.0:
                    sg.div_(width)
                g.mul_(sg)
                if t < T - 1:
                    torch.lt(u, threshold, out=kp)  # 1 − o[t]
                    g.addcmul_(gc[t + 1, lo:hi], kp, value=decay)
        return grad_current, None, None, None, None


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron (Eq. 1-2), surrogate gradient Eq. 4.

    Input: the synaptic current ``[T, N, ...]``; output: binary spikes of the same shape.
    """

    def __init__(self, decay: float = 0.2, threshold: float = 0.5, surrogate_width: float = 1.0, detach_reset: bool = False):
        super().__init__()
        self.decay = float(decay)
        self.threshold = float(threshold)
        self.surrogate_width = float(surrogate_width)
        self.detach_reset = bool(detach_reset)

    def forward(self, current: Tensor) -> Tensor:
        return LIFFunction.apply(current, self.decay, self.threshold, self.surrogate_width, self.detach_reset)

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
