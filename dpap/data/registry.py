"""The data sets the pipeline knows: where their files live and how they are checked.

``DATASETS`` maps a name (``data.name`` in params.yaml) to a :class:`DatasetSpec`. The
specs take URLs and published md5 checksums from the torchvision / tonic classes that
read the data, so the checksums are the real published ones; a spec is built on first
access (importing torchvision or tonic costs seconds).

A file is verified by its *content* (:mod:`dpap.data.checksums`: the decompressed bytes
of a ``.gz``/``.bz2``/``.xz``, the members of a ``.zip``) and accepted in every form its
reader can use (:attr:`RawFile.forms`): ``X.gz`` also as ``X`` (uncompressed, what
torchvision reads), ``X.bz2`` or ``X.xz``, compressed with any settings. Its accepted
checksums are, besides any you name (``data.checksums``): the published md5 (of the
bytes as published), the content checksums *recorded* here, and a content sha256
*learnt* on first verified use and kept in ``MANIFEST.json``:

=============  ==========================================================================
data set       content checksums
=============  ==========================================================================
digits         none (generated from scikit-learn's copy and compared with it)
mnist          recorded: sha256 of the IDX files (:data:`MNIST_CONTENT_SHA256`; the
               published md5s are of the ``.gz`` bytes only)
fashion-mnist  recorded: sha256 of the IDX files (:data:`FASHION_MNIST_CONTENT_SHA256`)
cifar10        recorded: the published md5s of the members are of uncompressed files;
               the tarball (any compression) is only a container, each member read from
               it is checked against its own md5
nmnist         learnt, from a ``train.zip`` / ``test.zip`` that matches its published md5
dvs-gesture    learnt, from a ``.tar.gz`` that matches its published md5 (content: the
               ``.tar``)
=============  ==========================================================================

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

from dpap.data.checksums import forms_of
from dpap.data.errors import DataError


@dataclass(frozen=True)
class RawFile:
    """One file the data set needs, relative to ``<raw_dir>/<name>/``."""

    path: str
    """The published file (``MNIST/raw/train-images-idx3-ubyte.gz``)."""
    md5: Optional[str]
    """Published checksum of the bytes as published (md5, or ``sha256:<hex>``); None for
    files generated locally."""
    urls: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    """Recorded checksums of the content (see the module docstring); empty: learnt on
    first verified use."""
    extract_to: Optional[str] = None
    """For an archive: the folder (relative) it is extracted into once verified."""

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def forms(self) -> tuple[str, ...]:
        """Paths it is accepted under, the published one first (:func:`forms_of`)."""
        return forms_of(self.path)


@dataclass(frozen=True)
class Archive:
    """A published archive that contains some of the required files: a container only,
    accepted in any form; the files taken from it are each checked on their own."""

    path: str
    md5: str
    """Published md5 of the archive, checked when it is downloaded."""
    urls: tuple[str, ...]
    provides: tuple[str, ...]

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def forms(self) -> tuple[str, ...]:
        return forms_of(self.path)


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


# sha256 of MNIST's decompressed IDX files (47040016, 60008, 7840016 and 10008 bytes): the
# content of the published .gz files (whose md5s torchvision lists), so MNIST re-gzipped by a
# mirror or by hand, or uncompressed, passes without a checksum of yours.
MNIST_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# sha256 of the decompressed IDX files (47040016, 60008, 7840016 and 10008 bytes), computed
# from Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1), which ships the upstream
# files recompressed (no file name in the gzip header: its .gz md5s differ from the
# published ones, the content is the same).
FASHION_MNIST_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _idx(name: str, cls_name: str, offline_dirs: tuple[str, ...] = (), content: dict | None = None) -> DatasetSpec:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    folder = f"{cls.__name__}/raw"
    files = tuple(
        RawFile(
            f"{folder}/{fname}",
            md5,
            urls=tuple(m + fname for m in cls.mirrors),
            content=tuple(f"sha256:{v}" for k, v in (content or {}).items() if k == fname),
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
    return _idx("mnist", "MNIST", content=MNIST_CONTENT_SHA256)


def _fashion() -> DatasetSpec:
    return _idx("fashion-mnist", "FashionMNIST", (DEBIAN_FASHION_MNIST_DIR,), FASHION_MNIST_CONTENT_SHA256)


def _cifar10() -> DatasetSpec:
    from torchvision.datasets import CIFAR10 as C

    base = C.base_folder
    members = [(f, m) for f, m in C.train_list + C.test_list] + [(C.meta["filename"], C.meta["md5"])]
    # The members are published uncompressed: their md5s are content checksums.
    files = tuple(RawFile(f"{base}/{f}", md5, content=(md5,)) for f, md5 in members)
    archive = Archive(C.filename, C.tgz_md5, (C.url,), tuple(f.path for f in files))
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
