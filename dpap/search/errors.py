"""The search's one error type: bad search input, or a study or storage that cannot be used."""

from dpap.errors import DPAPError


class SearchError(DPAPError, ValueError):
    """Bad search input or a study that cannot be resumed; the CLI prints it as one line."""
