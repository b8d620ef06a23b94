"""`dvc repro` end to end on a tiny parameter set, then MLflow read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from dpap.data import load_processed

from stage_runs import run

pytestmark = pytest.mark.timeout(600)


def test_repro_writes_every_output(repro_repo):
    m = json.loads((repro_repo / "metrics.json").read_text())
    for key in ("test_accuracy", "compression", "zero_weight_share", "params_retained", "convergence_epoch", "synaptic_ops_per_sample", "energy_nj_per_sample", "layers"):
        assert key in m
    assert 0 <= m["test_accuracy"] <= 1 and 0 < m["compression"] < 1, m  # TINY prunes
    assert m["acs_per_sample"] > 0 and m["macs_per_sample"] > 0  # direct encoding: first layer MACs
    assert set(m["layers"]) == {"layer0", "layer1", "layer2"}
    for f in ("plots/accuracy.csv", "plots/params.csv", "plots/layers.csv", "plots/layers.png", "models/model.pt", "dvc.lock"):
        assert (repro_repo / f).is_file(), f
    lines = (repro_repo / "plots/accuracy.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 1 + 3
    assert not (repro_repo / "checkpoints/train.pt").exists()  # removed once the model is saved
    # NeuroBench's own metrics beside ours: the same operations in total
    nb = m["neurobench"]
    assert set(nb) >= {"footprint_bytes", "connection_sparsity", "activation_sparsity", "effective_macs_per_sample", "effective_acs_per_sample"}
    assert abs(nb["effective_acs_per_sample"] - m["acs_per_sample"]) <= 1e-6 * max(1.0, m["acs_per_sample"])  # the same split
    assert abs(nb["effective_macs_per_sample"] - m["effective_macs_per_sample"]) <= 1e-6 * max(1.0, m["effective_macs_per_sample"])
    # a healthy run: no warning, and piped output has no progress-bar frames
    log = (repro_repo / "repro.log").read_text()
    assert "WARNING" not in log and "\r" not in log, log[-2000:]
    # the SNN as a NIR graph, with its manifest
    export = json.loads((repro_repo / "models/export/export.json").read_text())
    assert export["format"] == "nir" and export["file"] == "model.nir" and export["time_steps"] == 3
    assert export["compacted"] and export["dense_arch"] == "6C3-AP2-24FC-10FC" and export["arch"] != export["dense_arch"]
    # ... and how the data set's values become its input: the stored digits (0-16) x 1/16
    inp = export["input"]
    assert inp["dataset"] == "digits" and inp["classes"] == [str(c) for c in range(10)] and inp["scale"] == 1 / 16
    assert inp["mean"] is None and inp["formula"] == "x = value * scale" and "0-16" in inp["values"]
    stored = load_processed(repro_repo / "data/processed/digits", as_float=False).test[0]
    assert torch.equal(stored.float() * inp["scale"], load_processed(repro_repo / "data/processed/digits").test[0])
    assert (repro_repo / "models/export/model.nir").stat().st_size > 0


def test_mlflow_run_agrees_with_metrics(repro_repo):
    metrics = json.loads((repro_repo / "metrics.json").read_text())
    model = torch.load(repro_repo / "models/model.pt", weights_only=False)
    client = MlflowClient(f"sqlite:///{repro_repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dpap")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.info.run_id == model["extra"]["mlflow_run_id"]
    assert r.info.status == "FINISHED"
    # params (flattened), tags
    assert r.data.params["pruning.dpap.fc.eta"] == "10.0" and r.data.params["train.epochs"] == "3"
    assert r.data.params["model.arch"] == "6C3-AP2-24FC-10FC"
    assert r.data.tags["data.hash"] and len(r.data.tags["git.commit"]) >= 40
    assert r.data.tags["torch.threads"] == "1" and r.data.tags["torch.version"].startswith("2.") and "cores)" in r.data.tags["cpu"]  # what float sums depend on
    # per-epoch metrics, once per epoch
    hist = client.get_metric_history(r.info.run_id, "test/accuracy")
    assert sorted(x.step for x in hist) == [1, 2, 3]
    assert [x.value for x in sorted(hist, key=lambda x: x.step)] == pytest.approx([h["test_accuracy"] for h in model["history"]])
    for key in ("train/loss", "train/accuracy", "pruning/compression", "pruning/fc_synapses_pruned", "layers/1_fc/synapses_pruned", "layers/0_conv/units_alive"):
        assert len(client.get_metric_history(r.info.run_id, key)) == 3, key
    sections = {k.split("/")[0] for k in r.data.metrics}
    assert sections == {"train", "test", "pruning", "layers", "eval"}, sections  # every chart in a section
    # the evaluate stage's metrics on the same run, at the final step (the last epoch)
    assert r.data.metrics["eval/test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert r.data.metrics["eval/compression"] == pytest.approx(metrics["compression"])
    assert [m.step for m in client.get_metric_history(r.info.run_id, "eval/compression")] == [3]
    assert r.data.metrics["pruning/compression"] == pytest.approx(metrics["compression"])  # last epoch
    assert metrics["mlflow"] == {"run_id": r.info.run_id, "experiment": "dpap"}
    # the processed data set as the run's input
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "digits" and inp.dataset.digest and {t.key: t.value for t in inp.tags}["train_size"] == "120"
    # artifacts
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"masks", "survival", "model_file", "evaluation", "export"} <= names
    assert {a.path for a in client.list_artifacts(r.info.run_id, "export")} == {"export/model.nir", "export/export.json"}
    assert r.data.metrics["eval/neurobench/footprint_bytes"] == metrics["neurobench"]["footprint_bytes"]
    masks = {a.path for a in client.list_artifacts(r.info.run_id, "masks")}
    assert masks == {f"masks/epoch_00{i}.npz" for i in (1, 2, 3)}
    surv = {a.path for a in client.list_artifacts(r.info.run_id, "survival")}
    assert "survival/epoch_003.npz" in surv
    # pictures of pruning, one per layer and epoch, for the UI's step slider
    images = {a.path for a in client.list_artifacts(r.info.run_id, "images")}
    keys = {p.split("/")[1].split("+step+")[0] for p in images if p.endswith(".png")}  # MLflow writes "/" in a key as "~"
    assert {"masks~layer0_conv", "masks~layer1_fc", "masks~layer2_fc", "survival~layer0_conv_units", "survival~layer1_fc_synapses"} <= keys, keys
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.split("/")[1].startswith("masks~layer1_fc+") and p.endswith(".png"))
    assert steps == [1, 2, 3], images
    assert "summary.png" in names
    local = client.download_artifacts(r.info.run_id, "masks/epoch_003.npz", str(repro_repo / "dl"))
    with np.load(local) as z:
        assert np.array_equal(z["layer1_synapses"], model["synapse_masks"][1].numpy())
    # the final model through mlflow.pytorch
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{repro_repo / 'mlflow.db'}")
    models = client.search_logged_models([exp.experiment_id]) if hasattr(client, "search_logged_models") else []
    assert models, "mlflow.pytorch.log_model logged nothing"
    net = mlflow.pytorch.load_model(models[0].model_uri)
    w = net.blocks[2].synapse.weight.detach()
    assert torch.equal(w, model["state_dict"]["blocks.2.synapse.weight"])
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_second_repro_is_a_noop(repro_repo):
    before = (repro_repo / "metrics.json").stat().st_mtime_ns
    p = run(["dvc", "repro"], repro_repo)
    assert "Data and pipelines are up to date" in p.stdout + p.stderr, p.stdout
    assert "Running stage" not in p.stdout
    assert (repro_repo / "metrics.json").stat().st_mtime_ns == before


def test_dvc_metrics_and_plots_show(repro_repo):
    p = run(["dvc", "metrics", "show", "--json"], repro_repo)
    shown = json.loads(p.stdout)
    data = next(iter(shown.values()))["data"]["metrics.json"]["data"]
    assert data["test_accuracy"] == pytest.approx(json.loads((repro_repo / "metrics.json").read_text())["test_accuracy"])
    p = run(["dvc", "plots", "show", "--json"], repro_repo)
    out = json.loads(p.stdout)["data"]
    assert {"Test accuracy per epoch", "Parameters retained per epoch (paper Fig. 4G)", "plots/layers.png"} <= set(out), list(out)
    assert not json.loads(p.stdout).get("errors")
