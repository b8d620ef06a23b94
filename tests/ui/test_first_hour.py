"""What a new user meets in the first hour, held: the version, a bad flag named as the
flag, training progress in a log file, and a ``pytest`` that installs nothing and leaves
nothing behind (its set-up is ``bash tools/setup_test_services.sh``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpap import __version__
from dpap.cli import main

ROOT = Path(__file__).resolve().parents[2]
SETUP = "bash tools/setup_test_services.sh"


def test_version():
    r = subprocess.run([sys.executable, "-m", "dpap.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == f"dpap {__version__}\n", r


@pytest.mark.parametrize("value, shown", [("x", "'x'"), ("2", "2"), ("0", "0"), ("nan", "'nan'"), ("-0.5", "-0.5"), (".inf", "inf")])
def test_a_bad_target_is_the_flags(value, shown, tmp_path, capsys):
    """``dpap search --target`` out of (0, 1) or not a number: one line naming the flag
    (not params.yaml, which may be fine), exit 1, before the params are read."""
    rc = main(["search", "--params", str(tmp_path / "absent.yaml"), "--target", value])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"error: --target: got {shown}, expected a number in (0, 1)\n"


def test_a_good_target_leaves_errors_to_params(tmp_path, capsys):
    rc = main(["search", "--params", str(tmp_path / "absent.yaml"), "--target", "0.5"])
    assert rc == 1 and capsys.readouterr().err.startswith(f"error: {tmp_path / 'absent.yaml'}: file not found")


# ------------------------------------------------------------------------- progress


def _train(digits, progress=True):
    from dpap.config import Config
    from dpap.training.loop import TrainingRun

    cfg = Config()
    cfg.model.arch = "16FC-10FC"
    cfg.model.time_steps = 2
    cfg.train.epochs = 2
    cfg.train.threads = 1
    train, test = digits
    TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=progress).run()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_one_line_per_epoch(digits, capsys, monkeypatch):
    """stderr not a terminal (CI, nohup, a queued experiment, ``2>&1 | tee``): no bar and
    no carriage return, one line per epoch on stdout. On a terminal, the bar is drawn."""
    _train(digits)
    out, err = capsys.readouterr()
    assert "\r" not in out + err, (out, err)
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch   1: loss "), out

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _train(digits)
    assert "\r" in terminal.getvalue() and "epoch 1/2" in terminal.getvalue()


def test_data_stage_bars_only_on_a_terminal(monkeypatch):
    from dpap.data.progress import bars_shown

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_shown(True)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert bars_shown(True) and not bars_shown(False)


# ---------------------------------------------------------------- pytest itself


def _inner_pytest(args: list[str], tmpdir: Path, **env) -> subprocess.CompletedProcess:
    """A pytest of its own in the repository, as a user would start it, with ``tmpdir`` as
    the machine's temporary folder."""
    e = {k: v for k, v in os.environ.items() if k not in ("DPAP_TEST_TMPDIR", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")}
    e.update(TMPDIR=str(tmpdir), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def test_pytest_leaves_nothing_in_the_temporary_folder(tmp_path):
    """The MLflow stores' creation locks (``dpap-mlflow-store-*.lock``), Optuna's schema
    locks, the servers' folders and pytest's own ``tmp_path`` all go to the session's
    folder, which is removed at the end: the machine's temporary folder is as before."""
    machine_tmp = tmp_path / "tmp"
    machine_tmp.mkdir()
    r = _inner_pytest(["-n", "1", "tests/ui/leftovers_probe.py"], machine_tmp)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(os.listdir(machine_tmp)) == []


def test_a_missing_package_is_a_skip_naming_the_set_up(tmp_path):
    """Without Chromium or PostgreSQL the tests that need them are skipped before anything
    runs (nothing is installed), each saying how to install them."""
    machine_tmp = tmp_path / "tmp"
    machine_tmp.mkdir()
    r = _inner_pytest(["-n", "0", "tests/ui/test_browser.py", "tests/search/test_postgres.py::test_missing_database_is_one_line"],
                      machine_tmp, DPAP_TEST_WITHOUT="chromium,postgresql")
    assert r.returncode == 0 and "3 skipped" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(line.endswith(f"not installed (pytest installs nothing); run: {SETUP}") for line in skips), skips
    assert {"chromium", "postgresql"} <= {w for line in skips for w in line.split()}
    assert sorted(os.listdir(machine_tmp)) == []


# ------------------------------------------------------------------- the set-up


def test_ci_runs_the_readme_test_command():
    """``.ci/run`` is the README's second command, set-up included, on a clean clone."""
    readme = [line for line in (ROOT / "README.md").read_text().splitlines() if line.endswith(" && pytest")]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.endswith(" && pytest")]
    assert len(readme) == 1 and ci == readme and f"&& {SETUP} &&" in readme[0]
    assert "set -euo pipefail" in (ROOT / ".ci" / "run").read_text()


def _fake_debian(tmp_path: Path, installed: set[str], uid: int, sudo: bool = True) -> tuple[dict, Path]:
    """A PATH of stand-ins for dpkg-query, apt-get, id (and sudo), which record what they
    were asked, and the few real tools the script needs (bash, env, grep): the set-up
    script runs for real, the machine is not touched."""
    import shutil

    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    state, log = tmp_path / "installed", tmp_path / "calls.log"
    state.write_text("".join(f"{p}\n" for p in sorted(installed)))
    scripts = {
        "dpkg-query": f'grep -qx "${{@: -1}}" {state} && printf installed || printf not-installed\n',
        "apt-get": f'echo "apt-get $*" >> {log}\nif [ "$1" != update ]; then for a in "$@"; do case "$a" in -*|install|DPkg*) ;; *) echo "$a" >> {state};; esac; done; fi\n',
        "id": f"echo {uid}\n",
    }
    if sudo:
        scripts["sudo"] = f'echo "sudo $1" >> {log}\nexec "$@"\n'
    for name, body in scripts.items():
        (bin_ / name).write_text("#!/bin/bash\n" + body)
        (bin_ / name).chmod(0o755)
    for tool in ("bash", "env", "grep"):
        (bin_ / tool).symlink_to(shutil.which(tool, path="/usr/bin:/bin"))
    return dict(os.environ, PATH=str(bin_)), log


def _setup(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "tools" / "setup_test_services.sh"), *args], env=env, capture_output=True, text=True, timeout=60)


