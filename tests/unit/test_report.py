"""The human checklist: dynamic text is shown as written, never read as rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from pgbatten.findings import Finding
from pgbatten.probe.check import CheckResult, VerifyFull
from pgbatten.probe.wire import Target
from pgbatten.report import print_check


def render(result: CheckResult) -> str:
    out = io.StringIO()
    print_check(Console(file=out, width=200, color_system=None), result)
    return out.getvalue()


def result(**changes: object) -> CheckResult:
    base: dict[str, object] = {
        "target": Target("::1", 5432),
        "reachable": True,
        "plaintext_accepted": False,
        "tls_supported": True,
        "protocols": ("TLSv1.3",),
        "cipher": "TLS_AES_128_GCM_SHA256",
        "certificate": None,
        "verify_full": (VerifyFull("::1", True, "IP SAN ::1 matches '::1'", True, "chain [ok]"),),
        "findings": (Finding(id="x", severity="low", title="title with [brackets]"),),
        "grade": "A",
        "connections_used": 3,
    }
    base.update(changes)
    return CheckResult(**base)  # type: ignore[arg-type]


def test_ipv6_target_and_brackets_are_printed_literally() -> None:
    text = render(result())
    assert text.startswith("[::1]:5432  grade A")
    assert "verify-full for ::1: IP SAN ::1 matches '::1'; chain [ok]" in text
    assert "title with [brackets]" in text
    assert "[green]" not in text and "[/]" not in text


def test_unreachable_shows_the_reason() -> None:
    text = render(result(reachable=False, error="connection refused [errno 111]", grade="-"))
    assert "unreachable: connection refused [errno 111]" in text
    assert "plaintext" not in text


def render_summary(*results: CheckResult) -> str:
    from pgbatten.report import print_summary

    out = io.StringIO()
    print_summary(Console(file=out, width=250, color_system=None), list(results))
    return out.getvalue()


def test_summary_shows_dynamic_text_literally_and_survives_hostile_bytes() -> None:
    # What a non-PostgreSQL service sent is part of the error; it must not be read as markup.
    hostile = result(reachable=False, error="not a PostgreSQL answer to SSLRequest: '[/]'", grade="-")
    refused = result(target=Target("::2", 5432), reachable=False, error="refused [errno 111]", grade="-")
    text = render_summary(hostile, refused, result())
    assert "not a PostgreSQL answer to SSLRequest: '[/]'" in text
    assert "refused [errno 111]" in text
    assert "title with [brackets]" in text
    assert "[::2]:5432" in text


def test_older_clients_and_the_buffered_plaintext_probe_are_shown() -> None:
    old = VerifyFull(
        "127.0.0.1",
        True,
        "IP SAN 127.0.0.1 matches",
        True,
        "chain ok",
        old_client_name_ok=False,
        old_client_name_reason="libpq before 15 ignores the IP SANs (127.0.0.1)",
    )
    text = render(result(verify_full=(old,), buffered_plaintext_processed=True))
    assert "with libpq before 15: libpq before 15 ignores the IP SANs (127.0.0.1)" in text
    assert "✗ plaintext sent before the TLS handshake refused (CVE-2021-23214)" in text
