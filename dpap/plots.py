"""Figures of a training run (matplotlib, Agg backend; no display needed).

- :func:`survival_histograms`: one histogram per layer of the living survival values
  (Eq. 16-17), logged to MLflow each epoch.
- :func:`layer_pruning_figure`: share of synapses pruned and of units alive per layer
  and epoch (the data of the ``plots/layers.csv`` DVC plot, as one image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def survival_histograms(values: Mapping[str, "object"], path: str | Path, title: str = "") -> Path:
    """Histogram of each layer's survival values (``{"layer0.conv.units": tensor}``);
    the dashed line at 0 is the pruning threshold."""
    names = list(values)
    n = max(len(names), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        v = values[name]
        v = v.detach().cpu().float().numpy() if hasattr(v, "detach") else v
        if v.size:
            ax.hist(v.ravel(), bins=30, color="tab:blue")
        ax.axvline(0.0, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name}\n{v.size} alive", fontsize=7)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)


def layer_pruning_figure(rows: Sequence[Mapping], path: str | Path) -> Path:
    """``rows``: dicts with ``epoch``, ``layer``, ``synapses_pruned``, ``units_alive_share``."""
    layers = sorted({r["layer"] for r in rows})
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for layer in layers:
        rs = [r for r in rows if r["layer"] == layer]
        a.plot([r["epoch"] for r in rs], [r["synapses_pruned"] for r in rs], label=layer)
        b.plot([r["epoch"] for r in rs], [r["units_alive_share"] for r in rs], label=layer)
    a.set(xlabel="epoch", ylabel="synapses pruned (share)", ylim=(-0.02, 1.02))
    b.set(xlabel="epoch", ylabel="neurons / channels alive (share)", ylim=(-0.02, 1.02))
    a.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)
