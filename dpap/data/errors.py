"""The one exception the data stages raise."""

from __future__ import annotations

from dpap.errors import DPAPError


class DataError(DPAPError, RuntimeError):
    """A data set is unknown, missing, corrupt, or cannot be fetched.

    The message is a single line meant for the user: the CLI prints ``error: <message>``
    and exits 1, without a traceback."""
