"""The process's memory allocator: keep freed memory for the next step.

glibc's ``malloc`` gives large blocks back to the kernel as soon as they are freed (blocks
it served with ``mmap``, and the top of the heap beyond ``M_TRIM_THRESHOLD``), so a
training step or an inference pass whose activations are as large as the last one's asks
the kernel for the same amount again and takes a page fault on every 4 KiB of it. On the
paper's MNIST net (one thread, batch 100) that is 4,700-11,300 page faults per dense
training step, 9-28 ms of system time of a 120-180 ms step, and 124,000 faults per
inference pass in one batch of 1000 (816 ms a pass instead of 341 ms); how many depends
on the heap's history, which is why the same code measured fast or slow from run to run
(docs/compaction.md §3). PyTorch keeps no cache of CPU memory of its own.

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve every block from its heap
(``M_MMAP_MAX`` 0) and never to shrink the heap (``M_TRIM_THRESHOLD``), so that freed
activations are reused by the next step. The cost: the process keeps its peak memory
until it ends instead of returning it between steps (peak 1.23-1.25 → 1.30-1.33 GB in
``benchmarks/compaction.py``'s dense training and inference). It changes the whole process, so the
library never calls it on import: the programs do (the ``dpap`` command, the pipeline's
stage scripts, search workers, the benchmarks); call it yourself at the start of a
program of your own. ``DPAP_MALLOC=default`` leaves glibc as it is, and so does a
``MALLOC_*`` or ``GLIBC_TUNABLES`` malloc setting of the user's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
"""``mallopt`` parameters (``<malloc.h>``)."""

TOP_PAD = 64 << 20
"""Grow the heap by this much more than asked (fewer ``brk`` calls while it grows)."""

ENV = "DPAP_MALLOC"
CHOICES = ("keep", "default")


class AllocatorError(ValueError):
    """A bad ``DPAP_MALLOC``."""


def _user_tuned() -> bool:
    """Whether the environment already tunes glibc's malloc (the user's settings win)."""
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> str:
    """Tell glibc's ``malloc`` to keep freed memory in the process (module docstring).

    Returns what was done, in a few words: ``kept``, or why not (``DPAP_MALLOC=default``,
    the user's own ``MALLOC_*``/``GLIBC_TUNABLES``, not glibc). Safe to call more than
    once and at any time: blocks already handed back are simply faulted in once more."""
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in CHOICES:
        raise AllocatorError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(CHOICES)} (keep: reuse freed memory, the default)")
    if choice == "default":
        return f"{ENV}=default: glibc defaults"
    if _user_tuned():
        return "the environment's malloc settings"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc: the system allocator as it is"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and libc.mallopt(M_TOP_PAD, TOP_PAD)
    return "kept" if ok else "mallopt refused: glibc defaults"
