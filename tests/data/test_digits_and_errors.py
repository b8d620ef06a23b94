"""digits end to end (offline), errors, and load_processed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dpap.data import DATASETS, DataError, download, load_processed, preprocess
from dpap.data.fetcher import Fetcher as _Fetcher
from dpap.data.registry import RawFile, get_spec
from dpap.runtime.outputs import LEFTOVER_AGE_S

REPO = Path(__file__).resolve().parents[2]


def test_registry_names():
    assert list(DATASETS) == ["digits", "mnist", "fashion-mnist", "cifar10", "nmnist", "dvs-gesture"]
    # The real published md5s come from the torchvision / tonic classes.
    import tonic.datasets
    import torchvision.datasets

    mnist = get_spec("mnist")
    assert [f.md5 for f in mnist.files] == [m for _, m in torchvision.datasets.MNIST.resources]
    assert get_spec("nmnist").files[0].md5 == tonic.datasets.NMNIST.train_md5
    assert get_spec("cifar10").archives[0].md5 == torchvision.datasets.CIFAR10.tgz_md5


def test_digits_end_to_end(cfg_for):
    cfg = cfg_for("digits")
    raw = download(cfg)
    assert raw == Path(cfg.raw_dir) / "digits"
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"digits.npz"}
    stamp = (raw / "MANIFEST.json").stat().st_mtime_ns
    lines = []
    assert download(cfg, log=lines.append) == raw  # verified files: nothing to do
    assert "nothing to do" in lines[-1]
    assert (raw / "MANIFEST.json").stat().st_mtime_ns == stamp

    out = preprocess(cfg)
    assert out == Path(cfg.processed_dir) / "digits"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt"]
    data = load_processed(out)
    xtr, ytr = data.train
    xte, yte = data.test
    assert data.val is None
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) == 1.0
    m = data.meta
    assert m["kind"] == "static" and m["input_shape"] == [1, 8, 8] and m["num_classes"] == 10
    assert m["time_bins"] is None and len(m["hash"]) == 64
    assert sum(m["class_counts"]["test"]) == 360 and min(m["class_counts"]["test"]) >= 35  # stratified
    assert m["raw_manifest_hash"]
    # Values are the bundled digits / 16, labels in order.
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = {tuple(r) for r in (d.images.reshape(1797, 64) / 16.0).round(6)}
    assert tuple(xte[0].reshape(64).double().numpy().round(6)) in rows
    # Stored compactly.
    stored = torch.load(out / "train.pt", weights_only=True)
    assert stored["x"].dtype == torch.uint8 and set(stored) == {"x", "y"}


def test_digits_val_split_limit_standardize(cfg_for):
    cfg = cfg_for("digits", val_fraction=0.2, seed=3, standardize=True)
    download(cfg)
    data = load_processed(preprocess(cfg))
    assert data.val is not None
    n_tr, n_va = len(data.train[1]), len(data.val[1])
    assert n_tr + n_va == 1437 and n_va == round(0.2 * 1437)
    assert min(data.meta["class_counts"]["val"]) >= 25  # stratified
    assert abs(float(data.train[0].mean())) < 1e-4 and abs(float(data.train[0].std()) - 1) < 1e-2
    assert (Path(cfg.processed_dir) / "digits" / "val.pt").is_file()
    # Same seed -> same split; different seed -> different split.
    again = load_processed(preprocess(cfg))
    assert torch.equal(again.val[1], data.val[1]) and again.meta["hash"] == data.meta["hash"]
    other = load_processed(preprocess(cfg_for("digits", val_fraction=0.2, seed=4, standardize=True)))
    assert other.meta["hash"] != data.meta["hash"]

    small = load_processed(preprocess(cfg_for("digits", limit=50)))
    assert small.meta["sizes"] == {"train": 50, "test": 50}
    assert len(small.train[0]) == 50


def test_unknown_name_lists_valid_names(cfg_for):
    with pytest.raises(DataError) as err:
        download(cfg_for("imagenet"))
    msg = str(err.value)
    assert "imagenet" in msg and "\n" not in msg
    for name in DATASETS:
        assert name in msg
    with pytest.raises(DataError, match="valid names"):
        preprocess(cfg_for("imagenet"))


@pytest.mark.parametrize("name,folder,files", [
    ("mnist", "mnist/MNIST/raw", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
    ("cifar10", "cifar10/cifar-10-batches-py", ["data_batch_1", "test_batch", "batches.meta"]),
    ("nmnist", "nmnist/NMNIST", ["train.zip", "test.zip"]),
    ("dvs-gesture", "dvs-gesture/DVSGesture", ["ibmGestureTrain.tar.gz", "ibmGestureTest.tar.gz"]),
])
def test_no_source_error_names_folder_and_files(cfg_for, name, folder, files):
    cfg = cfg_for(name)
    with pytest.raises(DataError) as err:
        download(cfg, offline=True)
    msg = str(err.value)
    assert "\n" not in msg and repr(name) in msg
    assert str(Path(cfg.raw_dir) / folder) in msg
    for f in files:
        assert f in msg


def test_failed_download_is_fast_and_reported(cfg_for, tmp_path):
    import time

    cfg = cfg_for("mnist")
    spec = get_spec("mnist")
    fetcher = _Fetcher(spec, Path(cfg.raw_dir) / "mnist", {}, offline=False, progress=False, log=lambda s: None)
    t0 = time.perf_counter()
    # Port 9 (discard) on localhost: connection refused at once, no internet needed.
    assert not fetcher.place(RawFile("MNIST/raw/x.gz", "0" * 32, ("http://127.0.0.1:9/x.gz",)), network=True)
    assert time.perf_counter() - t0 < 10
    assert fetcher.network_error and "127.0.0.1" in fetcher.network_error
    msg = fetcher._no_source_message(list(spec.files))
    assert "download failed" in msg and "MNIST/raw" in msg


def test_download_cut_off_is_reported_and_leaves_no_file(cfg_for):
    """A server that promises 1 MB and closes after 10 bytes: a failed download like any
    other (not a checksum error that says to delete the file), its temporary file gone."""
    import http.server
    import threading

    class CutOff(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), CutOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = cfg_for("mnist")
        root = Path(cfg.raw_dir) / "mnist"
        fetcher = _Fetcher(get_spec("mnist"), root, {}, offline=False, progress=False, log=lambda s: None)
        url = f"http://127.0.0.1:{server.server_port}/x.gz"
        assert not fetcher.place(RawFile("MNIST/raw/x.gz", "0" * 32, (url,)), network=True)
    finally:
        server.shutdown()
        server.server_close()
    assert fetcher.last_error == f"127.0.0.1:{server.server_port}: cut off after 10 of {1 << 20} bytes"
    assert not [p.name for p in root.rglob(".dpap-*")]


def test_preprocess_without_download(cfg_for):
    with pytest.raises(DataError, match="download"):
        preprocess(cfg_for("digits"))


def test_load_processed_missing_or_corrupt(cfg_for, tmp_path):
    with pytest.raises(DataError, match="dvc repro preprocess"):
        load_processed(tmp_path / "nowhere")
    cfg = cfg_for("digits")
    download(cfg)
    out = preprocess(cfg)
    (out / "test.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="test.pt.*corrupt.*dvc repro preprocess"):
        load_processed(out)
    out = preprocess(cfg)
    good = torch.load(out / "train.pt", weights_only=True)
    good["x"][0, 0, 0, 0] += 1
    torch.save(good, out / "train.pt")
    with pytest.raises(DataError, match="hash"):
        load_processed(out)
    (out / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json missing"):
        load_processed(out)


def test_altered_digits_raw_file_keeps_processed(cfg_for):
    cfg = cfg_for("digits")
    raw = download(cfg)
    out = preprocess(cfg)
    before = (out / "meta.json").read_text()
    npz = raw / "digits.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    for stage in (download, preprocess):
        with pytest.raises(DataError, match="checksum error.*digits.npz"):
            stage(cfg)
    assert (out / "meta.json").read_text() == before
    assert len(load_processed(out).train[0]) == 1437


def test_file_where_the_processed_folder_belongs_is_replaced_and_removed(cfg_for):
    """A file left where the processed folder goes: the folder takes its place and the file
    is removed, not left beside it; so is a ``.digits.old-<pid>`` (the form earlier versions
    used) left by an earlier run that was killed."""
    cfg = cfg_for("digits", limit=20)
    download(cfg)
    parent = Path(cfg.processed_dir)
    parent.mkdir(parents=True)
    (parent / "digits").write_text("not a folder")
    (parent / f".digits.old-{os.getpid()}").write_text("left by a killed run")
    os.utime(parent / f".digits.old-{os.getpid()}", (0, time.time() - 2 * LEFTOVER_AGE_S))
    out = preprocess(cfg)
    assert out.is_dir() and load_processed(out).meta["sizes"] == {"train": 20, "test": 20}
    assert sorted(p.name for p in parent.iterdir()) == ["digits"]
    preprocess(cfg)  # and the previous folder, replaced by the next run
    assert sorted(p.name for p in parent.iterdir()) == ["digits"]


def test_leftovers_of_killed_runs_beside_the_processed_folder_are_removed(cfg_for):
    """A killed run's temporary and moved-aside folders (``.digits.tmp-<pid>-<hex>``,
    ``.digits.old-<pid>-<hex>``) are removed by the next run once their process is gone and
    nothing in them changed for LEFTOVER_AGE_S; a running process's (this one's) and a
    recent one's (a process on another machine sharing the folder may be writing it) stay."""
    cfg = cfg_for("digits", limit=20)
    download(cfg)
    parent = Path(cfg.processed_dir)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    stale = [f".digits.tmp-{dead}-0123abcd", f".digits.old-{dead}-4567cdef"]
    kept = [f".digits.tmp-{os.getpid()}-89abcdef", f".digits.tmp-{dead}-fedcba98"]
    for name in (*stale, *kept):
        (parent / name).mkdir(parents=True)
        (parent / name / "train.pt").write_text("half written")
        if name != kept[1]:
            for q in (parent / name / "train.pt", parent / name):
                os.utime(q, (0, time.time() - 2 * LEFTOVER_AGE_S))
    preprocess(cfg)
    assert sorted(p.name for p in parent.iterdir()) == sorted([*kept, "digits"])


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_processed_folder_has_the_umask_mode(cfg_for, umask):
    """The processed folder is made with the mode any new folder gets (0755 under umask
    022), not the 0700 of a private temporary folder; its files likewise (0644)."""
    cfg = cfg_for("digits", limit=20)
    download(cfg)
    old = os.umask(umask)
    try:
        out = preprocess(cfg)
        out = preprocess(cfg)  # replaced: the same
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}


