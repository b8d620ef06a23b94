"""Finding, verifying and placing the files of one data set (the download stage's work).

:class:`Fetcher` looks for each file the data set needs in the sources the download stage
lists (:mod:`dpap.data.download`), verifies it by content (:mod:`dpap.data.checksums`)
against the checksums it accepts (:meth:`Fetcher.accepted`), and moves it into place.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from dpap.data.checksums import MANIFEST_NAME, Digests, describe, digests
from dpap.data.errors import DataError
from dpap.data.extract import extract
from dpap.data.progress import bars_shown
from dpap.data.registry import Archive, DatasetSpec, RawFile
from dpap.runtime.outputs import is_leftover, remove_quietly, temp_beside

NETWORK_TIMEOUT_S = 20.0
"""Socket timeout of every download attempt: a machine without internet fails in seconds."""
OFFLINE_ENV = "DPAP_OFFLINE"
"""Set to 1 to never touch the network (only local files and offline copies are used)."""
PARAMS_KEY = "data.checksums"

Log = Callable[[str], None]
Entry = Union[RawFile, Archive]


@dataclass(frozen=True)
class Trust:
    """Checksums you named for one file, and where you named them."""

    checksums: tuple[str, ...]
    origin: str


_OWNED = re.compile(r"\.dpap-.+\.(?P<pid>\d{1,10})\.[0-9a-f]{8}\.(?:part|tmp)|\.dpap-unpack-(?P<unpack>\d{1,10})-.+")
"""A temporary file or folder of the data stages named with the process that writes it."""


def sweep_leftovers(root: Path) -> None:
    """Remove the temporary files and folders (``.dpap-*``) under ``root`` that killed runs
    left (:func:`dpap.runtime.outputs.is_leftover`: their process no longer runs, or they
    have the fixed names of earlier versions, ``.dpap-<name>.part``, ``.dpap-unpack``, and
    nothing in them changed for an hour). Best effort: another process may be removing
    or writing them at the same time."""
    for folder, dirs, files in os.walk(root, onerror=lambda e: None):
        for name in (*dirs, *files):
            if name.startswith(".dpap-"):
                m = _OWNED.fullmatch(name)
                path = Path(folder) / name
                if is_leftover(path, int(m["pid"] or m["unpack"]) if m else None):
                    remove_quietly(path)
        dirs[:] = [d for d in dirs if not d.startswith(".dpap-")]  # never into a staging folder


class Fetcher:
    """Finds, verifies and places the files of one data set.

    ``present``: published path -> the verified forms now in place; ``content``: published
    path -> ``{"sha256", "basis"}`` for MANIFEST.json; ``trusted_files``: file name -> where
    you named the checksum that accepted it."""

    def __init__(self, spec: DatasetSpec, root: Path, trusted: Mapping[str, Trust], offline: bool, progress: bool,
                 log: Log, *, learnt: Optional[Mapping[str, dict]] = None):
        self.spec, self.root, self.offline, self.progress, self.log = spec, root, offline, progress, log
        self.trusted = dict(trusted)
        self.learnt = dict(learnt or {})
        self.network_error: Optional[str] = None
        self.last_error: Optional[str] = None
        self.sources: list[str] = []
        self.present: dict[str, list[str]] = {}
        self.content: dict[str, dict] = {}
        self.trusted_files: dict[str, str] = {}

    # ----------------------------------------------------------------- verification

    def known_content(self, entry: Entry) -> Optional[dict]:
        """The content sha256 this run verified, or one an earlier run learnt."""
        return self.content.get(entry.path) or self.learnt.get(entry.path)

    def accepted(self, entry: Entry) -> list[str]:
        """Published md5, recorded and learnt content checksums. Yours replace them; then
        only the content of a form that met yours in this run is accepted besides."""
        if entry.path in self.trusted:
            seen = self.content.get(entry.path)
            return list(self.trusted[entry.path].checksums) + ([f"sha256:{seen['sha256']}"] if seen else [])
        known = self.known_content(entry)
        out = [c for c in (entry.md5, *getattr(entry, "content", ())) if c]
        if known is not None:
            out.append(f"sha256:{known['sha256']}")
        return out

    def verify(self, file: Path, entry: Entry, *, name: Optional[str] = None, shown: Optional[str] = None) -> None:
        """Raise :class:`DataError` unless ``file`` (a form of ``entry``, called ``name``:
        the name decides how it is decompressed) matches an accepted checksum; remember its
        content sha256 (MANIFEST.json) and whose checksum it met."""
        name = name or file.name
        accepted = self.accepted(entry)
        got = digests(file, name=name)
        hit = next((c for c in accepted if got.matches(c)), None)
        if hit is None:
            raise DataError(self._mismatch(shown or str(file), name, entry, got, accepted))
        trust = self.trusted.get(entry.path)
        if trust is not None:
            self.trusted_files[name] = trust.origin
        if got.content is None or entry.path in self.content:
            return
        sha = got.content["sha256"]
        if trust is not None:
            basis = f"your checksum ({trust.origin})"
        elif hit in getattr(entry, "content", ()):
            basis = "recorded in dpap/data/registry.py"
        elif hit == entry.md5:
            basis = f"learnt from the published md5 of {entry.basename}" if got.compressed else "published md5"
        else:
            basis = (self.learnt.get(entry.path) or {}).get("basis", "learnt")
        self.content[entry.path] = {"sha256": sha, "basis": basis}
        if basis.startswith("learnt from") and entry.path not in self.learnt:
            self.log(f"{self.spec.name}: learnt the content sha256 of {entry.basename}: {sha} (kept in {MANIFEST_NAME})")

    def _mismatch(self, shown: str, name: str, entry: Entry, got: Digests, accepted: list[str]) -> str:
        trust = self.trusted.get(entry.path)
        if trust is not None:
            return (
                f"checksum error: {shown} does not match your checksum for {entry.basename} ({trust.origin}: "
                f"{' or '.join(describe(c) for c in trust.checksums)}; got {got.describe()}): the file is "
                f"truncated or altered, or the checksum is wrong"
            )
        content_known = bool(getattr(entry, "content", ())) or self.known_content(entry) is not None
        if not content_known and name != entry.basename and got.content is not None:
            return (
                f"cannot verify {shown}: {self.spec.name} publishes only the md5 of {entry.basename} "
                f"({entry.md5}) and its content checksum is not known yet; put the published {entry.basename} "
                f"beside it (its content checksum is then learnt), or trust your copy by naming its sha256 "
                f"under {PARAMS_KEY} in params.yaml"
            )
        hint = "" if content_known else (
            f", or if it is the same data compressed differently, trust it by naming its sha256 under "
            f"{PARAMS_KEY} in params.yaml"
        )
        return (
            f"checksum error: {shown} does not match the published checksum of {self.spec.name}/{entry.path} "
            f"(got {got.describe()}; expected {' or '.join(describe(c) for c in accepted)}): it is truncated, "
            f"altered or a different version; delete it and run again{hint}"
        )

    def check_trusted(self) -> None:
        """Verify the files in place that your checksums name (MANIFEST.json is complete)."""
        for entry in (*self.spec.files, *self.spec.archives):
            if entry.path in self.trusted:
                for form in entry.forms:
                    if (self.root / form).is_file():
                        self.verify(self.root / form, entry)

    # ---------------------------------------------------------------------- sources

    def place(self, entry: RawFile, *, network: bool = False, staged: Optional[Path] = None,
              shown: Optional[str] = None) -> bool:
        """Make ``entry`` present (in one or more forms) and verified; False when no
        source has it. ``staged``: a folder an archive was unpacked into."""
        root = self.root
        found = []
        for form in entry.forms:  # the published form first
            flat, dest = root / form.rsplit("/", 1)[-1], root / form
            if dest.is_file():
                self.verify(dest, entry)
            elif flat.is_file():  # copied flat into <raw_dir>/<name>/ by hand
                try:
                    self.verify(flat, entry)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(flat, dest)
                except FileNotFoundError:  # another process fetching this data set moved it first
                    if not dest.is_file():
                        raise
                    self.verify(dest, entry)
                self.log(f"{self.spec.name}: moved {flat} -> {dest}")
            else:
                continue
            found.append(form)
        if found:
            self.present[entry.path] = found
            self.sources.append("local")
            return True
        if staged is not None and (staged / entry.path).is_file():
            self._adopt(staged / entry.path, entry, entry.path, shown=f"{shown} (its member {entry.path})")
            self.sources.append("local")
            return True
        for d in self.spec.offline_dirs:
            for form in entry.forms:
                cand = Path(d) / form.rsplit("/", 1)[-1]
                if not cand.is_file():
                    continue
                try:
                    self.verify(cand, entry)
                except DataError:
                    self.log(f"{self.spec.name}: offline copy {cand} does not match the checksum; ignored")
                    continue
                dest = root / form
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_beside(dest, ".dpap-", ".part")
                try:
                    shutil.copyfile(cand, tmp)
                    os.replace(tmp, dest)
                finally:
                    tmp.unlink(missing_ok=True)
                self.present[entry.path] = [form]
                self.log(f"{self.spec.name}: copied offline copy {cand} -> {dest}")
                self.sources.append(d)
                return True
        if network:
            for url in entry.urls:
                if self.offline or self.network_error is not None:
                    break
                tmp = self._download(url, root / entry.path)
                if tmp is not None:
                    self._adopt(tmp, entry, entry.path, shown=f"{tmp} (from {url})")
                    self.sources.append(url.split("/")[2])
                    return True
        return False

    def _adopt(self, file: Path, entry: Entry, form: str, shown: str) -> None:
        """Verify ``file`` (elsewhere) and move it into place as ``form``."""
        try:
            self.verify(file, entry, name=form.rsplit("/", 1)[-1], shown=shown)
            dest = self.root / form
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
        except BaseException:  # a temporary file of this process's own: nobody else removes it
            file.unlink(missing_ok=True)
            raise
        if isinstance(entry, RawFile):
            self.present[entry.path] = [form]

    def _download(self, url: str, dest: Path) -> Optional[Path]:
        """Download ``url`` next to ``dest``; the temporary file, or None on failure."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(dest, ".dpap-", ".part")
        self.log(f"{self.spec.name}: downloading {url}")
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "dpap/0 (pytorch/vision)"})
            with urllib.request.urlopen(req, timeout=NETWORK_TIMEOUT_S) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = None
                if bars_shown(self.progress):
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False)
                got = 0
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
                if total is not None and got != total and not resp.chunked:
                    raise ValueError(f"cut off after {got} of {total} bytes")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:  # IncompleteRead: cut off
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
            return None
        except BaseException:  # interrupted (Ctrl-C), or a reader error that is not an OSError
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def archive(self, arch: Archive) -> Optional[Path]:
        """The archive in place (any form; checked only against checksums you named for
        it: its members are checked on their own), or downloaded and checked against its
        published md5; None when there is none."""
        for form in arch.forms:
            for cand in (self.root / form, self.root / form.rsplit("/", 1)[-1]):
                if cand.is_file():
                    if arch.path in self.trusted:
                        self.verify(cand, arch)
                    self.sources.append("local")
                    return cand
        for url in arch.urls:
            if self.offline or self.network_error is not None:
                break
            tmp = self._download(url, self.root / arch.path)
            if tmp is not None:
                self._adopt(tmp, arch, arch.path, shown=f"{tmp} (from {url})")
                self.sources.append(url.split("/")[2])
                return self.root / arch.path
        return None

    def run(self) -> list[str]:
        spec = self.spec
        missing = [f for f in spec.files if not self.place(f)]
        # Archives that contain missing files (CIFAR-10's tarball): unpacked aside, each
        # file taken from it is verified against its own checksum.
        for arch in spec.archives:
            wanted = [f for f in missing if f.path in arch.provides]
            if not wanted:
                continue
            src = self.archive(arch)
            if src is None:
                continue
            staging = Path(tempfile.mkdtemp(prefix=f".dpap-unpack-{os.getpid()}-", dir=self.root))  # this process's own
            try:
                extract(src, staging, self.log, self.progress)
                for f in wanted:
                    if not self.place(f, staged=staging, shown=str(src)):
                        raise DataError(f"{spec.name}: archive {src} lacks {f.path}; delete it and run again")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            missing = [f for f in missing if f not in wanted]
        # Direct URLs of the remaining files.
        missing = [f for f in missing if not self.place(f, network=True)]
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
