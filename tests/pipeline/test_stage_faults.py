"""Faults a user meets at a stage script, each held to the line docs/faults.md shows: exit
status 1, exactly one line on stderr, the earlier results unchanged. (Bad params.yaml
values: test_bad_params.py; a full or read-only disk: test_output_faults.py.)"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from stage_runs import env, run

KEPT = ("models/model.pt", "metrics.json", "plots/accuracy.csv", "data/processed/digits/train.pt")


def digests(w) -> dict[str, str]:
    return {f: hashlib.sha256((w / f).read_bytes()).hexdigest() for f in KEPT if (w / f).is_file()}


def set_params(w, **dotted) -> None:
    """Set ``a.b=value`` keys (``a__b`` in Python names) in ``w/params.yaml``."""
    raw = yaml.safe_load((w / "params.yaml").read_text())
    for key, value in dotted.items():
        *head, last = key.split("__")
        node = raw
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value
    (w / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def error_line(w, args, env_extra=None, status=1) -> str:
    """Run a stage in ``w``; assert exit ``status`` (1: bad input; 3: the run failed), one ``error:`` line on stderr (MLflow's own
    dated log lines aside) and no traceback; return that line."""
    before = digests(w)
    p = subprocess.run([sys.executable, *args], cwd=w, env={**env(), **(env_extra or {})}, capture_output=True, text=True, timeout=300)
    lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("20")]
    assert p.returncode == status and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, (p.returncode, p.stderr[-3000:])
    assert digests(w) == before
    return lines[0]


TRAIN = ["pipeline/train.py", "--no-progress", "--no-mlflow"]


def test_missing_params_file(work):
    line = error_line(work, ["pipeline/train.py", "--params", "nope.yaml", "--no-mlflow"])
    assert line == "error: nope.yaml: file not found; run from the repository root or pass --params"


def test_out_of_range_value(work):
    set_params(work, pruning__dpap__gamma=1.5)
    assert error_line(work, TRAIN) == "error: params.yaml: pruning.dpap.gamma: got 1.5, expected a number in (0, 1]"


def test_restart_epoch_past_the_run(work):
    set_params(work, train__epochs=3, train__restart_epoch=3)
    line = error_line(work, TRAIN)
    assert line == "error: params.yaml: train.restart_epoch: got 3, expected an epoch from 1 to train.epochs - 1 = 2, or null"


def test_unknown_data_set(work):
    set_params(work, data__name="mnistt")
    line = error_line(work, ["pipeline/download.py"])
    assert line == "error: unknown data set 'mnistt'; valid names: digits, mnist, fashion-mnist, cifar10, nmnist, dvs-gesture"


def test_unknown_architecture(work):
    set_params(work, model__arch="15X3-10FC")
    line = error_line(work, TRAIN)
    assert line.startswith("error: model.arch: cannot read token '15X3' in '15X3-10FC'; expected <n>C<k>, AP<k>, MP<k>, BN, DO<p> or <n>FC, or a preset: mnist-snn"), line


def test_unknown_preset(work):
    params = (work / "params.yaml").read_bytes()
    line = error_line(work, ["pipeline/apply_preset.py", "mnist-snnn"])
    assert line.startswith("error: preset 'mnist-snnn': no ") and line.endswith("presets/mnist-snnn.yaml; available: cifar10-dnn, cifar10-snn, dvs-gesture-snn, mnist-dnn, mnist-sdsnn, mnist-snn, nmnist-snn"), line
    assert (work / "params.yaml").read_bytes() == params


def test_no_processed_data(work):
    shutil.rmtree(work / "data" / "processed")
    line = error_line(work, TRAIN)
    assert line == "error: data/processed/digits: no processed data (meta.json missing); run `dvc repro preprocess` (or `python pipeline/preprocess.py`)"


def test_no_model_file(work):
    (work / "models" / "model.pt").unlink()
    line = error_line(work, ["pipeline/evaluate.py", "--no-mlflow"])
    assert line == "error: models/model.pt: no model file; run the train stage (`dvc repro train` or `python pipeline/train.py`)"


def test_truncated_model_file(work):
    model = work / "models" / "model.pt"
    model.write_bytes(model.read_bytes()[:5000])
    line = error_line(work, ["pipeline/evaluate.py", "--no-mlflow"])
    assert line.startswith("error: models/model.pt: unreadable model file (") and line.endswith("); rerun the train stage"), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: train.device cuda is valid")
def test_cuda_asked_for_without_a_gpu(work):
    set_params(work, train__device="cuda")
    assert error_line(work, TRAIN) == "error: train.device: 'cuda' asked for but no CUDA device is available; use 'auto' or 'cpu'"


def test_mlflow_server_down(work, refused_port):
    """A tracking server that is not there: one line within seconds (MLflow's client alone
    retries for about four minutes), naming the address and the ways out."""
    uri = f"http://127.0.0.1:{refused_port}"
    line = error_line(work, ["pipeline/train.py", "--no-progress"], {"MLFLOW_TRACKING_URI": uri})
    assert line == f"error: MLflow store {uri}: cannot connect (Connection refused); check that the server is up, or set MLFLOW_TRACKING_URI, or pass --no-mlflow"


def test_nan_loss(work):
    """lr 1e30 on the DNN: the loss becomes NaN within the first epoch."""
    set_params(work, model__kind="dnn", train__lr=1e30)
    line = error_line(work, TRAIN, status=3)  # the run failed, not its input (dpap.errors)
    assert line.startswith("error: loss became nan at epoch 1, batch ") and line.endswith("; lower train.lr or check the data"), line


@pytest.mark.parametrize("what", ["corrupt", "other-params"])
def test_a_checkpoint_that_cannot_be_used_is_said_and_training_starts_over(work, what):
    """Not an error: a torn or foreign checkpoint is named on stdout and training starts
    from epoch 1 (exit 0), ending with a model."""
    ckpt = work / "checkpoints" / "train.pt"
    ckpt.parent.mkdir(exist_ok=True)
    if what == "corrupt":
        ckpt.write_bytes(b"garbage\n")
        expected = "warning: checkpoint checkpoints/train.pt unreadable ("
    else:
        torch.save({"fingerprint": "0" * 16, "epoch": 1}, ckpt)
        expected = "note: checkpoint checkpoints/train.pt is from other parameters; starting from epoch 1"
    p = run([sys.executable, *TRAIN], work, timeout=300)
    assert p.stdout.splitlines()[0].startswith(expected), p.stdout
    assert "trained 3 epochs" in p.stdout and not ckpt.exists()
