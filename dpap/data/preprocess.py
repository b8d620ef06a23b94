"""The preprocess stage: verified raw files -> a few compact tensor files.

Static images are read through their torchvision class (``digits`` from its ``.npz``)
and stored as uint8 with a scale (1/255, digits 1/16); event streams are read through
their tonic class and binned into frames with tonic transforms (``Denoise`` when
``data.denoise_us > 0``, ``Downsample`` for DVS-Gesture, ``ToFrame(n_time_bins=...)``),
stored as uint8 (or int16 when a count exceeds 255) counts. ``load_processed`` turns
both into float32.

The output folder is replaced atomically, and only once everything succeeded: a failed
run (corrupt raw file, interrupt) leaves the previous output intact.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dpap.config import DataConfig
from dpap.data.checksums import MANIFEST_NAME, manifest_hash, read_manifest, verify_manifest
from dpap.data.digits import load_digits_arrays
from dpap.data.download import raw_root
from dpap.data.errors import DataError
from dpap.data.progress import bars_shown
from dpap.data.processed import FORMAT_VERSION, content_hash, write_processed
from dpap.data.registry import DatasetSpec, get_spec

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def processed_root(cfg: DataConfig) -> Path:
    """``<processed_dir>/<name>/`` of the configured data set."""
    return Path(cfg.processed_dir) / cfg.name


def preprocess(cfg: DataConfig, *, progress: bool = False, log: Log = _quiet, workers: Optional[int] = None) -> Path:
    """Turn the verified raw files of ``cfg.name`` into ``train.pt``/``val.pt``/``test.pt``
    + ``meta.json`` under ``<processed_dir>/<name>/``; return that folder.

    ``workers`` parallelises event binning (default: CPU count, capped at 8)."""
    spec = get_spec(cfg.name)
    root = raw_root(cfg)
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(
            f"{root}: no verified raw data for {spec.name!r} ({MANIFEST_NAME} missing); "
            f"run `dvc repro download` (or `python pipeline/download.py`) first"
        )
    missing = verify_manifest(root, manifest, progress=progress)
    if missing:
        raise DataError(f"{root / missing[0]}: missing ({len(missing)} file(s) of {MANIFEST_NAME}); run the download stage again")
    log(f"{spec.name}: {len(manifest['files'])} raw file(s) verified")

    if spec.kind == "static":
        (xtr, ytr), (xte, yte), storage = _load_static(spec, cfg, root)
        input_shape = list(xtr.shape[1:])
        time_bins = None
    else:
        (xtr, ytr), (xte, yte), storage = _load_events(spec, cfg, root, progress, log, workers)
        input_shape = list(xtr.shape[2:])
        time_bins = cfg.time_bins

    splits = {"train": (xtr, ytr), "test": (xte, yte)}
    if cfg.val_fraction > 0:
        tr, va = split_validation(ytr, cfg.val_fraction, cfg.seed)
        splits["train"] = (xtr[tr], ytr[tr])
        splits["val"] = (xtr[va], ytr[va])

    if spec.kind == "static" and cfg.standardize:
        x = splits["train"][0]
        axes = (0, 2, 3)
        mean = (x.mean(axis=axes, dtype=np.float64) * storage["scale"]).tolist()
        std = (x.std(axis=axes, dtype=np.float64) * storage["scale"]).tolist()
        storage["mean"] = mean
        storage["std"] = [s if s > 0 else 1.0 for s in std]

    order = [s for s in ("train", "val", "test") if s in splits]
    meta = {
        "format": FORMAT_VERSION,
        "name": spec.name,
        "kind": spec.kind,
        "input_shape": input_shape,
        "time_bins": time_bins,
        "num_classes": spec.num_classes,
        "classes": list(spec.classes),
        "sizes": {s: int(len(splits[s][1])) for s in order},
        "class_counts": {s: np.bincount(splits[s][1], minlength=spec.num_classes).tolist() for s in order},
        "storage": storage,
        "hash": content_hash(splits),
        "raw_manifest_hash": manifest_hash(manifest),
        "params": {
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "time_bins": cfg.time_bins,
            "downsample": cfg.downsample,
            "denoise_us": cfg.denoise_us,
            "standardize": cfg.standardize,
            "limit": cfg.limit,
        },
    }
    out = write_processed(processed_root(cfg), splits, meta)
    sizes = ", ".join(f"{s} {meta['sizes'][s]}" for s in order)
    log(f"{spec.name}: wrote {out} ({sizes}; x per sample {input_shape}{f' x {time_bins} bins' if time_bins else ''}, {storage['dtype']})")
    return out


# ------------------------------------------------------------------------------ splits


def limit_indices(n: int, limit: int) -> np.ndarray:
    """Indices kept by ``data.limit``: all when 0 or >= n, else ``limit`` evenly spaced ones.

    Evenly spaced rather than the first ``limit``: event data sets list their files class
    by class, so the first ones would all share one label."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays, sorted; stratified by label when every class allows it."""
    n = len(y)
    n_val = int(round(fraction * n))
    n_val = min(max(n_val, 1), n - 1)
    if n < 2:
        raise DataError(f"cannot split a validation set out of {n} training sample(s); lower data.val_fraction or raise data.limit")
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    idx = np.arange(n)
    if counts[counts > 0].min() >= 2 and present <= n_val <= n - present:
        from sklearn.model_selection import train_test_split

        tr, va = train_test_split(idx, test_size=n_val, stratify=y, random_state=seed)
    else:
        perm = np.random.default_rng(seed).permutation(n)
        va, tr = perm[:n_val], perm[n_val:]
    return np.sort(tr), np.sort(va)


