"""A bad params.yaml stops a stage before it touches anything: exit status 1, one line
on stderr naming the key, outputs as they were."""

from __future__ import annotations

import contextlib
import hashlib
import sys

import pytest

from stage_runs import run

OUTPUTS = ("models/model.pt", "metrics.json", "plots/accuracy.csv", "plots/layers.png")


def digests(repo):
    return {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() for f in OUTPUTS}


BAD = [
    # (what, edit of the params text, text the error line must contain)
    ("unknown key", lambda t: t.replace("train:\n", "train:\n  epochz: 3\n", 1), "train.epochz"),
    ("eta <= 0", lambda t: t.replace("eta: 10.0", "eta: -1.0", 1), "pruning.dpap.fc.eta"),
    ("wrong type", lambda t: t.replace("  lr: 0.01", "  lr: fast", 1), "train.lr"),
    ("malformed YAML", lambda t: t.replace("train:\n", "train:\n  [oops\n", 1), "params.yaml"),
    ("regrowth with no epochs after the decisions", lambda t: t.replace("    regrow_share: null", "    regrow_share: 0.3", 1),
     "pruning.dpap.regrow_share: 0.3 swaps synapses in the epochs after the last decision, but end_fraction is 1"),
    ("prune_units neither a flag nor channels", lambda t: t.replace("    prune_units: null", "    prune_units: 1", 1),
     "pruning.dpap.prune_units: got 1, expected true, false or channels"),
]


@pytest.mark.parametrize("what,edit,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_params_stop_the_stages(repro_repo, what, edit, needle):
    params = repro_repo / "params.yaml"
    good = params.read_text()
    before = digests(repro_repo)
    bad = edit(good)
    assert bad != good, what
    try:
        params.write_text(bad)
        for script in ("pipeline/train.py", "pipeline/evaluate.py"):
            p = run([sys.executable, script, "--no-progress"], repro_repo, check=False)
            assert p.returncode != 0, (script, p.stdout)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
            assert needle in lines[0], lines[0]
        assert digests(repro_repo) == before
    finally:
        params.write_text(good)


@contextlib.contextmanager
def edited_params(repo, edit):
    """params.yaml replaced by ``edit(text)`` for the block; the outputs must come out of
    it unchanged; the file is restored (and a checkpoint the block left is removed)."""
    params = repo / "params.yaml"
    good = params.read_text()
    before = digests(repo)
    bad = edit(good)
    assert bad != good
    try:
        params.write_text(bad)
        yield
        assert digests(repo) == before
    finally:
        params.write_text(good)
        (repo / "checkpoints" / "train.pt").unlink(missing_ok=True)


def test_bad_params_under_dvc_repro_keep_outputs(repro_repo):
    """DVC reruns only the stage whose params changed; the outputs are `persist`, so DVC
    does not delete them first, and the stage fails before writing."""
    with edited_params(repro_repo, lambda t: t.replace("eta: 10.0", "eta: 0.0", 1)):
        p = run(["dvc", "repro"], repro_repo, check=False)
        assert p.returncode != 0
        assert "error: params.yaml: pruning.dpap.fc.eta" in p.stdout + p.stderr, p.stdout + p.stderr
    assert "up to date" in run(["dvc", "status"], repro_repo).stdout


def test_training_that_does_not_learn_fails_and_keeps_outputs(repro_repo):
    """lr 1000: no NaN, but accuracy at chance. The stage stops after train.stall_epochs
    epochs with one line naming train.lr, exit 1, and the earlier outputs intact."""

    def edit(t):
        bad = t.replace("  lr: 0.01", "  lr: 1000.0", 1).replace("  epochs: 3", "  epochs: 8", 1).replace("  stall_epochs: 5", "  stall_epochs: 3", 1)
        assert bad.count("1000.0") == 1 and "epochs: 8" in bad and "stall_epochs: 3" in bad
        return bad

    with edited_params(repro_repo, edit):
        p = run([sys.executable, "pipeline/train.py", "--no-progress", "--no-mlflow"], repro_repo, check=False)
        assert p.returncode == 3, p.stdout + p.stderr  # the run failed, not its input (dpap.errors)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: accuracy has stayed at chance level"), p.stderr
        assert "for 3 epochs" in lines[0] and "lower train.lr (now 1000)" in lines[0], lines[0]


def test_a_typo_no_stage_tracks_fails_dvc_repro(repro_repo):
    """`train.lrr` changes no param a stage tracks, yet `dvc repro` must not say 'up to
    date': the params stage validates the whole file."""
    with edited_params(repro_repo, lambda t: t.replace("train:\n", "train:\n  lrr: 0.1\n", 1)):
        p = run(["dvc", "repro"], repro_repo, check=False)
        assert p.returncode != 0, p.stdout + p.stderr
        assert "error: params.yaml: train.lrr" in p.stdout + p.stderr, p.stdout + p.stderr
    p = run(["dvc", "repro"], repro_repo)  # the good file again: its check is recorded, nothing reruns
    assert "Running stage" not in p.stdout, p.stdout
    assert "up to date" in run(["dvc", "status"], repro_repo).stdout


@pytest.mark.parametrize("content", [b"garbage, not a database\n" * 40, b""], ids=["corrupt", "empty"])
def test_a_broken_mlflow_store_is_one_line(repro_repo, tmp_path, content):
    """A corrupt mlflow.db: exit 1 and one line naming the file and how to move it aside,
    not a 74-line traceback; the outputs stay as they were."""
    import shutil

    work = tmp_path / "w"
    for d in ("pipeline", "dpap", "data/processed"):
        shutil.copytree(repro_repo / d, work / d)
    shutil.copy(repro_repo / "params.yaml", work / "params.yaml")
    (work / "mlflow.db").write_bytes(content)
    p = run([sys.executable, "pipeline/train.py", "--no-progress"], work, check=False)
    if not content:  # an empty file is a valid new sqlite database: MLflow fills it
        assert p.returncode == 0, p.stderr[-2000:]
        return
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("20")]  # MLflow's own INFO log lines
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert lines[0].startswith("error: MLflow store") and "mlflow.db" in lines[0] and "move it aside" in lines[0], lines[0]
    assert not (work / "models" / "model.pt").exists()


def test_the_params_stage_names_the_pruning_method(repro_repo):
    p = run([sys.executable, "pipeline/check_params.py"], repro_repo)
    assert "is valid" in p.stdout and "dpap (gradual protocol)" in p.stdout, p.stdout
    params = repro_repo / "params.yaml"
    good = params.read_text()
    try:
        params.write_text(good.replace("  method: dpap", "  method: sdsnn", 1))
        p = run([sys.executable, "pipeline/check_params.py"], repro_repo)
        assert "sdsnn (fixed protocol)" in p.stdout, p.stdout
        params.write_text(good.replace("  method: dpap", "  method: gmp", 1))
        p = run([sys.executable, "pipeline/check_params.py"], repro_repo)
        assert ", gmp)" in p.stdout, p.stdout  # a method without protocols
    finally:
        params.write_text(good)
