"""Data-parallel training: ``torchrun --nproc-per-node 2 pipeline/train.py`` (gloo, CPU)
against one process with the same global batch, and resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stage_runs import BIN, env, merge, run

TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
TRAIN = ["pipeline/train.py", "--no-mlflow", "--no-progress"]


def _edit(work: Path, over: dict) -> None:
    p = work / "params.yaml"
    p.write_text(yaml.safe_dump(merge(yaml.safe_load(p.read_text()), over), sort_keys=False))


def _result(work: Path):
    from dpap.training.model_file import load_model

    m = load_model(work / "models" / "model.pt")
    return m, m.history[-1]


def _kill_all_in(folder: Path) -> None:
    """SIGKILL every process working in ``folder`` (a machine that dies)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder.resolve():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


def _widths(model) -> list[list[int]]:
    """Per epoch, the units each block's network computed (fewer than its units once the
    run has compacted)."""
    return [[row["width"] for row in m.layers] for m in model.history]


def test_two_ranks_give_the_masks_of_one_process(work):
    # compacting while training (train.compact_share) on every rank alike
    _edit(work, {"train": {"epochs": 3, "compact_share": 0.1}})
    run([sys.executable, *TRAIN], work)
    one, last_one = _result(work)
    (work / "models" / "model.pt").unlink()
    p = run([*TORCHRUN, *TRAIN], work)
    assert "trained 3 epochs" in p.stdout and p.stdout.count("trained 3 epochs") == 1  # rank 0 speaks
    two, last_two = _result(work)
    assert last_one.compression > 0, "the tiny settings should prune"
    for a, b in zip(one.unit_masks, two.unit_masks):
        assert torch.equal(a, b)
    for a, b in zip(one.synapse_masks, two.synapse_masks):
        assert torch.equal(a, b)
    assert abs(last_one.test_accuracy - last_two.test_accuracy) <= 0.005
    assert last_two.compression == last_one.compression
    units = [row["units"] for row in last_two.layers]
    assert any(w < u for w, u in zip(_widths(two)[-2], units)), f"the two-rank run never compacted: {_widths(two)}"
    assert _widths(two) == _widths(one)
    assert not (work / "checkpoints" / "train.pt").exists()


def test_killed_two_rank_run_resumes(work):
    _edit(work, {"data": {"limit": 0}, "train": {"epochs": 4, "batch_size": 64}})
    # the whole data set: epochs of seconds, so the kill lands mid-run
    run([sys.executable, "pipeline/preprocess.py"], work)
    run([*TORCHRUN, *TRAIN], work)
    whole, last_whole = _result(work)
    (work / "models" / "model.pt").unlink()

    proc = subprocess.Popen([*TORCHRUN, *TRAIN], cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = work / "checkpoints" / "train.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    _kill_all_in(work)  # torchrun and both ranks (torchrun starts its workers in their own sessions)
    proc.wait()
    assert ckpt.exists() and not (work / "models" / "model.pt").exists(), "killed before the end, after a checkpoint"
    p = run([*TORCHRUN, "pipeline/train.py", "--no-mlflow"], work)  # with progress: it says it resumes
    assert "resuming from checkpoint checkpoints/train.pt after epoch" in p.stdout, p.stdout
    again, last_again = _result(work)
    for a, b in zip(whole.synapse_masks, again.synapse_masks):
        assert torch.equal(a, b)
    assert last_again.test_accuracy == last_whole.test_accuracy