# ------------------------------------------------------------------------------ static


def _load_static(spec: DatasetSpec, cfg: DataConfig, root: Path):
    if spec.name == "digits":
        from sklearn.model_selection import train_test_split

        with np.load(root / "digits.npz") as z:
            images, labels = z["images"], z["labels"].astype(np.int64)
        tr, te = train_test_split(
            np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
        )
        tr, te = np.sort(tr), np.sort(te)
        x = images[:, None]
        train, test, scale = (x[tr], labels[tr]), (x[te], labels[te]), 1.0 / 16.0
    else:
        train, test = (_torchvision_split(spec, root, t) for t in (True, False))
        scale = 1.0 / 255.0
    train, test = (_limit(s, cfg.limit) for s in (train, test))
    for x, y in (train, test):
        if x.dtype != np.uint8 or x.ndim != 4 or (len(y) and (y.min() < 0 or y.max() >= spec.num_classes)):
            raise DataError(f"{spec.name}: unexpected raw data (x {x.dtype} {x.shape}, labels outside 0..{spec.num_classes - 1})")
    return train, test, {"dtype": "uint8", "scale": scale, "mean": None, "std": None}


def _limit(split, limit):
    x, y = split
    keep = limit_indices(len(y), limit)
    return x[keep], y[keep]


def _torchvision_split(spec: DatasetSpec, root: Path, train: bool):
    import torchvision.datasets as tvd

    name = spec.extra["torchvision_class"]
    try:
        if name == "CIFAR10":
            ds = _verified_cifar10()(str(root), train=train, download=False)
            x = np.asarray(ds.data).transpose(0, 3, 1, 2)
        else:
            ds = getattr(tvd, name)(str(root), train=train, download=False)
            x = ds.data.numpy()[:, None]
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{spec.name}: torchvision could not read {root}: {str(exc).splitlines()[0]}; run the download stage again") from None
    y = np.asarray(ds.targets, dtype=np.int64)
    return np.ascontiguousarray(x, dtype=np.uint8), y


_CIFAR = None


def _verified_cifar10():
    """torchvision's CIFAR10 minus its own md5 re-check: the files were verified against the
    published md5s by the download stage and against MANIFEST.json just now."""
    global _CIFAR
    if _CIFAR is None:
        from torchvision.datasets import CIFAR10

        _CIFAR = type(
            "CIFAR10",
            (CIFAR10,),
            {
                "train_list": [[f, None] for f, _ in CIFAR10.train_list],
                "test_list": [[f, None] for f, _ in CIFAR10.test_list],
                "meta": {**CIFAR10.meta, "md5": None},
            },
        )
    return _CIFAR


# ------------------------------------------------------------------------------ events


def _fields(step) -> str:
    """A tonic transform's settings as ``name=value`` (its dataclass fields)."""
    return ", ".join(f"{f.name}={getattr(step, f.name)!r}" for f in dataclasses.fields(step)) if dataclasses.is_dataclass(step) else ""


