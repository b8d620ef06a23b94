"""The one front door of every command (``dpap ...`` and each ``pipeline/*.py`` stage):
what a user sees when something goes wrong, and the exit status.

:func:`guarded` runs a command's function and turns a :class:`~dpap.errors.DPAPError` into
``error: <one line>`` on stderr and the error's :attr:`~dpap.errors.DPAPError.exit_code`
(``docs/faults.md``); a write that a full or read-only disk refuses is reported the same
way; Ctrl-C and SIGTERM end with 130. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
from typing import Callable

from dpap.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, DPAPError, one_line
from dpap.runtime.allocator import keep_freed_memory
from dpap.runtime.interrupts import interrupt_handler
from dpap.runtime.outputs import FULL, output_error


def guarded(fn: Callable[[], int | None], interrupted: str = "interrupted; run the same command again to resume", signals: bool = True) -> int:
    """Run ``fn()`` and return its exit status (errors as described in the module).

    With ``signals``, SIGTERM is handled as Ctrl-C (``KeyboardInterrupt``), and SIGINT even
    when the parent ignored it (a shell does that to commands it starts with ``&``); both
    wait for an MLflow write in progress to end (:mod:`dpap.runtime.interrupts`). First,
    glibc is told to keep freed memory for the next step (:mod:`dpap.runtime.allocator`;
    ``DPAP_MALLOC=default`` leaves it as it is)."""
    if signals:
        signal.signal(signal.SIGTERM, interrupt_handler)
        signal.signal(signal.SIGINT, interrupt_handler)
    try:
        keep_freed_memory()
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DPAPError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except FileNotFoundError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full or read-only disk under a write the library did not wrap
        if exc.errno not in (*FULL, errno.EROFS) or not exc.filename:
            raise
        error = output_error(exc, exc.filename)
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
