"""The tools pgbatten runs (psql as the owner, pg_ctl, initdb) never see the operator's PG* variables."""

from __future__ import annotations

import pytest

from pgbatten.cluster.osuser import OsUser, run_as, tool_environment


def test_pg_variables_are_removed_and_the_rest_kept() -> None:
    env = tool_environment(
        {"PGHOST": "/x", "PGSERVICE": "prod", "PSQLRC": "/evil", "PATH": "/bin", "LANG": "C"}
    )
    assert env == {"PATH": "/bin", "LANG": "C"}


def test_a_tool_started_by_run_as_sees_none_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "1")
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=1")
    out = run_as(OsUser.current(), ["env"], env={"PGCONNECT_TIMEOUT": "10"}, check=True)
    names = {line.split("=", 1)[0] for line in out.stdout.splitlines()}
    assert "PGPORT" not in names and "PGOPTIONS" not in names
    assert "PGCONNECT_TIMEOUT" in names  # what the caller passes on purpose still goes through
