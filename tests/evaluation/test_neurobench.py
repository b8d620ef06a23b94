"""NeuroBench's metrics (the ``neurobench`` package's own code) against our counter."""

from __future__ import annotations

import pytest
from dpap.errors import DPAPError
import torch

from dpap.pruning.compression import count_parameters
from dpap.config import Config
from dpap.training.model_file import LoadedModel
from dpap.evaluation.metrics import accuracy, synaptic_operations
from dpap.evaluation.neurobench import neurobench_metrics
from dpap.snn.networks import build_network

pytest.importorskip("neurobench")


def within(a: float, b: float, rel: float = 0.01) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def test_conv_snn_totals_agree_and_pooled_spikes_are_the_only_difference(pruned_snn, digits):
    model = pruned_snn
    x, y = digits[1].x, digits[1].y
    nb = neurobench_metrics(model, x, y)
    ours = synaptic_operations(model, x)
    layers = ours.per_layer
    assert ours.acs > 0 and ours.effective_macs > 0
    # the same operations: non-zero input × living synapse
    assert within(nb["effective_acs_per_sample"] + nb["effective_macs_per_sample"], ours.acs + ours.effective_macs)
    # the output layer reads spikes: ACs for both; the FC layer after AP2 reads pooled
    # spikes (fractions): ACs for us, MACs for NeuroBench; the first layer reads pixels
    assert within(nb["effective_acs_per_sample"], layers[2]["acs"])
    assert within(nb["effective_macs_per_sample"], layers[0]["effective_macs"] + layers[1]["acs"])
    assert ours.effective_macs < ours.macs  # zero pixels cost no effective MAC

    report = count_parameters(model.net, model.unit_masks, model.synapse_masks)
    assert report.zero_weight_share > 0.05
    assert nb["connection_sparsity"] == pytest.approx(report.zero_weight_share, abs=1e-4)
    assert nb["parameter_count"] == sum(p.numel() for p in model.net.parameters())
    assert nb["footprint_bytes"] == sum(t.numel() * t.element_size() for t in [*model.net.parameters(), *model.net.buffers()])
    assert nb["accuracy"] == pytest.approx(accuracy(model, x, y))

    # activation sparsity: zero outputs of every LIF over all steps, counted by hand
    zeros = total = 0

    def count(index, block, pre, post):
        nonlocal zeros, total
        zeros += int((post == 0).sum())
        total += post.numel()

    remove = model.net.observe(count)
    with torch.no_grad():
        model.net(x)
    remove()
    assert 0 < zeros < total
    assert nb["activation_sparsity"] == pytest.approx(zeros / total)


def test_fc_snn_acs_and_macs_agree_one_by_one(trained, digits):
    model = trained("24FC-10FC", epochs=2)
    x, y = digits[1].x, digits[1].y
    nb = neurobench_metrics(model, x, y)
    ours = synaptic_operations(model, x)
    assert ours.acs > 0 and ours.effective_macs > 0
    assert within(nb["effective_acs_per_sample"], ours.acs)
    assert within(nb["effective_macs_per_sample"], ours.effective_macs)


def test_dnn_macs_agree_and_dead_input_channels_cost_nothing(digits):
    torch.manual_seed(0)
    net = build_network("4C3-4C3-10FC", (1, 8, 8), 10, kind="dnn")
    net.eval()
    cfg = Config()
    cfg.model.kind = "dnn"
    units = [torch.tensor([True, False, True, False]), torch.ones(4, dtype=torch.bool), torch.ones(10, dtype=torch.bool)]
    with torch.no_grad():  # what the pruner does to a dead channel: its filter and bias are zero
        net.blocks[0].synapse.weight[~units[0]] = 0
        net.blocks[0].synapse.bias[~units[0]] = 0
    syn = [torch.ones(4, 1, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool), torch.ones(10, 256, dtype=torch.bool)]
    model = LoadedModel(net, cfg, units, syn, [], {}, {})
    x, y = digits[1].x, digits[1].y
    nb = neurobench_metrics(model, x, y)
    ours = synaptic_operations(model, x)
    dense = synaptic_operations(LoadedModel(net, cfg, None, None, [], {}, {}), x)
    assert nb["effective_acs_per_sample"] == 0 and ours.acs == 0
    assert within(nb["effective_macs_per_sample"], ours.effective_macs)
    # the second conv reads 2 of 4 input channels: half the MACs of the unpruned count
    assert ours.per_layer[1]["macs"] == pytest.approx(dense.per_layer[1]["macs"] / 2)
    assert ours.per_layer[1]["effective_macs"] < ours.per_layer[1]["macs"]  # ReLU zeros


def test_without_neurobench_one_line_says_how_to_install_it(pruned_snn, digits, monkeypatch):
    import sys
    from pathlib import Path

    from dpap.evaluation.neurobench import NeuroBenchError

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "pipeline"))
    import _cli

    for name in [m for m in sys.modules if m == "neurobench" or m.startswith("neurobench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "neurobench", None)  # what Python does for a package that is not installed
    with pytest.raises(NeuroBenchError) as info:
        neurobench_metrics(pruned_snn, digits[1].x[:10], digits[1].y[:10])
    message = str(info.value)
    assert "\n" not in message and "pip install --no-deps neurobench" in message
    assert isinstance(info.value, DPAPError)  # the stage prints it as one line, exit 1
