"""An SNN as a NIR graph (Neuromorphic Intermediate Representation, ``nir`` package).

One NIR node per operation, in the conventions snnTorch's own exporter writes, so that
snnTorch's importer (``snntorch.import_nir.import_from_nir``) and ``nirtorch`` read it:

=====================  ======================================================================
ours                   NIR node
=====================  ======================================================================
``nn.Conv2d``          ``Conv2d`` (weight, bias, stride, padding, dilation, groups, input_shape)
``nn.Linear``          ``Affine`` (weight, bias)
``BN`` after either    folded into that node's weight and bias (eval-mode statistics)
``AP<k>``              ``AvgPool2d`` (kernel_size = stride = (k, k), padding 0)
flatten before an FC   ``Flatten`` (start_dim 0: NIR shapes have no batch axis)
``DO<p>``              nothing (identity at inference)
``LIF`` (λ, V_th)      ``LIF`` (see below); ``IF`` when λ = 1
``MP<k>``              none in NIR: :class:`~dpap.export.errors.ExportError`
=====================  ======================================================================

The LIF. Ours is discrete (Eq. 1-2): ``u[t] = λ·u[t−1]·(1 − o[t−1]) + I[t]``, ``o[t] =
1[u[t] ≥ V_th]``, hard reset to 0. NIR's is continuous: ``τ·dv/dt = (v_leak − v) + R·I``,
spike when ``v > v_threshold``, then ``v = v_reset``. One forward-Euler step of length
``dt`` gives ``v[t] = (1 − dt/τ)·v[t−1] + (dt·R/τ)·I[t]``, which is ours for
``τ = dt/(1 − λ)``, ``R = τ/dt`` (input gain 1), ``v_leak = 0``, ``v_threshold = V_th``,
``v_reset = 0``. ``dt`` = :data:`DT` = 1e-4 s, snnTorch's constant, whose importer reads
``β = 1 − dt/τ`` back (``snn.Leaky(beta=β, reset_mechanism="zero", reset_delay=False)``).
λ = 1 (no leak) is NIR's ``IF`` with ``R = 1/dt``. Parameters are float64 arrays of the
layer's output shape (``(C, H, W)`` or ``(N,)``), so τ round-trips to β exactly. The
threshold compares ``≥`` here and ``>`` in NIR: a spike differs only where a membrane
equals the threshold exactly.

Time. The graph is one time step. The network runs ``metadata["time_steps"]`` steps per
sample; with ``direct`` encoding the input at every step is the static sample (our
network computes the first layer once and feeds its current at all steps, which is the
same); with ``poisson`` / ``events`` it is that step's frame. The class is the argmax of
the output layer's spike counts over the steps. The graph's ``metadata`` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import nir
import numpy as np
import torch
from torch import Tensor, nn

from dpap.export.errors import ExportError
from dpap.snn.networks import SpikingNetwork
from dpap.snn.neurons import LIF

DT = 1e-4
"""Seconds per time step in the exported LIF constants (snnTorch's convention)."""


def lif_parameters(decay: float, threshold: float, shape: Sequence[int]) -> dict[str, np.ndarray]:
    """NIR ``LIF`` fields for our LIF with decay λ < 1 and threshold V_th (module docstring)."""
    tau = DT / (1.0 - decay)
    full = lambda v: np.full(tuple(shape), v, dtype=np.float64)  # noqa: E731
    return {"tau": full(tau), "r": full(tau / DT), "v_leak": full(0.0), "v_threshold": full(threshold), "v_reset": full(0.0)}


def folded_weights(block, live: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The block's synapse weight (times the living-synapse mask ``live``, if given) and
    bias, with a following BatchNorm folded in: ``w·γ/σ`` and ``(b − μ)·γ/σ + β``."""
    w = block.synapse.weight.detach().cpu().double()
    if live is not None:
        m = live.to(w.dtype)
        w = w * m.view(*m.shape, *([1] * (w.dim() - 2)))
    b = block.synapse.bias.detach().cpu().double() if block.synapse.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    norm = block.norm
    if norm is not None:
        mean = norm.running_mean.detach().cpu().double() if norm.running_mean is not None else torch.zeros_like(b)
        var = norm.running_var.detach().cpu().double() if norm.running_var is not None else torch.ones_like(b)
        scale = 1.0 / torch.sqrt(var + norm.eps)
        shift = torch.zeros_like(b)
        if norm.affine:
            scale = scale * norm.weight.detach().cpu().double()
            shift = norm.bias.detach().cpu().double()
        w = w * scale.view(-1, *([1] * (w.dim() - 1)))
        b = (b - mean) * scale + shift
    return w.float(), b.float()


def block_shapes(net: SpikingNetwork) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per block, the per-sample shapes of its synapse's input (after any flatten), its
    neurons' output and its output after pooling, from one forward pass on zeros."""
    shapes: list = []

    def observe(index, block, pre, post):
        sample_pre = tuple(pre.shape[2:] if pre.dim() == (5 if isinstance(block.synapse, nn.Conv2d) else 3) else pre.shape[1:])
        shapes.append([sample_pre, tuple(post.shape[2:])])

    remove = net.observe(observe)
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            param = next(net.parameters())
            net(torch.zeros((1, *net.input_shape), dtype=param.dtype, device=param.device))
    finally:
        remove()
        net.train(was_training)
    out = []
    for (pre, post), block in zip(shapes, net.blocks):
        pooled = list(post)
        for m in block.post:
            if isinstance(m, nn.AvgPool2d):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                pooled = [pooled[0], pooled[1] // k, pooled[2] // k]
        out.append((pre, post, tuple(pooled)))
    return out


def nir_graph(net: SpikingNetwork, live: Optional[Sequence[Tensor]] = None, metadata: Optional[dict] = None):
    """The NIR graph of an SNN (module docstring). ``live[i]``: block i's living synapses
    (bool ``[units, pre_units]``, :func:`~dpap.pruning.compression.live_synapses`); their
    complement is written as zero weights. Raises :class:`~dpap.export.errors.ExportError` for
    a layer NIR cannot express."""
    if net.kind != "snn":
        raise ExportError(f"NIR export takes an SNN; this is a {net.kind.upper()} (export it to ONNX)")
    nodes: dict[str, object] = {"input": nir.Input(input_type={"input": np.array(net.input_shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    shape = tuple(net.input_shape)  # per-sample shape flowing into the next block

    def add(name: str, node) -> None:
        nonlocal prev
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    for i, (block, (pre, post, pooled)) in enumerate(zip(net.blocks, block_shapes(net))):
        if block.flatten:
            add(f"flatten{i}", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
        w, b = folded_weights(block, live[i] if live is not None else None)
        if isinstance(block.synapse, nn.Conv2d):
            c = block.synapse
            if c.padding_mode != "zeros" or isinstance(c.padding, str):
                raise ExportError(f"layer {i}: NIR export needs numeric zero padding, got padding={c.padding!r} ({c.padding_mode})")
            add(f"conv{i}", nir.Conv2d(input_shape=tuple(pre[1:]), weight=w.numpy(), bias=b.numpy(), stride=tuple(c.stride),
                                       padding=tuple(c.padding), dilation=tuple(c.dilation), groups=c.groups))
        else:
            add(f"fc{i}", nir.Affine(weight=w.numpy(), bias=b.numpy()))
        neuron = block.neuron
        if not isinstance(neuron, LIF):
            raise ExportError(f"layer {i}: NIR export needs LIF neurons, got {type(neuron).__name__}")
        if neuron.decay >= 1.0:  # no leak: an integrate-and-fire neuron, v += dt·R·I with R = 1/dt
            add(f"lif{i}", nir.IF(r=np.full(post, 1.0 / DT), v_threshold=np.full(post, neuron.threshold), v_reset=np.zeros(post)))
        else:
            add(f"lif{i}", nir.LIF(**lif_parameters(neuron.decay, neuron.threshold, post)))
        for j, m in enumerate(block.post):
            if isinstance(m, nn.AvgPool2d):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                add(f"pool{i}" if j == 0 else f"pool{i}_{j}", nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0])))
            elif isinstance(m, nn.Dropout):
                continue
            elif isinstance(m, nn.MaxPool2d):
                raise ExportError(f"layer {i}: NIR has no max pooling (MP{m.kernel_size}); use average pooling (AP<k>) in model.arch to export an SNN")
            else:
                raise ExportError(f"layer {i}: NIR export does not know {type(m).__name__}")
        shape = pooled
    nodes["output"] = nir.Output(output_type={"output": np.array([net.num_classes])})
    edges.append((prev, "output"))
    meta = {"producer": "dpap", "time_steps": int(net.time_steps), "dt": DT, "arch": net.arch,
            "decoding": "class = argmax of the output spike counts over time_steps"}
    meta.update(metadata or {})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(graph, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nir.write(str(tmp), graph)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
