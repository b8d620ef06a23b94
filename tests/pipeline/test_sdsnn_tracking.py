"""An SD-SNN run as users see it: MLflow (a real SQLite store) gets the units pruned and
regenerated per layer, the rate p per layer and range-width histograms each epoch; the
saved model's metrics.json counts the regenerated sites."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from dpap.config import Config
from dpap.evaluation.metrics import evaluate
from dpap.training.model_file import load_model, save_model
from dpap.tracking import MlflowCallback
from dpap.training.history import Split
from dpap.training.loop import TrainingRun


def test_sdsnn_run_in_mlflow_and_metrics(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    train, test = Split(x[:1400], y[:1400]), Split(x[1400:], y[1400:])
    cfg = Config()
    cfg.pruning.method = "sdsnn"
    cfg.train.epochs = 11  # K' = 2: pruning from epoch 5; regrowth from epoch 9
    cfg.train.threads = 1
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cb = MlflowCallback(tracking_uri=uri, images_every=5, log_model=False, params=cfg.to_dict())
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False, callbacks=[cb])
    history = run.run()
    cb.finish(run)
    regrown = sum(l["regenerated"] for m in history for l in m.layers)
    died = sum(l["units_died"] for m in history for l in m.layers)
    assert died > 0

    client = MlflowClient(tracking_uri=uri)
    rid = cb.run_id
    rate = client.get_metric_history(rid, "layers/2_fc/rate")
    assert [m.step for m in rate] == list(range(1, 12))
    assert [m.value for m in rate] == sorted(m.value for m in rate) and rate[-1].value > rate[0].value  # p only grows
    pruned = client.get_metric_history(rid, "layers/2_fc/units_died")
    assert sum(m.value for m in pruned) == sum(l["units_died"] for m in history for l in m.layers if l["index"] == 2)
    assert sum(m.value for m in client.get_metric_history(rid, "pruning/regenerated")) == regrown
    images = {a.path for a in client.list_artifacts(rid)}
    assert "range_width" in images and "masks" in images, images
    assert {a.path for a in client.list_artifacts(rid, "range_width")} >= {"range_width/epoch_005.npz", "range_width/epoch_011.npz"}
    pictures = {a.path for a in client.list_artifacts(rid, "images")}  # log_image(key=..., step=...)
    assert any("range_width" in p and "layer2_fc_synapses" in p for p in pictures), sorted(pictures)[:5]

    path = save_model(tmp_path / "model.pt", run)
    metrics = evaluate(load_model(path), (test.x, test.y))
    assert metrics["regenerated"] == regrown
    assert sum(layer.get("regenerated", 0) for layer in metrics["layers"].values()) == regrown
