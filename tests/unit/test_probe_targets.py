"""Targets as libpq takes them: HOST[:PORT], conninfo strings, URIs, services and the PG* environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.errors import UsageError
from pgbatten.probe.fleet import parse_targets_text, server_key
from pgbatten.probe.targets import parse_target_text, targets_from_environment
from pgbatten.probe.wire import Target

SERVICES = """\
[prod]
host=db.example.com
port=5587
sslrootcert=/etc/pgbatten/root.crt

[pair]
host=a.example.com,b.example.com
port=5433
"""


def test_host_port_as_before() -> None:
    assert parse_target_text("db.example.com:5433") == [Target("db.example.com", 5433)]
    assert parse_target_text("[::1]:6432") == [Target("::1", 6432)]


def test_conninfo_with_hostaddr_connects_to_the_address_and_verifies_the_name() -> None:
    [target] = parse_target_text("host=db.example.com port=5587 hostaddr=127.0.0.1")
    assert (target.host, target.port, target.hostaddr, target.address) == (
        "db.example.com",
        5587,
        "127.0.0.1",
        "127.0.0.1",
    )
    assert str(target) == "db.example.com:5587 (hostaddr 127.0.0.1)"
    assert server_key(target) == ("127.0.0.1", 5587)


def test_hostaddr_alone_leaves_libpq_no_name_to_verify() -> None:
    """libpq 14 and 18: "host name must be specified for a verified SSL connection" (15 compares with its
    default socket directory): no verify-full client accepts any certificate then."""
    [target] = parse_target_text("hostaddr=127.0.0.1 port=5587")
    assert (target.address, target.host_name_given, target.verify_name) == ("127.0.0.1", False, "")
    assert str(target) == "127.0.0.1:5587 (hostaddr only)"
    [target] = targets_from_environment({"PGHOSTADDR": "127.0.0.2"})
    assert target.verify_name == "" and target.address == "127.0.0.2"


def test_with_hostaddr_the_host_is_only_compared_so_any_text_goes() -> None:
    """001_ssltests.pl's "IPv6 host with CIDR mask does not match": libpq never looks the name up."""
    [target] = parse_target_text("host=2001:DB8::1/128 hostaddr=127.0.0.1")
    assert (target.verify_name, target.address) == ("2001:DB8::1/128", "127.0.0.1")
    with pytest.raises(UsageError, match="not a valid host name"):
        parse_target_text("host=2001:DB8::1/128")


def test_pghost_names_the_server_of_a_string_with_hostaddr_only() -> None:
    [target] = parse_target_text("hostaddr=127.0.0.1", environ={"PGHOST": "db.example.com"})
    assert (target.verify_name, target.address) == ("db.example.com", "127.0.0.1")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_uris(scheme: str) -> None:
    assert parse_target_text(f"{scheme}://db:5587/app?sslmode=verify-full") == [Target("db", 5587)]
    assert parse_target_text(f"{scheme}://[::1]:5433/x") == [Target("::1", 5433)]


def test_a_bad_uri_gets_libpq_words_not_the_ipv6_bracket_hint() -> None:
    with pytest.raises(UsageError) as info:
        parse_target_text("postgresql://db:notaport/app")
    assert "brackets" not in str(info.value)
    assert "invalid target" in str(info.value)


def test_several_hosts_fan_out_with_libpq_pairing() -> None:
    assert parse_target_text("host=a,b port=5433") == [Target("a", 5433), Target("b", 5433)]
    assert parse_target_text("host=a,b port=5433,5434") == [Target("a", 5433), Target("b", 5434)]
    assert parse_target_text("postgresql://a:5433,b/app") == [Target("a", 5433), Target("b", 5432)]
    with pytest.raises(UsageError, match="3 port values for 2 hosts"):
        parse_target_text("host=a,b port=1,2,3")


