"""Tiny synthetic data sets in the real on-disk formats, read back by the real
torchvision / tonic classes.

* MNIST / Fashion-MNIST: gzipped IDX files (``train-images-idx3-ubyte.gz`` ...).
* CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` pickles,
  optionally packed into ``cifar-10-python.tar.gz``.
* N-MNIST: ``train.zip`` / ``test.zip`` holding ``Train/<digit>/<id>.bin`` files of 5-byte
  event records.
* DVS-Gesture: ``ibmGestureTrain.tar.gz`` / ``ibmGestureTest.tar.gz`` holding
  ``ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy`` arrays of (x, y, p, t[ms]).

Every writer returns ``{file name: md5}`` so a test can hand the checksums to
``download(cfg, checksums=...)`` (the synthetic files don't match the published ones).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dpap.config import DataConfig


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- IDX


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000080<ndim>, big-endian dims)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def make_idx(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """Gzipped MNIST-format files in ``folder``; returns md5s and the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    sums = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(y)
        arrays[split] = (x, y)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{split}-{kind}-ubyte.gz"
            with gzip.open(folder / name, "wb") as fh:
                fh.write(idx_bytes(arr))
            sums[name] = md5(folder / name)
    return {"md5": sums, "arrays": arrays}


# -------------------------------------------------------------------------- CIFAR


def make_cifar(root: Path, n_per_batch: int = 10, n_test: int = 10, seed: int = 0, archive: bool = False) -> dict:
    """``root/cifar-10-batches-py/*`` (or ``root/cifar-10-python.tar.gz`` with ``archive``)."""
    rng = np.random.default_rng(seed)
    build = root / ("_build" if archive else "")
    folder = build / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sums, arrays = {}, {"train": [], "test": None}

    def batch(name, n):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, fh, protocol=2)
        sums[name] = md5(folder / name)
        return data.reshape(n, 3, 32, 32), np.array(labels)

    for i in range(1, 6):
        arrays["train"].append(batch(f"data_batch_{i}", n_per_batch))
    arrays["test"] = batch("test_batch", n_test)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, fh, protocol=2)
    sums["batches.meta"] = md5(folder / "batches.meta")
    x = np.concatenate([a for a, _ in arrays["train"]])
    y = np.concatenate([b for _, b in arrays["train"]])
    out = {"md5": sums, "arrays": {"train": (x, y), "test": arrays["test"]}}
    if archive:
        tgz = root / "cifar-10-python.tar.gz"
        with tarfile.open(tgz, "w:gz") as tf:
            tf.add(folder, arcname="cifar-10-batches-py")
        import shutil

        shutil.rmtree(build)
        out["md5"]["cifar-10-python.tar.gz"] = md5(tgz)
    return out


# ------------------------------------------------------------------------- N-MNIST


def nmnist_record_bytes(x, y, p, t) -> bytes:
    """5-byte N-MNIST records: x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    x, y, p, t = (np.asarray(a, dtype=np.uint32) for a in (x, y, p, t))
    rec = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return rec.astype(np.uint8).tobytes()


def nmnist_sample(rng, label: int, n_events: int = 60, duration_us: int = 100_000):
    """Events clustered around a label-dependent pixel, plus one marker event."""
    cx, cy = 4 + 2 * label, 6 + label
    x = np.clip(cx + rng.integers(-1, 2, n_events), 0, 33)
    y = np.clip(cy + rng.integers(-1, 2, n_events), 0, 33)
    p = rng.integers(0, 2, n_events)
    t = np.sort(rng.integers(0, duration_us, n_events))
    t[0], t[-1] = 0, duration_us
    return x, y, p, t


def make_nmnist(folder: Path, per_class_train: int = 2, per_class_test: int = 1, seed: int = 0,
                noise: bool = False) -> dict:
    """``folder/train.zip`` and ``folder/test.zip`` in tonic's NMNIST layout.

    With ``noise``, each sample also gets 5 isolated events (far from everything in space
    and time) that tonic's Denoise removes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sums, counts = {}, {}
    for zname, top, per in (("train.zip", "Train", per_class_train), ("test.zip", "Test", per_class_test)):
        n_events = []
        with zipfile.ZipFile(folder / zname, "w") as zf:
            for label in range(10):
                for k in range(per):
                    x, y, p, t = nmnist_sample(rng, label)
                    if noise:
                        nx = np.array([33, 0, 33, 0, 17])
                        ny = np.array([0, 33, 33, 0, 33])
                        nt = np.array([5_000, 25_000, 45_000, 65_000, 85_000])
                        x, y, p, t = (np.concatenate([a, b]) for a, b in ((x, nx), (y, ny), (p, np.ones(5, int)), (t, nt)))
                        order = np.argsort(t, kind="stable")
                        x, y, p, t = x[order], y[order], p[order], t[order]
                    zf.writestr(f"{top}/{label}/{label * 100 + k:05d}.bin", nmnist_record_bytes(x, y, p, t))
                    n_events.append(len(x))
        sums[zname] = md5(folder / zname)
        counts[top] = n_events
    return {"md5": sums, "events": counts}


# --------------------------------------------------------------------- DVS-Gesture


def make_dvs_gesture(folder: Path, users=(1, 2), labels=(0, 1, 2, 10), seed: int = 0) -> dict:
    """``folder/ibmGestureTrain.tar.gz`` and ``ibmGestureTest.tar.gz`` (tonic's layout):
    ``ibmGesture<Split>/user<NN>_<lighting>/<label>.npy`` with rows (x, y, p, t[ms])."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, us in (("Train", users), ("Test", (users[-1] + 1,))):
        name = f"ibmGesture{split}"
        with tarfile.open(folder / f"{name}.tar.gz", "w:gz") as tf:
            for u in us:
                for label in labels:
                    n = 80
                    x = rng.integers(0, 128, n)
                    y = rng.integers(0, 128, n)
                    x[:10], y[:10] = 127, 64  # a marker pixel -> (31, 16) at 32x32
                    p = rng.integers(0, 2, n)
                    t = np.sort(rng.integers(0, 1000, n))  # ms
                    t[0], t[-1] = 0, 1000
                    arr = np.stack([x, y, p, t], axis=1).astype(np.int64)
                    buf = io.BytesIO()
                    np.save(buf, arr)
                    info = tarfile.TarInfo(f"{name}/user{u:02d}_fluorescent/{label}.npy")
                    info.size = buf.tell()
                    buf.seek(0)
                    tf.addfile(info, buf)
        sums[f"{name}.tar.gz"] = md5(folder / f"{name}.tar.gz")
    return {"md5": sums}


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def synth():
    return SimpleNamespace(
        md5=md5, make_idx=make_idx, make_cifar=make_cifar, make_nmnist=make_nmnist,
        make_dvs_gesture=make_dvs_gesture, nmnist_record_bytes=nmnist_record_bytes,
    )


@pytest.fixture
def cfg_for(tmp_path):
    """``cfg_for(name, **overrides)`` -> a DataConfig rooted in the test's tmp dir."""

    def make(name: str, **kw) -> DataConfig:
        base = dict(name=name, raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"))
        base.update(kw)
        return DataConfig(**base)

    return make


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Data tests never touch the network, whatever the machine has."""
    monkeypatch.setenv("DPAP_OFFLINE", "1")
