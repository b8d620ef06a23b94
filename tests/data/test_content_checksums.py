"""Raw files are verified by content: re-compressed or uncompressed copies of the same
data pass, an altered byte fails naming the file, and checksums you name are trusted
(with a warning) instead of the published ones."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dpap.config import ConfigError, load_params
from dpap.data import DataError, download, load_processed, preprocess
from dpap.data.checksums import digests, forms_of, read_checksum_file
from dpap.data import registry
from dpap.data.fetcher import Fetcher as _Fetcher
from dpap.data.registry import DEBIAN_FASHION_MNIST_DIR, DATASETS, DatasetSpec, RawFile

REPO = Path(__file__).resolve().parents[2]
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes, level: int, mtime: int, name: str = "") -> bytes:
    """gzip with chosen settings (level, header mtime and file name): other bytes, same content."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=level, mtime=mtime) as gz:
        gz.write(data)
    return buf.getvalue()


def mixed_idx_folder(folder: Path, synth) -> dict:
    """Synthetic MNIST files in four forms: .gz re-compressed (level 1, other mtime and file
    name), uncompressed only, .xz, .bz2. Returns content sha256 per name, and the arrays."""
    made = synth.make_idx(folder)
    content = {}
    for name in IDX:
        gz = folder / f"{name}.gz"
        data = gzip.decompress(gz.read_bytes())
        content[name] = sha256(data)
        if name == "train-images-idx3-ubyte":
            gz.write_bytes(gzip_bytes(data, level=1, mtime=123456789, name="elsewhere.idx"))
            assert synth.md5(gz) != made["md5"][gz.name]  # other bytes than those first written
            continue
        gz.unlink()
        if name == "train-labels-idx1-ubyte":
            (folder / name).write_bytes(data)
        elif name == "t10k-images-idx3-ubyte":
            (folder / f"{name}.xz").write_bytes(lzma.compress(data))
        else:
            (folder / f"{name}.bz2").write_bytes(bz2.compress(data))
    return {"content": content, "arrays": made["arrays"]}


# ------------------------------------------------------------------------ checksums


