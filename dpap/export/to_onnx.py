"""A DNN as an ONNX model (``torch.onnx.export``, the torch.export-based exporter).

The network is first rebuilt as a plain ``nn.Sequential`` of standard modules
(:func:`as_sequential`): conv / linear with the pruned weights as zeros, BatchNorm, ReLU,
max or average pooling (``nn.AvgPool2d``, not our faster CPU kernel, which ONNX cannot
trace), flatten and dropout (identity at inference). Input ``input`` ``[batch, *input_shape]``,
output ``logits`` ``[batch, classes]`` (our network returns the same logits as
``[1, batch, classes]``); the batch axis is dynamic.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from dpap.export.errors import ExportError
from dpap.snn.networks import SpikingNetwork


def as_sequential(net: SpikingNetwork, live: Optional[Sequence[Tensor]] = None) -> nn.Sequential:
    """A DNN as an ``nn.Sequential`` of standard modules computing the same logits
    (copies; ``net`` is not changed). ``live[i]``: block i's living synapses; the others
    become zero weights."""
    if net.kind != "dnn":
        raise ExportError(f"ONNX export takes a DNN; this is an {net.kind.upper()} (export it to NIR)")
    layers: list[nn.Module] = []
    for i, block in enumerate(net.blocks):
        if block.flatten:
            layers.append(nn.Flatten())
        syn = copy.deepcopy(block.synapse).cpu().float()
        if live is not None:
            with torch.no_grad():
                m = live[i].to(syn.weight.dtype)
                syn.weight.mul_(m.view(*m.shape, *([1] * (syn.weight.dim() - 2))))
        layers.append(syn)
        if block.norm is not None:
            layers.append(copy.deepcopy(block.norm).cpu().float())
        if not isinstance(block.neuron, nn.Identity):
            layers.append(nn.ReLU())
        for m in block.post:
            if isinstance(m, nn.AvgPool2d):  # ours subclasses it with a custom autograd kernel
                layers.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override))
            elif isinstance(m, (nn.MaxPool2d, nn.Dropout)):
                layers.append(copy.deepcopy(m))
            else:
                raise ExportError(f"layer {i}: ONNX export does not know {type(m).__name__}")
    return nn.Sequential(*layers).eval()


def write_onnx(net: SpikingNetwork, path: str | Path, live: Optional[Sequence[Tensor]] = None) -> Path:
    """Export the DNN ``net`` to ``path`` atomically (module docstring)."""
    seq = as_sequential(net, live)
    example = torch.zeros((2, *net.input_shape))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        program = torch.onnx.export(
            seq, (example,), input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
        )
        program.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
