"""The export's one error: a network the format cannot express."""

from dpap.errors import DPAPError


class ExportError(DPAPError, ValueError):
    """A network the export format cannot express (the message says which layer and why)."""
