"""``pgbatten demo`` end to end against real PostgreSQL: the card number on the wire before, gone after."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from pgbatten.cluster.temp import TempCluster
from pgbatten.demo import run as demo_run
from pgbatten.demo.run import CARD_NUMBER, CARDS, QUERY, demonstrate, run_demo

pytestmark = pytest.mark.integration


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, no_color=True), out


def _relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("relay-", "mitm-"))]


@pytest.mark.usefixtures("pg_binaries")
def test_demo_shows_the_card_before_and_only_tls_after() -> None:
    console, out = _console()
    outcome = demonstrate(console)

    assert outcome.before.contains(CARD_NUMBER.encode())
    assert outcome.before.contains(QUERY.encode())
    rows = outcome.before.decode().of_kind("DataRow")
    assert [r.values("value") for r in rows] == [list(row) for row in CARDS]

    assert outcome.after is not None
    for _, card in CARDS:
        assert not outcome.after.contains(card.encode())
        assert not outcome.after.contains(card.replace(" ", "").encode())
    assert not outcome.after.contains(QUERY.encode())
    kinds = {e.kind for e in outcome.after.decode().events}
    assert kinds == {"SSLRequest", "SSLAnswer", "TLSRecord"}
    assert outcome.after.client_bytes.startswith(bytes.fromhex("0000000804d2162f"))
    assert outcome.after.server_bytes[:1] == b"S"

    assert outcome.plaintext_refused
    assert outcome.refused is not None
    assert not outcome.refused.decode().of_kind("PasswordMessage")
    assert outcome.before_check is not None and outcome.before_check.plaintext_accepted is True
    assert outcome.after_check is not None and outcome.after_check.plaintext_accepted is False
    # The man in the middle: the require client is read though encrypted, verify-full refuses him.
    assert outcome.require_read and outcome.verify_full_refused
    fooled = outcome.mitm_require
    assert fooled is not None and fooled.verdict == "read" and fooled.client_tls and fooled.password
    assert fooled.queries == [QUERY]
    read = [e.values("value") for e in fooled.events if e.kind == "DataRow"]
    assert read == [list(row) for row in CARDS]
    strict = outcome.mitm_verify_full
    assert strict is not None and not strict.startup and strict.password is None
    assert strict.refusal is not None and "alert" in strict.refusal
    assert outcome.exit_code == 0

    text = out.getvalue()
    assert "AuthenticationMD5Password" in text
    assert "Proven" in text
    assert all(not p.exists() for p in outcome.workdirs)
    assert not _relay_threads()


@pytest.mark.usefixtures("pg_binaries")
def test_run_demo_exit_code_and_output() -> None:
    console, out = _console()
    assert run_demo(console) == 0
    text = out.getvalue()
    for heading in ("1. ", "2. ", "3. ", "4. ", "5. ", "6. ", "7. "):
        assert heading in text
    assert 'a client told to "Require SSL"' in text
    assert CARD_NUMBER in text  # the eavesdropper's decoded DataRow, before
    assert "no encryption" in text
    assert "\x1b[" not in text  # no escape codes when writing to a file


@pytest.mark.usefixtures("pg_binaries")
def test_interrupt_cleans_up_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Path] = []

    def interrupted(console: Console, cluster: TempCluster, ca_dir: Path) -> tuple[Path, str]:
        made.extend([cluster.root, ca_dir.parent])
        assert cluster.root.exists() and ca_dir.parent.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_run, "_run_secure", interrupted)
    console, _ = _console()
    with pytest.raises(KeyboardInterrupt):
        demonstrate(console)
    assert len(made) == 2
    assert all(not p.exists() for p in made)
    assert not _relay_threads()
