"""The exception types whose message is meant for the user: the command-line entry points
(``dpap``, ``pipeline/*.py``) print them as one line, never a traceback."""

from __future__ import annotations

import importlib

USER_ERRORS = (
    ("dpap.config", "ConfigError"),
    ("dpap.networks", "ArchError"),
    ("dpap.training", "DivergedError"),
    ("dpap.data", "DataError"),
    ("dpap.evaluation", "ModelFileError"),
    ("dpap.outputs", "OutputError"),
    ("dpap.neurobench_metrics", "NeuroBenchError"),
    ("dpap.tracking", "TrackingStoreError"),
    ("dpap.search", "SearchError"),
    ("dpap.allocator", "AllocatorError"),
)


def user_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS` that can be imported here (an optional part missing is skipped),
    then ``extra``. Called when an exception is caught, so nothing is imported sooner."""
    errors: list[type[BaseException]] = []
    for module, name in USER_ERRORS:
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except ImportError:  # pragma: no cover - an optional part is not installed
            pass
    return (*errors, *extra)
