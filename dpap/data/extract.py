"""Verified raw files into the form their reader uses: a compressed single file
(``X.gz``/``X.bz2``/``X.xz``) decompressed, an archive (``.zip``, ``.tar[.gz|.bz2|.xz]``)
extracted."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Optional

from dpap.data.checksums import SINGLE_FILE_COMPRESSIONS
from dpap.data.errors import DataError
from dpap.data.registry import DatasetSpec
from dpap.runtime.outputs import temp_beside

Log = Callable[[str], None]


def single_file(path: str) -> bool:
    """A compressed single file (``X.gz``), not a compressed archive (``X.tar.gz``)."""
    return path.endswith(SINGLE_FILE_COMPRESSIONS) and not path.rsplit(".", 1)[0].endswith(".tar")


def extract_all(spec: DatasetSpec, root: Path, present: Mapping[str, list[str]], progress: bool, log: Log) -> None:
    """Put every verified file into the form its reader uses: a compressed single file is
    decompressed (unless its uncompressed form is there, verified), an archive extracted."""
    for f in spec.files:
        forms = present.get(f.path, [])
        if f.extract_to is None or not forms:
            continue
        if single_file(f.path):
            plain = f.path.rsplit(".", 1)[0]
            if plain not in forms:
                dest = root / plain
                extract(root / forms[0], dest.parent, log, progress, out_name=dest.name)
        else:
            extract(root / forms[0], root / f.extract_to, log, progress)


def extract(archive: Path, to: Path, log: Log, progress: bool = False, out_name: Optional[str] = None) -> None:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into ``to``, or decompress a single
    .gz/.bz2/.xz file into ``to/out_name`` (default: its name without the suffix)."""
    name = archive.name
    to.mkdir(parents=True, exist_ok=True)
    log(f"extracting {archive} -> {to}")
    try:
        if ".tar" in name or name.endswith(".tgz"):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(to, filter="data")
                except TypeError:  # Python < 3.11.4: no extraction filters
                    tf.extractall(to)
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    target = (to / member.filename).resolve()
                    if not str(target).startswith(str(to.resolve())):
                        raise DataError(f"{archive}: unsafe path {member.filename!r} in archive")
                zf.extractall(to)
        elif name.endswith(SINGLE_FILE_COMPRESSIONS):
            suffix = "." + name.rsplit(".", 1)[1]
            opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
            out = to / (out_name or name[: -len(suffix)])
            tmp = temp_beside(out, ".dpap-", ".part")
            try:
                with opener(archive, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(f"{archive}: unknown archive type")
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"checksum error: {archive} cannot be extracted ({exc}); delete it and run again") from None
