"""Processed tensors on disk: ``train.pt``, ``val.pt``, ``test.pt`` and ``meta.json``.

Each ``<split>.pt`` is ``torch.save({"x": x, "y": y})`` with ``y`` int64 and ``x`` stored
compactly (uint8 images, uint8/int16 event counts); ``meta.json["storage"]`` says how
:func:`load_processed` turns ``x`` into float32: ``x * scale`` and, for standardised
images, ``(x * scale - mean[c]) / std[c]``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dpap.data.checksums import tensor_digest
from dpap.data.errors import DataError
from dpap.runtime.outputs import is_leftover, is_output_fault, output_error, remove_quietly

SPLITS = ("train", "val", "test")
META_NAME = "meta.json"
FORMAT_VERSION = 1
SWAP_TRIES = 5  # write_processed: swaps tried while other processes keep putting their folders in place
_RERUN = "run `dvc repro preprocess` (or `python pipeline/preprocess.py`)"


@dataclass
class ProcessedData:
    """A processed data set in memory: float32 inputs, int64 labels, and its meta.json."""

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    val: Optional[tuple[torch.Tensor, torch.Tensor]]
    meta: dict

    @property
    def input_shape(self) -> list[int]:
        return list(self.meta["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def content_hash(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """sha256 of the stored tensors (x then y of train, val, test; absent splits skipped)."""
    arrays = []
    for s in SPLITS:
        if s in splits:
            arrays += [splits[s][0], splits[s][1]]
    return tensor_digest(arrays)


def _sibling_folder(out_dir: Path) -> Path:
    """A new empty folder ``.<name>.tmp-<pid>-<random>`` beside ``out_dir``, with the mode
    the umask gives any new folder (``tempfile.mkdtemp`` would make it 0700, and the
    processed data would keep that mode once swapped into place)."""
    for _ in range(100):
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{out_dir.parent}: no free temporary name beside {out_dir.name}")


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:old|tmp)-(?P<pid>\d{1,10})(?P<own>-[0-9a-f]+)?")


def _sweep_leftovers(out_dir: Path) -> None:
    """Remove what killed runs left beside ``out_dir``: ``.<name>.old-<pid>`` (the form
    earlier versions used) and ``.<name>.old-<pid>-<hex>`` / ``.<name>.tmp-<pid>-<hex>`` of
    a process that no longer runs, once nothing in them changed for an hour
    (:func:`dpap.runtime.outputs.is_leftover`). Those of running processes stay."""
    for path in out_dir.parent.iterdir():
        m = _LEFTOVER.fullmatch(path.name)
        if m is not None and m["name"] == out_dir.name and is_leftover(path, int(m["pid"]) if m["own"] else None):
            remove_quietly(path)


def write_processed(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> Path:
    """Write ``splits`` and ``meta`` to a temporary sibling folder, then swap it into place.

    On an error what stood at ``out_dir`` stays there (or the newest complete folder another
    process wrote, when others wrote it at the same time). What stood at
    ``out_dir`` before (the previous output, or a file left there) is moved aside and
    removed once the new folder is in place. The folder gets the umask's mode (0755 with
    the usual umask 022). Processes writing the same folder at once each write their own
    temporary folder and the last to swap its in wins; a swap that finds another process's
    folder put in place since moves it aside too, up to :data:`SWAP_TRIES` times
    (:class:`DataError` after that, with nothing left aside)."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = _sibling_folder(out_dir)
    except OSError as exc:
        raise _refused(exc, out_dir) from None
    asides: list[Path] = []  # what stood at out_dir, moved aside: the previous output first
    try:
        for s in SPLITS:
            if s in splits:
                x, y = splits[s]
                buf = io.BytesIO()  # bytes first: torch's own file writer hides the OSError
                torch.save({"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y.astype(np.int64))}, buf)
                (tmp / f"{s}.pt").write_bytes(buf.getvalue())
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        for _ in range(SWAP_TRIES):
            if out_dir.exists() or out_dir.is_symlink():
                asides.append(out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
                try:
                    os.replace(out_dir, asides[-1])
                except FileNotFoundError:  # another process moved it aside first
                    asides.pop()
            try:
                os.replace(tmp, out_dir)
                break
            except OSError as exc:  # another process put its folder in place since: that one goes aside too
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        else:
            raise DataError(f"{out_dir}: other processes wrote it at the same time, {SWAP_TRIES} times in a row; "
                            "run again once they have finished")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if asides and not (out_dir.exists() or out_dir.is_symlink()):
            try:  # the new folder did not take its place: the newest complete one goes back
                os.replace(asides[-1], out_dir)
                asides.pop()
            except OSError:
                asides.pop()  # kept aside, for a later run to sweep: better than nothing in place
        for aside in asides:
            remove_quietly(aside)
        if isinstance(exc, OSError):
            raise _refused(exc, out_dir) from None
        raise
    for aside in asides:
        remove_quietly(aside)
    _sweep_leftovers(out_dir)
    return out_dir


def _refused(exc: OSError, out_dir: Path) -> BaseException:
    """A write the file system refused (full, read-only, ...) as a one-line error."""
    return output_error(exc, out_dir) if is_output_fault(exc) else exc


def _to_float(x: torch.Tensor, storage: dict) -> torch.Tensor:
    out = x.to(torch.float32)
    scale = float(storage.get("scale", 1.0))
    if scale != 1.0:
        out.mul_(scale)
    mean, std = storage.get("mean"), storage.get("std")
    if mean is not None:
        shape = [1, -1] + [1] * (out.dim() - 2)
        out.sub_(torch.tensor(mean, dtype=torch.float32).view(shape)).div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return out


STATIC_VALUES = {
    "digits": "scikit-learn's digits: grey values 0-16",
    "mnist": "8-bit grey values 0-255 (torchvision's MNIST)",
    "fashion-mnist": "8-bit grey values 0-255 (torchvision's FashionMNIST)",
    "cifar10": "8-bit colour values 0-255, channels R, G, B (torchvision's CIFAR10)",
}
"""The stored values of each static data set, for :func:`input_description`."""

FRAMES = (
    "tonic's ToFrame(n_time_bins): each recording's own time span is cut into time_bins equal "
    "windows and the events in each counted per polarity and pixel"
)


def input_description(meta: dict) -> dict:
    """How a network trained on this processed data set reads its input (``meta``: its
    ``meta.json``), for whoever runs an exported model elsewhere: the data set, its class
    names in output order, the layout, what the stored values are (for event data: the
    tonic transforms, in order, that made the frames) and the formula that turns them into
    the network's input, ``x = value · scale`` and, for standardised images,
    ``(x − mean[c]) / std[c]`` per channel (:func:`load_processed` computes exactly this)."""
    storage = meta.get("storage") or {}
    mean, std = storage.get("mean"), storage.get("std")
    name = meta.get("name")
    desc: dict = {"dataset": name, "kind": meta.get("kind"), "classes": list(meta.get("classes") or [])}
    if meta.get("kind") == "events":
        params = meta.get("params") or {}
        desc["layout"] = "[T, P, H, W] per sample: T = time_bins frames, one per time step, P polarities"
        desc["values"] = "event counts per time bin, polarity and pixel"
        if storage.get("dtype") == "int16":
            desc["values"] += f" (stored as int16: counts above {storage.get('clipped_at', 32767)} clipped)"
        frames = dict(storage.get("frames") or {})
        if not frames:  # data preprocessed before the transforms were recorded
            steps = [f"Denoise(filter_time={params.get('denoise_us')})"] if params.get("denoise_us") else []
            if name == "dvs-gesture":
                steps.append(f"Downsample to {params.get('downsample')} x {params.get('downsample')} pixels")
            frames["transforms"] = steps + [f"ToFrame(n_time_bins={meta.get('time_bins')})"]
        frames["binning"] = FRAMES
        desc["frames"] = frames
    else:
        desc["layout"] = "[C, H, W] per sample (input_shape); decoding says what each time step reads"
        desc["values"] = STATIC_VALUES.get(name, "8-bit values 0-255")
    desc["scale"] = float(storage.get("scale", 1.0))
    desc["mean"], desc["std"] = mean, std
    desc["formula"] = "x = value * scale" + (", then x[c] = (x[c] - mean[c]) / std[c] for each channel c" if mean is not None else "")
    return desc


def load_processed(path: str | Path, *, verify: bool = True, as_float: bool = True) -> ProcessedData:
    """Load ``<processed_dir>/<name>/`` as written by the preprocess stage.

    ``x`` comes back float32 ([N, C, H, W] static, [N, T, C, H, W] events) unless
    ``as_float=False`` (then as stored; convert with ``meta["storage"]``); ``y`` int64.
    ``verify`` re-hashes the tensors against ``meta["hash"]``. A missing or corrupt folder
    raises :class:`DataError` saying to run the preprocess stage."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        raise DataError(f"{path}: no processed data ({META_NAME} missing); {_RERUN}")
    try:
        meta = json.loads(meta_path.read_text())
        storage = meta["storage"]
        names = [s for s in SPLITS if s in meta["sizes"]]
        if "train" not in names or "test" not in names:
            raise KeyError("sizes lacks train/test")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: corrupt ({exc}); {_RERUN}") from None
    raw: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for s in names:
        f = path / f"{s}.pt"
        if not f.is_file():
            raise DataError(f"{f}: missing; {_RERUN}")
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
            x, y = obj["x"], obj["y"]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is corrupt
            raise DataError(f"{f}: corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}); {_RERUN}") from None
        if len(x) != meta["sizes"][s] or len(y) != len(x) or y.dtype != torch.int64:
            raise DataError(f"{f}: does not match {META_NAME} (size {len(x)} vs {meta['sizes'][s]}); {_RERUN}")
        raw[s] = (x, y)
    if verify:
        got = content_hash({s: (x.numpy(), y.numpy()) for s, (x, y) in raw.items()})
        if got != meta.get("hash"):
            raise DataError(f"{path}: tensors do not match the hash in {META_NAME} (altered or corrupt); {_RERUN}")
    conv = (lambda t: _to_float(t, storage)) if as_float else (lambda t: t)
    out = {s: (conv(x), y) for s, (x, y) in raw.items()}
    return ProcessedData(train=out["train"], test=out["test"], val=out.get("val"), meta=meta)