def test_content_digest_ignores_compression(tmp_path):
    data = bytes(range(256)) * 400
    forms = {
        "a.gz": gzip_bytes(data, 9, 0),
        "b.gz": gzip_bytes(data, 1, 987654, "x"),
        "c.bz2": bz2.compress(data),
        "d.xz": lzma.compress(data),
        "e": data,
    }
    got = {}
    for name, blob in forms.items():
        (tmp_path / name).write_bytes(blob)
        got[name] = digests(tmp_path / name)
    assert {d.content["sha256"] for d in got.values()} == {sha256(data)}
    assert len({d.file["sha256"] for d in got.values()}) == 5
    assert got["b.gz"].matches(sha256(data)) and got["b.gz"].matches(hashlib.md5(forms["b.gz"]).hexdigest())
    assert not got["b.gz"].matches(hashlib.md5(forms["a.gz"]).hexdigest())
    # A zip's content is its members, however they are compressed.
    for name, method in (("s.zip", zipfile.ZIP_STORED), ("d.zip", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(tmp_path / name, "w", method) as zf:
            zf.writestr("Train/1/a.bin", data)
            zf.writestr("Train/0/b.bin", data[:100])
    s, d = digests(tmp_path / "s.zip"), digests(tmp_path / "d.zip")
    assert s.content == d.content and s.file != d.file
    # A corrupt gzip: content unreadable, said why.
    bad = bytearray(forms["a.gz"])
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "bad.gz").write_bytes(bytes(bad))
    broken = digests(tmp_path / "bad.gz")
    assert broken.content is None and broken.error and not broken.matches(sha256(data))
    assert forms_of("R/x.tar.gz") == ("R/x.tar.gz", "R/x.tar", "R/x.tar.bz2", "R/x.tar.xz")
    assert forms_of("cifar-10-batches-py/data_batch_1") == ("cifar-10-batches-py/data_batch_1",)


# ---------------------------------------------------------------- your own checksums


@pytest.mark.parametrize("name,cls_folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_recompressed_and_uncompressed_idx_pass(cfg_for, synth, name, cls_folder):
    cfg = cfg_for(name, checksums={})
    folder = Path(cfg.raw_dir) / name / cls_folder / "raw"
    made = mixed_idx_folder(folder, synth)
    # Your checksums: sha256 of the content (`zcat X.gz | sha256sum`), by the uncompressed name.
    cfg.checksums = dict(made["content"])
    warnings = []
    raw = download(cfg, warn=warnings.append)
    for f in IDX:
        assert (folder / f).is_file()  # every form decompressed into the one torchvision reads
    assert len(warnings) == 1 and "\n" not in warnings[0] and warnings[0].startswith("warning: ")
    assert "data.checksums" in warnings[0] and "not the published ones" in warnings[0]
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.xz"):
        assert f in warnings[0]
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    key = f"{cls_folder}/raw/train-images-idx3-ubyte.gz"
    assert manifest["content"][key] == {"sha256": made["content"]["train-images-idx3-ubyte"],
                                        "basis": "your checksum (data.checksums)"}

    data = load_processed(preprocess(cfg))
    x, y = made["arrays"]["train"]
    np.testing.assert_allclose(data.train[0][:, 0].numpy(), x / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.test[1].numpy(), made["arrays"]["t10k"][1])

    # Later runs verify by the content kept in MANIFEST.json, without your checksums: the
    # .gz re-compressed once more still passes, and nothing is trusted by you any more.
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip_bytes((folder / "train-images-idx3-ubyte").read_bytes(), level=9, mtime=1))
    cfg.checksums = {}
    lines, warnings = [], []
    download(cfg, log=lines.append, warn=warnings.append)
    assert any("changed since MANIFEST.json; verifying by content" in line for line in lines)
    assert warnings == []
    preprocess(cfg)


def test_altered_byte_fails_naming_the_file(cfg_for, synth):
    cfg = cfg_for("mnist")
    folder = Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw"
    made = mixed_idx_folder(folder, synth)
    cfg.checksums = dict(made["content"])
    plain = folder / "train-labels-idx1-ubyte"
    data = bytearray(plain.read_bytes())
    data[20] ^= 0x01  # one label changed: same size, other content
    plain.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        download(cfg, warn=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"checksum error: {plain} does not match your checksum")
    assert "truncated or altered" in msg and made["content"]["train-labels-idx1-ubyte"] in msg
    assert not (Path(cfg.raw_dir) / "mnist" / "MANIFEST.json").exists()

    # A corrupt gzip body: named, its content unreadable.
    plain.write_bytes(bytes(data[:20] + bytes([data[20] ^ 0x01]) + data[21:]))  # restored
    gz = folder / "train-images-idx3-ubyte.gz"
    body = bytearray(gz.read_bytes())
    body[len(body) // 2] ^= 0xFF
    gz.write_bytes(bytes(body))
    with pytest.raises(DataError) as err:
        download(cfg, warn=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg and f"checksum error: {gz} " in msg and "content unreadable" in msg


def test_altered_after_download_fails_by_learnt_content(cfg_for, synth):
    """No checksum of yours on the second run: the uncompressed file is checked against
    the content sha256 kept in MANIFEST.json."""
    cfg = cfg_for("mnist")
    made = synth.make_idx(Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw")
    raw = download(cfg, checksums=made["md5"], warn=lambda _: None)
    target = raw / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        download(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"checksum error: {target} does not match the published checksum")
    assert "altered" in msg and "MNIST/raw/t10k-images-idx3-ubyte.gz" in msg


def test_wrong_or_unknown_checksum_of_yours(cfg_for, synth):
    cfg = cfg_for("mnist")
    folder = Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw"
    made = synth.make_idx(folder)
    wrong = dict(made["md5"], **{"t10k-images-idx3-ubyte.gz": "ab" * 32})
    cfg.checksums = wrong
    with pytest.raises(DataError) as err:
        download(cfg, warn=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg and f"checksum error: {folder / 't10k-images-idx3-ubyte.gz'} does not match your checksum" in msg
    assert "data.checksums: sha256 " + "ab" * 32 in msg and "or the checksum is wrong" in msg
    assert not (Path(cfg.raw_dir) / "mnist" / "MANIFEST.json").exists()

    cfg.checksums = {"train-images.gz": "ab" * 32}
    with pytest.raises(DataError, match=r"^data\.checksums: 'train-images\.gz' is not a file of mnist; name one of "
                                        r"train-images-idx3-ubyte\.gz, "):
        download(cfg)


def test_uncompressed_without_known_content_says_how_to_trust_it(cfg_for, synth):
    """DVS-Gesture publishes only the md5 of its .tar.gz archives: a plain .tar cannot be
    checked until a verified .tar.gz has taught its content (or you name its sha256)."""
    import tonic.datasets

    cfg = cfg_for("dvs-gesture", time_bins=2, downsample=32, denoise_us=0)
    folder = Path(cfg.raw_dir) / "dvs-gesture" / "DVSGesture"
    synth.make_dvs_gesture(folder)
    for split in ("Train", "Test"):
        tgz = folder / f"ibmGesture{split}.tar.gz"
        (folder / f"ibmGesture{split}.tar").write_bytes(gzip.decompress(tgz.read_bytes()))
        tgz.unlink()
    with pytest.raises(DataError) as err:
        download(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg == (
        f"cannot verify {folder / 'ibmGestureTrain.tar'}: dvs-gesture publishes only the md5 of ibmGestureTrain.tar.gz "
        f"({tonic.datasets.DVSGesture.train_md5}) and its content checksum is not known yet; put the published "
        f"ibmGestureTrain.tar.gz beside it (its content checksum is then learnt), or trust your copy by naming its "
        f"sha256 under data.checksums in params.yaml")


def test_other_uncompressed_mnist_fails_against_the_recorded_content(cfg_for, synth):
    """Files that are not MNIST, uncompressed: refused, naming the published md5 and the
    recorded content sha256 they miss."""
    cfg = cfg_for("mnist")
    folder = Path(cfg.raw_dir) / "mnist" / "MNIST" / "raw"
    synth.make_idx(folder)
    for name in IDX:
        (folder / name).write_bytes(gzip.decompress((folder / f"{name}.gz").read_bytes()))
        (folder / f"{name}.gz").unlink()
    with pytest.raises(DataError) as err:
        download(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"checksum error: {folder / 'train-images-idx3-ubyte'} does not match the "
                                              f"published checksum of mnist/MNIST/raw/train-images-idx3-ubyte.gz")
    assert "md5 f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg and f"sha256 {MNIST_SHA256['train-images-idx3-ubyte']}" in msg
    assert not (Path(cfg.raw_dir) / "mnist" / "MANIFEST.json").exists()


def test_config_checks_your_checksums(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  name: mnist\n  checksums:\n    train-images-idx3-ubyte.gz: 12ab\n")
    with pytest.raises(ConfigError, match=r"data\.checksums\.train-images-idx3-ubyte\.gz: got '12ab', expected a sha256"):
        load_params(params)
    params.write_text("data:\n  checksums: [a, b]\n")
    with pytest.raises(ConfigError, match=r"data\.checksums: got \['a', 'b'\], expected a mapping"):
        load_params(params)
    params.write_text(f"data:\n  checksums:\n    x.gz: {'A' * 64}\n    y: md5:{'0' * 32}\n")
    assert load_params(params).data.checksums == {"x.gz": "A" * 64, "y": "md5:" + "0" * 32}
    # Which files you trust does not change what a training run is (resume, search studies).
    from dpap.training.setup import fingerprint

    assert fingerprint(load_params(params)) == fingerprint(load_params(params, overrides={"data.checksums": {}}))


def _stage(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pipeline" / "download.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "DPAP_OFFLINE": "1"}, timeout=300)


def test_stage_script_warns_and_fails_in_one_line(tmp_path, synth):
    folder = tmp_path / "raw" / "mnist" / "MNIST" / "raw"
    made = synth.make_idx(folder)
    sums = {k: sha256((folder / k).read_bytes()) for k in made["md5"]}  # as `sha256sum *.gz` prints
    params = tmp_path / "params.yaml"
    lines = "".join(f"    {k}: {v}\n" for k, v in sums.items())
    params.write_text(f"data:\n  name: mnist\n  raw_dir: {tmp_path}/raw\n  checksums:\n{lines}")

    bad = params.read_text().replace(sums["t10k-labels-idx1-ubyte.gz"], "0f" * 32)
    params.write_text(bad)
    r = _stage(["--params", str(params)], tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: checksum error: {folder / 't10k-labels-idx1-ubyte.gz'} does not match "
                               f"your checksum for t10k-labels-idx1-ubyte.gz (data.checksums: sha256 {'0f' * 32}")

    # The same checksums from a file in sha256sum's format, over the wrong one in params.
    listing = tmp_path / "SHA256SUMS"
    listing.write_text("".join(f"{v}  ./{k}\n" for k, v in sums.items()))
    assert read_checksum_file(listing) == sums
    r = _stage(["--params", str(params), "--checksums", str(listing)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("warning: mnist: train-images-idx3-ubyte.gz, "), r.stderr
    assert f"trusted by your own checksums ({listing}), not the published ones" in r.stderr
    assert "download: mnist ready" in r.stdout

    listing.write_text(f"# mine\n{'ab' * 32}  x.gz\nnot a checksum line\n")
    with pytest.raises(DataError, match=f"^{listing}:3: expected '<sha256 or md5> <file name>' "
                                        r"\(what sha256sum prints\), got 'not a checksum line'$"):
        read_checksum_file(listing)


# -------------------------------------------------------------- published checksums


def test_content_learnt_from_published_md5(tmp_path, synth):
    """A .gz matching its published md5 teaches the content sha256; then the same data
    re-compressed or uncompressed passes on the published checksum alone."""
    folder = tmp_path / "toy"
    made = synth.make_idx(folder)
    name = "t10k-labels-idx1-ubyte.gz"
    entry = RawFile(f"toy/{name}", made["md5"][name], extract_to="toy")  # its "published" md5
    spec = DatasetSpec("toy", "static", 10, (1, 28, 28), files=(entry,))
    lines = []
    first = _Fetcher(spec, tmp_path, {}, True, False, lines.append)
    first.run()
    data = gzip.decompress((folder / name).read_bytes())
    assert first.content == {entry.path: {"sha256": sha256(data), "basis": f"learnt from the published md5 of {name}"}}
    assert any(f"learnt the content sha256 of {name}" in line for line in lines)

    (folder / name).write_bytes(gzip_bytes(data, level=2, mtime=42, name="other"))
    (folder / name[:-3]).write_bytes(data)
    later = _Fetcher(spec, tmp_path, {}, True, False, lines.append, learnt=first.content)
    later.run()
    assert later.present[entry.path] == [entry.path, entry.path[:-3]]
    assert later.trusted_files == {}
    without = _Fetcher(spec, tmp_path, {}, True, False, lines.append)  # nothing learnt: rejected
    with pytest.raises(DataError, match=f"checksum error: .*{name} does not match the published checksum.*"
                                        f"same data compressed differently, trust it"):
        without.run()


MNIST_SHA256 = {  # sha256 of MNIST's uncompressed IDX files: public facts (issue 26)
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def test_mnist_content_checksums_are_recorded():
    """MNIST's four files carry the content sha256 of their IDX files, as Fashion-MNIST's
    do, beside the published md5 of the .gz."""
    spec = registry.get_spec("mnist")
    assert {f.basename[:-3]: f.content for f in spec.files} == {k: (f"sha256:{v}",) for k, v in MNIST_SHA256.items()}
    assert all(f.md5 and len(f.md5) == 32 for f in spec.files)


@pytest.fixture
def mnist_recorded_as(monkeypatch):
    """``mnist_recorded_as(content)``: the registry's MNIST spec rebuilt with ``content``
    (IDX name -> sha256) as its recorded content checksums, for this test only (real MNIST
    is not in the repository: the synthetic files stand in for it)."""
    def record(content: dict[str, str]) -> None:
        monkeypatch.setattr(registry, "MNIST_CONTENT_SHA256", {f"{k}.gz": v for k, v in content.items()})
        monkeypatch.delitem(DATASETS._specs, "mnist", raising=False)  # rebuilt on next access
    yield record
    DATASETS._specs.pop("mnist", None)  # the real spec again for later tests


def test_mnist_placed_by_hand_re_gzipped_or_uncompressed_passes_by_recorded_content(cfg_for, synth, mnist_recorded_as):
    """MNIST placed flat in data/raw/mnist/ by hand, gzipped otherwise than published (other
    level, mtime and name in the header), uncompressed, or as .xz / .bz2: accepted by the
    recorded content checksums, with no checksum of yours and no warning."""
    cfg = cfg_for("mnist", limit=10)
    folder = Path(cfg.raw_dir) / "mnist"  # flat, as a user copies files
    made = mixed_idx_folder(folder, synth)
    mnist_recorded_as(made["content"])
    assert not any(synth.md5(p) in (f.md5 for f in registry.get_spec("mnist").files) for p in folder.iterdir())
    warnings, lines = [], []
    raw = download(cfg, warn=warnings.append, log=lines.append)
    assert warnings == [], warnings
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert {k.rsplit("/", 1)[-1]: v["sha256"] for k, v in manifest["content"].items()} == {f"{k}.gz": v for k, v in made["content"].items()}
    assert {v["basis"] for v in manifest["content"].values()} == {"recorded in dpap/data/registry.py"}
    for name in IDX:
        assert (raw / "MNIST" / "raw" / name).is_file()  # moved into place, decompressed
    data = load_processed(preprocess(cfg))
    x, _ = made["arrays"]["train"]
    assert data.meta["sizes"] == {"train": 10, "test": 10}
    np.testing.assert_array_equal(data.test[1].numpy(), made["arrays"]["t10k"][1][np.linspace(0, 19, 10).round().astype(int)])
    lines.clear()
    assert download(cfg, log=lines.append) == raw and "nothing to do" in lines[-1]  # the next run: verified by MANIFEST.json

    # One byte of one file altered: refused, the file named.
    labels = raw / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    body = bytearray(labels.read_bytes())
    body[9] ^= 0x01
    labels.write_bytes(bytes(body))
    with pytest.raises(DataError, match=f"^checksum error: {labels} "):
        download(cfg)


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed; run: bash tools/setup_test_services.sh")
def test_fashion_mnist_recorded_content_in_any_form(cfg_for):
    """The real Fashion-MNIST files, re-compressed, uncompressed, as .xz: accepted by the
    content sha256 recorded in the registry, without any checksum of yours."""
    cfg = cfg_for("fashion-mnist", limit=100)
    folder = Path(cfg.raw_dir) / "fashion-mnist"  # copied flat, by hand
    folder.mkdir(parents=True)
    deb = Path(DEBIAN_FASHION_MNIST_DIR)
    shutil.copy(deb / "train-images-idx3-ubyte.gz", folder)
    labels = gzip.decompress((deb / "train-labels-idx1-ubyte.gz").read_bytes())
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bytes(labels, level=1, mtime=5, name="x"))
    (folder / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress((deb / "t10k-images-idx3-ubyte.gz").read_bytes()))
    (folder / "t10k-labels-idx1-ubyte.xz").write_bytes(
        lzma.compress(gzip.decompress((deb / "t10k-labels-idx1-ubyte.gz").read_bytes())))
    warnings, lines = [], []
    raw = download(cfg, warn=warnings.append, log=lines.append)
    assert warnings == [] and not any(DEBIAN_FASHION_MNIST_DIR in line for line in lines)
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert {v["basis"] for v in manifest["content"].values()} == {"recorded in dpap/data/registry.py"}
    data = load_processed(preprocess(cfg))
    assert data.meta["sizes"] == {"train": 100, "test": 100} and len(set(data.test[1].tolist())) == 10


def test_cifar_archive_in_any_form_checked_by_its_members(cfg_for, synth):
    """CIFAR-10's tarball is a container: uncompressed (.tar) it passes, each member checked
    against its own checksum; an altered member is named with the archive."""
    cfg = cfg_for("cifar10")
    root = Path(cfg.raw_dir) / "cifar10"
    made = synth.make_cifar(root, archive=True)
    tgz = root / "cifar-10-python.tar.gz"
    tar = root / "cifar-10-python.tar"
    tar.write_bytes(gzip.decompress(tgz.read_bytes()))
    tgz.unlink()
    members = {k: v for k, v in made["md5"].items() if not k.startswith("cifar-10-python")}
    download(cfg, checksums=members, warn=lambda _: None)
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir())[:2] == ["batches.meta", "data_batch_1"]
    assert not list(root.glob(".dpap-*"))
    assert load_processed(preprocess(cfg)).train[0].shape == (50, 3, 32, 32)

    # An archive whose data_batch_2 differs: the error names the archive and the member.
    shutil.rmtree(root)
    made = synth.make_cifar(root, archive=True)
    members = {k: v for k, v in made["md5"].items() if not k.startswith("cifar-10-python")}
    other = synth.make_cifar(root / "other", seed=1)
    with tarfile.open(root / "cifar-10-python.tar.gz") as tf:
        tf.extractall(root / "x", filter="data")
    shutil.copy(root / "other" / "cifar-10-batches-py" / "data_batch_2", root / "x" / "cifar-10-batches-py")
    shutil.rmtree(root / "other")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(root / "x" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    shutil.rmtree(root / "x")
    with pytest.raises(DataError) as err:
        download(cfg, checksums=members, warn=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"checksum error: {root / 'cifar-10-python.tar.gz'} (its member cifar-10-batches-py/data_batch_2) "
                          f"does not match your checksum")
    assert not list(root.glob(".dpap-*")) and not (root / "MANIFEST.json").exists()


def test_dvs_gesture_uncompressed_tar(cfg_for, synth):
    """tonic's .tar.gz archives also pass as plain .tar files (same content)."""
    cfg = cfg_for("dvs-gesture", time_bins=2, downsample=32, denoise_us=0)
    folder = Path(cfg.raw_dir) / "dvs-gesture" / "DVSGesture"
    synth.make_dvs_gesture(folder)
    sums = {}
    for split in ("Train", "Test"):
        tgz = folder / f"ibmGesture{split}.tar.gz"
        tar = gzip.decompress(tgz.read_bytes())
        (folder / f"ibmGesture{split}.tar").write_bytes(tar)
        tgz.unlink()
        sums[tgz.name] = sha256(tar)  # the content of the published .tar.gz
    warnings = []
    raw = download(cfg, checksums=sums, warn=warnings.append)
    assert "ibmGestureTrain.tar, ibmGestureTest.tar trusted" in warnings[0]
    assert len(list((raw / "DVSGesture" / "ibmGestureTrain").rglob("*.npy"))) == 8
    assert load_processed(preprocess(cfg)).meta["sizes"] == {"train": 8, "test": 4}
