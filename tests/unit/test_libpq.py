"""The one libpq-parameter builder: neither the home directory nor PG* reaches our connections."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgbatten import libpq


def test_pins_every_file_libpq_would_take_from_home() -> None:
    p = libpq.params(host="db", port=5433, user="alice")
    for keyword in ("sslcert", "sslkey", "sslrootcert", "sslcrl", "passfile"):
        assert p[keyword] == libpq.NO_FILE, keyword
    assert p["gssencmode"] == "disable"
    assert p["sslmode"] == "verify-full"
    assert p["application_name"] == "pgbatten"
    if libpq.libpq_knows("sslcertmode"):
        assert p["sslcertmode"] == "disable"


def test_client_certificate_is_sent_only_when_given(tmp_path: Path) -> None:
    cert = libpq.ClientCertificate(tmp_path / "c.crt", tmp_path / "c.key")
    p = libpq.params(host="db", port=5432, user="alice", client_certificate=cert)
    assert p["sslcert"] == str(tmp_path / "c.crt")
    assert p["sslkey"] == str(tmp_path / "c.key")
    assert p.get("sslcertmode", "allow") == "allow"


def test_pg_environment_cannot_change_a_keyword_we_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=evil")
    monkeypatch.setenv("PGCHANNELBINDING", "disable")
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "read-only")
    p = libpq.params(host="db", port=5432, user="alice")
    assert p["options"] == ""
    assert p["channel_binding"] == "prefer"
    assert p["target_session_attrs"] == "any"


def test_untouched_when_the_environment_is_clean() -> None:
    p = libpq.params(host="db", port=5432, user="alice", environ={})
    assert "options" not in p
    assert "channel_binding" not in p


def test_explicit_pg_variable_for_a_pinned_keyword_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "disable")
    monkeypatch.setenv("PGSSLCERT", "/home/someone/.postgresql/other.crt")
    p = libpq.params(host="db", port=5432, user="alice")
    assert p["sslmode"] == "verify-full"
    assert p["sslcert"] == libpq.NO_FILE


@pytest.mark.parametrize("awkward", ["with space", "quote'd", "back\\slash", "", "a=b"])
def test_conninfo_round_trips_through_libpq(awkward: str, tmp_path: Path) -> None:
    root = tmp_path / awkward / "root.crt"
    p = libpq.params(host="db", port=5432, user=awkward or "u", password=awkward, sslrootcert=root)
    parsed = conninfo_to_dict(libpq.conninfo(p))
    assert parsed["sslrootcert"] == str(root)
    assert parsed["password"] == awkward
    assert parsed["user"] == (awkward or "u")


def test_user_params_keep_what_the_user_wrote() -> None:
    p = libpq.user_params("postgresql://bob@db:5587/app?sslmode=require", application_name="pgbatten")
    assert p["host"] == "db"
    assert p["port"] == "5587"
    assert p["user"] == "bob"
    assert p["sslmode"] == "require"
    assert p["application_name"] == "pgbatten"
    assert (
        libpq.user_params("application_name=mine", application_name="pgbatten")["application_name"] == "mine"
    )
