"""kill -9 during training, run again: it resumes from the last checkpoint and ends with
the same model, masks and metrics.json as an uninterrupted run, in one MLflow run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

import copy

from stage_runs import TINY, env, merge, run, write_params

EPOCHS = 4


def workdir(repro_repo, dest):
    """A folder with the scripts, the processed data and params for a 4-epoch run."""
    shutil.copytree(repro_repo / "pipeline", dest / "pipeline")
    shutil.copytree(repro_repo / "dpap", dest / "dpap")
    shutil.copytree(repro_repo / "data" / "processed", dest / "data" / "processed")
    write_params(dest / "params.yaml", merge(copy.deepcopy(TINY), {"train": {"epochs": EPOCHS}}))
    return dest


def one_run(path):
    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dpap")
    runs = client.search_runs([exp.experiment_id])
    return client, runs


class Processes:
    """Stage processes a test runs side by side (TINY trains on one thread; the machine has
    two cores). Whatever is still running when the test ends, passed or failed, is killed."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, cmd: list[str], cwd, capture: bool = True) -> subprocess.Popen:
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, *cmd], cwd=cwd, env=env(), stdout=out, stderr=out, text=True)
        proc.folder = cwd  # for failure messages: the runs side by side differ only there
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes():
    p = Processes()
    yield p
    p.kill_all()


def finish(*procs: subprocess.Popen, returncode: int = 0, timeout: float = 400) -> list[tuple[str, str]]:
    """Wait for every one of ``procs`` (killing one that overruns ``timeout``), then assert
    each ended with ``returncode``; the message names each one that did not, by its
    folder, with its output. Returns their (stdout, stderr)."""
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        outs.append((out or "", err or ""))
    bad = [
        f"{' '.join(map(str, proc.args[1:]))} in {proc.folder} exited {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}"
        for proc, (out, err) in zip(procs, outs)
        if proc.returncode != returncode
    ]
    assert not bad, "\n\n".join(bad)
    return outs


def wait_for_checkpoint(proc: subprocess.Popen, ckpt) -> None:
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be stopped"


def test_killed_training_resumes_to_the_same_result(repro_repo, tmp_path, processes):
    a = workdir(repro_repo, tmp_path / "a")
    b = workdir(repro_repo, tmp_path / "b")
    uninterrupted = processes.start(["pipeline/train.py", "--no-progress"], a)

    proc = processes.start(["pipeline/train.py", "--no-progress"], b, capture=False)
    ckpt = b / "checkpoints" / "train.pt"
    wait_for_checkpoint(proc, ckpt)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(ckpt, weights_only=False)
    done = state["epoch"]
    assert 1 <= done < EPOCHS and not (b / "models" / "model.pt").exists()

    finish(processes.start(["pipeline/train.py", "--no-progress"], b), uninterrupted)

    ma = torch.load(a / "models/model.pt", weights_only=False)
    mb = torch.load(b / "models/model.pt", weights_only=False)
    for k in ma["state_dict"]:
        assert torch.equal(ma["state_dict"][k], mb["state_dict"][k]), k
    for x, y in zip(ma["synapse_masks"] + ma["unit_masks"], mb["synapse_masks"] + mb["unit_masks"]):
        assert torch.equal(x, y)
    # the epochs before the kill were not trained again: their records (timings included)
    # come from the checkpoint
    assert mb["history"][:done] == state["history"]
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"])
    assert not bool(ma["synapse_masks"][1].all()), "TINY should prune"

    finish(*(processes.start(["pipeline/evaluate.py"], d) for d in (a, b)))
    ma_json, mb_json = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma_json.pop("mlflow")["run_id"] != mb_json.pop("mlflow")["run_id"]  # each names its own MLflow run
    assert ma_json == mb_json

    client, runs = one_run(b)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    r = runs[0]
    assert r.info.run_id == mb["extra"]["mlflow_run_id"] and r.info.status == "FINISHED"
    assert r.data.tags.get("dpap.resumed") == "true"
    steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "test/accuracy"))
    assert steps == list(range(1, EPOCHS + 1))
    _, runs_a = one_run(a)
    client_a = MlflowClient(f"sqlite:///{a / 'mlflow.db'}")
    want = {m.step: m.value for m in client_a.get_metric_history(runs_a[0].info.run_id, "pruning/compression")}
    got = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "pruning/compression")}
    assert got == want


def test_same_seed_same_metrics(repro_repo, tmp_path):
    """Training the tiny config again from scratch gives the committed metrics.json."""
    c = tmp_path / "c"
    shutil.copytree(repro_repo / "pipeline", c / "pipeline")
    shutil.copytree(repro_repo / "data" / "processed", c / "data" / "processed")
    shutil.copy(repro_repo / "params.yaml", c / "params.yaml")
    run([sys.executable, "pipeline/train.py", "--no-progress", "--no-mlflow"], c)
    run([sys.executable, "pipeline/evaluate.py", "--no-mlflow"], c)
    committed = json.loads((repro_repo / "metrics.json").read_text())
    assert "mlflow" in committed and "mlflow" not in json.loads((c / "metrics.json").read_text())  # no run, no run id
    committed.pop("mlflow")
    assert (c / "metrics.json").read_text() == json.dumps(committed, indent=2) + "\n"  # the rest byte for byte


def test_stopped_training_is_killed_in_mlflow_and_resumes(repro_repo, tmp_path, processes):
    """SIGTERM (what `kill` and schedulers send) and Ctrl-C (SIGINT), one run each, side
    by side: exit 130 with one line, the MLflow run ended KILLED (not RUNNING for ever),
    the checkpoint kept; the next run continues the same MLflow run to FINISHED."""
    signals = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
    dirs = {name: workdir(repro_repo, tmp_path / name) for name in signals}
    procs = {name: processes.start(["pipeline/train.py", "--no-progress"], d) for name, d in dirs.items()}
    for name, proc in procs.items():
        wait_for_checkpoint(proc, dirs[name] / "checkpoints" / "train.pt")
        proc.send_signal(signals[name])
    outs = finish(*procs.values(), returncode=130, timeout=120)
    for (name, b), (out, err) in zip(dirs.items(), outs):
        assert err.strip().splitlines()[-1].startswith("error: interrupted") and "Traceback" not in err, (name, err[-2000:])
        assert (b / "checkpoints" / "train.pt").exists() and not (b / "models" / "model.pt").exists(), name
        client, runs = one_run(b)
        assert [r.info.status for r in runs] == ["KILLED"], name
    finish(*(processes.start(["pipeline/train.py", "--no-progress"], d) for d in dirs.values()))
    for name, b in dirs.items():
        client, runs = one_run(b)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.tags.get("dpap.resumed") == "true", name
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "test/accuracy")) == list(range(1, EPOCHS + 1)), name
