"""The process's memory allocator: keep freed memory for the next step.

glibc's ``malloc`` gives large blocks back to the kernel as soon as they are freed (blocks
it served with ``mmap``, and the top of the heap beyond ``M_TRIM_THRESHOLD``), so a
training step or an inference pass whose activations are as large as the last one's asks
the kernel for the same amount again and takes a page fault on every page of it, in
numbers that depend on the heap's history, so the same step runs fast or slow from run to
run (figures: docs/compaction.md). PyTorch keeps no cache of CPU memory of its own.

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve the blocks of the main
thread's arena from its heap (``M_MMAP_MAX`` 0) and not to shrink that heap until 2 GiB
are free at its top (``M_TRIM_THRESHOLD``, the largest value ``mallopt`` takes), so that
freed activations are reused by the next step. Other threads' arenas (OpenMP workers,
autograd's CUDA thread) grow in sub-heaps of at most 64 MiB: a larger block there is
still served with ``mmap``, and an empty sub-heap is still handed back. The cost: the
process keeps its peak memory until it ends instead of returning it between steps (a few
percent more at the peak: docs/compaction.md); large ``calloc`` blocks are zeroed by hand
rather than by the kernel.

It changes the whole process, so the library never calls it on import: the programs do
(the ``dpap`` command, the pipeline's stage scripts, search workers, the speed
benchmarks); call it yourself at the start of a program of your own.
``DPAP_MALLOC=default`` leaves glibc as it is, and so does a setting of the user's own
for the same four knobs (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, or their ``glibc.malloc.*`` tunables in
``GLIBC_TUNABLES``) or another allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc,
mimalloc).
"""

from __future__ import annotations

from dpap.errors import DPAPError

import ctypes
import os
import platform
from typing import Optional

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
"""``mallopt`` parameters (``<malloc.h>``)."""

TOP_PAD = 64 << 20
"""Grow the heap by this much more than asked (fewer ``brk`` calls while it grows)."""

ENV = "DPAP_MALLOC"
CHOICES = ("keep", "default")


class AllocatorError(DPAPError, ValueError):
    """A bad ``DPAP_MALLOC``."""


KNOBS = ("trim_threshold", "top_pad", "mmap_threshold", "mmap_max")
"""glibc's malloc settings this module sets; a user's own setting of any of them wins."""

OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def _user_tuned() -> Optional[str]:
    """What in the environment already decides these knobs (the user's settings win), or None."""
    for knob in KNOBS:
        if f"MALLOC_{knob.upper()}_" in os.environ:
            return f"MALLOC_{knob.upper()}_ set"
        if f"glibc.malloc.{knob}" in os.environ.get("GLIBC_TUNABLES", ""):
            return f"glibc.malloc.{knob} in GLIBC_TUNABLES"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in OTHER_ALLOCATORS:
        if name in preload:
            return f"{name} in LD_PRELOAD"
    return None


def keep_freed_memory() -> str:
    """Tell glibc's ``malloc`` to keep freed memory in the process (module docstring).

    Returns what was done, in a few words: ``kept``, or why not (``DPAP_MALLOC=default``,
    the user's own settings or allocator, not glibc). Safe to call more than once and at
    any time (``M_MMAP_MAX`` 0 takes effect for every later block): blocks already handed
    back are simply faulted in once more."""
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in CHOICES:
        raise AllocatorError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(CHOICES)} (keep: reuse freed memory, the default)")
    if choice == "default":
        return f"{ENV}=default: glibc defaults"
    theirs = _user_tuned()
    if theirs is not None:
        return f"left to the environment ({theirs})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc: the system allocator as it is"
    libc = ctypes.CDLL("libc.so.6")
    ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and libc.mallopt(M_TOP_PAD, TOP_PAD)
    return "kept" if ok else "mallopt refused: glibc defaults"
