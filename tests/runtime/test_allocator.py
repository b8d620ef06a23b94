"""dpap.runtime.allocator: glibc keeps freed memory, so that a block as large as the last one
reuses its pages instead of faulting in fresh ones; the user's own settings win; a bad
``DPAP_MALLOC`` is one line from every entry point.

Each check runs in a fresh interpreter: ``mallopt`` changes the whole process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# 64 MiB blocks (aligned as PyTorch's CPU allocator asks), allocated, written and freed
# again and again: glibc's defaults serve a block that large with mmap and hand it back on
# free, so every round faults in its 16,384 pages; kept, the heap grows for some rounds
# and then settles (aligned blocks of one size), and the rounds after that fault nothing.
# How many rounds it grows depends on what the interpreter allocated before: 5-8 in one
# process, 12 under pytest-xdist, whose environment differs. So the warm-up runs until a
# round faults in less than 5 % of its pages, 30 rounds at most (the defaults never get
# there) and the next is as quiet, and then 7 rounds are counted, each measured as the
# warm-up's are (an allocation of the interpreter's own between rounds moves the heap's
# top otherwise, on some machines)
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, resource
    from dpap.runtime.allocator import keep_freed_memory
    said = keep_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, where huge pages are "always"
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 64 << 20
    def block():  # as torch.empty(...).fill_(1) then its release: 64-byte aligned
        p = ctypes.c_void_p()
        assert libc.posix_memalign(ctypes.byref(p), 64, SIZE) == 0
        ctypes.memset(p, 1, SIZE)
        libc.free(p)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def round_():  # one block, the pages it faulted in
        start = faults()
        block()
        return faults() - start
    quiet = 0
    for _ in range(30):
        quiet = quiet + 1 if round_() < (SIZE // 4096) // 20 else 0
        if quiet == 2:
            break
    counted = [round_() for _ in range(7)]
    print(said)
    print(sum(counted))
    """
)
PAGES = 7 * (64 << 20) // 4096


def probe(**env: str) -> tuple[str, int]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "DPAP_MALLOC")}
    e.update(env, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    said, faults = p.stdout.strip().splitlines()[-2:]
    return said, int(faults)


def test_freed_blocks_are_reused_not_faulted_in_again():
    said, faults = probe()
    assert said == "kept"
    assert faults < PAGES // 20, faults
    said, faults = probe(DPAP_MALLOC="default")
    assert said.startswith("DPAP_MALLOC=default")
    assert faults > PAGES * 0.8, faults  # the defaults: every round faults its pages in


def test_the_users_own_malloc_settings_win():
    said, faults = probe(MALLOC_TOP_PAD_="0")
    assert said == "left to the environment (MALLOC_TOP_PAD_ set)"
    assert faults > PAGES * 0.8, faults
    said, _ = probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000")
    assert said == "left to the environment (glibc.malloc.trim_threshold in GLIBC_TUNABLES)"
    said, _ = probe(LD_PRELOAD="libjemalloc.so.2.missing")
    assert said == "left to the environment (jemalloc in LD_PRELOAD)"
    # a debugging setting that does not touch these knobs does not turn the feature off
    said, faults = probe(MALLOC_PERTURB_="0", GLIBC_TUNABLES="glibc.malloc.tcache_count=4")
    assert said == "kept" and faults < PAGES // 20, (said, faults)


def test_a_bad_DPAP_MALLOC_is_one_line_from_each_entry_point(tmp_path):
    e = {**os.environ, "DPAP_MALLOC": "jemalloc", "PYTHONPATH": str(ROOT)}
    stage = subprocess.run([sys.executable, str(ROOT / "pipeline" / "check_params.py")], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    cli = subprocess.run([sys.executable, "-m", "dpap.cli", "search", "--params", "missing.yaml"], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=120)
    for p, status in ((stage, 1), (cli, 1)):  # one front door, one status per kind (dpap.errors)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == status and len(lines) == 1, p.stderr[-2000:]
        assert lines[0] == "error: DPAP_MALLOC='jemalloc': expected one of keep, default (keep: reuse freed memory, the default)", lines