def test_trust_settings_travel_with_the_target() -> None:
    [target] = parse_target_text("host=db sslrootcert=/tmp/root.crt sslcrl=/tmp/root.crl sslmode=verify-full")
    assert (target.sslrootcert, target.sslcrl) == ("/tmp/root.crt", "/tmp/root.crl")


def test_unix_sockets_and_nonsense_are_refused() -> None:
    with pytest.raises(UsageError, match="Unix-domain socket"):
        parse_target_text("host=/var/run/postgresql")
    with pytest.raises(UsageError, match="no host"):
        parse_target_text("dbname=x")
    with pytest.raises(UsageError, match="not an IP address"):
        parse_target_text("host=db hostaddr=db.example.com")
    with pytest.raises(UsageError):
        parse_target_text("host='unterminated")


@pytest.mark.parametrize("where", ["PGSERVICEFILE", "PGSYSCONFDIR", "HOME"])
def test_service_from_each_place_libpq_looks(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_environment: Path
) -> None:
    if where == "PGSERVICEFILE":
        (tmp_path / "services").write_text(SERVICES)
        monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "services"))
    elif where == "PGSYSCONFDIR":
        (tmp_path / "pg_service.conf").write_text(SERVICES)
        monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))
    else:
        (isolated_environment / ".pg_service.conf").write_text(SERVICES)
    [target] = parse_target_text("service=prod")
    assert (target.host, target.port, target.sslrootcert) == (
        "db.example.com",
        5587,
        "/etc/pgbatten/root.crt",
    )
    # Explicit keywords win over the service's.
    assert parse_target_text("service=prod port=6000")[0].port == 6000
    assert parse_target_text("service=pair") == [Target("a.example.com", 5433), Target("b.example.com", 5433)]
    with pytest.raises(UsageError, match="service 'nope' not found"):
        parse_target_text("service=nope")


def test_environment_when_no_target_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert targets_from_environment() == []
    monkeypatch.setenv("PGHOST", "db1,db2")
    monkeypatch.setenv("PGPORT", "5439")
    assert targets_from_environment() == [Target("db1", 5439), Target("db2", 5439)]
    (tmp_path / "services").write_text(SERVICES)
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "services"))
    monkeypatch.setenv("PGSERVICE", "prod")
    # As in libpq, the service's values come first, the variables fill what it leaves out.
    assert targets_from_environment()[0].host == "db.example.com"
    # A conninfo target without a port takes PGPORT, as libpq would.
    monkeypatch.delenv("PGSERVICE")
    assert parse_target_text("host=x") == [Target("x", 5439)]


def test_targets_file_takes_every_form_and_stdin(tmp_path: Path) -> None:
    text = "# fleet\ndb1:5433\nhost=db2 port=5434 hostaddr=127.0.0.2\npostgresql://db3/app\n"
    assert parse_targets_text(text) == [
        Target("db1", 5433),
        Target("db2", 5434, hostaddr="127.0.0.2"),
        Target("db3", 5432),
    ]
    with pytest.raises(UsageError, match=r"^<t>:2: "):
        parse_targets_text("db1\nhost=/tmp\n", "<t>")
    # `--targets-file -` reads standard input; closed ports keep it quick.
    result = CliRunner().invoke(
        main, ["check", "--quick", "--json", "--timeout", "0.5", "--targets-file", "-"], input="127.0.0.1:1\n"
    )
    assert result.exit_code == 3, result.output
    assert [d["target"] for d in json.loads(result.output)] == ["127.0.0.1:1"]


def test_cli_without_target_or_environment_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 2
    assert "no targets" in result.output


def test_cli_crl_needs_a_ca(tmp_path: Path) -> None:
    (tmp_path / "x.crl").write_text("x")
    result = CliRunner().invoke(main, ["check", "127.0.0.1:1", "--crl", str(tmp_path / "x.crl")])
    assert result.exit_code == 2 and "--crl needs the CA" in result.output
