"""The I/O half of the server-side audit where no server is needed: a DSN that leads nowhere."""

from __future__ import annotations

import socket

from pgbatten.audit import server_audit


def _closed_port() -> int:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port: int = placeholder.getsockname()[1]
    return port


def test_unconnectable_dsn_is_a_high_finding_not_a_clean_audit() -> None:
    audit = server_audit(f"host=127.0.0.1 port={_closed_port()} user=nobody sslmode=disable", timeout=2)
    assert audit.errors and "cannot connect" in audit.errors[0]
    [finding] = audit.findings
    assert finding.id == "server-audit-failed"
    assert finding.severity == "high"
    assert "cannot connect" in finding.detail


def test_invalid_dsn_is_a_high_finding() -> None:
    audit = server_audit("host=127.0.0.1 nonsense_option=1", timeout=2)
    assert audit.errors and "invalid DSN" in audit.errors[0]
    assert [f.id for f in audit.findings] == ["server-audit-failed"]
