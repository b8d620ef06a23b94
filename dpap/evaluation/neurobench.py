"""NeuroBench's metrics of a trained model, computed by the ``neurobench`` package itself.

:func:`neurobench_metrics` runs NeuroBench's :class:`~neurobench.benchmarks.Benchmark`
on a data split with these metrics (NeuroBench's names in brackets):

- ``footprint_bytes`` (``Footprint``): bytes of all parameters and buffers. Masked weights
  are still stored, so pruning does not shrink it until the network is compacted.
- ``parameter_count`` (``ParameterCount``): all parameters, masked ones included.
- ``connection_sparsity`` (``ConnectionSparsity``): share of zero weights in the conv and
  linear layers (our ``zero_weight_share``, rounded by NeuroBench to 4 decimals).
- ``activation_sparsity`` (``ActivationSparsity``): share of zero outputs of all neurons
  (LIF spikes over every time step; ReLU outputs of a DNN).
- ``effective_macs_per_sample`` / ``effective_acs_per_sample`` / ``dense_synops_per_sample``
  (``SynapticOperations``): per sample, the operations of every conv and linear layer
  with a non-zero input and a non-zero weight, counted as ACs when the layer's input is
  binary (spikes) and as MACs otherwise; ``Dense``: all operations, zeros included.
- ``accuracy`` (``ClassificationAccuracy``, argmax of the output summed over time).

Against our own counter (:func:`dpap.evaluation.metrics.synaptic_operations`): the same
operations (non-zero input × living synapse, no bias), told apart the same way (ACs when
a layer's input is binary spikes, MACs otherwise, e.g. after average pooling), so
``effective_acs`` is our ``acs`` and ``effective_macs`` our ``effective_macs``; our
``macs`` is larger by the zero inputs of the dense (real-valued input) layers.

The network is wrapped as NeuroBench asks: a ``TorchModel`` around a module that encodes
the batch (same encoding and seed as :func:`~dpap.evaluation.metrics.accuracy`) and runs the
network; our :class:`~dpap.snn.neurons.LIF` is registered as an activation module. NeuroBench
works on a copy of the network, so its hooks never stay on the caller's.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dpap.adapters.neurons import family
from dpap.errors import DPAPError
from dpap.snn.encoding import encode
from dpap.snn.neurons import LIF
from dpap.training.setup import epoch_seed


class NeuroBenchError(DPAPError, RuntimeError):
    """NeuroBench is missing or one of its metrics failed."""


class EncodedNetwork(nn.Module):
    """``net`` behind the input encoding: takes a batch as the data set stores it and
    returns the output layer's activity ``[T, N, classes]``. ``seed`` seeds the Poisson
    draws (batch after batch, as :func:`~dpap.evaluation.metrics.accuracy` does)."""

    def __init__(self, net: nn.Module, encoding: str, seed: int):
        super().__init__()
        self.net = net
        self.encoding = encoding
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(encode(x, self.encoding, self.net.time_steps, self.generator))


def _predicted_class(out: Tensor) -> Tensor:
    """Output ``[T, N, classes]`` → class per sample (spike counts or logits summed over T)."""
    return out.sum(0).argmax(1)


@torch.no_grad()
def neurobench_metrics(model, x: Tensor, y: Tensor, batch_size: Optional[int] = None) -> dict[str, Any]:
    """NeuroBench's footprint, sparsities, synaptic operations and accuracy of ``model``
    (a :class:`~dpap.evaluation.metrics.LoadedModel`) on ``(x, y)`` (module docstring), in batches
    of ``batch_size`` (default ``train.batch_size``, as :func:`~dpap.evaluation.metrics.accuracy`:
    a rate code then draws the same spikes)."""
    try:
        from neurobench.benchmarks import Benchmark
        from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
        from neurobench.metrics.workload import ActivationSparsity, ClassificationAccuracy, SynapticOperations
        from neurobench.models import TorchModel
    except ImportError as exc:
        raise NeuroBenchError(
            f"neurobench is not importable ({exc}); install it with `pip install --no-deps neurobench` "
            "plus snntorch and tonic (see pyproject.toml)"
        ) from None
    net = copy.deepcopy(model.net).cpu().eval()
    wrapped = TorchModel(EncodedNetwork(net, model.cfg.model.encoding, epoch_seed(model.cfg.train.seed, 10**6)))
    wrapped.add_activation_module(LIF)
    for cls in {type(m) for m in net.modules() if family(m) is not None and not isinstance(m, LIF)}:  # a user's own network's neurons
        wrapped.add_activation_module(cls)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu()), batch_size=batch_size or model.cfg.train.batch_size, shuffle=False)
    bench = Benchmark(
        wrapped, loader, [], [_predicted_class],
        [[Footprint, ConnectionSparsity, ParameterCount], [ActivationSparsity, SynapticOperations, ClassificationAccuracy]],
    )
    log = io.StringIO()
    try:  # NeuroBench prints a failing metric's error and goes on with 0: catch that line
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
            results = bench.run(quiet=False)
    finally:
        wrapped.cleanup_hooks()
    failed = [line for line in log.getvalue().splitlines() if line.startswith("Error running")]
    if failed or any(results.get(k) is None for k in ("Footprint", "ConnectionSparsity", "ParameterCount")):
        raise NeuroBenchError(f"NeuroBench: {failed[0] if failed else 'a static metric failed'}")
    ops = results["SynapticOperations"]
    return {
        "footprint_bytes": int(results["Footprint"]),
        "parameter_count": int(results["ParameterCount"]),
        "connection_sparsity": float(results["ConnectionSparsity"]),
        "activation_sparsity": float(results["ActivationSparsity"]),
        "effective_macs_per_sample": float(ops["Effective_MACs"]),
        "effective_acs_per_sample": float(ops["Effective_ACs"]),
        "dense_synops_per_sample": float(ops["Dense"]),
        "accuracy": float(results["ClassificationAccuracy"]),
    }
