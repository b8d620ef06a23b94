"""The multi-step LIF (Eq. 1-2, 4) as two fused kernels, compiled with ``torch.compile``.

:class:`dpap.snn.neurons.LIFFunction` runs the time loop as a few ATen calls per step, each a
pass over the layer's whole state in memory: forward three, backward up to eight. On a
CPU those passes, not the arithmetic, are what a step of the paper's MNIST net spends in
its first LIF layer (about a third of the step). Compiled, the whole loop over T becomes
one pass over the current, the membranes and the spikes forward and one pass backward.

The step functions below are written with the same operations in the same order as
:class:`~dpap.snn.neurons.LIFFunction`, so they round identically: forward
``u[t] = I[t] + (λ·u[t−1])·keep[t−1]`` (:func:`lif_membrane`) and backward as there;
the reset mask ``keep[t] = 1[u[t] < V_th]`` is recomputed in backward from the saved
membranes (the eager path saves it). ``tests/snn/test_fused_lif.py`` holds the two bit-identical.

Tensors are ``[T, M]`` (a layer's state flattened), so one compiled graph per T serves
every layer and batch size (``dynamic=True``). Compilation needs a C++ compiler on CPU
(Triton on CUDA); :func:`kernels` compiles once per process (a few seconds; Inductor's
on-disk cache makes later processes faster), saying so in one note line on stderr first
(a progress bar would otherwise sit still for that long), and, where that fails, says so
in one line and returns None: the eager path is used.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

KERNELS = ("auto", "eager", "compiled")
"""``neuron.kernel``: ``compiled`` = these kernels; ``eager`` = the ATen loop; ``auto`` =
compiled on CPU for layers of at least :data:`AUTO_MIN_STATE` entries per step, eager
otherwise and on CUDA."""


def lif_membrane(previous: Tensor, current: Tensor, decay: float, threshold: float) -> Tensor:
    """Eq. 1 with the hard reset of Eq. 2: ``u[t] = I[t] + (λ·u[t−1])·1[u[t−1] < V_th]``,
    in the operation order of :class:`~dpap.snn.neurons.LIFFunction` (so it rounds the same)."""
    keep = (previous < threshold).to(current.dtype)
    return current + (decay * previous) * keep


def lif_forward_steps(current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ``[T, M]`` of Eq. 1-2 for the currents ``[T, M]``."""
    spikes, membranes = [], []
    u = current[0]
    for t in range(current.shape[0]):
        if t > 0:
            u = lif_membrane(u, current[t], decay, threshold)
        membranes.append(u)
        spikes.append((u >= threshold).to(current.dtype))
    return torch.stack(spikes), torch.stack(membranes)


def lif_spikes_steps(current: Tensor, decay: float, threshold: float) -> Tensor:
    """:func:`lif_forward_steps` for inference: the spikes only (no membranes written)."""
    spikes = []
    u = current[0]
    for t in range(current.shape[0]):
        if t > 0:
            u = lif_membrane(u, current[t], decay, threshold)
        spikes.append((u >= threshold).to(current.dtype))
    return torch.stack(spikes)


def lif_pool_static_steps(planes: Tensor, steps: int, decay: float, threshold: float) -> Tensor:
    """Inference: the spikes of a current held over ``steps`` time steps (direct encoding's
    first layer), average-pooled, ``[T, M]``.

    ``planes`` ``[k², M]`` holds the current of the k² members of each pooling window
    (window ``m`` has its members at ``planes[:, m]``), so the pooling is a sum over the
    first dimension and every pass is contiguous. The membrane arithmetic is
    :func:`lif_spikes_steps`'; the spikes are 0 or 1, so their sum is exact in any order
    and ``sum / k²`` equals the row-by-row pooling of :class:`dpap.snn.networks.AvgPool2d`."""
    outs = []
    u = planes
    for t in range(steps):
        if t > 0:
            u = lif_membrane(u, planes, decay, threshold)
        outs.append((u >= threshold).to(planes.dtype).sum(0) / planes.shape[0])
    return torch.stack(outs)


def lif_pool_steps(current: Tensor, decay: float, threshold: float, k: int) -> Tensor:
    """Inference: the spikes of ``current`` ``[T, N, C, H, W]`` followed by k×k average
    pooling (kernel = stride = k), ``[T, N, C, H // k, W // k]``. Compiled, it still writes
    some steps' spikes and membranes at full size (Inductor does not fuse the pooling
    window's reads with the recurrence: at T = 4 the spikes of two steps and one membrane;
    docs/compaction.md §3), but no full-size spike tensor is returned."""
    outs = []
    u = current[0]
    for t in range(current.shape[0]):
        if t > 0:
            u = lif_membrane(u, current[t], decay, threshold)
        outs.append(torch.nn.functional.avg_pool2d((u >= threshold).to(current.dtype), k))
    return torch.stack(outs)


