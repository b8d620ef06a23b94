"""NIR graphs in and out: ``dpap.from_nir(path)`` and ``dpap.to_nir(model, path)``.

In: snnTorch's importer (``snntorch.import_nir.import_from_nir``, through ``nirtorch``)
turns the graph into torch modules that run one time step per call (``nn.Linear``,
``nn.Conv2d``, ``nn.Flatten``, ``nn.AvgPool2d``, ``snntorch.Leaky`` for NIR's ``LIF`` and
``IF``, ``snntorch.Synaptic`` for ``CubaLIF``). :class:`NIRNetwork` runs them over a
sequence ``[T, N, ...]`` (or a static input ``[N, ...]`` held for ``time_steps`` steps)
and returns the output spikes ``[T, N, ...]``: a model to train, and to ``dpap.attach``
(with ``example_input``) like any other.

Out: :func:`to_nir` writes a single-step model (a :class:`NIRNetwork`'s ``net``, an
``nn.Sequential`` of snnTorch layers) in the conventions snnTorch's importer reads back:
``Leaky`` (reset to zero) as ``LIF`` with ``τ = dt/(1 − β)``, ``R = τ/dt``, ``dt = 1e-4``;
``Synaptic`` as ``CubaLIF``; neuron parameters as arrays of the layer's shape, which
snnTorch 1.0's own exporter leaves out (its graphs then fail NIR's type check).
A pruned model is written with its pruned weights as zeros (the masks are applied).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, Optional

import nir
import nirtorch
import numpy as np
import snntorch as snn
import torch
from snntorch.import_nir import import_from_nir
from torch import Tensor, nn

from dpap.adapters.errors import AttachError
from dpap.adapters.neurons import reset_states

DT = 1e-4
"""Seconds per time step in NIR's neuron constants (snnTorch's convention)."""


class NIRNetwork(nn.Module):
    """A NIR graph as a trainable model: ``net`` (one time step per call) run over time."""

    def __init__(self, net: nn.Module, input_shape: tuple, time_steps: int = 1, metadata: Optional[dict] = None):
        super().__init__()
        self.net = net
        self.input_shape = tuple(int(s) for s in input_shape)
        self.time_steps = int(time_steps)
        self.metadata = dict(metadata or {})

    def step(self, x: Tensor) -> Tensor:
        """One time step (nirtorch's graph module returns ``(output, state)``; snnTorch's
        neurons keep their state themselves)."""
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out

    def forward(self, x: Tensor) -> Tensor:
        reset_states(self.net)
        if x.dim() == len(self.input_shape) + 1:  # static: the same input at every step
            return torch.stack([self.step(x) for _ in range(self.time_steps)])
        return torch.stack([self.step(x[t]) for t in range(x.shape[0])])


def from_nir(source: Any, time_steps: Optional[int] = None) -> NIRNetwork:
    """A :class:`NIRNetwork` from a NIR file (or a ``nir.NIRGraph``). ``time_steps`` for a
    static input: the graph's ``metadata["time_steps"]`` when it has one, else 1."""
    graph = nir.read(str(source)) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(graph, nir.NIRGraph):
        raise AttachError(f"from_nir: got a {type(source).__name__}; give the path of a .nir file or a nir.NIRGraph")
    inputs = [n for n in graph.nodes.values() if isinstance(n, nir.Input)]
    shape = tuple(np.asarray(next(iter(inputs[0].input_type.values()))).tolist()) if inputs else ()
    meta = dict(getattr(graph, "metadata", {}) or {})
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints its progress
        net = import_from_nir(graph)
    return NIRNetwork(net, shape, time_steps or int(meta.get("time_steps", 1)), meta)


def _shapes(model: nn.Module, example: Tensor) -> dict[nn.Module, tuple]:
    """Per module, the per-sample shape of its output (and input, for conv layers)."""
    out: dict[nn.Module, tuple] = {}

    def hook(module, args, output):
        o = output[0] if isinstance(output, tuple) else output
        out[module] = (tuple(args[0].shape[1:]), tuple(o.shape[1:]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            reset_states(model)
            model(example)
            reset_states(model)
    finally:
        for h in handles:
            h.remove()
    return out


def _module_map(shapes: dict) -> dict:
    full = lambda m, v: np.broadcast_to(np.asarray(v, dtype=np.float64), shapes[m][1]).copy()  # noqa: E731
    f32 = lambda t: t.detach().cpu().float().numpy()  # noqa: E731

    def linear(m: nn.Linear):
        return nir.Affine(weight=f32(m.weight), bias=f32(m.bias)) if m.bias is not None else nir.Linear(weight=f32(m.weight))

    def conv(m: nn.Conv2d):
        bias = f32(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
        return nir.Conv2d(input_shape=shapes[m][0][1:], weight=f32(m.weight), bias=bias, stride=m.stride, padding=m.padding,
                          dilation=m.dilation, groups=m.groups)

    def leaky(m):
        _zero_reset(m)
        tau = DT / (1.0 - full(m, f32(m.beta)))
        return nir.LIF(tau=tau, r=tau / DT, v_leak=full(m, 0.0), v_threshold=full(m, f32(m.threshold)), v_reset=full(m, 0.0))

    def synaptic(m):
        _zero_reset(m)
        tau_syn, tau_mem = DT / (1.0 - full(m, f32(m.alpha))), DT / (1.0 - full(m, f32(m.beta)))
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / DT, w_in=tau_syn / DT, v_leak=full(m, 0.0),
                           v_threshold=full(m, f32(m.threshold)), v_reset=full(m, 0.0))

    def pool(m: nn.AvgPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
        s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
        p = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
        return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))

    def flatten(m: nn.Flatten):
        return nir.Flatten(input_type={"input": np.array(shapes[m][0])}, start_dim=max(m.start_dim - 1, 0), end_dim=m.end_dim)

    return {nn.Linear: linear, nn.Conv2d: conv, snn.Leaky: leaky, snn.Synaptic: synaptic, nn.AvgPool2d: pool, nn.Flatten: flatten}


def _zero_reset(m) -> None:
    if getattr(m, "reset_mechanism", "zero") != "zero":
        raise AttachError(f"to_nir: {type(m).__name__} resets by {m.reset_mechanism!r}; NIR's neurons reset to v_reset: "
                          f"build it with reset_mechanism='zero' to export it")


def to_nir(model: nn.Module, path: Optional[str | Path] = None, example_input: Optional[Tensor] = None):
    """The NIR graph of a single-step model (a :class:`NIRNetwork` is written as its ``net``),
    written to ``path`` when given. ``example_input``: one step's input ``[N, ...]`` (a
    :class:`NIRNetwork` makes one from its input shape)."""
    meta: dict = {}
    if isinstance(model, NIRNetwork):
        meta = {**model.metadata, "time_steps": model.time_steps}
        if example_input is None:
            example_input = torch.zeros((1, *model.input_shape), device=next(model.parameters()).device)
        model = model.net
    if example_input is None:
        raise AttachError("to_nir: pass example_input=<one time step's input [N, ...]> so the layers' shapes are known")
    shapes = _shapes(model, example_input)
    graph = nirtorch.torch_to_nir(model, _module_map(shapes), default_dict=None, type_check=False)
    for node in graph.nodes.values():
        if isinstance(node, nir.Input):
            node.input_type = {"input": np.array(example_input.shape[1:])}
            node.output_type = {"output": np.array(example_input.shape[1:])}
    graph.infer_types()
    graph.metadata = {**meta, "producer": "dpap.to_nir", "dt": DT}
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nir.write(str(path), graph)
    return graph
