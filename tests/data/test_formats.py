"""Synthetic files in the real formats, through the real torchvision / tonic classes."""

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

from dpap.data import DataError, download, load_processed, preprocess
from dpap.data.processed import SWAP_TRIES, input_description
from dpap.data.registry import DEBIAN_FASHION_MNIST_DIR
from dpap.runtime.outputs import LEFTOVER_AGE_S


def by_the_description(desc: dict, values: np.ndarray) -> np.ndarray:
    """A model's input made as export.json's ``input`` tells a user: ``x = value · scale``,
    then ``(x[c] − mean[c]) / std[c]`` per channel when standardised ([N, C, H, W])."""
    x = values.astype(np.float64) * desc["scale"]
    if desc["mean"] is not None:
        x = (x - np.array(desc["mean"])[:, None, None]) / np.array(desc["std"])[:, None, None]
    return x


# --------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("name,cls_folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_copied_by_hand(cfg_for, synth, name, cls_folder):
    cfg = cfg_for(name)
    flat = Path(cfg.raw_dir) / name  # the user copied the .gz files flat into raw/<name>/
    made = synth.make_idx(flat, n_train=40, n_test=20)
    raw = download(cfg, checksums=made["md5"])
    folder = raw / cls_folder / "raw"
    for f in made["md5"]:
        assert (folder / f).is_file() and (folder / f[:-3]).is_file()  # moved + extracted
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert len(manifest["files"]) == 8

    data = load_processed(preprocess(cfg))
    x, y = made["arrays"]["train"]
    assert data.train[0].shape == (40, 1, 28, 28)
    np.testing.assert_allclose(data.train[0][:, 0].numpy(), x / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.train[1].numpy(), y)
    np.testing.assert_array_equal(data.test[1].numpy(), made["arrays"]["t10k"][1])
    assert data.meta["input_shape"] == [1, 28, 28] and data.meta["classes"][0] in ("0 - zero", "T-shirt/top")


