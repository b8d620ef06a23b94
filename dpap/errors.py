"""The one base class of every error whose message is meant for the user.

The command-line entry points (``dpap`` and every ``pipeline/*.py`` stage) catch
:class:`DPAPError`, print ``error: <message>`` on one line (no traceback) and exit with the
status of its kind (:attr:`DPAPError.exit_code`, listed in ``docs/faults.md``):

====  ==============================================================================
1     bad input or a refusing environment: params.yaml, a value of a flag, a data
      set, a model file, an architecture, a full disk, a locked store, a missing
      optional part
2     a command line argparse cannot parse (an unknown flag, a missing argument)
3     the run could not go on: training diverged or stopped learning
130   interrupted (Ctrl-C or SIGTERM)
====  ==============================================================================

Each layer defines its own subclasses (``ConfigError`` here, ``ArchError`` in
:mod:`dpap.snn.networks`, ``DataError`` in :mod:`dpap.data.errors`, ...); this module
imports nothing of dpap, so every layer can use it.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 1
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130


class DPAPError(Exception):
    """An error a user can act on; its message is one line that says what and how to fix."""

    exit_code = EXIT_BAD_INPUT


class RunError(DPAPError):
    """The run itself could not go on (not the input's fault as far as dpap can tell)."""

    exit_code = EXIT_RUN_FAILED


class ConfigError(DPAPError, ValueError):
    """A value in params.yaml (or an override, or a flag) is missing, unknown, mistyped or
    out of range."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (its type name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