def test_set_up_installs_what_is_missing_says_so_and_is_idempotent(tmp_path):
    env, log = _fake_debian(tmp_path, {"postgresql"}, uid=0)
    r = _setup(env, "--check")
    assert r.returncode == 1 and "missing: chromium chromium-driver dataset-fashion-mnist" in r.stderr and not log.exists()
    r = _setup(env)
    assert r.returncode == 0, r.stderr
    assert "installing with apt-get: chromium chromium-driver dataset-fashion-mnist" in r.stdout
    assert "postgresql: installed\n" in r.stdout and "chromium: installed now" in r.stdout
    calls = log.read_text().splitlines()
    assert calls[0] == "apt-get update -q" and calls[1].endswith("install -y -q chromium chromium-driver dataset-fashion-mnist")
    assert not any(c.startswith("sudo") for c in calls)  # root: no sudo
    log.unlink()
    r = _setup(env)  # everything there: nothing run, not even apt-get update
    assert r.returncode == 0 and r.stdout.endswith("nothing to install\n") and not log.exists()


def test_set_up_uses_sudo_only_when_not_root(tmp_path):
    env, log = _fake_debian(tmp_path / "sudo", set(), uid=1000)
    assert _setup(env).returncode == 0
    assert [c.split()[:2] for c in log.read_text().splitlines() if c.startswith("sudo")] == [["sudo", "env"]] * 2
    env, log = _fake_debian(tmp_path / "nosudo", set(), uid=1000, sudo=False)
    r = _setup(env)
    assert r.returncode == 1 and "needs root; as root run:" in r.stderr
    assert "apt-get update && apt-get install -y chromium chromium-driver postgresql dataset-fashion-mnist" in r.stderr
    assert not log.exists()