def _load_main(script: str):
    """The stage script's entry point as ``python pipeline/<script>`` runs it (errors
    turned into one line and exit status 1 by ``_cli.main_guard``)."""
    import importlib.util

    sys.path.insert(0, str(REPO / "pipeline"))
    try:
        spec = importlib.util.spec_from_file_location(f"_pipeline_{script[:-3]}", REPO / "pipeline" / script)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "pipeline"))
    return lambda argv: mod._cli.main_guard(mod.main, argv)


def test_cli_in_process(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  name: digits\n  raw_dir: {tmp_path}/raw\n  processed_dir: {tmp_path}/processed\n"
                      f"  val_fraction: 0.1\n")
    assert _load_main("download.py")(["--params", str(params)]) == 0
    assert "digits" in capsys.readouterr().out
    assert _load_main("preprocess.py")(["--params", str(params)]) == 0
    assert load_processed(tmp_path / "processed" / "digits").meta["sizes"]["val"] == 144

    params.write_text("data:\n  val_fraction: 2\n")  # ConfigError: same one-line treatment
    capsys.readouterr()
    assert _load_main("preprocess.py")(["--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "data.val_fraction" in err


def test_cli_error_is_one_line_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  name: nope\n")
    r = subprocess.run([sys.executable, str(REPO / "pipeline" / "download.py"), "--params", str(params)],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "DPAP_OFFLINE": "1"},
                       timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "'nope'" in r.stderr and "digits" in r.stderr and "dvs-gesture" in r.stderr
