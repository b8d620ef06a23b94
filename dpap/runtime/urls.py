"""Database URLs as messages, logs and MLflow show them: a password masked."""

from __future__ import annotations


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a file path."""
    return "://" in text


def masked_url(text: str) -> str:
    """``text`` with a URL's password masked (``***``); anything else, and a URL that
    sqlalchemy cannot parse or without sqlalchemy installed, unchanged."""
    if not is_url(text):
        return text
    try:
        from sqlalchemy.engine import make_url  # optional: the RDB storages' driver layer

        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy can parse: its user says so
        return text
