"""The errors of attaching to a model, compacting it and reading NIR graphs."""

from dpap.errors import DPAPError


class AttachError(DPAPError, ValueError):
    """A model that ``dpap.attach`` cannot prune as asked: the message names what and how to fix it."""


class CompactError(DPAPError, ValueError):
    """A model that ``dpap.compact`` cannot make smaller with the same outputs."""
