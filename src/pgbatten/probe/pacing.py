"""Fleet pacing: a probe waiting on a silent peer gives its concurrency slot to a target that answers.

``check --concurrency N`` bounds the targets probed at once, to bound the load on servers and on this
machine. A target that accepted a TCP connection and then says nothing (a blackhole, a dead proxy, a
server stuck in its listen queue) costs neither while it is silent, yet held a slot for a whole
``--timeout``: responsive targets listed after unresponsive ones waited behind them. So the fleet runner
gives each worker thread a :class:`Slot`, and the transport, once a peer has been silent for
:data:`GRACE` seconds, waits inside :func:`waiting`, which lends the slot out until the peer answers (or
the wait ends); the probe then takes a slot again before it goes on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

GRACE = 0.25
"""Seconds of silence after which a probe stops counting against the concurrency bound."""


class Slot:
    """One worker's share of a concurrency bound (a semaphore permit it holds while active)."""

    def __init__(self, bound: threading.Semaphore) -> None:
        self._bound = bound
        self.held = False

    def acquire(self) -> None:
        self._bound.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._bound.release()


_local = threading.local()


@contextlib.contextmanager
def holding(slot: Slot) -> Iterator[None]:
    """Run a probe in this thread holding ``slot`` (acquired now, released at the end)."""
    slot.acquire()
    _local.slot = slot
    try:
        yield
    finally:
        _local.slot = None
        slot.release()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Wait on a silent peer without holding the thread's slot (a no-op outside a fleet)."""
    slot: Slot | None = getattr(_local, "slot", None)
    if slot is None or not slot.held:
        yield
        return
    slot.release()
    try:
        yield
    finally:
        slot.acquire()


__all__ = ["GRACE", "Slot", "holding", "waiting"]
