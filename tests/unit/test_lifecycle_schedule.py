"""The scheduled job as text: systemd quoting that round-trips, the right user, and a cron line that keeps
its exit status and cannot be cut by cron's % rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.cluster.osuser import OsUser
from pgbatten.errors import UsageError
from pgbatten.lifecycle.schedule import (
    Job,
    cron_line,
    renew_argv,
    run_as_user,
    service_unit,
    systemd_quote,
    systemd_unquote,
    timer_unit,
)

ROOT = OsUser("root", 0, 0, Path("/root"))
POSTGRES = OsUser("postgres", 101, 101, Path("/var/lib/postgresql"))
ALICE = OsUser("alice", 1000, 1000, Path("/home/alice"))


def job(user: OsUser = ROOT, ca: str = "/etc/pgbatten/ca") -> Job:
    argv = renew_argv(["/usr/local/bin/pgbatten"], ["--cluster", "15/main"], Path(ca))
    return Job(argv=argv, user=user, description="15/main")


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return systemd_unquote(line.removeprefix("ExecStart="))


def test_service_runs_renew_with_real_paths_and_yes() -> None:
    unit = service_unit(job())
    assert exec_start(unit) == [
        "/usr/local/bin/pgbatten",
        "renew",
        "--cluster",
        "15/main",
        "--ca-dir",
        "/etc/pgbatten/ca",
        "--yes",
    ]
    assert "Type=oneshot" in unit and "StandardOutput=journal" in unit
    assert "User=" not in unit  # root


def test_service_names_the_user_only_as_a_system_unit() -> None:
    assert "User=postgres" in service_unit(job(POSTGRES))
    assert "User=" not in service_unit(job(POSTGRES), system=False)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_systemd_quoting_round_trips(arg: str) -> None:
    assert systemd_unquote(systemd_quote(arg)) == [arg]


def test_systemd_quoting_escapes_specifiers_and_refuses_newlines() -> None:
    assert systemd_quote("/srv/ca 100%") == '"/srv/ca 100%%"'
    assert systemd_quote("$HOME") == '"$$HOME"'
    with pytest.raises(UsageError):
        systemd_quote("a\nb")


def test_timer_is_daily_randomised_and_persistent() -> None:
    unit = timer_unit(job())
    assert "OnCalendar=daily" in unit and "Persistent=true" in unit and "RandomizedDelaySec=1h" in unit
    assert "WantedBy=timers.target" in unit


def test_right_user() -> None:
    assert run_as_user(ROOT, [POSTGRES]) == ROOT
    assert run_as_user(POSTGRES, [POSTGRES, POSTGRES]) == POSTGRES
    with pytest.raises(UsageError, match="CA key belongs to alice"):
        run_as_user(ALICE, [POSTGRES])


def test_cron_line() -> None:
    line = cron_line(job(POSTGRES, ca="/srv/ca 100%"), logger="systemd-cat")
    minute, hour, *rest = line.split(" ")
    assert 0 <= int(minute) < 60 and 1 <= int(hour) <= 5
    assert rest[:4] == ["*", "*", "*", "postgres"]
    assert "systemd-cat -t pgbatten-renew /usr/local/bin/pgbatten renew" in line
    assert "'/srv/ca 100\\%'" in line  # cron would cut the line at a bare %
    assert cron_line(job(POSTGRES), logger="systemd-cat") == cron_line(job(POSTGRES), logger="systemd-cat")
    crontab = cron_line(job(POSTGRES), with_user=False, logger="logger")
    assert "postgres" not in crontab.split("|")[0].split(" ")[:6]
    assert crontab.endswith("2>&1 | logger -t pgbatten-renew")
