"""scikit-learn's bundled digits as the ``digits`` data set's one raw file, ``digits.npz``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np

from dpap.data.errors import DataError
from dpap.runtime.outputs import atomic_write_bytes


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (uint8 images [1797, 8, 8] in 0..16, int64 labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)
    labels = d.target.astype(np.int64)
    if images.shape != (1797, 8, 8) or images.max() > 16 or not np.array_equal(images, d.images):
        raise DataError("scikit-learn's bundled digits are not the expected 1797 8x8 images in 0..16")
    return images, labels


def fetch_digits(root: Path, log: Callable[[str], None]) -> None:
    """Write ``root/digits.npz`` from scikit-learn's copy, or check the one there against it."""
    images, labels = load_digits_arrays()
    path = root / "digits.npz"
    if path.exists():
        # No published checksum for a locally generated file: compare with the bundled data.
        try:
            with np.load(path) as z:
                same = np.array_equal(z["images"], images) and np.array_equal(z["labels"], labels)
        except Exception:  # noqa: BLE001 - any unreadable file is "altered"
            same = False
        if not same:
            raise DataError(f"checksum error: {path} differs from scikit-learn's bundled digits; delete it and run again")
        return
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    atomic_write_bytes(path, buf.getvalue(), temp_prefix=".dpap-")  # OutputError: nothing left
