"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback (unless --debug)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pgbatten.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["secure", "--pgdata", "/nonexistent/pgdata", "-y"], "does not exist"),
        (["secure", "-y"], "give exactly one of --pgdata DIR or --cluster VERSION/NAME"),
        (["secure", "--cluster", "main", "-y"], "--cluster wants VERSION/NAME"),
        (["secure", "--pgdata", "/tmp", "--host", "a b", "-y"], "invalid host name"),
        (["check", "host:notaport"], "port"),
        (["ca", "init", "--key-type", "dsa"], "unknown key type"),
    ],
)
def test_one_line_errors(args: list[str], expected: str) -> None:
    code, output = run(*args)
    assert code == 2
    assert output.startswith("pgbatten: error: ")
    assert expected in output
    assert output.count("\n") == 1
    assert "Traceback" not in output


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("11\n")
    code, output = run("secure", "--pgdata", str(tmp_path), "-y")
    assert code == 2
    assert "PostgreSQL 11" in output and "not supported" in output


def test_not_a_data_directory(tmp_path: Path) -> None:
    code, output = run("secure", "--pgdata", str(tmp_path), "-y")
    assert code == 2
    assert "not a PostgreSQL data directory" in output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--debug", "secure", "--pgdata", str(tmp_path), "-y"])
    assert result.exception is not None
    assert type(result.exception).__name__ == "ClusterError"


def test_existing_ca_is_not_overwritten(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert run("ca", "init", "--ca-dir", str(ca))[0] == 0
    before = (ca / "ca.key").read_bytes()
    code, output = run("ca", "init", "--ca-dir", str(ca))
    assert code == 2 and "already exists" in output
    assert (ca / "ca.key").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["secure", "--bogus"], "No such option '--bogus'"),
        (["secure", "--tls-min", "1.1", "-y"], "'1.1' is not one of"),
        (["secure", "--days", "0"], "--days"),
        (["cert", "client"], "Missing argument"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_click_usage_errors_are_one_line_too(args: list[str], expected: str) -> None:
    code, output = run(*args)
    assert code == 2
    assert output.startswith("pgbatten: error: "), output
    assert expected in output
    assert output.count("\n") == 1, output
    assert "Usage:" not in output
    assert "(see 'pgbatten " in output


def test_pgdata_defaults_to_the_environment_as_pg_ctl_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATA", str(tmp_path / "from-env"))
    code, output = run("secure", "-n")
    assert code == 2
    assert str(tmp_path / "from-env") in output and "does not exist" in output
    # --cluster wins over $PGDATA, as it names another cluster explicitly.
    code, output = run("secure", "--cluster", "99/none", "-n")
    assert "no cluster 99/none" in output


def test_an_unexpected_file_problem_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from pgbatten.cluster import discover as discover_mod

    def refuse(**_kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "secret"))

    monkeypatch.setattr(discover_mod, "discover", refuse)
    code, output = run("secure", "--pgdata", str(tmp_path), "-n")
    assert code == 2
    assert output.startswith(f"pgbatten: error: {tmp_path / 'secret'}: Permission denied (run as")
    assert output.count("\n") == 1