def lif_backward_steps(grad_spikes: Tensor, membranes: Tensor, decay: float, threshold: float, width: float, detach_reset: bool) -> Tensor:
    """∂L/∂I ``[T, M]``: back-propagation through time of Eq. 1-2 with the surrogate Eq. 4."""
    T = membranes.shape[0]
    grads: list[Optional[Tensor]] = [None] * T
    later: Optional[Tensor] = None  # ∂L/∂u[t+1]
    for t in range(T - 1, -1, -1):
        u = membranes[t]
        sg = ((u - threshold).abs() < width / 2).to(u.dtype)
        if width != 1.0:
            sg = sg / width
        if later is not None and not detach_reset:
            g = (grad_spikes[t] - (later * decay) * u) * sg
        else:
            g = grad_spikes[t] * sg
        if later is not None:
            g = g + (decay * later) * (u < threshold).to(u.dtype)
        grads[t] = g
        later = g
    return torch.stack(grads)  # type: ignore[arg-type]


def _note(line: str) -> None:
    """One line on stderr above any progress bar (``tqdm.write`` clears and redraws the
    bars, so a training epoch's bar is not broken by the line); in data-parallel training
    from rank 0 only, which draws the bar (the other ranks compile the same)."""
    from tqdm.auto import tqdm

    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    tqdm.write(f"note: {line}", file=sys.stderr)


def _failed(what: str, device_type: str, exc: Exception, fallback: str) -> None:
    """The one warning line of a compilation that failed: what, why (the exception's first
    line) and what runs instead."""
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    print(f"warning: {what} could not be compiled on {device_type} ({type(exc).__name__}: {first}); {fallback}", file=sys.stderr, flush=True)


