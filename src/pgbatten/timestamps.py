"""Timestamps as pgbatten writes them in JSON documents and state files: UTC, ISO 8601, ending in ``Z``."""

from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime) -> str:
    """``value`` in UTC as ISO 8601 with ``Z``: ``2030-06-01T12:00:00Z``."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: object) -> dt.datetime:
    """The inverse of :func:`iso` (any ISO 8601 offset is accepted); a timestamp without a time zone is an
    error (``ValueError``), and so is anything but a string (``TypeError``)."""
    if not isinstance(text, str):
        raise TypeError("timestamp must be a string")
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return value.astimezone(dt.UTC)
