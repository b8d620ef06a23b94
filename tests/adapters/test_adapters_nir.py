"""NIR in and out: an snnTorch network written as NIR, read with ``dpap.from_nir``, pruned
with DPAP while it trains, written back with ``dpap.to_nir`` and read by snnTorch's own
importer: the same outputs as the pruned model."""

import io
import contextlib

import pytest
import torch
from torch import nn

import dpap
from adapter_nets import T

snn = pytest.importorskip("snntorch")
nir = pytest.importorskip("nir")
from snntorch.import_nir import import_from_nir  # noqa: E402

from dpap.adapters.neurons import reset_states  # noqa: E402


def snntorch_fc(hidden=48):
    leaky = dict(init_hidden=True, reset_mechanism="zero", reset_delay=False)  # NIR's LIF resets to v_reset
    return nn.Sequential(nn.Linear(64, hidden), snn.Leaky(beta=0.7, threshold=0.5, **leaky),
                         nn.Linear(hidden, 10), snn.Leaky(beta=0.7, threshold=0.5, **leaky))


def test_snntorch_to_nir_to_dpap_and_back_to_snntorch(digits, tmp_path):
    torch.manual_seed(0)
    source = snntorch_fc()
    dpap.to_nir(source, tmp_path / "source.nir", example_input=torch.rand(2, 64))

    model = dpap.from_nir(tmp_path / "source.nir", time_steps=T)
    assert model.input_shape == (64,) and model.time_steps == T
    train, test = digits
    x, xt = train.x.flatten(1), test.x.flatten(1)
    with torch.no_grad():  # the same network: snnTorch's layers stepped by hand
        reset_states(source)
        ours = torch.stack([source(xt[:16]) for _ in range(T)])
        assert torch.equal(model(xt[:16]), ours)

    pruner = dpap.attach(model, example_input=x[:4], epochs=4, epsilon=1.4, fc={"beta": 0.5})
    assert pruner.layers == ["net._0", "net._2"]
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(4):
        model.train()
        for i in range(0, 640, 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]).sum(0), train.y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        pruner.end_epoch()
    assert pruner.compression > 0.05
    dead = ~pruner.masks()["net._0"]["units"]
    assert bool(dead.any())

    graph = dpap.to_nir(model, tmp_path / "pruned.nir")
    assert graph.metadata["time_steps"] == T
    read = nir.read(str(tmp_path / "pruned.nir"))
    hidden = next(n for k, n in read.nodes.items() if isinstance(n, nir.Affine) and n.weight.shape[1] == 64)
    assert (hidden.weight[dead.numpy()] == 0).all()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = import_from_nir(read)
    model.eval()
    with torch.no_grad():
        reset_states(theirs)
        out = torch.stack([theirs(xt)[0] for _ in range(T)])
        assert torch.equal(out, model(xt))
        assert out.sum() > 0
