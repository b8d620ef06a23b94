"""The data sets the pipeline knows: where their files live and how they are checked.

``DATASETS`` maps a name (``data.name`` in params.yaml) to a :class:`DatasetSpec`. The
specs take URLs and published md5 checksums from the torchvision / tonic classes that
read the data, so the checksums are the real published ones; a spec is built on first
access (importing torchvision or tonic costs seconds).

Layout of ``<raw_dir>/<name>/`` (the ``root`` the torchvision/tonic class is given):

=============  ==========================================================================
digits         ``digits.npz`` (scikit-learn's bundled copy; no download)
mnist          ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (+ extracted)
fashion-mnist  ``FashionMNIST/raw/...`` as MNIST
cifar10        ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
nmnist         ``NMNIST/{train,test}.zip`` (+ extracted ``Train/``, ``Test/``)
dvs-gesture    ``DVSGesture/ibmGesture{Train,Test}.tar.gz`` (+ extracted folders)
=============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from .errors import DataError


@dataclass(frozen=True)
class RawFile:
    """One file the data set needs, relative to ``<raw_dir>/<name>/``."""

    path: str
    md5: Optional[str]
    """Published checksum (md5, or ``sha256:<hex>``); None for files generated locally."""
    urls: tuple[str, ...] = ()
    also_accept: tuple[str, ...] = ()
    """Other published checksums of the same content (e.g. a Debian repack)."""
    extract_to: Optional[str] = None
    """For an archive: the folder (relative) it is extracted into once verified."""

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Archive:
    """A published archive that contains some of the required files."""

    path: str
    md5: str
    urls: tuple[str, ...]
    extract_to: str
    provides: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str
    """``static`` (images) or ``events`` (DVS event streams)."""
    num_classes: int
    shape: tuple[int, int, int]
    """Per-sample [C, H, W] as stored in the raw data (events: polarities, sensor H, W)."""
    files: tuple[RawFile, ...]
    """The files that must be present and verified."""
    archives: tuple[Archive, ...] = ()
    offline_dirs: tuple[str, ...] = ()
    """Folders of local copies (looked up by file name) used when a file is missing."""
    classes: tuple[str, ...] = ()
    sensor_size: Optional[tuple[int, int, int]] = None
    """tonic sensor size (W, H, P) of event data."""
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def folder_hint(self) -> str:
        """Where, relative to ``<raw_dir>/<name>/``, the expected files go."""
        dirs = sorted({f.path.rsplit("/", 1)[0] if "/" in f.path else "." for f in self.files})
        return dirs[0] if len(dirs) == 1 else "."


# ------------------------------------------------------------------------- builders


def _digits() -> DatasetSpec:
    return DatasetSpec(
        name="digits",
        kind="static",
        num_classes=10,
        shape=(1, 8, 8),
        files=(RawFile("digits.npz", None),),
        classes=tuple(str(i) for i in range(10)),
        description="scikit-learn's bundled 8x8 digits (1797 samples), offline",
    )


# Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) ships the upstream IDX files
# recompressed (no file name in the gzip header), so their md5s differ from torchvision's;
# these are the md5s of the Debian package's files (/var/lib/dpkg/info/*.md5sums).
_DEBIAN_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
    "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
    "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
    "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
}
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _idx(name: str, cls_name: str, offline_dirs: tuple[str, ...] = (), alt: dict | None = None) -> DatasetSpec:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    folder = f"{cls.__name__}/raw"
    files = tuple(
        RawFile(
            f"{folder}/{fname}",
            md5,
            urls=tuple(m + fname for m in cls.mirrors),
            also_accept=tuple(v for k, v in (alt or {}).items() if k == fname),
            extract_to=folder,
        )
        for fname, md5 in cls.resources
    )
    return DatasetSpec(
        name=name,
        kind="static",
        num_classes=len(cls.classes),
        shape=(1, 28, 28),
        files=files,
        offline_dirs=offline_dirs,
        classes=tuple(cls.classes),
        description=f"torchvision.datasets.{cls_name}",
        extra={"torchvision_class": cls_name},
    )


def _mnist() -> DatasetSpec:
    return _idx("mnist", "MNIST")


def _fashion() -> DatasetSpec:
    return _idx("fashion-mnist", "FashionMNIST", (DEBIAN_FASHION_MNIST_DIR,), _DEBIAN_FASHION_MD5)


def _cifar10() -> DatasetSpec:
    from torchvision.datasets import CIFAR10 as C

    base = C.base_folder
    members = [(f, m) for f, m in C.train_list + C.test_list] + [(C.meta["filename"], C.meta["md5"])]
    files = tuple(RawFile(f"{base}/{f}", md5) for f, md5 in members)
    archive = Archive(C.filename, C.tgz_md5, (C.url,), ".", tuple(f.path for f in files))
    return DatasetSpec(
        name="cifar10",
        kind="static",
        num_classes=10,
        shape=(3, 32, 32),
        files=files,
        archives=(archive,),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        description="torchvision.datasets.CIFAR10",
        extra={"torchvision_class": "CIFAR10"},
    )


def _tonic(name: str, cls_name: str) -> DatasetSpec:
    import tonic.datasets as td

    cls = getattr(td, cls_name)
    folder = cls.__name__  # tonic's Dataset puts everything under <save_to>/<ClassName>/
    files = (
        RawFile(f"{folder}/{cls.train_filename}", cls.train_md5, (cls.train_url,), extract_to=folder),
        RawFile(f"{folder}/{cls.test_filename}", cls.test_md5, (cls.test_url,), extract_to=folder),
    )
    w, h, p = cls.sensor_size
    return DatasetSpec(
        name=name,
        kind="events",
        num_classes=len(cls.classes),
        shape=(p, h, w),
        files=files,
        classes=tuple(cls.classes),
        sensor_size=tuple(cls.sensor_size),
        description=f"tonic.datasets.{cls_name}",
        extra={"tonic_class": cls_name},
    )


def _nmnist() -> DatasetSpec:
    return _tonic("nmnist", "NMNIST")


def _dvs_gesture() -> DatasetSpec:
    return _tonic("dvs-gesture", "DVSGesture")


class _Registry(Mapping):
    """name -> DatasetSpec, each spec built on first access."""

    def __init__(self, builders: dict[str, Callable[[], DatasetSpec]]):
        self._builders = builders
        self._specs: dict[str, DatasetSpec] = {}

    def __getitem__(self, name: str) -> DatasetSpec:
        if name not in self._specs:
            self._specs[name] = self._builders[name]()
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __repr__(self) -> str:
        return f"DATASETS({', '.join(self._builders)})"


DATASETS: Mapping[str, DatasetSpec] = _Registry(
    {
        "digits": _digits,
        "mnist": _mnist,
        "fashion-mnist": _fashion,
        "cifar10": _cifar10,
        "nmnist": _nmnist,
        "dvs-gesture": _dvs_gesture,
    }
)


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; :class:`DataError` listing the valid names if unknown."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]