class FrameTransform:
    """tonic ``Denoise`` -> ``Downsample`` -> ``ToFrame``; an empty stream gives empty frames."""

    def __init__(self, sensor_size, time_bins: int, denoise_us: int, spatial_factor: float = 1.0):
        from tonic import transforms as T

        w, h, p = sensor_size
        self.steps = []
        if denoise_us > 0:
            self.steps.append(T.Denoise(filter_time=denoise_us))
        if spatial_factor != 1.0:
            self.steps.append(T.Downsample(spatial_factor=spatial_factor))
            w, h = int(round(w * spatial_factor)), int(round(h * spatial_factor))
        self.sensor_size = (w, h, p)
        self.to_frame = T.ToFrame(sensor_size=self.sensor_size, n_time_bins=time_bins)
        self.shape = (time_bins, p, h, w)
        self.description = [f"{type(s).__name__}({_fields(s)})" for s in self.steps] + [
            f"ToFrame(sensor_size={self.sensor_size}, n_time_bins={time_bins})"
        ]

    def __call__(self, events: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if len(events) == 0:
                break
            events = step(events)
        if len(events) == 0:
            return np.zeros(self.shape, dtype=np.int16)
        frames = self.to_frame(events)
        if frames.shape != self.shape:
            raise DataError(f"tonic ToFrame gave frames of shape {frames.shape}, expected {self.shape}")
        return frames


def _tonic_dataset(spec: DatasetSpec, root: Path, train: bool, transform):
    """The tonic class of ``spec``, with its archive/extraction check deferred to
    MANIFEST.json (tonic wants >= 10000 extracted files, which synthetic data lacks, and
    would otherwise try to download)."""
    import tonic.datasets as td

    base = getattr(td, spec.extra["tonic_class"])

    def _no_download(self):
        raise DataError(f"{spec.name}: raw files missing below {root}; run the download stage")

    cls = type(base.__name__, (base,), {"_check_exists": lambda self: True, "download": _no_download})
    return cls(str(root), train=train, transform=transform)


_WORKER_DS = None


def _frame_of(index: int):
    frames, _ = _WORKER_DS[index]
    return frames


def _load_events(spec: DatasetSpec, cfg: DataConfig, root: Path, progress: bool, log: Log, workers: Optional[int]):
    global _WORKER_DS
    w = spec.sensor_size[0]
    factor = 1.0
    if spec.name == "dvs-gesture" and cfg.downsample != w:
        factor = cfg.downsample / w
    transform = FrameTransform(spec.sensor_size, cfg.time_bins, cfg.denoise_us, factor)
    out = []
    for train in (True, False):
        ds = _tonic_dataset(spec, root, train, transform)
        split = "train" if train else "test"
        if len(ds) == 0:
            raise DataError(f"{spec.name}: tonic found no {split} samples below {root / ds.__class__.__name__}; run the download stage again")
        keep = limit_indices(len(ds), cfg.limit)
        y = np.asarray(ds.targets, dtype=np.int64)[keep]
        # uint8 counts unless some count exceeds 255 (then int16, clipped at 32767).
        x = np.zeros((len(keep), *transform.shape), dtype=np.uint8)
        n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        it: object
        pool = None
        if n_workers > 1 and len(keep) >= 64 and "fork" in mp.get_all_start_methods():
            _WORKER_DS = ds
            pool = mp.get_context("fork").Pool(n_workers)
            it = pool.imap(_frame_of, keep.tolist(), chunksize=8)
        else:
            it = (ds[int(i)][0] for i in keep)
        if bars_shown(progress):
            from tqdm import tqdm

            it = tqdm(it, total=len(keep), desc=f"{spec.name} {split} -> frames", unit="sample")
        try:
            for j, frames in enumerate(it):
                if x.dtype == np.uint8 and frames.max(initial=0) > 255:
                    x = x.astype(np.int16)
                np.clip(frames, 0, np.iinfo(x.dtype).max, out=x[j], casting="unsafe")
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            _WORKER_DS = None
        out.append((x, y))
    peak = max(int(a.max()) if a.size else 0 for a, _ in out)
    dtype = "uint8" if all(a.dtype == np.uint8 for a, _ in out) else "int16"
    out = [(a.astype(np.dtype(dtype), copy=False), b) for a, b in out]
    log(f"{spec.name}: frames {transform.shape} per sample, max count {peak}, stored as {dtype}")
    import tonic

    storage = {"dtype": dtype, "scale": 1.0, "mean": None, "std": None, "clipped_at": int(np.iinfo(np.int16).max)}
    storage["frames"] = {"transforms": transform.description, "tonic": tonic.__version__}  # what export.json tells users
    return out[0], out[1], storage
