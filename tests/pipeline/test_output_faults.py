"""A disk that refuses a write: a read-only folder, a full disk, a file where a folder
should be. The stage stops with one line naming the file and the cause (exit 1), the
earlier results stay as they were, and no temporary file is left behind.

Read-only is a real ``chmod 555``. Root ignores permission bits, so as root the stage runs
without the capabilities that let it do so (``setpriv``: no CAP_DAC_OVERRIDE). A full
disk is a real one: a small tmpfs, mounted in a private mount namespace (``unshare``; a
user namespace when not root), filled to the last byte, that vanishes with the stage.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stage_runs import env, run

STAGES = {"train": ["pipeline/train.py", "--no-progress", "--no-mlflow"], "evaluate": ["pipeline/evaluate.py", "--no-mlflow"]}
KEPT = ("models/model.pt", "metrics.json", "plots/accuracy.csv", "plots/layers.png", "data/processed/digits/train.pt", "data/raw/digits/digits.npz")


def digests(w: Path) -> dict[str, str]:
    return {f: hashlib.sha256((w / f).read_bytes()).hexdigest() for f in KEPT}


def temporaries(w: Path) -> list[str]:
    return [str(p.relative_to(w)) for p in w.rglob("*") if p.name.endswith(".tmp")]


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return lines[0]


# --------------------------------------------------------------------- read-only


def unprivileged(probe: Path) -> list[str]:
    """A command prefix under which ``chmod 555`` stops writes: nothing for a normal user;
    for root, ``setpriv`` without the capabilities that override permission bits."""
    if os.geteuid() != 0:
        return []
    prefix = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    probe.mkdir()
    probe.chmod(0o555)
    try:
        p = subprocess.run(prefix + ["touch", str(probe / "x")], capture_output=True)
    except FileNotFoundError:
        p = None
    finally:
        probe.chmod(0o755)
    if p is None or p.returncode == 0:
        pytest.skip("running as root, where chmod 555 does not stop writes, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    return prefix


READ_ONLY = [
    # (id, folder made read-only, stage, the error line)
    ("models", "models", "train", "error: cannot write models/model.pt: models/ is not writable (permission denied); make it writable (chmod u+w models) and run again (models/model.pt is unchanged)"),
    ("checkpoints", "checkpoints", "train", "error: cannot write checkpoints/train.pt: checkpoints/ is not writable (permission denied); make it writable (chmod u+w checkpoints) and run again"),
    ("plots", "plots", "evaluate", "error: cannot write plots/accuracy.csv: plots/ is not writable (permission denied); make it writable (chmod u+w plots) and run again (plots/accuracy.csv is unchanged)"),
    ("metrics-folder", ".", "evaluate", "error: cannot write metrics.json: the current folder is not writable (permission denied); make it writable (chmod u+w .) and run again (metrics.json is unchanged)"),
    ("processed", "data/processed", "preprocess", "error: cannot write data/processed/digits: data/processed/ is not writable (permission denied); make it writable (chmod u+w data/processed) and run again (data/processed/digits is unchanged)"),
]


@pytest.mark.parametrize("folder,stage,expected", [r[1:] for r in READ_ONLY], ids=[r[0] for r in READ_ONLY])
def test_read_only_output_folder(work, tmp_path, folder, stage, expected):
    """chmod 555: one line naming the file, exit 1, before any training or evaluation
    (no epoch ran), earlier results intact, nothing left behind."""
    prefix = unprivileged(tmp_path / "probe")
    (work / "checkpoints").mkdir(exist_ok=True)
    before = digests(work)
    cmd = STAGES.get(stage, [f"pipeline/{stage}.py"])
    target = work / folder
    target.chmod(0o555)
    try:
        p = run(prefix + [sys.executable, *cmd], work, check=False, timeout=300)
    finally:
        target.chmod(0o755)
    assert one_error_line(p) == expected
    assert "test accuracy" not in p.stdout, p.stdout
    assert not (work / "checkpoints" / "train.pt").exists()  # train stopped before its first epoch
    assert digests(work) == before
    assert temporaries(work) == []


IN_THE_WAY = [
    # (id, path, what is put there, the error line)
    ("models-is-a-file", "models", "file", "error: cannot write models/model.pt: models is a file where a folder is expected; move it aside and run again"),
    ("model.pt-is-a-folder", "models/model.pt", "folder", "error: cannot write models/model.pt: it is a folder, not a file; move it aside and run again"),
    ("checkpoints-is-a-file", "checkpoints", "file", "error: cannot write checkpoints/train.pt: checkpoints is a file where a folder is expected; move it aside and run again"),
]


@pytest.mark.parametrize("path,kind,expected", [r[1:] for r in IN_THE_WAY], ids=[r[0] for r in IN_THE_WAY])
def test_a_file_or_folder_in_the_way(work, path, kind, expected):
    """A file where the stage needs a folder, or a folder where it writes its file: one
    line saying which and what to do, before training; the thing in the way untouched."""
    target = work / path
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    if kind == "file":
        target.write_text("in the way\n")
    else:
        (target / "inside").mkdir(parents=True)
    p = run([sys.executable, *STAGES["train"]], work, check=False, timeout=300)
    assert one_error_line(p) == expected
    assert not (work / "checkpoints" / "train.pt").is_file()  # stopped before its first epoch
    assert (target.read_text() == "in the way\n") if kind == "file" else (sorted(x.name for x in target.iterdir()) == ["inside"])
    assert temporaries(work) == []


# ---------------------------------------------------------------------- full disk


def mount_namespace(probe: Path) -> list[str]:
    """``unshare`` arguments for a private mount namespace in which this user can mount a
    tmpfs (root: a mount namespace; others: a user namespace too); skip if there is none."""
    base = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    probe.mkdir()
    try:
        p = subprocess.run(base + ["sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe))}"], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no unshare: cannot mount a small file system to fill")
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here ({p.stderr.strip()[:120]})")
    return base


FULL = [
    # (id, folder on the full disk, stage, files copied onto it first, the error line)
    ("models", "models", "train", ["model.pt"], "error: cannot write models/model.pt: the disk is full (no space left on device); free some space on the disk holding models/ and run again (models/model.pt is unchanged)"),
    ("checkpoints", "checkpoints", "train", [], "error: cannot write checkpoints/train.pt: the disk is full (no space left on device); free some space on the disk holding checkpoints/ and run again"),
    ("plots", "plots", "evaluate", ["accuracy.csv", "params.csv", "layers.csv", "layers.png"], "error: cannot write plots/accuracy.csv: the disk is full (no space left on device); free some space on the disk holding plots/ and run again (plots/accuracy.csv is unchanged)"),
]


@pytest.mark.parametrize("folder,stage,files,expected", [r[1:] for r in FULL], ids=[r[0] for r in FULL])
def test_full_disk(work, tmp_path, folder, stage, files, expected):
    """The folder is a tmpfs holding the earlier files and filled to the last byte (ENOSPC
    for real): one line naming the file and saying the disk is full, exit 1; on that disk
    the earlier files are unchanged and no temporary file is left."""
    ns = mount_namespace(tmp_path / "probe")
    target = work / folder
    target.mkdir(exist_ok=True)
    saved = tmp_path / "saved"
    shutil.copytree(target, saved)
    want = {f: hashlib.sha256((saved / f).read_bytes()).hexdigest() for f in files}
    q = shlex.quote
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {q(str(target))} && cp -a {q(str(saved))}/. {q(str(target))}/ || exit 99\n"
        f"dd if=/dev/zero of={q(str(target))}/.fill bs=4k 2>/dev/null\n"  # until ENOSPC
        f'"$@"; rc=$?\n'
        f"echo @@files; ls -A {q(str(target))}; echo @@sha256; cd {q(str(target))}\n"
        + (f"sha256sum {' '.join(files)}\n" if files else "")
        + "exit $rc\n"
    )
    p = subprocess.run(ns + ["sh", "-c", script, "sh", sys.executable, *STAGES[stage]], cwd=work, env=env(), capture_output=True, text=True, timeout=300)
    line = one_error_line(p)
    assert line == expected
    out = p.stdout.split("@@files\n", 1)[1]
    listing, sums = out.split("@@sha256\n")
    before = [e.name for e in saved.iterdir()]  # the earlier outputs (models/export/ among them)
    assert sorted(listing.split()) == sorted([".fill", *before]), listing  # no .tmp left on the full disk
    assert {name: digest for digest, name in (l.split() for l in sums.splitlines())} == want
    if folder == "models":  # the checkpoint after the last epoch is kept: a rerun only writes the model
        assert (work / "checkpoints" / "train.pt").exists()
        p = run([sys.executable, "pipeline/train.py", "--no-mlflow"], work, timeout=300)
        assert "resuming from checkpoint checkpoints/train.pt after epoch 3" in p.stdout and "epoch   1:" not in p.stdout, p.stdout
        assert (work / "models" / "model.pt").exists() and not (work / "checkpoints" / "train.pt").exists()


def test_read_only_file_system(work, tmp_path):
    """``models/`` on a file system mounted read-only (a read-only bind mount of itself, in
    a private mount namespace): one line, before training; the model unchanged."""
    ns = mount_namespace(tmp_path / "probe")
    before = digests(work)
    models = shlex.quote(str(work / "models"))
    script = f'mount --bind {models} {models} && mount -o remount,bind,ro {models} || exit 99\nexec "$@"\n'
    p = subprocess.run(ns + ["sh", "-c", script, "sh", sys.executable, *STAGES["train"]], cwd=work, env=env(), capture_output=True, text=True, timeout=300)
    assert one_error_line(p) == (
        "error: cannot write models/model.pt: models/ is on a read-only file system; "
        "remount it read-write or run from a writable copy (models/model.pt is unchanged)"
    )
    assert not (work / "checkpoints" / "train.pt").exists()  # stopped before its first epoch
    assert digests(work) == before and temporaries(work) == []
