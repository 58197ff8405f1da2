"""What the attacker tools report: one decoded unit of a connection's bytes, and the helpers that make any
byte safe to print.

Every event says which way its bytes went, what the protocol calls it, one printable summary line and the
decoded values by name. Offsets and sizes locate it in its direction's byte stream, so a capture's events
tile it exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

SUMMARY_LIMIT = 160
"""Longest decoded value shown in a summary; captures can hold megabytes."""


class Direction(StrEnum):
    """Which way the bytes went."""

    FRONTEND = "client"  # client to server
    BACKEND = "server"  # server to client


@dataclass(frozen=True)
class WireEvent:
    """One decoded unit of a capture: a protocol message, a one-byte answer, a TLS record, or a problem.

    ``kind`` is the protocol's name for it (``StartupMessage``, ``DataRow``, ``TLSRecord``...) or
    ``truncated``/``malformed``; ``summary`` is one printable line; ``fields`` holds the decoded values
    by name, in wire order. ``offset`` and ``size`` locate it in its direction's byte stream.
    """

    direction: Direction
    kind: str
    summary: str
    fields: tuple[tuple[str, str], ...] = ()
    offset: int = 0
    size: int = 0

    def get(self, name: str) -> str | None:
        """The first field called ``name``, or None."""
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def values(self, name: str) -> list[str]:
        """Every field called ``name`` (a DataRow has one ``value`` per column)."""
        return [value for key, value in self.fields if key == name]

    def to_json(self) -> dict[str, object]:
        """The event as a JSON object; repeated field names (a row's values) become lists."""
        fields: dict[str, object] = {}
        for key, value in self.fields:
            if key in fields:
                previous = fields[key]
                fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                fields[key] = value
        return {
            "direction": str(self.direction),
            "kind": self.kind,
            "summary": self.summary,
            "fields": fields,
            "offset": self.offset,
            "size": self.size,
        }


def printable(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` with control characters escaped and cut to ``limit`` characters, safe for any terminal."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return out[:limit] + "..." if len(out) > limit else out


def text_of(raw: bytes) -> str:
    """Bytes off the wire as text: UTF-8 where it is, replacement characters where it is not."""
    return raw.decode("utf-8", errors="replace")


class Short(Exception):
    """A message body ended before a field it announces. Decoders turn it into a ``malformed`` event."""


class Body:
    """Bounds-checked reads over one message body: every short read raises :class:`Short`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Short
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def int8(self) -> int:
        return self.take(1)[0]

    def int16(self) -> int:
        value: int = struct.unpack("!h", self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack("!i", self.take(4))[0]
        return value

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end == -1:
            raise Short
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return text_of(raw)
