"""The user's own network in the pipeline (issue 27, item 4): ``model.factory`` naming an
snnTorch net in a module of the repository, through ``dvc repro`` (train, evaluate, export),
MLflow (masks and histograms per layer) and ``dpap search``; ``model.nir`` through the
training loop, the model file, the evaluation and the export; a bad factory is one line."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from stage_runs import TINY, env, merge, run, write_params

from dpap.config import ConfigError, ModelConfig, config_from_dict

snn = pytest.importorskip("snntorch")

pytestmark = pytest.mark.timeout(600)

DEFAULT_ARCH = ModelConfig.model_fields["arch"].default

NETS = textwrap.dedent('''
    """A user's networks, written as snnTorch's tutorials write them."""
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from torch import nn


    class TinyNet(nn.Module):
        """Conv-MaxPool-Leaky, Linear-Leaky, Linear-Leaky; init_hidden=True, the time loop in forward."""

        def __init__(self, input_shape, num_classes, time_steps):
            super().__init__()
            c, h, w = input_shape
            grad = surrogate.atan()
            self.steps = time_steps
            self.conv = nn.Conv2d(c, 6, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.lif1 = snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True)
            self.fc1 = nn.Linear(6 * (h // 2) * (w // 2), 24)
            self.lif2 = snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True)
            self.fc2 = nn.Linear(24, num_classes)
            self.lif3 = snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True)

        def forward(self, x):
            out = []
            for _ in range(self.steps):
                h = self.lif1(self.pool(self.conv(x)))
                h = self.lif2(self.fc1(h.flatten(1)))
                out.append(self.lif3(self.fc2(h)))
            return torch.stack(out)


    def build(input_shape, num_classes, time_steps):
        return TinyNet(input_shape, num_classes, time_steps)


    NOT_CALLABLE = 3


    def raises(num_classes):
        raise ValueError("no such width")


    def not_a_module():
        return {"conv": 3}


    def no_layers():
        return nn.Sequential(nn.AvgPool2d(8), nn.Flatten())


    def wrong_output():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 7), snn.Leaky(beta=0.5, init_hidden=True))


    def fails():
        return TinyNet((3, 8, 8), 10, 2)  # three input channels; digits have one
''')

USER = {"model": {"arch": DEFAULT_ARCH, "factory": "tinynet:build"}}


def make_repo(dest: Path) -> Path:
    """``conftest.make_repo`` of this folder (a fresh git+DVC copy of the repository)."""
    spec = importlib.util.spec_from_file_location("pipeline_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_repo(dest)


def params(over: dict) -> dict:
    return merge(copy.deepcopy(TINY), over)


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory):
    """A repository whose params.yaml names ``tinynet:build`` (a file at its root), after ``dvc repro``."""
    repo = make_repo(tmp_path_factory.mktemp("user"))
    (repo / "tinynet.py").write_text(NETS)
    write_params(repo / "params.yaml", params(USER))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "a user's network"], repo)
    p = run(["dvc", "repro"], repo, timeout=400)
    (repo / "repro.log").write_text(p.stdout + p.stderr)
    return repo


def test_dvc_repro_trains_evaluates_and_exports_a_factory_network(user_repo, monkeypatch):
    m = json.loads((user_repo / "metrics.json").read_text())
    assert 0 < m["test_accuracy"] <= 1 and 0 < m["compression"] < 1, m
    assert set(m["layers"]) == {"layer0", "layer1", "layer2"}
    assert m["acs_per_sample"] > 0 and m["macs_per_sample"] > 0  # the image into the conv: MACs; spikes: ACs
    nb = m["neurobench"]  # NeuroBench counts the same operations, and sees the snnTorch neurons
    assert nb["effective_acs_per_sample"] == pytest.approx(m["acs_per_sample"], rel=1e-6)
    assert nb["effective_macs_per_sample"] == pytest.approx(m["effective_macs_per_sample"], rel=1e-6)
    assert 0 < nb["activation_sparsity"] < 1
    # the model file records how to rebuild the network, and rebuilds it
    from dpap.training.model_file import load_model
    from dpap.training.user_model import UserNetwork

    state = torch.load(user_repo / "models/model.pt", weights_only=False)
    assert state["source"]["factory"] == "tinynet:build" and state["config"]["model"]["factory"] == "tinynet:build"
    assert not any(k.endswith(("dpap_units", "dpap_synapses")) for k in state["state_dict"])
    monkeypatch.chdir(user_repo)  # the factory's module, as the evaluate stage finds it
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "tinynet", raising=False)
    model = load_model("models/model.pt")
    sys.modules.pop("tinynet", None)
    assert isinstance(model.net, UserNetwork) and [b.name for b in model.net.blocks] == ["conv", "fc1", "fc2"]
    dead = ~model.unit_masks[0]
    assert bool(dead.any()) and (model.net.model.conv.weight[dead] == 0).all()  # pruned channels stay 0 in the file
    # the export: this model runs its own time loop, so no NIR, and export.json says why
    export = json.loads((user_repo / "models/export/export.json").read_text())
    assert export["file"] is None and "runs its own time steps" in export["reason"] and export["source"] == {"factory": "tinynet:build"}
    log = (user_repo / "repro.log").read_text()
    assert "note: no NIR export" in log and "Traceback" not in log and "WARNING" not in log and "Warning" not in log, log[-3000:]


def test_mlflow_has_masks_and_histograms_per_layer(user_repo, monkeypatch):
    client = MlflowClient(f"sqlite:///{user_repo / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("dpap").experiment_id])
    assert r.info.status == "FINISHED" and r.data.params["model.factory"] == "tinynet:build"
    assert [x.step for x in client.get_metric_history(r.info.run_id, "layers/0_conv/units_alive")] == [1, 2, 3]
    assert r.data.metrics["eval/compression"] > 0
    root = client.download_artifacts(r.info.run_id, "")
    masks = np.load(Path(root) / "masks" / "epoch_003.npz")
    assert set(masks.files) == {f"layer{i}_{k}" for i in range(3) for k in ("units", "synapses")}
    assert masks["layer0_units"].shape == (6,) and masks["layer1_synapses"].shape == (24, 6 * 4 * 4)
    assert (Path(root) / "survival" / "epoch_003.npz").is_file()
    images = {p.name for p in (Path(root) / "images").iterdir()} if (Path(root) / "images").is_dir() else set()
    for key in ("masks~layer0_conv+step+3", "masks~layer2_fc+step+3", "survival~layer0_conv_units+step+3"):
        assert any(name.startswith(key) for name in images), (key, sorted(images)[:10])
    # the final model through mlflow.pytorch: it pickled, without the pruner's hooks
    import mlflow
    import mlflow.pytorch

    monkeypatch.syspath_prepend(str(user_repo))  # tinynet's classes, as in the repository
    monkeypatch.delitem(sys.modules, "tinynet", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{user_repo / 'mlflow.db'}")
    (logged,) = client.search_logged_models([client.get_experiment_by_name("dpap").experiment_id])
    net = mlflow.pytorch.load_model(logged.model_uri)
    state = torch.load(user_repo / "models/model.pt", weights_only=False)
    assert torch.equal(net.model.conv.weight.detach(), state["state_dict"]["model.conv.weight"])
    assert not net.model.conv._forward_pre_hooks and not net.model.conv._buffers
    sys.modules.pop("tinynet", None)


def test_the_search_runs_trials_on_a_factory_network(user_repo):
    out = user_repo / "search-test"
    p = subprocess.run([sys.executable, "-m", "dpap.cli", "search", "--trials", "2", "--epochs", "2", "--tolerance", "0.45",
                        "--storage", str(out / "optuna.journal"), "--out", str(out), "--no-mlflow", "--quiet"],
                       cwd=user_repo, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr[-2000:]  # 1: no trial within the tolerance
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["complete"] == 2 and summary["failed"] == 0, summary


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("factory, message", [
    ("nope:build", "error: model.factory: 'nope:build': no module named 'nope'"),
    ("tinynet:no_layers", "error: model.factory: 'tinynet:no_layers': Sequential has no prunable layer"),
], ids=["no module", "no prunable layer"])
def test_a_bad_factory_stops_the_train_stage_with_one_line(user_repo, tmp_path, factory, message):
    for d in ("pipeline", "dpap", "data", "models"):
        shutil.copytree(user_repo / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(user_repo / "tinynet.py", tmp_path / "tinynet.py")
    write_params(tmp_path / "params.yaml", params({"model": {"arch": DEFAULT_ARCH, "factory": factory}}))
    before = _digest(tmp_path / "models/model.pt")
    p = subprocess.run([sys.executable, "pipeline/train.py", "--no-mlflow"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), p.stderr
    assert _digest(tmp_path / "models/model.pt") == before and not (tmp_path / "checkpoints/train.pt").exists()


# ------------------------------------------------------------------- in process


@pytest.fixture
def nets_here(tmp_path, monkeypatch):
    """``tinynet.py`` in the current folder, as in a repository root (imported anew)."""
    (tmp_path / "tinynet.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "tinynet", raising=False)
    yield tmp_path
    sys.modules.pop("tinynet", None)


@pytest.mark.parametrize("factory, message", [
    ("tinynet:nope", "model.factory: 'tinynet:nope': tinynet ("),
    ("tinynet:NOT_CALLABLE", "model.factory: 'tinynet:NOT_CALLABLE': NOT_CALLABLE is not callable (int 3)"),
    ("tinynet:raises", "model.factory: 'tinynet:raises': calling it(num_classes=10) failed: ValueError: no such width"),
    ("tinynet:not_a_module", "model.factory: 'tinynet:not_a_module': returned a dict, expected a torch.nn.Module"),
    ("tinynet:fails", "model.factory: 'tinynet:fails': the model fails on a batch shaped as the data's [2, 1, 8, 8]: RuntimeError: "),
    ("tinynet:wrong_output", "model.factory: 'tinynet:wrong_output': the model returns [2, 7] for a batch of 2; expected [T, 2, 10]"),
], ids=["no attribute", "not callable", "raises", "not a module", "fails on the data", "wrong output"])
def test_each_bad_factory_is_one_line_naming_model_factory(nets_here, factory, message):
    from dpap.training.setup import make_network

    cfg = config_from_dict({"model": {"factory": factory}})
    with pytest.raises(ConfigError) as err:
        make_network(cfg, (1, 8, 8), 10)
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text, text


@pytest.mark.parametrize("model, message", [
    ({"factory": "tinynet"}, "model.factory: got 'tinynet', expected 'package.module:function'"),
    ({"factory": "tinynet:build", "nir": "net.nir"}, "model.nir: set together with model.factory"),
    ({"factory": "tinynet:build", "arch": "8C3-10FC"}, "model.arch: got '8C3-10FC' together with model.factory"),
], ids=["no colon", "factory and nir", "arch and factory"])
def test_params_name_one_network(model, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        config_from_dict({"model": model})


def test_a_factory_run_resumes_from_its_checkpoint_to_the_same_weights(nets_here, digits):
    """A run stopped after its first epoch resumes (masks, the method's state, the attachment's
    epoch) and ends where the run that never stopped ends."""
    from dpap.training.loop import TrainingRun

    train, test = digits
    cfg = config_from_dict(params({"model": {"arch": DEFAULT_ARCH, "factory": "tinynet:build"}, "train": {"epochs": 3}}))

    class Stop(Exception):
        pass

    def stop(run, metrics):
        if metrics.epoch == 0:
            run.save_checkpoint()
            raise Stop

    straight = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=nets_here / "a.pt", progress=False)
    straight.run()
    first = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=nets_here / "b.pt", callbacks=[stop], progress=False)
    with pytest.raises(Stop):
        first.run()
    first.pruner.detach()
    again = TrainingRun(cfg, train, test, (1, 8, 8), 10, checkpoint=nets_here / "b.pt", progress=False)
    assert again.resumed and again.epoch == 1
    again.run()
    assert [m.compression for m in again.history] == [m.compression for m in straight.history]
    assert straight.history[-1].compression > 0
    for (k, a), b in zip(straight.net.state_dict().items(), again.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_missing_or_foreign_nir_file_is_one_line(tmp_path, monkeypatch):
    from dpap.training.setup import make_network

    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.nir").write_text("not hdf5")
    for path, message in (("gone.nir", "model.nir: 'gone.nir': no such file"), ("text.nir", "model.nir: 'text.nir': not a NIR graph")):
        with pytest.raises(ConfigError) as err:
            make_network(config_from_dict({"model": {"nir": path}}), (1, 8, 8), 10)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), err.value


def test_a_nir_graph_trains_prunes_reloads_evaluates_and_exports(digits, tmp_path, monkeypatch):
    """``model.nir``: a graph of 64 inputs (read as the 1×8×8 images, same size) through the
    training loop with DPAP, the model file (which keeps the graph), the evaluation and an
    export that snnTorch's importer reads back to the same outputs."""
    import dpap
    from torch import nn

    from dpap.evaluation.metrics import evaluate
    from dpap.export import export_model
    from dpap.training.loop import fit
    from dpap.training.model_file import load_model, save_model

    leaky = dict(beta=0.7, threshold=0.5, init_hidden=True, reset_mechanism="zero")
    torch.manual_seed(0)
    dpap.to_nir(nn.Sequential(nn.Linear(64, 32), snn.Leaky(**leaky), nn.Linear(32, 10), snn.Leaky(**leaky)), tmp_path / "net.nir",
                example_input=torch.zeros(1, 64))
    monkeypatch.chdir(tmp_path)
    train, test = digits

    class Data:
        pass

    data = Data()
    data.train, data.test, data.val = (train.x[:480], train.y[:480]), (test.x, test.y), None
    data.meta = {"input_shape": [1, 8, 8], "num_classes": 10, "hash": "digits"}
    cfg = config_from_dict({"model": {"nir": "net.nir", "time_steps": 4}, "train": {"epochs": 3, "batch_size": 40, "lr": 0.01, "threads": 1},
                            "pruning": {"dpap": {"fc": {"beta": 0.5, "epsilon": 1.2, "eta": 10.0}}}})
    run = fit(cfg, data, checkpoint=tmp_path / "ck.pt", progress=False)
    assert run.history[-1].compression > 0 and run.history[-1].test_accuracy > 0.3
    save_model(tmp_path / "model.pt", run, data.meta)
    (tmp_path / "net.nir").unlink()  # the model file holds the graph itself
    model = load_model(tmp_path / "model.pt")
    m = evaluate(model, data.test, neurobench=False)
    assert m["test_accuracy"] == pytest.approx(run.history[-1].test_accuracy) and m["compression"] == pytest.approx(run.history[-1].compression)
    assert m["acs_per_sample"] > 0
    exported = export_model(model, tmp_path / "export")
    assert exported.path is not None, exported.reason
    back = dpap.from_nir(exported.path, time_steps=4).eval()
    model.net.eval()
    with torch.no_grad():
        assert torch.equal(back(test.x.flatten(1)), model.net(test.x))
