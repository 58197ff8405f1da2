from __future__ import annotations

import re
import shlex
import stat
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from psycopg.conninfo import conninfo_to_dict

from pgbatten.errors import FileProblem, UsageError
from pgbatten.fsutil import atomic_write
from pgbatten.keyshare import client_openssl_conf
from pgbatten.pki import (
    CertificateAuthority,
    IssuedCertificate,
    generate_password,
    render_install_md,
    write_client_bundle,
)

BUNDLE_FILES = {
    "postgresql.crt": 0o644,
    "postgresql.key": 0o600,
    "root.crt": 0o644,
    "postgresql.pk8": 0o600,
    "postgresql.p12": 0o600,
    "INSTALL.md": 0o644,
    "pgbatten-openssl.cnf": 0o644,
}


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_client("alice")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write(out: Path, ca: CertificateAuthority, issued: IssuedCertificate, *, force: bool = False) -> None:
    write_client_bundle(
        out, issued, ca.certificate, p12_password=b"pw-123", server_host="db.example.com", force=force
    )


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_bundle_files_modes_and_contents(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    out = tmp_path / "alice"
    bundle = write_client_bundle(
        out, alice, ca.certificate, p12_password=b"pw-123", server_host="db.example.com", dbname="app"
    )
    assert bundle.directory == out
    assert bundle.user == "alice"
    assert {p.name: _mode(p) for p in out.iterdir()} == BUNDLE_FILES
    assert _mode(out) == 0o700
    assert _siblings(out) == []  # no staging directory left behind

    assert x509.load_pem_x509_certificates(bundle.cert_path.read_bytes()) == [alice.certificate]
    assert x509.load_pem_x509_certificate(bundle.root_cert_path.read_bytes()) == ca.certificate
    pem_key = serialization.load_pem_private_key(bundle.key_path.read_bytes(), password=None)
    der_key = serialization.load_der_private_key(bundle.pk8_path.read_bytes(), password=None)
    for key in (pem_key, der_key):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.private_numbers() == alice.key.private_numbers()
    p12 = pkcs12.load_pkcs12(bundle.p12_path.read_bytes(), b"pw-123")
    assert p12.cert is not None
    assert p12.cert.certificate == alice.certificate
    assert [c.certificate for c in p12.additional_certs] == [ca.certificate]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(bundle.p12_path.read_bytes(), b"wrong")
    install = bundle.install_md_path.read_text()
    assert install == render_install_md("alice", "db.example.com", 5432, "app")
    assert "pw-123" not in install  # the password travels separately
    assert bundle.openssl_conf_path.read_text() == client_openssl_conf()
    assert "OPENSSL_CONF=~/.postgresql/pgbatten-openssl.cnf psql" in install


def test_bundle_refuses_non_empty_directory(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    out = tmp_path / "alice"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileProblem) as info:
        _write(out, ca, alice)
    assert str(info.value).startswith(f"{out}: already exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert _siblings(out) == []


def test_bundle_fills_an_empty_directory(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    out = tmp_path / "alice"
    out.mkdir()
    _write(out, ca, alice)
    assert {p.name for p in out.iterdir()} == set(BUNDLE_FILES)


def test_bundle_force_replaces_whole_directory(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    out = tmp_path / "alice"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    _write(out, ca, alice, force=True)
    assert {p.name for p in out.iterdir()} == set(BUNDLE_FILES)
    assert _siblings(out) == []


def test_bundle_refuses_a_file_in_the_way(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    out = tmp_path / "alice"
    out.write_text("not a directory")
    with pytest.raises(FileProblem, match="not a directory"):
        _write(out, ca, alice, force=True)


@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_no_half_bundle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ca: CertificateAuthority,
    alice: IssuedCertificate,
    existing: bool,
) -> None:
    out = tmp_path / "alice"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old")
    calls: list[Path] = []

    def flaky_write(
        path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None
    ) -> None:
        calls.append(path)
        if len(calls) == 4:
            raise FileProblem(path, "cannot write: No space left on device")
        atomic_write(path, data, mode=mode, owner=owner)

    monkeypatch.setattr("pgbatten.pki.bundle.atomic_write", flaky_write)
    with pytest.raises(FileProblem, match="No space left"):
        _write(out, ca, alice, force=True)
    assert len(calls) == 4
    if existing:
        assert [p.name for p in out.iterdir()] == ["old.txt"]
    else:
        assert not out.exists()
    assert _siblings(out) == []


def test_bundle_needs_a_p12_password(
    tmp_path: Path, ca: CertificateAuthority, alice: IssuedCertificate
) -> None:
    with pytest.raises(UsageError):
        write_client_bundle(
            tmp_path / "x", alice, ca.certificate, p12_password=b"", server_host="db.example.com"
        )
    assert not (tmp_path / "x").exists()


def test_generate_password() -> None:
    passwords = {generate_password() for _ in range(5)}
    assert len(passwords) == 5
    for password in passwords:
        assert len(password) == 24
        assert re.fullmatch(r"[A-Za-z0-9_-]+", password)


# -- INSTALL.md -------------------------------------------------------------------------------------------


def _code_line(text: str, prefix: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert lines, f"no line starting with {prefix!r}"
    return lines[0]


def _jdbc(url: str) -> SplitResult:
    # "jdbc:" wraps an ordinary URL; strip it so urllib parses the authority and query.
    assert url.startswith("jdbc:")
    return urlsplit(url.removeprefix("jdbc:"))


def test_install_md_settings_are_all_verify_full() -> None:
    text = render_install_md("alice", "DB.example.com", 6432, "app")
    assert "sslmode=require" not in text
    assert "~/.postgresql/postgresql.key" in text
    assert "chmod 600" in text
    assert r"%APPDATA%\postgresql" in text
    conninfo = conninfo_to_dict(_code_line(text, "host="))
    assert conninfo == {
        "host": "db.example.com",
        "port": "6432",
        "dbname": "app",
        "user": "alice",
        "sslmode": "verify-full",
    }
    jdbc_lines = [line for line in text.splitlines() if line.startswith("jdbc:postgresql://")]
    assert len(jdbc_lines) == 2
    pk8, p12 = (parse_qs(_jdbc(line).query) for line in jdbc_lines)
    assert _jdbc(jdbc_lines[0]).netloc == "db.example.com:6432"
    assert pk8["sslmode"] == ["verify-full"]
    assert pk8["sslkey"][0].endswith("/postgresql.pk8")
    assert pk8["sslcert"][0].endswith("/postgresql.crt")
    assert pk8["sslrootcert"][0].endswith("/root.crt")
    assert p12["sslkey"][0].endswith("/postgresql.p12")
    assert "sslpassword" in p12
    npgsql = _code_line(text, "Host=")
    assert "SSL Mode=VerifyFull" in npgsql
    for key in ("Root Certificate=", "SSL Certificate=", "SSL Key="):
        assert key in npgsql
    assert "rejectUnauthorized: true" in text
    assert 'servername: "db.example.com"' in text
    assert 'sslmode="verify-full"' in text
    assert "psycopg.connect(" in text
    assert "[db.example.com-app]" in text


def test_install_md_quotes_awkward_names_so_they_parse_back() -> None:
    user = "o'neil \\ admin"
    text = render_install_md(user, "db.example.com", 5432, "my db")
    conninfo = _code_line(text, "host=")
    assert conninfo_to_dict(conninfo)["user"] == user
    assert conninfo_to_dict(conninfo)["dbname"] == "my db"
    psql = _code_line(text, "psql ")
    argv = shlex.split(psql)
    assert argv[0] == "psql"
    assert conninfo_to_dict(argv[1])["user"] == user
    jdbc = _code_line(text, "jdbc:postgresql://")
    assert parse_qs(_jdbc(jdbc).query)["user"] == [user]
    assert unquote(_jdbc(jdbc).path) == "/my db"


def test_install_md_for_ip_hosts() -> None:
    text = render_install_md("alice", "[2001:db8::5]", 5432, "postgres")
    assert "jdbc:postgresql://[2001:db8::5]:5432/postgres?" in text
    assert conninfo_to_dict(_code_line(text, "host="))["host"] == "2001:db8::5"
    assert "servername" not in text  # Node rejects an IP address as SNI
    assert "PostgreSQL 14" in text


@pytest.mark.parametrize(
    ("user", "host", "port", "dbname"),
    [
        ("alice", "bad host", 5432, "postgres"),
        ("", "db.example.com", 5432, "postgres"),
        ("alice", "db.example.com", 0, "postgres"),
        ("alice", "db.example.com", 5432, ""),
    ],
)
def test_install_md_validates_inputs(user: str, host: str, port: int, dbname: str) -> None:
    with pytest.raises(UsageError):
        render_install_md(user, host, port, dbname)


def test_install_md_names_the_service_file_on_windows_too() -> None:
    # libpq reads the per-user service file from %APPDATA%\\postgresql\\.pg_service.conf on Windows.
    text = render_install_md("alice", "db.example.com")
    assert "%APPDATA%\\postgresql\\.pg_service.conf" in text
