"""Fleets: the targets file, and a concurrent runner that never hammers one server.

Every connection to PostgreSQL forks a backend, so the bound that matters is per server: at most
``per_server`` targets of one ``host:port`` are probed at the same time (each probe opens its connections one
after another), and at most ``concurrency`` probes run in all. Targets of one server are split into
``per_server`` lanes that run their targets in sequence, so a worker thread never sits blocked waiting for a
server's turn and the total bound is honoured exactly. A probe waiting on a silent peer does not count
against ``concurrency`` (:mod:`probe.pacing`), so unresponsive targets do not hold up responsive ones.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

from pgbatten.errors import FileProblem, UsageError
from pgbatten.probe import pacing
from pgbatten.probe.targets import is_conninfo, parse_target_text
from pgbatten.probe.wire import Target

R = TypeVar("R")

DEFAULT_CONCURRENCY = 16
DEFAULT_PER_SERVER = 1
MAX_THREADS = 128
"""Worker threads at most; at most ``concurrency`` of them probe actively, the rest wait on silent peers."""


def parse_targets_text(text: str, source: str = "<targets>") -> list[Target]:
    """One target a line, in any form ``check`` takes (``host[:port]``, a conninfo string, a URI,
    ``service=NAME``); ``#`` starts a comment; blank lines are skipped.

    A bad line is a :class:`UsageError` naming ``source:line``, raised before any connection is made.
    """
    targets: list[Target] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not is_conninfo(line) and len(line.split()) > 1:
            raise UsageError(f"{source}:{number}: one target per line, got {line!r}")
        try:
            targets.extend(parse_target_text(line))
        except UsageError as exc:
            raise UsageError(f"{source}:{number}: {exc}") from exc
    return targets


def read_targets_file(path: Path | str) -> list[Target]:
    """:func:`parse_targets_text` of a file; ``-`` reads standard input."""
    if str(path) == "-":
        return parse_targets_text(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileProblem(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise FileProblem(path, f"not UTF-8 text: {exc.reason}") from exc
    return parse_targets_text(text, str(path))


def server_key(target: Target) -> tuple[str, int]:
    """What counts as "one server" for the per-server bound: where we connect (case-folded) and port."""
    return target.address.lower(), target.port


def plan_lanes(targets: Sequence[Target], per_server: int) -> list[list[int]]:
    """Split target indexes into lanes: no two lanes of one server exceed ``per_server``. Pure.

    Targets of one server are dealt round-robin over at most ``per_server`` lanes; lanes are ordered so
    that the first lane of every server comes before any server's second lane (many servers start at once).
    """
    if per_server < 1:
        raise UsageError("--per-server must be at least 1")
    by_server: dict[tuple[str, int], list[list[int]]] = {}
    for index, target in enumerate(targets):
        lanes = by_server.setdefault(server_key(target), [])
        count = sum(len(lane) for lane in lanes)
        if len(lanes) < per_server:
            lanes.append([index])
        else:
            lanes[count % per_server].append(index)
    ordered: list[list[int]] = []
    depth = max((len(v) for v in by_server.values()), default=0)
    for level in range(depth):
        ordered.extend(lanes[level] for lanes in by_server.values() if level < len(lanes))
    return ordered


def run_fleet(
    targets: Sequence[Target],
    probe: Callable[[Target], R],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    per_server: int = DEFAULT_PER_SERVER,
    on_done: Callable[[Target, R], None] | None = None,
) -> list[R]:
    """``probe`` every target, at most ``concurrency`` at a time and ``per_server`` per server.

    Results come back in the order of ``targets``. ``probe`` must not raise for what a server does (the
    check never does); an exception from it is a bug and propagates after the running probes finish.
    ``on_done`` is called from worker threads as each target finishes (e.g. to advance a progress bar).
    """
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    lanes = plan_lanes(targets, per_server)
    results: dict[int, R] = {}
    bound = threading.Semaphore(concurrency)

    def run_lane(lane: Iterable[int]) -> None:
        for index in lane:
            with pacing.holding(pacing.Slot(bound)):
                result = probe(targets[index])
            results[index] = result
            if on_done is not None:
                on_done(targets[index], result)

    if not lanes:
        return []
    # More threads than slots: a probe waiting on a silent peer lends its slot (probe.pacing), and its
    # thread must not keep the next lane from starting.
    workers = min(len(lanes), max(concurrency, MAX_THREADS))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgbatten-check") as pool:
        futures = [pool.submit(run_lane, lane) for lane in lanes]
        for future in as_completed(futures):
            future.result()
    return [results[i] for i in range(len(targets))]


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PER_SERVER",
    "parse_targets_text",
    "plan_lanes",
    "read_targets_file",
    "run_fleet",
    "server_key",
]
