"""File hashing and the raw-data manifest.

A data set's raw folder ``<raw_dir>/<name>/`` carries ``MANIFEST.json`` once its files
were verified against their published checksums (or, for ``digits``, generated from the
bundled copy). The manifest lists the sha256 and size of every file in the folder, so
later runs re-verify without the published checksums and name any truncated or altered
file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..outputs import atomic_write_text
from .errors import DataError

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


def matches(path: str | Path, accepted: Iterable[str]) -> tuple[bool, str]:
    """Whether ``path`` hashes to one of ``accepted``; also the digest that was computed."""
    accepted = [c.lower() for c in accepted]
    cache: dict[str, str] = {}
    got = ""
    for c in accepted:
        algo = algorithm_of(c)
        if algo not in cache:
            cache[algo] = file_digest(path, algo)
        got = cache[algo]
        if got == strip_algorithm(c):
            return True, got
    return False, got


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


def write_manifest(root: Path, name: str, source: str, progress: bool = False) -> dict:
    """Hash every file below ``root`` and write ``root/MANIFEST.json`` atomically."""
    files = list_files(root)
    entries = {}
    for rel in _progress(files, f"hashing {name}", progress):
        p = root / rel
        entries[rel] = {"sha256": file_digest(p), "size": p.stat().st_size}
    manifest = {"name": name, "source": source, "files": entries}
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n", temp_name=f".dpap-{MANIFEST_NAME}.tmp")
    return manifest


def read_manifest(root: Path) -> Optional[dict]:
    path = root / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); delete it and run the download stage again") from None
    return manifest


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest's file table (path -> sha256), independent of formatting."""
    table = {k: v["sha256"] for k, v in sorted(manifest["files"].items())}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def verify_manifest(root: Path, manifest: dict, progress: bool = False) -> list[str]:
    """Check every file of ``manifest`` below ``root``.

    Returns the files that are missing. Raises :class:`DataError` naming the first file
    whose size or sha256 differs (a truncated or altered file)."""
    missing = []
    items = sorted(manifest["files"].items())
    # Sizes first: a truncated file is reported without hashing everything before it.
    for rel, entry in items:
        p = root / rel
        if not p.is_file():
            missing.append(rel)
        elif p.stat().st_size != entry["size"]:
            raise DataError(
                f"checksum error: {p} has {p.stat().st_size} bytes, expected {entry['size']} "
                f"(truncated or altered); delete it and run the download stage again"
            )
    for rel, entry in _progress(items, f"verifying {manifest.get('name', root.name)}", progress):
        p = root / rel
        if rel in missing:
            continue
        got = file_digest(p)
        if got != entry["sha256"]:
            raise DataError(
                f"checksum error: {p} has sha256 {got[:16]}..., expected {entry['sha256'][:16]}... "
                f"(altered); delete it and run the download stage again"
            )
    return missing


def _progress(items, desc: str, enabled: bool):
    if not enabled or len(items) < 50:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)
