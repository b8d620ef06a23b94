"""Whether the data stages draw progress bars: only when asked and stderr is a terminal.

A bar redraws itself with carriage returns; in a log file (CI, ``nohup``, ``dvc exp run
--queue``, ``2>&1 | tee``) that is kilobytes of frames, so there the stages print only
their one-line messages."""

from __future__ import annotations

import sys


def bars_shown(enabled: bool) -> bool:
    """``enabled`` and stderr is a terminal."""
    if not enabled:
        return False
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
