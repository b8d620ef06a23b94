"""Figures of a training run (matplotlib, Agg backend; no display needed).

- :func:`mask_image`: one layer's mask as a picture (FC: the synapse matrix, neurons by
  inputs; conv: the kernel grid, output by input channels), dead rows and columns visible;
- :func:`survival_histogram`: one layer's survival values (log counts, the F = 0 death
  line, the alive count of the mask in the title);
- :func:`run_summary_figure`: compression and accuracy over epochs, and the share pruned
  per layer kind;
- :func:`layer_pruning_figure`: per layer, synapses pruned and units alive over epochs
  (small multiples: one panel per layer).

Images are returned as ``uint8`` arrays ``[H, W, 3]`` (what ``MlflowClient.log_image``
takes) or written to files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpap.evaluation.dynamics import kind_shares  # noqa: E402
from dpap.runtime.outputs import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically (:func:`dpap.runtime.outputs.atomic_write_bytes`)."""
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=90)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def _shrink(mask: np.ndarray, max_rows: int = 400, max_cols: int = 1000) -> tuple[np.ndarray, int, int]:
    """Share alive per block of a boolean matrix, so a 300 x 1960 mask fits a picture."""
    r = max(1, -(-mask.shape[0] // max_rows))
    c = max(1, -(-mask.shape[1] // max_cols))
    h, w = -(-mask.shape[0] // r) * r, -(-mask.shape[1] // c) * c
    padded = np.zeros((h, w), dtype=np.float32)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded.reshape(h // r, r, w // c, c).mean((1, 3)), r, c


def mask_image(name: str, layer_type: str, units: np.ndarray, synapses: np.ndarray, epoch: Optional[int] = None) -> np.ndarray:
    """A picture of one layer's mask: ``synapses`` (bool ``[units, pre_units]``, alive as
    everywhere else: own mask, neuron and input alive) in black, pruned in white; for a
    conv layer each cell is one kernel (output channel x input channel). The title gives
    the alive counts, the same numbers as the masks and the compression report."""
    syn = np.asarray(synapses, dtype=bool)
    img, r, c = _shrink(syn)
    fig, ax = plt.subplots(figsize=(8.0, 3.4) if layer_type == "fc" else (5.0, 4.0))
    ax.imshow(1.0 - img, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    what = ("neurons", "inputs", "synapses") if layer_type == "fc" else ("channels", "input channels", "kernels")
    scale = f" (each pixel: {r}x{c})" if r * c > 1 else ""
    ax.set(xlabel=f"{what[1]}{scale}", ylabel=what[0])
    when = f", epoch {epoch}" if epoch is not None else ""
    ax.set_title(f"{name}: {int(np.sum(units))}/{len(units)} {what[0]}, {int(syn.sum()):,}/{syn.size:,} {what[2]} alive{when}", fontsize=9)
    fig.tight_layout()
    return _to_array(fig)


def survival_histogram(
    name: str, values: np.ndarray, epoch: Optional[int] = None, bins: int = 40, value_name: str = "survival"
) -> np.ndarray:
    """Histogram of the survival values of one layer's living units or synapses: log
    counts (the tail that is about to die stays visible), the death line F = 0. With
    ``value_name="range_width"``: SD-SNN's range widths r⁺ + |r⁻| (no death line)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    survival = value_name == "survival"
    if v.size:
        lo, hi = (min(float(v.min()), -0.5), max(float(v.max()), 0.5)) if survival else (float(v.min()), float(v.max()) + 1e-12)
        ax.hist(v, bins=np.linspace(lo, hi, bins + 1), color="tab:blue", log=True)
    if survival:
        ax.axvline(0.0, color="tab:red", linestyle="--", linewidth=1.0, label="F = 0: pruned below")
        ax.legend(fontsize=7, loc="upper left")
    ax.set(xlabel="survival value F" if survival else "range width r+ + |r-|", ylabel="count (log)")
    when = f", epoch {epoch}" if epoch is not None else ""
    ax.set_title(f"{name}: {v.size:,} alive{when}", fontsize=9)
    fig.tight_layout()
    return _to_array(fig)


def survival_histograms(values: Mapping[str, "object"], path: str | Path, title: str = "") -> Path:
    """All layers' survival histograms in one file (``{"layer0.conv.units": tensor}``)."""
    names = list(values)
    n = max(len(names), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        v = values[name]
        v = v.detach().cpu().double().numpy() if hasattr(v, "detach") else np.asarray(v)
        if v.size:
            ax.hist(v.ravel(), bins=30, color="tab:blue", log=True)
        ax.axvline(0.0, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name}\n{v.size:,} alive", fontsize=7)
        ax.set_xlabel("survival value F", fontsize=6)
        ax.set_ylabel("count (log)", fontsize=6)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)


def run_summary_figure(history: Sequence[Mapping], path: Optional[str | Path] = None) -> np.ndarray | Path:
    """Compression and accuracy over epochs (left), share pruned per layer kind (right)."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    a.plot(epochs, [h["compression"] for h in history], color="tab:red", label="compression")
    a.plot(epochs, [h["test_accuracy"] for h in history], color="tab:blue", label="test accuracy")
    a.plot(epochs, [h["train_accuracy"] for h in history], color="tab:blue", linestyle=":", label="train accuracy")
    a.set(xlabel="epoch", ylim=(0, 1.02), title="compression and accuracy")
    a.legend(fontsize=7, loc="lower right")
    shares = [kind_shares(h["layers"]) for h in history]
    for attr, label, style in (("conv_channels_pruned", "conv channels", "-o"), ("fc_neurons_pruned", "FC neurons", "-s"), ("fc_synapses_pruned", "FC synapses", "-^")):
        b.plot(epochs, [getattr(s, attr) for s in shares], style, markersize=3, label=label)
    b.set(xlabel="epoch", ylabel="share pruned", ylim=(-0.02, 1.02), title="per layer kind")
    b.legend(fontsize=7, loc="upper left")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is None:
        return _to_array(fig)
    _save(fig, Path(path))
    return Path(path)


def layer_pruning_figure(rows: Sequence[Mapping], path: str | Path) -> Path:
    """``rows``: dicts with ``epoch``, ``layer``, ``synapses_pruned``, ``units_alive_share``:
    one panel per layer (small multiples), so no line hides another."""
    layers = sorted({r["layer"] for r in rows})
    n = max(len(layers), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.6), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        rs = [r for r in rows if r["layer"] == layer]
        ep = [r["epoch"] for r in rs]
        ax.plot(ep, [r["synapses_pruned"] for r in rs], "-o", markersize=2.5, color="tab:red", label="synapses pruned")
        ax.plot(ep, [r["units_alive_share"] for r in rs], "-s", markersize=2.5, color="tab:blue", label="units alive")
        ax.set(title=str(layer), xlabel="epoch", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share")
    axes[0][0].legend(fontsize=7, loc="center left")
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)
