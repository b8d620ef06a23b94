"""File hashing, content checksums and the raw-data manifest.

**Content.** A raw file is checked by what it holds, not by how it was compressed: the
*content* of ``X.gz`` / ``X.bz2`` / ``X.xz`` is its decompressed bytes (the compression is
chosen by the name, as torchvision's readers do), of ``X.zip`` its members (name, size
and bytes of every file in it, in name order), of any other file its bytes. So the same
data re-compressed at another gzip level, with another mtime or file name in the gzip
header, or not compressed at all has the same content checksum. :func:`digests` hashes a
file's bytes and its content in one pass; :meth:`Digests.matches` accepts a checksum of
either (published md5s are of the bytes as published).

**Manifest.** A data set's raw folder ``<raw_dir>/<name>/`` carries ``MANIFEST.json`` once
its files were verified (or, for ``digits``, generated from the bundled copy). It lists the
sha256 and size of every file in the folder, so later runs re-verify without the published
checksums and name any truncated or altered file; under ``content`` it keeps the content
sha256 of every data set file and where it came from (recorded in the registry, learnt from
a published checksum of the compressed bytes, or your own checksum), so a later run
accepts the same data in another form.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterable, Optional

import numpy as np

from dpap.runtime.outputs import atomic_write_text
from dpap.data.errors import DataError
from dpap.data.progress import bars_shown

MANIFEST_NAME = "MANIFEST.json"
_CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def algorithm_of(checksum: str) -> str:
    """``md5`` for a 32-hex-digit checksum, ``sha256`` for 64 (an ``algo:`` prefix wins)."""
    if ":" in checksum:
        return checksum.split(":", 1)[0]
    return {32: "md5", 40: "sha1", 64: "sha256"}.get(len(checksum), "md5")


def strip_algorithm(checksum: str) -> str:
    return checksum.split(":", 1)[1] if ":" in checksum else checksum


def describe(checksum: str) -> str:
    """``md5 <hex>`` / ``sha256 <hex>`` for a checksum in any accepted spelling."""
    return f"{algorithm_of(checksum)} {strip_algorithm(checksum).lower()}"


# ---------------------------------------------------------------------------- content

SINGLE_FILE_COMPRESSIONS = (".gz", ".bz2", ".xz")
"""Suffixes of a compressed single file (torchvision's ``_decompress`` reads the same)."""
_OPENERS = {  # a readable binary file object -> the decompressed stream
    ".gz": lambda fh: gzip.GzipFile(fileobj=fh, mode="rb"),
    ".bz2": lambda fh: bz2.BZ2File(fh, "rb"),
    ".xz": lambda fh: lzma.LZMAFile(fh, "rb"),
}
_ALGORITHMS = ("md5", "sha256")


def forms_of(path: str) -> tuple[str, ...]:
    """The names a published file is accepted under, the published one first:
    ``X.gz`` -> ``X.gz, X, X.bz2, X.xz`` (also for ``X.tar.gz``); any other name -> itself."""
    for suffix in SINGLE_FILE_COMPRESSIONS:
        if path.endswith(suffix):
            stem = path[: -len(suffix)]
            return (path,) + tuple(stem + s for s in ("",) + SINGLE_FILE_COMPRESSIONS if s != suffix)
    return (path,)


@dataclass(frozen=True)
class Digests:
    """What a file hashes to (algorithm -> hex): its bytes, and its content."""

    file: dict[str, str]
    content: Optional[dict[str, str]]
    """The content's digests (the same as ``file`` for a plain file); None when the file
    cannot be decompressed (truncated or altered), ``error`` says why."""
    error: str = ""

    @property
    def compressed(self) -> bool:
        return self.content is not self.file

    def matches(self, checksum: str) -> bool:
        """Whether the bytes or the content hash to ``checksum`` (md5, sha256 or ``algo:hex``)."""
        algo, want = algorithm_of(checksum), strip_algorithm(checksum).lower()
        return self.file.get(algo) == want or (self.content is not None and self.content.get(algo) == want)

    def describe(self) -> str:
        """``md5 ..., content sha256 ...`` for messages."""
        text = f"md5 {self.file['md5']}, sha256 {self.file['sha256']}"
        if not self.compressed:
            return text
        if self.content is None:
            return f"{text}; content unreadable: {self.error}"
        return f"{text}; content sha256 {self.content['sha256']}"


class _Tee(io.RawIOBase):
    """A raw reader that hashes every byte read from ``fh``."""

    def __init__(self, fh, hashers):
        self._fh, self._hashers = fh, hashers

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._fh.readinto(buf)
        if n:
            view = memoryview(buf)[:n]
            for h in self._hashers:
                h.update(view)
        return n


def digests(path: str | Path, algorithms: Iterable[str] = _ALGORITHMS, name: Optional[str] = None) -> Digests:
    """Hash ``path``'s bytes and its content (see the module docstring) in one pass;
    ``name`` (default: the file's own) decides how the content is read."""
    path = Path(path)
    algorithms = tuple(dict.fromkeys(algorithms))
    raw = {a: hashlib.new(a) for a in algorithms}
    suffix = Path(name or path.name).suffix.lower()
    if suffix not in _OPENERS and suffix != ".zip":
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                for h in raw.values():
                    h.update(chunk)
        file = {a: h.hexdigest() for a, h in raw.items()}
        return Digests(file, file)
    content = {a: hashlib.new(a) for a in algorithms}
    error = ""
    if suffix == ".zip":
        file = {a: file_digest(path, a) for a in algorithms}
        try:
            _zip_content(path, content.values())
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            error = _reason(exc)
        return Digests(file, None if error else {a: h.hexdigest() for a, h in content.items()}, error)
    with open(path, "rb") as fh:
        tee = _Tee(fh, raw.values())
        try:
            with _OPENERS[suffix](io.BufferedReader(tee, _CHUNK)) as stream:
                while chunk := stream.read(_CHUNK):
                    for h in content.values():
                        h.update(chunk)
        except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            error = _reason(exc)
        scratch = bytearray(_CHUNK)
        while tee.readinto(scratch):  # the rest of the bytes (after a decompression error)
            pass
    file = {a: h.hexdigest() for a, h in raw.items()}
    return Digests(file, None if error else {a: h.hexdigest() for a, h in content.items()}, error)


def _zip_content(path: Path, hashers) -> None:
    """Feed the members of a zip (name, size, bytes; in name order; folders skipped) to
    ``hashers``; reading checks every member's CRC."""
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            head = info.filename.encode() + b"\0" + struct.pack(">Q", info.file_size)
            for h in hashers:
                h.update(head)
            with zf.open(info) as member:
                while chunk := member.read(_CHUNK):
                    for h in hashers:
                        h.update(chunk)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_checksum_file(path: str | Path) -> dict[str, str]:
    """``{file name: checksum}`` from a file in the format ``sha256sum``/``md5sum`` print
    (``<hex>  <name>`` or ``<hex> *<name>``; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the checksum file ({_reason(exc)})") from None
    out = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"((?:md5:|sha256:)?(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{64}))\s+\*?(\S.*)", line)
        if m is None:
            raise DataError(f"{path}:{n}: expected '<sha256 or md5> <file name>' (what sha256sum prints), got {line[:60]!r}")
        out[Path(m.group(2).strip()).name] = m.group(1).lower()
    if not out:
        raise DataError(f"{path}: no checksums in it; expected lines '<sha256> <file name>' (what sha256sum prints)")
    return out


def tensor_digest(arrays: Iterable[np.ndarray]) -> str:
    """sha256 over the raw bytes of ``arrays`` (each made C-contiguous), in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


# --------------------------------------------------------------------------- manifest


def list_files(root: Path) -> list[str]:
    """Every regular file below ``root`` (posix paths relative to it), manifest excluded."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".dpap-"))
        for f in filenames:
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel != MANIFEST_NAME and not f.startswith(".dpap-"):
                out.append(rel)
    return sorted(out)


def write_manifest(root: Path, name: str, source: str, progress: bool = False,
                   content: Optional[dict] = None) -> dict:
    """Hash every file below ``root`` and write ``root/MANIFEST.json`` atomically.

    ``content``: data set file (its published path) -> ``{"sha256": <content sha256>,
    "basis": <where it came from>}``, kept for later runs (see the module docstring)."""
    files = list_files(root)
    entries = {}
    for rel in _progress(files, f"hashing {name}", progress):
        p = root / rel
        entries[rel] = {"sha256": file_digest(p), "size": p.stat().st_size}
    manifest = {"name": name, "source": source, "files": entries}
    if content:
        manifest["content"] = content
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n", temp_prefix=".dpap-")
    return manifest


def read_manifest(root: Path) -> Optional[dict]:
    path = root / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' mapping")
        content = manifest.get("content", {})
        if not isinstance(content, dict) or not all(isinstance(v, dict) and "sha256" in v for v in content.values()):
            raise ValueError("malformed 'content' table")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); delete it and run the download stage again") from None
    return manifest


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest's file table (path -> sha256), independent of formatting."""
    table = {k: v["sha256"] for k, v in sorted(manifest["files"].items())}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def manifest_changes(root: Path, manifest: dict, recheck: Container[str] = (),
                     progress: bool = False) -> tuple[list[str], list[str]]:
    """Compare the files below ``root`` with ``manifest``: ``(missing, changed)``.

    ``changed`` lists the files in ``recheck`` whose size or sha256 differs (the caller
    verifies them again by content). Any other such file raises :class:`DataError` naming
    it (truncated or altered)."""
    missing, changed = [], []
    items = sorted(manifest["files"].items())
    # Sizes first: a truncated file is reported without hashing everything before it.
    for rel, entry in items:
        p = root / rel
        if not p.is_file():
            missing.append(rel)
        elif p.stat().st_size != entry["size"]:
            if rel not in recheck:
                raise DataError(
                    f"checksum error: {p} has {p.stat().st_size} bytes, expected {entry['size']} "
                    f"(truncated or altered); delete it and run the download stage again"
                )
            changed.append(rel)
    for rel, entry in _progress(items, f"verifying {manifest.get('name', root.name)}", progress):
        p = root / rel
        if rel in missing or rel in changed:
            continue
        got = file_digest(p)
        if got != entry["sha256"]:
            if rel not in recheck:
                raise DataError(
                    f"checksum error: {p} has sha256 {got[:16]}..., expected {entry['sha256'][:16]}... "
                    f"(altered); delete it and run the download stage again"
                )
            changed.append(rel)
    return missing, sorted(changed)


def verify_manifest(root: Path, manifest: dict, progress: bool = False) -> list[str]:
    """Check every file of ``manifest`` below ``root``.

    Returns the files that are missing. Raises :class:`DataError` naming the first file
    whose size or sha256 differs (a truncated or altered file)."""
    return manifest_changes(root, manifest, (), progress)[0]


def _progress(items, desc: str, enabled: bool):
    if not bars_shown(enabled) or len(items) < 50:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)
