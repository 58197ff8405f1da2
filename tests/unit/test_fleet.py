"""Fleets: the targets file, the lane plan, and a 20-target run with closed and blackholed ports.

The servers are loopback threads: TLS-speaking fake PostgreSQL servers (Python's ssl), closed ports (refused
at once) and listening sockets that never accept (the kernel completes the TCP handshake, nobody answers:
a timeout). No timing is asserted; ``scripts/bench_fleet.py`` prints the wall time of the same fleet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from pgbatten.cli import main
from pgbatten.errors import UsageError
from pgbatten.probe import check_target, exit_status
from pgbatten.probe.check import CheckResult
from pgbatten.probe.fleet import parse_targets_text, plan_lanes, read_targets_file, run_fleet
from pgbatten.probe.wire import SSL_REQUEST_CODE, Target
from tests.unit.test_probe_fakeservers import (
    NO_ENCRYPTION,
    FakeServer,
    Pki,
    make_pki,
    recv_exact,
    server_context,
    wait_for_close,
)

# --------------------------------------------------------------------------------------------- parsing


def test_targets_file_parsing(tmp_path: Path) -> None:
    text = "# fleet\n\ndb1.example.com\n  db2.example.com:5433  # replica\n[::1]:6432\n127.0.0.1\n"
    assert parse_targets_text(text) == [
        Target("db1.example.com", 5432),
        Target("db2.example.com", 5433),
        Target("::1", 6432),
        Target("127.0.0.1", 5432),
    ]
    path = tmp_path / "targets"
    path.write_text(text)
    assert len(read_targets_file(path)) == 4


@pytest.mark.parametrize(
    ("text", "line"),
    [("db1\ndb2:notaport\n", 2), ("# c\n\na b\n", 3), ("db:70000\n", 1)],
)
def test_bad_target_lines_name_file_and_line(text: str, line: int) -> None:
    with pytest.raises(UsageError) as info:
        parse_targets_text(text, "fleet.txt")
    message = str(info.value)
    assert message.startswith(f"fleet.txt:{line}: ")
    assert "\n" not in message


def test_missing_targets_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--targets-file", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_cli_bad_line_is_one_line_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    path.write_text("127.0.0.1:1\nbad host name!\n")
    result = CliRunner().invoke(main, ["check", "--targets-file", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_lanes_bound_each_server() -> None:
    targets = [Target("a", 1)] * 5 + [Target("B", 2), Target("b", 2), Target("c", 3)]
    lanes = plan_lanes(targets, per_server=1)
    # One lane per server, holding every target of that server; case-folded host names are one server.
    assert sorted(sorted(lane) for lane in lanes) == [[0, 1, 2, 3, 4], [5, 6], [7]]
    lanes2 = plan_lanes(targets, per_server=2)
    assert len(lanes2) == 5
    assert sorted(i for lane in lanes2 for i in lane) == list(range(8))
    # First lanes of every server come first, so many servers start at once.
    assert {targets[lane[0]].host.lower() for lane in lanes2[:3]} == {"a", "b", "c"}


def test_run_fleet_respects_bounds() -> None:
    targets = [Target("a", 1)] * 6 + [Target("b", 1)] * 6 + [Target(f"h{i}", 1) for i in range(8)]
    lock = threading.Lock()
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    total = [0, 0]
    release = threading.Event()

    def probe(target: Target) -> str:
        with lock:
            active[target.host] = active.get(target.host, 0) + 1
            peak[target.host] = max(peak.get(target.host, 0), active[target.host])
            total[0] += 1
            total[1] = max(total[1], total[0])
        release.wait(0.01)
        with lock:
            active[target.host] -= 1
            total[0] -= 1
        return target.host

    done: list[str] = []
    results = run_fleet(targets, probe, concurrency=4, per_server=2, on_done=lambda t, r: done.append(r))
    assert results == [t.host for t in targets]  # input order, whatever the completion order
    assert sorted(done) == sorted(results)
    assert peak["a"] <= 2 and peak["b"] <= 2
    assert total[1] <= 4


# --------------------------------------------------------------------------------------------- live fleet


@dataclass
class TlsPg:
    """A fake PostgreSQL with TLS that, like the real one, hangs up on a startup packet of absurd length."""

    tls: object

    def __call__(self, conn: socket.socket) -> None:
        header = recv_exact(conn, 8)
        if len(header) < 8:
            return
        length, code = struct.unpack("!II", header)
        if code == SSL_REQUEST_CODE:
            conn.sendall(b"S")
            import ssl

            assert isinstance(self.tls, ssl.SSLContext)
            with self.tls.wrap_socket(conn, server_side=True) as tls:
                wait_for_close(tls)
            return
        if length > 10_000:
            return  # "invalid length of startup packet": PostgreSQL closes without a word
        recv_exact(conn, length - 8)
        conn.sendall(NO_ENCRYPTION)
        wait_for_close(conn)


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port where TCP connects but nothing ever answers (never accept()ed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def fleet(tmp_path: Path, reachable: int = 10, closed: int = 5, holes: int = 5) -> Iterator[list[Target]]:
    """``reachable`` TLS servers, ``closed`` refused ports and ``holes`` blackholed ports, interleaved."""
    pki: Pki = make_pki(tmp_path, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    ctx = server_context(pki)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(FakeServer(TlsPg(ctx), max_connections=80)) for _ in range(reachable)]
        hole_ports = [stack.enter_context(blackhole()) for _ in range(holes)]
        closed_ports = [closed_port() for _ in range(closed)]
        targets = [s.target for s in servers]
        targets += [Target("127.0.0.1", p) for p in closed_ports + hole_ports]
        yield targets


def test_twenty_targets_ten_unreachable(tmp_path: Path) -> None:
    with fleet(tmp_path) as targets:

        def probe(target: Target) -> CheckResult:
            return check_target(target, timeout=1.0, full=True)

        results = run_fleet(targets, probe, concurrency=16, per_server=1)
    assert [r.target for r in results] == targets
    good, bad = results[:10], results[10:]
    for r in good:
        assert r.reachable, r.error
        assert r.protocols == ("TLSv1.2", "TLSv1.3")
        assert r.ciphers["TLSv1.3"]
        assert r.plaintext_accepted is False
        assert r.direct_ssl is False
        assert r.connections_used == sum(r.connections_by_step.values())
    for r in bad[:5]:
        assert not r.reachable
        assert r.error == "connection refused"
        assert r.connections_used == 0
    for r in bad[5:]:
        assert not r.reachable
        assert r.error is not None and "no answer" in r.error
        assert r.connections_used == 1
    assert exit_status(results) == 3


def test_cli_fleet_json_and_summary(tmp_path: Path) -> None:
    import json

    with fleet(tmp_path, reachable=2, closed=1, holes=0) as targets:
        path = tmp_path / "fleet.txt"
        path.write_text("# two servers\n" + "\n".join(str(t) for t in targets[:2]) + "\n")
        runner = CliRunner()
        as_json = runner.invoke(
            main, ["check", "--json", "--timeout", "1", "--targets-file", str(path), str(targets[2])]
        )
        text = runner.invoke(main, ["check", "--quick", "--timeout", "1", *(str(t) for t in targets)])
    assert as_json.exit_code == 3, as_json.output
    docs = json.loads(as_json.output)
    assert [d["target"] for d in docs] == [str(targets[2]), str(targets[0]), str(targets[1])]
    assert docs[0]["reachable"] is False
    assert docs[1]["mode"] == "full" and docs[1]["ciphers"]["TLSv1.3"]
    assert all(f["cis"] is None or f["cis"].startswith("CIS PostgreSQL") for d in docs for f in d["findings"])
    assert text.exit_code == 3
    assert "Summary (worst first)" in text.output
    summary = text.output.split("Summary (worst first)")[1]
    # The unreachable target leads the table.
    assert summary.index(str(targets[2])) < summary.index(str(targets[0]))


def test_a_bug_met_on_one_target_does_not_abort_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong inside one target's audit, the others are audited and reported."""
    from pgbatten.probe import tls as tlsio

    real = tlsio.first_handshake

    def first_handshake(host: str, port: int, *, timeout: float, **options: Any) -> tlsio.TlsScan:
        if port == 1:
            raise RuntimeError("boom")  # stands in for any bug a hostile server might trigger
        return real(host, port, timeout=timeout, **options)

    monkeypatch.setattr(tlsio, "first_handshake", first_handshake)
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed = placeholder.getsockname()[1]
    targets = [Target("127.0.0.1", 1), Target("127.0.0.1", closed)]
    results = run_fleet(targets, lambda t: check_target(t, timeout=0.5, full=True), concurrency=2)
    bad, other = results
    assert not bad.reachable and bad.grade == "-"
    assert bad.error is not None and "RuntimeError: boom" in bad.error
    assert other.error is not None and "refused" in other.error
    assert exit_status(results) == 3


def test_a_silent_target_does_not_hold_up_a_responsive_one(tmp_path: Path) -> None:
    """With one slot, a blackholed target listed first lends its slot while silent: the other ends first."""
    pki: Pki = make_pki(tmp_path, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    with FakeServer(TlsPg(server_context(pki)), max_connections=80) as server, blackhole() as hole:
        targets = [Target("127.0.0.1", hole), server.target]
        done: list[Target] = []
        results = run_fleet(
            targets,
            lambda t: check_target(t, timeout=2.0, full=True),
            concurrency=1,
            on_done=lambda t, _r: done.append(t),
        )
    assert done == [server.target, targets[0]]
    assert results[1].reachable and not results[0].reachable