class _ErrorsOnly(logging.Filter):
    """Lets a logger's records through from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_ERRORS_ONLY = _ErrorsOnly()


@contextlib.contextmanager
def _quiet():
    """Compiling on a CPU-only machine, ``torch.utils.cpp_extension`` logs "No CUDA runtime
    is found" and Inductor warns about its choices; neither concerns a user.

    Entered around every call of a compiled kernel (a call may recompile), so it must be
    cheap: a filter on the logger, not ``Logger.setLevel``, which clears the level cache
    of every logger in the process (several hundred once Inductor is loaded)."""
    log = logging.getLogger("torch.utils.cpp_extension")
    outermost = _ERRORS_ONLY not in log.filters  # nested: the outer one removes it
    if outermost:
        log.addFilter(_ERRORS_ONLY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if outermost:
            log.removeFilter(_ERRORS_ONLY)


@functools.lru_cache(maxsize=None)
def kernels(device_type: str) -> Optional[tuple[Callable, Callable, Callable]]:
    """The compiled (forward, backward, spikes only) for ``device_type``, compiled and
    tried once on small inputs in the ways training and evaluation call them (so that the
    real calls find them compiled); None (with a one-line warning) where compilation fails."""
    _note(f"compiling the fused LIF kernels for {device_type} (once per process: about 20 s on a fresh machine, a few s once "
          "Inductor's on-disk cache has them; neuron.kernel: eager skips it)")
    try:
        fwd = torch.compile(lif_forward_steps, dynamic=True)
        bwd = torch.compile(lif_backward_steps, dynamic=True)
        only = torch.compile(lif_spikes_steps, dynamic=True)
        # tried as they are used, so that these compilations serve the real calls (each
        # difference is a guard that fails and a compilation more): with autograd off
        # (inside LIFFunction's forward and backward, and in evaluation), a current that
        # requires grad in training and one that does not in evaluation, T = 4 (the loops
        # over T are unrolled, so another T compiles again)
        x = torch.linspace(0.0, 1.0, 32, device=device_type).view(4, 8)
        held = x[:1].clone().requires_grad_().expand(4, 8)  # direct encoding's first layer: stride 0 over T
        with _quiet(), torch.no_grad():
            s, u = fwd(x.clone().requires_grad_(), 0.2, 0.5)
            fwd(held, 0.2, 0.5)
            bwd(s, u, 0.2, 0.5, 1.0, False)
            only(x, 0.2, 0.5)
            only(x[:1].expand(4, 8), 0.2, 0.5)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the eager path
        _failed("the fused LIF kernel", device_type, exc, "using the eager LIF (same results, slower; set neuron.kernel: eager to skip the attempt)")
        return None
    return fwd, bwd, only


AUTO_MIN_STATE = 1 << 18
"""``auto`` compiles a layer whose state per time step (batch × units × positions) has at
least this many entries: below it (digits' nets, FC layers) the eager loop's passes stay in
cache and compiling would cost more than it saves."""


def use_compiled(kernel: str, device: torch.device, state: int = AUTO_MIN_STATE) -> bool:
    """Whether ``neuron.kernel`` asks for the compiled kernels on ``device`` for a layer
    whose state per step has ``state`` entries."""
    return kernel == "compiled" or (kernel == "auto" and device.type == "cpu" and state >= AUTO_MIN_STATE)


def forward(current: Tensor, decay: float, threshold: float) -> Optional[tuple[Tensor, Tensor]]:
    """Spikes and membranes shaped like ``current``, or None where there is no kernel."""
    k = kernels(current.device.type)
    if k is None:
        return None
    flat = current.reshape(current.shape[0], -1)
    with _quiet():
        spikes, membranes = k[0](flat, decay, threshold)
    return spikes.view(current.shape), membranes


def spikes(current: Tensor, decay: float, threshold: float) -> Optional[Tensor]:
    """The spikes alone (inference: nothing saved for a backward pass), or None where
    there is no kernel."""
    k = kernels(current.device.type)
    if k is None:
        return None
    with _quiet():
        return k[2](current.reshape(current.shape[0], -1), decay, threshold).view(current.shape)


@functools.lru_cache(maxsize=None)
def pool_kernels(device_type: str) -> Optional[tuple[Callable, Callable]]:
    """The compiled inference kernels of the LIF with its average pooling (held current,
    time-varying current), compiled and tried once; None (with a one-line warning) where
    compilation fails. Compiled on first use, so training alone never pays for them;
    None at once where :func:`kernels` failed (its warning said it all)."""
    if kernels(device_type) is None:
        return None
    try:
        static = torch.compile(lif_pool_static_steps, dynamic=True)
        varying = torch.compile(lif_pool_steps, dynamic=True)
        # as evaluation calls them (see kernels); no size-1 dimension and no two equal (they would be
        # specialised); the pooling specialises the map size: 14×14 is the MNIST net's
        # second layer, another size compiles once more at its first evaluation
        x = torch.linspace(0.0, 1.0, 4 * 2 * 3 * 14 * 14, device=device_type)
        with _quiet(), torch.no_grad():
            static(x[:64].view(4, 16).clone(), 4, 0.2, 0.5)
            varying(x.view(4, 2, 3, 14, 14), 0.2, 0.5, 2)
    except Exception as exc:  # noqa: BLE001 - any failure means: LIF and pooling apart
        _failed("the fused LIF + pooling kernel", device_type, exc, "inference runs the LIF and the pooling apart (same results, slower)")
        return None
    return static, varying


def pooled_spikes(current: Tensor, decay: float, threshold: float, k: int) -> Optional[Tensor]:
    """Inference: the spikes of ``current`` ``[T, N, C, H, W]`` average-pooled k×k (kernel
    = stride = k, no padding, rows and columns past the last whole window dropped, as
    ``F.avg_pool2d``), ``[T, N, C, H // k, W // k]``; None where there is no kernel.

    Equal to the LIF followed by :class:`dpap.snn.networks.AvgPool2d`, without the full-size
    spikes ever written for a held current (some steps' are, inside the compiled
    :func:`lif_pool_steps`, for a time-varying one): on the paper's MNIST net the LIF and pooling of a layer take
    2-4× less time so (``tests/snn/test_fused_lif.py`` holds the results equal,
    ``benchmarks/compaction.py`` times it). A current held over time (a stride-0 time
    dimension: direct encoding's first layer) is regrouped once into its k² window
    members (:func:`lif_pool_static_steps`), so that every pass is contiguous."""
    kern = pool_kernels(current.device.type)
    if kern is None:
        return None
    T, N, C, H, W = current.shape
    Hk, Wk = H // k, W // k
    with _quiet():
        if T > 1 and current.stride(0) == 0:
            held = current[0][..., : Hk * k, : Wk * k].reshape(N, C, Hk, k, Wk, k)
            planes = held.permute(3, 5, 0, 1, 2, 4).reshape(k * k, N * C * Hk * Wk)
            return kern[0](planes, T, decay, threshold).view(T, N, C, Hk, Wk)
        return kern[1](current, decay, threshold, k)


def backward(grad_spikes: Tensor, membranes: Tensor, decay: float, threshold: float, width: float, detach_reset: bool) -> Tensor:
    """∂L/∂I shaped like ``grad_spikes`` (``membranes`` as :func:`forward` returned them)."""
    k = kernels(membranes.device.type)
    assert k is not None  # forward used the kernel, so it exists
    flat = grad_spikes.reshape(grad_spikes.shape[0], -1)
    with _quiet():
        return k[1](flat, membranes, decay, threshold, width, detach_reset).view(grad_spikes.shape)