def test_published_checksums_are_the_default(cfg_for, synth):
    cfg = cfg_for("mnist")
    synth.make_idx(Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw")
    with pytest.raises(DataError) as err:
        download(cfg)
    msg = str(err.value)
    assert "checksum error" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg  # torchvision's published md5
    assert not (Path(cfg.raw_dir) / "mnist" / "MANIFEST.json").exists()


def test_truncated_raw_file_keeps_processed_output(cfg_for, synth):
    cfg = cfg_for("mnist", val_fraction=0.25)
    made = synth.make_idx(Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw")
    raw = download(cfg, checksums=made["md5"])
    out = preprocess(cfg)
    meta_before = (out / "meta.json").read_text()
    good = load_processed(out)

    # Truncate the extracted image file torchvision reads.
    target = raw / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    for stage in (download, preprocess):
        with pytest.raises(DataError) as err:
            stage(cfg)
        assert "checksum error" in str(err.value) and "train-images-idx3-ubyte" in str(err.value)
    assert (out / "meta.json").read_text() == meta_before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt", "val.pt"]
    again = load_processed(out)
    assert torch.equal(again.train[0], good.train[0]) and again.meta["hash"] == good.meta["hash"]
    assert not [p for p in Path(cfg.processed_dir).iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_altered_archive_same_size_named(cfg_for, synth):
    cfg = cfg_for("mnist")
    made = synth.make_idx(Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw")
    raw = download(cfg, checksums=made["md5"])
    f = raw / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"checksum error: .*t10k-labels-idx1-ubyte\.gz .*altered"):
        download(cfg, checksums=made["md5"])


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed; run: bash tools/setup_test_services.sh")
def test_fashion_mnist_from_debian_package(cfg_for):
    cfg = cfg_for("fashion-mnist", limit=500)
    lines = []
    raw = download(cfg, log=lines.append)
    assert any(DEBIAN_FASHION_MNIST_DIR in line for line in lines)
    assert (raw / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 47040016
    data = load_processed(preprocess(cfg))
    assert data.meta["sizes"] == {"train": 500, "test": 500}
    assert data.train[0].shape == (500, 1, 28, 28) and data.meta["num_classes"] == 10
    assert len(set(data.train[1].tolist())) == 10


def interleave_a_second_download(monkeypatch, cfg, **kwargs) -> dict:
    """Two processes fetching one data set into one folder at once, interleaved at their
    worst: while the first temporary file (``.dpap-…``) of this download waits to be moved
    into place, a second download of the same data set runs from start to end."""
    real, seen = os.replace, {"nested": False}

    def replace(src, dst, *args, **kw):
        if not seen["nested"] and Path(src).name.startswith(".dpap-"):
            seen["nested"] = True
            download(cfg, **kwargs)
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_two_downloads_of_one_data_set_at_once(cfg_for, synth, monkeypatch):
    """Each writes its own temporary files: neither moves or overwrites the other's."""
    cfg = cfg_for("fashion-mnist")
    made = synth.make_idx(Path(cfg.raw_dir) / "fashion-mnist", n_train=40, n_test=20)
    seen = interleave_a_second_download(monkeypatch, cfg, checksums=made["md5"])
    raw = download(cfg, checksums=made["md5"])
    assert seen["nested"]
    for f in made["md5"]:
        assert (raw / "FashionMNIST" / "raw" / f[:-3]).is_file()
    assert not [p.name for p in raw.rglob(".dpap-*")]
    np.testing.assert_array_equal(load_processed(preprocess(cfg)).train[1].numpy(), made["arrays"]["train"][1])


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed; run: bash tools/setup_test_services.sh")
def test_two_downloads_from_the_debian_package_at_once(cfg_for, monkeypatch):
    """The offline copy, as two benchmarks started together on a fresh checkout make it."""
    cfg = cfg_for("fashion-mnist", limit=500)
    seen = interleave_a_second_download(monkeypatch, cfg)
    raw = download(cfg)
    assert seen["nested"]
    assert (raw / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 47040016
    assert not [p.name for p in raw.rglob(".dpap-*")]


def test_leftovers_of_killed_downloads_are_removed(cfg_for, synth):
    """Temporary files and folders of a process that is gone, and the fixed names of earlier
    versions, are removed by the next download run once nothing in them changed for
    LEFTOVER_AGE_S; a running process's (this one's) and a recent one's (a process on
    another machine sharing the folder may be writing it) stay."""
    cfg = cfg_for("fashion-mnist")
    root = Path(cfg.raw_dir) / "fashion-mnist"
    made = synth.make_idx(root, n_train=40, n_test=20)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    stale = [f".dpap-train-images-idx3-ubyte.gz.{dead}.0123abcd.part", f".dpap-MANIFEST.json.{dead}.4567cdef.tmp",
             ".dpap-t10k-labels-idx1-ubyte.gz.part", f".dpap-unpack-{dead}-x1y2/cifar-10-batches-py/data_batch_1", ".dpap-unpack/a"]
    kept = [f".dpap-t10k-images-idx3-ubyte.gz.{os.getpid()}.89abcdef.part", f".dpap-train-labels-idx1-ubyte.gz.{dead}.fedcba98.part"]
    long_ago = time.time() - 2 * LEFTOVER_AGE_S
    for name in [*stale, *kept]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("half written")
    for name in [*stale, kept[0]]:
        for q in [root / name, *(root / name).parents]:
            if q == root:
                break
            os.utime(q, (0, long_ago))
    download(cfg, checksums=made["md5"])
    assert sorted(p.name for p in root.rglob(".dpap-*")) == sorted(kept)


def competing_preprocess_runs(monkeypatch, cfg, times: int) -> dict:
    """Other processes preprocessing the same data set at once, at their worst: while this
    run's finished folder waits to be swapped into place, another run writes the processed
    folder from start to end, ``times`` times in a row."""
    real, seen = os.replace, {"runs": 0, "inside": False}

    def replace(src, dst, *args, **kw):
        if not seen["inside"] and ".tmp-" in Path(src).name and seen["runs"] < times:
            seen["runs"] += 1
            seen["inside"] = True
            try:
                preprocess(cfg)
            finally:
                seen["inside"] = False
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return seen


@pytest.mark.parametrize("times", [1, SWAP_TRIES - 1])
def test_preprocess_runs_of_one_data_set_at_once(cfg_for, synth, monkeypatch, times):
    """This run's swap finds a folder there that was not when it looked, moves it aside as
    well and tries again; nothing is left aside."""
    cfg = cfg_for("fashion-mnist")
    made = synth.make_idx(Path(cfg.raw_dir) / "fashion-mnist", n_train=40, n_test=20)
    download(cfg, checksums=made["md5"])
    seen = competing_preprocess_runs(monkeypatch, cfg, times)
    out = Path(preprocess(cfg))
    assert seen["runs"] == times
    np.testing.assert_array_equal(load_processed(out).train[1].numpy(), made["arrays"]["train"][1])
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_preprocess_gives_up_when_other_processes_keep_writing(cfg_for, synth, monkeypatch):
    """After SWAP_TRIES swaps lost to other processes: one line, the others' folder in
    place, nothing of this run's left aside."""
    cfg = cfg_for("fashion-mnist")
    made = synth.make_idx(Path(cfg.raw_dir) / "fashion-mnist", n_train=40, n_test=20)
    download(cfg, checksums=made["md5"])
    seen = competing_preprocess_runs(monkeypatch, cfg, times=10 * SWAP_TRIES)
    with pytest.raises(DataError, match=rf"other processes wrote it at the same time, {SWAP_TRIES} times in a row; run again") as err:
        preprocess(cfg)
    assert "\n" not in str(err.value) and seen["runs"] == SWAP_TRIES
    out = Path(cfg.processed_dir) / "fashion-mnist"
    np.testing.assert_array_equal(load_processed(out).train[1].numpy(), made["arrays"]["train"][1])
    assert [p.name for p in out.parent.iterdir()] == [out.name]


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10(cfg_for, synth, archive):
    cfg = cfg_for("cifar10", standardize=archive)
    made = synth.make_cifar(Path(cfg.raw_dir) / "cifar10", archive=archive)
    raw = download(cfg, checksums=made["md5"])  # archive: its md5 and its members' md5s
    assert (raw / "cifar-10-batches-py" / "data_batch_5").is_file()
    data = load_processed(preprocess(cfg))
    x, y = made["arrays"]["train"]
    assert data.train[0].shape == (50, 3, 32, 32) and data.test[0].shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(data.train[1].numpy(), y)
    if archive:
        assert abs(float(data.train[0].mean())) < 1e-4
        assert len(data.meta["storage"]["mean"]) == 3
    else:
        np.testing.assert_allclose(data.train[0].numpy(), x / 255.0, atol=1e-7)
    # what an exported model's export.json tells a user to feed it, from the raw pixels
    desc = input_description(data.meta)
    assert desc["dataset"] == "cifar10" and desc["kind"] == "static" and desc["classes"][:2] == ["airplane", "automobile"]
    assert desc["scale"] == 1 / 255 and ("mean[c]" in desc["formula"]) == archive
    np.testing.assert_allclose(by_the_description(desc, x), data.train[0].numpy(), atol=1e-5)


# ------------------------------------------------------------------------- N-MNIST


def test_nmnist_frames(cfg_for, synth):
    cfg = cfg_for("nmnist", time_bins=4, denoise_us=0)
    made = synth.make_nmnist(Path(cfg.raw_dir) / "nmnist" / "NMNIST")
    raw = download(cfg, checksums=made["md5"])
    assert len(list((raw / "NMNIST" / "Train").rglob("*.bin"))) == 20
    data = load_processed(preprocess(cfg, workers=1))
    x, y = data.train
    assert x.shape == (20, 4, 2, 34, 34) and x.dtype == torch.float32
    assert data.meta["kind"] == "events" and data.meta["input_shape"] == [2, 34, 34]
    assert data.meta["time_bins"] == 4 and data.meta["num_classes"] == 10
    assert sorted(y.tolist()) == sorted(list(range(10)) * 2)
    assert data.test[0].shape == (10, 4, 2, 34, 34)
    counts = x.sum(dim=(1, 2, 3, 4))
    assert ((counts > 0.8 * 60) & (counts <= 60)).all()  # ToFrame keeps (nearly) every event
    # Events sit around pixel (x=4+2*label, y=6+label): frames are [T, P, H, W].
    for i, label in enumerate(y.tolist()):
        spatial = x[i].sum(dim=(0, 1))
        iy, ix = divmod(int(spatial.argmax()), 34)
        assert abs(ix - (4 + 2 * label)) <= 1 and abs(iy - (6 + label)) <= 1
    assert torch.load(Path(cfg.processed_dir) / "nmnist" / "train.pt", weights_only=True)["x"].dtype == torch.uint8
    # export.json's input: the tonic transforms that made these frames, in order (no Denoise
    # at denoise_us 0, no Downsample: N-MNIST keeps its 34 x 34 sensor)
    desc = input_description(data.meta)
    assert desc["kind"] == "events" and desc["layout"].startswith("[T, P, H, W]")
    assert desc["frames"]["transforms"] == ["ToFrame(sensor_size=(34, 34, 2), n_time_bins=4)"]
    assert desc["frames"]["tonic"] and "time_bins equal windows" in desc["frames"]["binning"]
    assert desc["scale"] == 1.0 and desc["mean"] is None and desc["formula"] == "x = value * scale"
    assert len(desc["classes"]) == 10 and "int16" not in desc["values"]  # stored as uint8


def test_nmnist_denoise_and_parallel(cfg_for, synth):
    made_cfg = cfg_for("nmnist", time_bins=2, denoise_us=0)
    made = synth.make_nmnist(Path(made_cfg.raw_dir) / "nmnist" / "NMNIST", per_class_train=7, noise=True)
    download(made_cfg, checksums=made["md5"])
    plain = load_processed(preprocess(made_cfg, workers=2))  # 70 samples: worker pool
    corner = plain.train[0][:, :, :, 0, 33].sum()  # isolated noise events at (x=33, y=0)
    assert corner > 0
    denoised = load_processed(preprocess(cfg_for("nmnist", time_bins=2, denoise_us=1000), workers=1))
    assert denoised.train[0][:, :, :, 0, 33].sum() == 0
    assert denoised.train[0].sum() < plain.train[0].sum()
    assert denoised.meta["params"]["denoise_us"] == 1000
    assert input_description(denoised.meta)["frames"]["transforms"] == [
        "Denoise(filter_time=1000)", "ToFrame(sensor_size=(34, 34, 2), n_time_bins=2)"
    ]


# --------------------------------------------------------------------- DVS-Gesture


def test_dvs_gesture_downsampled_frames(cfg_for, synth):
    cfg = cfg_for("dvs-gesture", time_bins=3, downsample=32, denoise_us=0, val_fraction=0.25)
    made = synth.make_dvs_gesture(Path(cfg.raw_dir) / "dvs-gesture" / "DVSGesture")
    raw = download(cfg, checksums=made["md5"])
    assert len(list((raw / "DVSGesture" / "ibmGestureTrain").rglob("*.npy"))) == 8
    data = load_processed(preprocess(cfg))
    assert data.meta["input_shape"] == [2, 32, 32] and data.meta["num_classes"] == 11
    assert data.meta["sizes"] == {"train": 6, "val": 2, "test": 4}
    x = data.train[0]
    assert x.shape == (6, 3, 2, 32, 32)
    # 10 marker events at (x=127, y=64) land on (31, 16) after Downsample(32/128).
    assert (x[:, :, :, 16, 31].sum(dim=(1, 2)) >= 10).all()
    assert sorted(data.test[1].tolist()) == [0, 1, 2, 10]

    transforms = input_description(data.meta)["frames"]["transforms"]
    assert len(transforms) == 2 and transforms[0].startswith("Downsample(") and "spatial_factor=0.25" in transforms[0]
    assert transforms[1] == "ToFrame(sensor_size=(32, 32, 2), n_time_bins=3)"

    full = load_processed(preprocess(cfg_for("dvs-gesture", time_bins=3, downsample=128, denoise_us=0)))
    assert full.train[0].shape == (8, 3, 2, 128, 128)
    assert (full.train[0][:, :, :, 64, 127].sum(dim=(1, 2)) >= 10).all()
    assert input_description(full.meta)["frames"]["transforms"] == ["ToFrame(sensor_size=(128, 128, 2), n_time_bins=3)"]


def test_event_counts_above_255_stored_as_int16(cfg_for, synth):
    import zipfile

    cfg = cfg_for("nmnist", time_bins=1, denoise_us=0)
    folder = Path(cfg.raw_dir) / "nmnist" / "NMNIST"
    folder.mkdir(parents=True)
    n = 400
    dense = synth.nmnist_record_bytes(np.full(n, 5), np.full(n, 7), np.ones(n, int), np.arange(n) * 10)
    for zname, top in (("train.zip", "Train"), ("test.zip", "Test")):
        with zipfile.ZipFile(folder / zname, "w") as zf:
            zf.writestr(f"{top}/3/00001.bin", dense)
    download(cfg, checksums={z: synth.md5(folder / z) for z in ("train.zip", "test.zip")})
    out = preprocess(cfg, workers=1)
    assert torch.load(out / "train.pt", weights_only=True)["x"].dtype == torch.int16
    data = load_processed(out)
    assert data.meta["storage"]["dtype"] == "int16"
    assert "stored as int16: counts above 32767 clipped" in input_description(data.meta)["values"]
    count = float(data.train[0][0, 0, 1, 7, 5])
    assert 255 < count <= n and float(data.train[0].sum()) == count
