"""The download stage: put a data set's verified raw files into ``<raw_dir>/<name>/``.

Sources, in order, for each file the data set needs (in any of its forms, see
:attr:`RawFile.forms <dpap.data.registry.RawFile.forms>`: ``X.gz`` also as ``X``,
``X.bz2``, ``X.xz``):

1. the file already in place (a previous run, or copied there by hand);
2. the same file name copied flat into ``<raw_dir>/<name>/`` (moved into place);
3. a published archive that contains it (CIFAR-10's tarball, in any compression), in
   place or fetched;
4. a local offline copy (Debian's ``dataset-fashion-mnist`` under
   ``/usr/share/datasets/fashion-mnist/``);
5. the network (the URLs of the torchvision / tonic class), with a socket timeout.

Every file is verified by content before it is used (:mod:`dpap.data.checksums`): it must
match the published md5 (of the bytes as published), a content checksum recorded in the
registry, or one learnt on an earlier verified run (``MANIFEST.json``). Checksums you
name (``data.checksums`` in params.yaml, ``checksums=``) replace the published ones for
those files, and a one-line warning says so. Compressed files are then decompressed into
the form the reader uses, archives extracted, and ``MANIFEST.json`` records the sha256 of
every file (and the content sha256 of every data set file), so the next run only
re-hashes and names any truncated or altered file.

This module is the stage's entry (:func:`download`) and your own checksums; the work is
done by :class:`~dpap.data.fetcher.Fetcher` (finding, verifying and placing files),
:mod:`dpap.data.extract` (decompressing and unpacking) and :mod:`dpap.data.digits`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from dpap.config import DataConfig
from dpap.data.checksums import MANIFEST_NAME, manifest_changes, read_manifest, write_manifest
from dpap.data.digits import fetch_digits, load_digits_arrays
from dpap.data.errors import DataError
from dpap.data.extract import extract_all
from dpap.data.fetcher import NETWORK_TIMEOUT_S, OFFLINE_ENV, PARAMS_KEY, Fetcher, Trust, sweep_leftovers
from dpap.data.registry import DatasetSpec, get_spec

__all__ = ["NETWORK_TIMEOUT_S", "OFFLINE_ENV", "PARAMS_KEY", "download", "load_digits_arrays", "raw_root"]

Log = Callable[[str], None]
_Fetcher = Fetcher  # the names of before the split (dpap.data.fetcher)


def _quiet(_: str) -> None:
    pass


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def raw_root(cfg: DataConfig) -> Path:
    """``<raw_dir>/<name>/`` of the configured data set."""
    return Path(cfg.raw_dir) / cfg.name


def download(
    cfg: DataConfig,
    *,
    checksums: Optional[Mapping[str, str | Iterable[str]]] = None,
    checksums_from: str = "checksums=",
    offline: Optional[bool] = None,
    progress: bool = False,
    log: Log = _quiet,
    warn: Log = _warn_stderr,
) -> Path:
    """Fetch and verify the data set ``cfg.name``; return its raw folder.

    Your own checksums — ``cfg.checksums`` (``data.checksums``) and ``checksums``
    (``checksums_from`` names where they came from in messages) — map a file (its name in
    any form, or its path relative to the raw folder) to the accepted checksum(s): md5 or
    sha256 hex (or ``algo:hex``) of its bytes or of its content. They replace the published
    ones for those files; ``warn`` gets one line saying so (default: stderr). ``offline``
    (default: env ``DPAP_OFFLINE``) forbids network access. Raises :class:`DataError`.
    """
    spec = get_spec(cfg.name)
    trusted = _trusted(spec, cfg.checksums, PARAMS_KEY)
    trusted.update(_trusted(spec, checksums or {}, checksums_from))
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")
    root = raw_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(root)

    manifest = read_manifest(root)
    learnt = dict(manifest.get("content", {})) if manifest is not None else {}
    fetcher = Fetcher(spec, root, trusted, offline, progress, log, learnt=learnt)
    if manifest is not None:
        forms = {form for entry in (*spec.files, *spec.archives) if entry.md5 for form in entry.forms}
        missing, changed = manifest_changes(root, manifest, forms, progress=progress)
        listed = set(manifest["files"])
        complete = all(any(form in listed for form in f.forms) for f in spec.files)
        if not missing and not changed and complete:
            fetcher.check_trusted()
            _warn_trusted(spec, fetcher, warn)
            log(f"{spec.name}: {len(listed)} files in {root} verified against {MANIFEST_NAME}; nothing to do")
            return root
        if changed:
            log(f"{spec.name}: {', '.join(changed)} changed since {MANIFEST_NAME}; verifying by content")
        if missing:
            log(f"{spec.name}: {len(missing)} file(s) of {MANIFEST_NAME} missing; restoring them")

    if spec.name == "digits":
        fetch_digits(root, log)
        write_manifest(root, spec.name, "sklearn.datasets.load_digits")
        log(f"{spec.name}: wrote {root / 'digits.npz'} and {MANIFEST_NAME}")
        return root

    sources = fetcher.run()
    extract_all(spec, root, fetcher.present, progress, log)
    write_manifest(root, spec.name, ", ".join(sorted(set(sources))) or "local", progress=progress,
                   content=fetcher.content)
    _warn_trusted(spec, fetcher, warn)
    log(f"{spec.name}: verified {len(spec.files)} file(s) in {root}; wrote {MANIFEST_NAME}")
    return root


def _trusted(spec: DatasetSpec, given: Mapping[str, str | Iterable[str]], origin: str) -> dict[str, Trust]:
    """Your checksums keyed by the published path of the file they name."""
    names: dict[str, str] = {}
    for entry in (*spec.files, *spec.archives):
        if entry.md5 is None:
            continue
        for form in entry.forms:
            names[form] = entry.path
            names[form.rsplit("/", 1)[-1]] = entry.path
    out: dict[str, Trust] = {}
    for key, value in given.items():
        if str(key) not in names:
            if not names:
                raise DataError(f"{origin}: {key!r}: {spec.name} has no downloaded files to check; remove the checksum")
            published = ", ".join(e.basename for e in (*spec.files, *spec.archives) if e.md5)
            raise DataError(
                f"{origin}: {key!r} is not a file of {spec.name}; name one of {published} "
                f"(a .gz file also as its uncompressed, .bz2 or .xz form)"
            )
        values = (value,) if isinstance(value, str) else tuple(value)
        path = names[str(key)]
        prior = out[path].checksums if path in out else ()
        out[path] = Trust(prior + tuple(v.lower() for v in values), origin)
    return out


def _warn_trusted(spec: DatasetSpec, fetcher: Fetcher, warn: Log) -> None:
    if not fetcher.trusted_files:
        return
    origins = ", ".join(sorted(set(fetcher.trusted_files.values())))
    files = ", ".join(fetcher.trusted_files)
    warn(f"warning: {spec.name}: {files} trusted by your own checksums ({origins}), not the published ones")
