"""The download stage: put a data set's verified raw files into ``<raw_dir>/<name>/``.

Sources, in order, for each file the data set needs:

1. the file already in place (a previous run, or copied there by hand);
2. the same file name copied flat into ``<raw_dir>/<name>/`` (moved into place);
3. a published archive that contains it (CIFAR-10's tarball), in place or fetched;
4. a local offline copy (Debian's ``dataset-fashion-mnist`` under
   ``/usr/share/datasets/fashion-mnist/``);
5. the network (the URLs of the torchvision / tonic class), with a socket timeout.

Every file is verified against its published checksum (``checksums=`` overrides those,
for synthetic test data) before it is used; archives are then extracted and
``MANIFEST.json`` records the sha256 of every file, so the next run only re-hashes and
names any truncated or altered file.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from ..config import DataConfig
from ..outputs import atomic_write_bytes
from .checksums import MANIFEST_NAME, matches, read_manifest, verify_manifest, write_manifest
from .errors import DataError
from .registry import Archive, DatasetSpec, RawFile, get_spec

NETWORK_TIMEOUT_S = 20.0
"""Socket timeout of every download attempt: a machine without internet fails in seconds."""
OFFLINE_ENV = "DPAP_OFFLINE"
"""Set to 1 to never touch the network (only local files and offline copies are used)."""

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def raw_root(cfg: DataConfig) -> Path:
    """``<raw_dir>/<name>/`` of the configured data set."""
    return Path(cfg.raw_dir) / cfg.name


def download(
    cfg: DataConfig,
    *,
    checksums: Optional[Mapping[str, str | Iterable[str]]] = None,
    offline: Optional[bool] = None,
    progress: bool = False,
    log: Log = _quiet,
) -> Path:
    """Fetch and verify the data set ``cfg.name``; return its raw folder.

    ``checksums`` maps a file (its path relative to the raw folder, or its bare name) to
    the accepted checksum(s) — md5 hex, sha256 hex or ``algo:hex`` — replacing the
    published ones; it is how tests point the stage at synthetic files. ``offline``
    (default: env ``DPAP_OFFLINE``) forbids network access. Raises :class:`DataError`.
    """
    spec = get_spec(cfg.name)
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")
    root = raw_root(cfg)
    root.mkdir(parents=True, exist_ok=True)

    manifest = read_manifest(root)
    if manifest is not None:
        missing = verify_manifest(root, manifest, progress=progress)
        listed = set(manifest["files"])
        if not missing and all(f.path in listed for f in spec.files):
            log(f"{spec.name}: {len(listed)} files in {root} verified against {MANIFEST_NAME}; nothing to do")
            return root
        log(f"{spec.name}: {len(missing)} file(s) of {MANIFEST_NAME} missing; restoring them")

    if spec.name == "digits":
        _fetch_digits(root, log)
        write_manifest(root, spec.name, "sklearn.datasets.load_digits")
        log(f"{spec.name}: wrote {root / 'digits.npz'} and {MANIFEST_NAME}")
        return root

    fetcher = _Fetcher(spec, root, checksums or {}, offline, progress, log)
    sources = fetcher.run()
    _extract_all(spec, root, progress, log)
    write_manifest(root, spec.name, ", ".join(sorted(set(sources))) or "local", progress=progress)
    log(f"{spec.name}: verified {len(spec.files)} file(s) in {root}; wrote {MANIFEST_NAME}")
    return root


# ------------------------------------------------------------------------------ digits


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (uint8 images [1797, 8, 8] in 0..16, int64 labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)
    labels = d.target.astype(np.int64)
    if images.shape != (1797, 8, 8) or images.max() > 16 or not np.array_equal(images, d.images):
        raise DataError("scikit-learn's bundled digits are not the expected 1797 8x8 images in 0..16")
    return images, labels


def _fetch_digits(root: Path, log: Log) -> None:
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
    atomic_write_bytes(path, buf.getvalue(), temp_name=".dpap-digits.npz.tmp")  # OutputError: nothing left


# ------------------------------------------------------------------------------ others


class _Fetcher:
    def __init__(self, spec: DatasetSpec, root: Path, overrides, offline: bool, progress: bool, log: Log):
        self.spec, self.root, self.offline, self.progress, self.log = spec, root, offline, progress, log
        self.overrides = {k: [v] if isinstance(v, str) else list(v) for k, v in overrides.items()}
        self.network_error: Optional[str] = None
        self.last_error: Optional[str] = None
        self.sources: list[str] = []

    def accepted(self, path: str, md5: Optional[str], also: Iterable[str] = ()) -> list[str]:
        base = path.rsplit("/", 1)[-1]
        if path in self.overrides:
            return self.overrides[path]
        if base in self.overrides:
            return self.overrides[base]
        return [c for c in (md5, *also) if c]

    def check(self, file: Path, accepted: list[str], rel: str) -> None:
        ok, got = matches(file, accepted)
        if not ok:
            raise DataError(
                f"checksum error: {file} does not match the published checksum of {self.spec.name}/{rel} "
                f"(got {got}, expected {' or '.join(accepted)}); it is truncated, altered or a different "
                f"version: delete it and run again"
            )

    def place(self, rel: str, md5: Optional[str], also: Iterable[str], urls: Iterable[str]) -> bool:
        """Make ``root/rel`` present and verified; False when no source has it."""
        dest = self.root / rel
        accepted = self.accepted(rel, md5, also)
        if dest.is_file():
            self.check(dest, accepted, rel)
            self.sources.append("local")
            return True
        base = rel.rsplit("/", 1)[-1]
        flat = self.root / base
        if flat != dest and flat.is_file():
            self.check(flat, accepted, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(flat, dest)
            self.log(f"{self.spec.name}: moved {flat} -> {dest}")
            self.sources.append("local")
            return True
        for d in self.spec.offline_dirs:
            cand = Path(d) / base
            if cand.is_file():
                ok, _ = matches(cand, accepted)
                if not ok:
                    self.log(f"{self.spec.name}: offline copy {cand} does not match the checksum; ignored")
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".dpap-{base}.part")
                shutil.copyfile(cand, tmp)
                self.check(tmp, accepted, rel)
                os.replace(tmp, dest)
                self.log(f"{self.spec.name}: copied offline copy {cand} -> {dest}")
                self.sources.append(d)
                return True
        for url in urls:
            if self.offline or self.network_error is not None:
                break
            if self._download(url, dest, accepted, rel):
                self.sources.append(url.split("/")[2])
                return True
        return False

    def _download(self, url: str, dest: Path, accepted: list[str], rel: str) -> bool:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".dpap-{dest.name}.part")
        self.log(f"{self.spec.name}: downloading {url}")
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "dpap/0 (pytorch/vision)"})
            with urllib.request.urlopen(req, timeout=NETWORK_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = None
                if self.progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            msg = f"{url.split('/')[2]}: {reason}"
            self.log(f"{self.spec.name}: download failed ({msg})")
            # Name-resolution / connection failures mean no network: stop trying other URLs.
            if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
                self.network_error = msg
            elif self.network_error is None and isinstance(exc, (TimeoutError, ConnectionError)):
                self.network_error = msg
            self.last_error = msg
            return False
        self.check(tmp, accepted, rel)
        os.replace(tmp, dest)
        return True

    def run(self) -> list[str]:
        spec = self.spec
        missing = [f for f in spec.files if not self.place(f.path, f.md5, f.also_accept, ())]
        # Archives that contain missing files (CIFAR-10's tarball).
        for arch in spec.archives:
            wanted = [f for f in missing if f.path in arch.provides]
            if not wanted:
                continue
            if self.place(arch.path, arch.md5, (), arch.urls):
                _extract(self.root / arch.path, self.root / arch.extract_to, self.log)
                for f in wanted:
                    if not self.place(f.path, f.md5, f.also_accept, ()):
                        raise DataError(f"{spec.name}: archive {self.root / arch.path} lacks {f.path}")
                missing = [f for f in missing if f not in wanted]
        # Direct URLs of the remaining files.
        missing = [f for f in missing if not self.place(f.path, f.md5, f.also_accept, f.urls)]
        if missing:
            raise DataError(self._no_source_message(missing))
        return self.sources

    def _no_source_message(self, missing: list[RawFile]) -> str:
        spec, root = self.spec, self.root
        if self.offline:
            why = f"network disabled ({OFFLINE_ENV}=1)"
        elif self.network_error or self.last_error:
            why = f"download failed: {self.network_error or self.last_error}"
        else:
            why = "no download URL"
        groups: dict[str, list[str]] = {}
        for f in missing:
            folder = (root / f.path).parent
            groups.setdefault(str(folder) + os.sep, []).append(f.basename)
        wanted = "; ".join(f"{', '.join(names)} into {folder}" for folder, names in groups.items())
        alt = ""
        for arch in spec.archives:
            alt = f" (or {Path(arch.path).name} into {root / Path(arch.path).parent}{os.sep})"
        offline = ""
        if spec.offline_dirs:
            offline = f"; offline source {', '.join(spec.offline_dirs)} not found (Debian package dataset-{spec.name})"
        return f"data set {spec.name!r} is not available: {why}{offline}; copy {wanted}{alt}, then run again"


# --------------------------------------------------------------------------- extraction


def _extract_all(spec: DatasetSpec, root: Path, progress: bool, log: Log) -> None:
    for f in spec.files:
        if f.extract_to is not None:
            _extract(root / f.path, root / f.extract_to, log, progress)


def _extract(archive: Path, to: Path, log: Log, progress: bool = False) -> None:
    """Extract a .gz (single file), .zip or .tar(.gz) archive into ``to``."""
    name = archive.name
    to.mkdir(parents=True, exist_ok=True)
    log(f"extracting {archive} -> {to}")
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
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
        elif name.endswith(".gz"):
            out = to / name[: -len(".gz")]
            tmp = out.with_name(f".dpap-{out.name}.part")
            with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, out)
        else:
            raise DataError(f"{archive}: unknown archive type")
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"checksum error: {archive} cannot be extracted ({exc}); delete it and run again") from None

