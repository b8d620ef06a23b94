"""NeuroBench's metrics (the ``neurobench`` package's own code) against our counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dpap.errors import DPAPError

from dpap.pruning.compression import count_parameters
from dpap.config import Config
from dpap.training.model_file import LoadedModel
from dpap.evaluation.metrics import accuracy, synaptic_operations
from dpap.evaluation.neurobench import neurobench_metrics
from dpap.snn.networks import build_network

pytest.importorskip("neurobench")


def within(a: float, b: float, rel: float = 0.01) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def test_conv_snn_counts_agree_with_neurobench(pruned_snn, digits):
    """``6C3-AP2-24FC-10FC``, direct encoding: the first layer reads pixels (MACs), the FC
    layer after 2x2 average pooling reads pooled spikes 0, 1/4, ... (MACs: the weight is
    multiplied), the output layer reads spikes (ACs). Our ACs and effective MACs are
    NeuroBench's; our MACs are more by the zero pixels of the dense first layer only."""
    model = pruned_snn
    x, y = digits[1].x, digits[1].y
    nb = neurobench_metrics(model, x, y)
    ours = synaptic_operations(model, x)
    first, pooled, out = ours.per_layer
    assert out["acs"] > 0 and pooled["macs"] > 0 and first["macs"] > 0
    # NeuroBench's numbers, one by one
    assert ours.acs == pytest.approx(nb["effective_acs_per_sample"], rel=1e-6)
    assert ours.effective_macs == pytest.approx(nb["effective_macs_per_sample"], rel=1e-6)
    # which layer does what
    assert first["acs"] == 0 and first["effective_macs"] < first["macs"]  # dense: zero pixels too
    assert pooled["acs"] == 0 and pooled["macs"] == pooled["effective_macs"]  # event-driven MACs
    assert out["macs"] == 0 and out["effective_macs"] == 0
    # the one difference: the first layer's zero pixels, which a dense layer multiplies too
    assert ours.macs - nb["effective_macs_per_sample"] == pytest.approx(first["macs"] - first["effective_macs"], rel=1e-6)
    assert ours.energy_pj == pytest.approx(0.9 * ours.acs + 4.6 * ours.macs)

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


def test_the_rule_by_hand_pooled_spikes_are_macs_spikes_are_acs():
    """``2C3-AP2-3FC`` on a rate-coded (Poisson) input: the conv layer reads 0/1 spikes, one
    AC per input spike and retained synapse; the FC layer reads average-pooled spikes, one
    MAC per non-zero pooled value and retained synapse (none for a zero); counted by hand."""
    torch.manual_seed(0)
    net = build_network("2C3-AP2-3FC", (1, 4, 4), 3, time_steps=3)
    with torch.no_grad():
        net.blocks[0].synapse.weight.abs_().mul_(4)  # the conv neurons spike
    cfg = Config()
    cfg.model.encoding = "poisson"
    cfg.model.time_steps = 3
    cfg.train.batch_size = 5
    model = LoadedModel(net, cfg, None, None, [], {}, {})
    x = torch.rand(5, 1, 4, 4)
    seen = {}
    remove = net.observe(lambda i, block, pre, post: seen.setdefault(i, pre.flatten(0, 1).clone()))
    ops = synaptic_operations(model, x)
    remove()
    spikes, pooled = seen[0], seen[1]
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    assert not set(pooled.unique().tolist()) <= {0.0, 1.0}  # 1/4, 1/2, ...: not spikes
    conv = net.blocks[0].synapse
    ones = torch.ones(1, 1, 4, 4, requires_grad=True)
    F.conv2d(ones, torch.ones_like(conv.weight), None, conv.stride, conv.padding).sum().backward()
    fanout = ones.grad[0]  # synapses leaving each input position (both channels)
    assert ops.per_layer[0]["acs"] * 5 == pytest.approx(float(((spikes != 0) * fanout).sum()))
    assert ops.per_layer[0]["macs"] == 0 and ops.per_layer[0]["effective_macs"] == 0
    assert ops.per_layer[1]["acs"] == 0
    assert ops.per_layer[1]["macs"] * 5 == pytest.approx(float((pooled != 0).sum()) * 3)  # 3 synapses leave each
    assert ops.per_layer[1]["effective_macs"] == ops.per_layer[1]["macs"]


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
