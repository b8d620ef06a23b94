"""How much of an MNIST-sized epoch goes to data loading?

Writes 60000 x 1 x 28 x 28 synthetic processed data (uint8, as the preprocess stage stores
it) to a temp folder, then times

* ``load_processed`` (read + hash check + uint8 -> float32), once per run;
* per-epoch batch slicing: a random permutation and ``x[idx]``/``y[idx]`` per batch;

against an estimate of one epoch's compute: forward + backward + Adam step of a small conv
net (16C3-AP2-32C3-AP2-128FC-10FC, a DNN — an SNN with T time steps costs ~T times more,
so this is the conservative case) at batch 128 on CPU, times the number of batches.

    python benchmarks/data_loading.py [--n 60000] [--batch 128] [--threads 0]

Last line: ``RESULT data_loading_share=<fraction>`` = (load + slicing) / (load + slicing +
compute) of a first epoch, load counted in full (later epochs pay only the slicing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpap.data.processed import FORMAT_VERSION, content_hash, load_processed, write_processed  # noqa: E402


def synthetic_processed(folder: Path, n: int, n_test: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    splits = {}
    for s, m in (("train", n), ("test", n_test)):
        x = rng.integers(0, 256, size=(m, 1, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=m).astype(np.int64)
        splits[s] = (x, y)
    meta = {
        "format": FORMAT_VERSION, "name": "synthetic-mnist", "kind": "static", "input_shape": [1, 28, 28],
        "time_bins": None, "num_classes": 10, "classes": [str(i) for i in range(10)],
        "sizes": {s: len(v[1]) for s, v in splits.items()},
        "class_counts": {s: np.bincount(v[1], minlength=10).tolist() for s, v in splits.items()},
        "storage": {"dtype": "uint8", "scale": 1 / 255, "mean": None, "std": None},
        "hash": content_hash(splits), "raw_manifest_hash": None, "params": {},
    }
    return write_processed(folder / "synthetic-mnist", splits, meta)


def small_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--steps", type=int, default=20, help="timed compute steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_batches = -(-args.n // args.batch)

    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_processed(Path(tmp), args.n, 10000)
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        t0 = time.perf_counter()
        data = load_processed(folder)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_processed(folder, verify=False)
        t_load_nv = time.perf_counter() - t0
    x, y = data.train

    # Per-epoch slicing, as a training loop over in-memory tensors does it.
    t_slice = []
    for _ in range(3):
        t0 = time.perf_counter()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), args.batch):
            idx = perm[i : i + args.batch]
            xb, yb = x[idx], y[idx]
        t_slice.append(time.perf_counter() - t0)
    t_slice = min(t_slice)

    # Compute of one epoch, estimated from timed steps.
    net = small_convnet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xb, yb = x[: args.batch], y[: args.batch]

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    t_step = float(np.median(times))
    t_compute = t_step * n_batches

    first = (t_load + t_slice) / (t_load + t_slice + t_compute)
    later = t_slice / (t_slice + t_compute)
    rows = [
        ("processed files on disk", f"{size_mb:.1f} MiB"),
        ("load_processed (verify hash)", f"{t_load:.3f} s"),
        ("load_processed (no verify)", f"{t_load_nv:.3f} s"),
        (f"batch slicing / epoch ({n_batches} batches)", f"{t_slice:.3f} s"),
        (f"compute step (batch {args.batch}, median)", f"{t_step * 1e3:.2f} ms"),
        ("compute / epoch (estimate)", f"{t_compute:.2f} s"),
        ("data share, first epoch (incl. load)", f"{first:.2%}"),
        ("data share, later epochs", f"{later:.2%}"),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"data loading benchmark: {args.n} x 1 x 28 x 28, torch threads {torch.get_num_threads()}")
    for a, b in rows:
        print(f"  {a:<{width}}  {b:>12}")
    print(f"RESULT data_loading_share={first:.4f}")
    return first


if __name__ == "__main__":
    main()
