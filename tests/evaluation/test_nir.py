"""NIR export of an SNN, read back by another framework's importer (snnTorch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpap.export import export_model, export_network
from dpap.export.to_nir import DT

nir = pytest.importorskip("nir")
snn = pytest.importorskip("snntorch")
from snntorch.import_nir import import_from_nir  # noqa: E402


def run_imported(module, x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Spike counts ``[N, classes]`` of an imported graph: one sample at a time (NIR
    shapes have no batch axis), the sample as input at each of the T steps (direct
    encoding), neuron states reset between samples."""
    counts = []
    with torch.no_grad():
        for sample in x:
            for m in module.modules():
                if isinstance(m, snn.SpikingNeuron):
                    m.reset_mem()
            total = 0
            for _ in range(time_steps):
                out, _ = module(sample)
                total = total + out
            counts.append(total)
    return torch.stack(counts)


def test_snntorch_reads_the_graph_back_and_predicts_the_same(pruned_snn, digits, tmp_path):
    model = pruned_snn
    dead = sum(int((~m.bool()).sum()) for m in model.unit_masks)
    assert dead > 0, "the fixture should have pruned units, so that masked zeros are exported"
    result = export_model(model, tmp_path / "export")
    assert result.path == tmp_path / "export" / "model.nir" and result.path.is_file()
    manifest = json.loads(result.manifest.read_text())
    assert manifest["compacted"] and manifest["arch"] != model.net.arch  # the network without its dead units
    assert manifest["format"] == "nir" and manifest["time_steps"] == 4 and manifest["encoding"] == "direct"

    graph = nir.read(result.path)
    imported = import_from_nir(graph)
    x = digits[1].x[:100]
    with torch.no_grad():
        ours = model.net(x).sum(0)  # spike counts over the T steps
    theirs = run_imported(imported, x, model.net.time_steps)
    assert ours.sum() > 0 and len(set(ours.argmax(1).tolist())) > 3  # not a silent or constant net
    assert torch.equal(theirs.argmax(1), ours.argmax(1))
    assert torch.equal(theirs, ours)  # even the spike counts


def test_lif_parameters_and_pruned_weights_in_the_graph(pruned_snn, tmp_path):
    model = pruned_snn
    result = export_model(model, tmp_path / "compact")
    graph = nir.read(result.path)
    assert [e for e in graph.edges] == [
        ("input", "conv0"), ("conv0", "lif0"), ("lif0", "pool0"), ("pool0", "flatten1"), ("flatten1", "fc1"),
        ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output"),
    ]
    # the compacted network: only living channels and neurons, as export.json says
    alive = [int(m.sum()) for m in model.unit_masks]
    assert alive[0] < 6, "the fixture should have pruned conv channels"
    manifest = json.loads(result.manifest.read_text())
    assert manifest["compacted"] and manifest["dense_arch"] == "6C3-AP2-24FC-10FC"
    assert manifest["arch"] == f"{alive[0]}C3-AP2-{alive[1]}FC-10FC"
    assert manifest["kept"][0] == torch.nonzero(model.unit_masks[0]).flatten().tolist()
    lif = graph.nodes["lif0"]
    decay, threshold = model.net.blocks[0].neuron.decay, model.net.blocks[0].neuron.threshold
    assert lif.tau.shape == (alive[0], 8, 8) and graph.nodes["lif1"].tau.shape == (alive[1],)
    assert graph.nodes["conv0"].weight.shape == (alive[0], 1, 3, 3) and graph.nodes["fc1"].weight.shape == (alive[1], alive[0] * 16)
    assert np.allclose(1 - DT / lif.tau, decay) and np.allclose(lif.r * DT / lif.tau, 1.0)  # β = λ, input gain 1
    assert np.all(lif.v_threshold == threshold) and np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    assert int(graph.metadata["time_steps"]) == 4
    # the weights of the kept units and inputs (pruned synapses of living neurons: zeros)
    kept = [torch.tensor(k) for k in manifest["kept"]]
    cols = (kept[0][:, None] * 16 + torch.arange(16)).flatten()
    dense_fc = model.net.blocks[1].synapse.weight.detach()[kept[1]][:, cols]
    assert np.array_equal(graph.nodes["fc1"].weight, dense_fc.numpy())
    assert np.array_equal(graph.nodes["fc1"].weight != 0, dense_fc.numpy() != 0)

    # compact=False: the dense shapes, a dead conv channel a zero filter and bias, the FC columns that read it zero
    graph = nir.read(export_model(model, tmp_path / "dense", compact=False).path)
    dead = ~model.unit_masks[0].bool().numpy()
    conv = graph.nodes["conv0"]
    assert graph.nodes["lif0"].tau.shape == (6, 8, 8)
    assert np.all(conv.weight[dead] == 0) and np.all(conv.bias[dead] == 0)
    fc = graph.nodes["fc1"].weight.reshape(24, 6, 16)
    assert np.all(fc[:, dead] == 0)
    assert np.array_equal(graph.nodes["fc1"].weight != 0, model.net.blocks[1].synapse.weight.detach().numpy() != 0)


def test_a_neuron_without_leak_is_an_integrate_and_fire_node():
    from dpap.export.to_nir import nir_graph
    from dpap.snn.networks import build_network

    graph = nir_graph(build_network("3FC", (4,), 3, decay=1.0, threshold=0.7))
    node = graph.nodes["lif0"]
    assert isinstance(node, nir.IF) and np.allclose(node.r * DT, 1.0) and np.all(node.v_threshold == 0.7)


@pytest.mark.parametrize("encoding,says", [("direct", "the same at every step"), ("poisson", "Bernoulli"), ("events", "that step's frame")])
def test_manifest_says_what_each_step_reads(encoding, says, tmp_path):
    from dpap.snn.networks import build_network

    result = export_network(build_network("3FC", (4,), 3), tmp_path, encoding=encoding)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["encoding"] == encoding and says in manifest["decoding"]


def test_batchnorm_is_folded_and_max_pooling_is_refused(digits, tmp_path):
    from dpap.snn.networks import build_network

    torch.manual_seed(0)
    net = build_network("4C3-BN-AP2-10FC", (1, 8, 8), 10, time_steps=3)
    bn = net.blocks[0].norm
    with torch.no_grad():  # statistics and affine terms far from the identity
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = digits[1].x[:50] * 3
    result = export_network(net, tmp_path / "bn")
    theirs = run_imported(import_from_nir(nir.read(result.path)), x, 3)
    with torch.no_grad():
        ours = net(x).sum(0)
    assert ours.sum() > 0
    assert (theirs.argmax(1) == ours.argmax(1)).float().mean() >= 0.98  # folding rounds differently

    mp = build_network("4C3-MP2-10FC", (1, 8, 8), 10)
    result = export_network(mp, tmp_path / "bn")  # same folder: the old model.nir must go
    assert result.path is None and "max pooling" in result.reason
    assert not (tmp_path / "bn" / "model.nir").exists()
    assert json.loads(result.manifest.read_text())["file"] is None
