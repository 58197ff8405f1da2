"""``pgbatten cert`` and ``pgbatten crl`` without a cluster: bundles, listings, and every refusal is one line
on stderr, exit status 2, no traceback and nothing written."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.serialization import pkcs12

from pgbatten.cli import main
from pgbatten.errors import ClusterError, FileProblem
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CAStore, CertificateAuthority
from pgbatten.secure.crl import classify, plan_crl_install, stand_in
from pgbatten.secure.hosts import MachineNames
from pgbatten.secure.plan import ClusterState


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def refused(result: Result, expected: str) -> None:
    """One line on stderr naming the problem, exit status 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pgbatten: error: ")
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def store(ca_dir: Path) -> CAStore:
    result = run("ca", "init", "--ca-dir", str(ca_dir))
    assert result.exit_code == 0, result.output
    return CAStore(ca_dir)


def issue(store: CAStore, user: str, out: Path, *extra: str) -> Result:
    # Without a cluster the port must be given: pgbatten does not guess it.
    port = () if "--port" in extra else ("--port", "5432")
    result = run("cert", "client", user, "--ca-dir", str(store.path), "--out", str(out), *port, *extra)
    assert result.exit_code == 0, result.output
    return result


# -- cert client ------------------------------------------------------------------------------------------


def test_cert_client_writes_a_bundle_and_records_it(store: CAStore, tmp_path: Path) -> None:
    result = issue(store, "alice", tmp_path / "alice", "--server-host", "db.example.com", "--port", "6432")
    bundle = tmp_path / "alice"
    names = sorted(p.name for p in bundle.iterdir())
    assert names == [
        "INSTALL.md",
        "pgbatten-openssl.cnf",
        "postgresql.crt",
        "postgresql.key",
        "postgresql.p12",
        "postgresql.pk8",
        "root.crt",
    ]
    for secret in ("postgresql.key", "postgresql.pk8", "postgresql.p12"):
        assert stat.S_IMODE((bundle / secret).stat().st_mode) == 0o600
    install = (bundle / "INSTALL.md").read_text()
    assert "host=db.example.com port=6432" in install
    assert "sslmode=verify-full" in install

    # The generated PKCS#12 password is printed exactly once, and opens the file.
    lines = result.output.splitlines()
    at = lines.index("PKCS#12 password (shown once, stored nowhere; hand it over separately):")
    password = lines[at + 1].strip().encode()
    p12 = pkcs12.load_pkcs12((bundle / "postgresql.p12").read_bytes(), password)
    assert p12.cert is not None
    assert p12.cert.friendly_name == b"user"  # PgJDBC looks for this alias

    [entry] = store.entries()
    assert (entry.kind, entry.name, entry.revoked) == ("client", "alice", False)
    assert f"{entry.serial:#x}" in result.output


def test_cert_client_reads_the_p12_password_from_a_file(store: CAStore, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("correct horse\nignored\n")
    result = issue(store, "alice", tmp_path / "alice", "--p12-password-file", str(tmp_path / "pw"))
    assert "PKCS#12 password" not in result.output
    assert "correct horse" not in result.output
    pkcs12.load_pkcs12((tmp_path / "alice" / "postgresql.p12").read_bytes(), b"correct horse")


def test_cert_client_defaults_to_a_directory_named_after_the_user(
    store: CAStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("cert", "client", "alice", "--ca-dir", str(store.path), "--port", "5432")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "alice" / "postgresql.crt").is_file()
    refused(run("cert", "client", "../etc", "--ca-dir", str(store.path)), "pass --out DIR")


def test_cert_client_refuses_an_existing_bundle(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    before_bundle = snapshot(tmp_path / "alice")
    before_ca = snapshot(store.path)
    again = run(
        "cert",
        "client",
        "alice",
        "--ca-dir",
        str(store.path),
        "--out",
        str(tmp_path / "alice"),
        "--port",
        "5432",
    )
    refused(again, "already exists")
    assert snapshot(tmp_path / "alice") == before_bundle
    assert snapshot(store.path) == before_ca
    assert len(store.entries()) == 1

    forced = issue(store, "alice", tmp_path / "alice", "--force")
    assert snapshot(tmp_path / "alice") != before_bundle
    first, second = store.entries()
    # The first certificate still works until revoked: say so, with the command.
    assert f"pgbatten cert revoke {first.serial:#x}" in forced.output
    assert second.name == "alice"


@pytest.mark.parametrize("user", ["x[/]", "[red]bob", "o'brien [admin]"])
def test_role_names_that_look_like_markup_print_as_written(store: CAStore, tmp_path: Path, user: str) -> None:
    # A role name is data: printed through rich it must neither crash after the certificate is issued
    # (losing the generated PKCS#12 password) nor lose its brackets.
    result = issue(store, user, tmp_path / "b1")
    assert f"Issued a client certificate for {user} (serial" in result.output
    assert "PKCS#12 password (shown once" in result.output
    [first] = store.entries()
    second = issue(store, user, tmp_path / "b2")
    assert f"note: {user}'s earlier certificate {first.serial:#x}" in second.output

    listed = run("cert", "list", "--ca-dir", str(store.path))
    assert listed.exit_code == 0, listed.output
    revoked = run("cert", "revoke", user, "--ca-dir", str(store.path))
    assert revoked.exit_code == 0, revoked.output
    assert f"Revoked client certificate {first.serial:#x} of {user}" in revoked.output
    assert "The servers do not know yet" in revoked.output


def test_ca_init_prints_a_bracketed_common_name_and_path(tmp_path: Path) -> None:
    ca_dir = tmp_path / "[prod]" / "ca"
    result = run("ca", "init", "--ca-dir", str(ca_dir), "--common-name", "ACME [ops] CA[/]")
    assert result.exit_code == 0, result.output
    assert f"Created CA ACME [ops] CA[/] in {ca_dir}" in result.output
    assert str(ca_dir / "ca.key") in result.output


def test_cert_client_out_is_a_file_is_one_line(store: CAStore, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep me\n")
    for extra in ((), ("--force",)):
        result = run(
            "cert", "client", "alice", "--ca-dir", str(store.path), "--out", str(tmp_path / "afile"), *extra
        )
        refused(result, "exists and is not a directory")
    assert (tmp_path / "afile").read_text() == "keep me\n"
    assert store.entries() == []


def test_forced_reissue_that_cannot_be_recorded_keeps_the_old_bundle(
    store: CAStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A certificate that is not in the inventory can never be revoked, so it must never reach the
    # bundle; and --force must not have destroyed the old bundle by the time recording fails.
    issue(store, "alice", tmp_path / "alice")
    before_bundle = snapshot(tmp_path / "alice")
    before_ca = snapshot(store.path)

    def full_disk(self: CAStore, *args: object, **kwargs: object) -> None:
        raise FileProblem(self.inventory_path, "cannot write: No space left on device")

    monkeypatch.setattr(CAStore, "record", full_disk)
    result = run(
        "cert", "client", "alice", "--ca-dir", str(store.path), "--out", str(tmp_path / "alice"), "--force",
        "--port", "5432",
    )  # fmt: skip
    refused(result, "No space left on device")
    assert snapshot(tmp_path / "alice") == before_bundle
    assert snapshot(store.path) == before_ca


def test_bundle_that_cannot_be_written_leaves_no_certificate_in_the_inventory(
    store: CAStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pgbatten.pki.bundle as bundle_mod

    def broken(*args: object, **kwargs: object) -> None:
        raise FileProblem(tmp_path / "alice", "cannot put the bundle in place: Read-only file system")

    monkeypatch.setattr(bundle_mod, "write_client_bundle", broken)
    refused(
        run(
            "cert",
            "client",
            "alice",
            "--ca-dir",
            str(store.path),
            "--out",
            str(tmp_path / "alice"),
            "--port",
            "1",
        ),
        "Read-only",
    )
    assert store.entries() == []
    assert not (tmp_path / "alice").exists()


def test_cert_client_without_a_ca(ca_dir: Path, tmp_path: Path) -> None:
    result = run("cert", "client", "alice", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "alice"))
    refused(result, f"no CA in {ca_dir}")
    assert not (tmp_path / "alice").exists()
    assert not ca_dir.exists()


def test_wrong_or_missing_ca_passphrase(ca_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "good").write_text("the-real-passphrase\n")
    (tmp_path / "bad").write_text("guess\n")
    assert (
        run("ca", "init", "--ca-dir", str(ca_dir), "--ca-passphrase-file", str(tmp_path / "good")).exit_code
        == 0
    )
    out = tmp_path / "alice"
    base = ("cert", "client", "alice", "--ca-dir", str(ca_dir), "--out", str(out), "--port", "5432")

    refused(run(*base, "--ca-passphrase-file", str(tmp_path / "bad")), "wrong passphrase for CA key")
    refused(run(*base), "is encrypted and no passphrase was given")
    assert not out.exists()
    assert CAStore(ca_dir).entries() == []

    assert run(*base, "--ca-passphrase-file", str(tmp_path / "good")).exit_code == 0
    before = snapshot(ca_dir)
    refused(
        run(
            "cert", "revoke", "alice", "--ca-dir", str(ca_dir), "--ca-passphrase-file", str(tmp_path / "bad")
        ),
        "wrong passphrase",
    )
    # Nothing marked revoked that no CRL would ever carry.
    assert snapshot(ca_dir) == before


def test_bad_key_type_and_days_are_refused_before_anything_is_written(store: CAStore, tmp_path: Path) -> None:
    bad = run(
        "cert",
        "client",
        "alice",
        "--ca-dir",
        str(store.path),
        "--out",
        str(tmp_path / "a"),
        "--key-type",
        "dsa",
    )
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
    days = run(
        "cert", "client", "alice", "--ca-dir", str(store.path), "--out", str(tmp_path / "a"), "--days", "0"
    )
    assert days.exit_code == 2
    assert not (tmp_path / "a").exists()
    assert store.entries() == []


# -- cert revoke ------------------------------------------------------------------------------------------


def test_revoke_unknown_user_or_serial(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    before = snapshot(store.path)
    refused(run("cert", "revoke", "bob", "--ca-dir", str(store.path)), "no certificate for 'bob'")
    refused(
        run("cert", "revoke", "0xdeadbeef", "--ca-dir", str(store.path)), "no certificate for '0xdeadbeef'"
    )
    assert snapshot(store.path) == before
    assert not store.crl_path.exists()


def test_revoke_by_user_and_by_serial_writes_the_crl(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    issue(store, "bob", tmp_path / "bob")
    alice, bob = store.entries()
    result = run("cert", "revoke", "alice", "--ca-dir", str(store.path))
    assert result.exit_code == 0, result.output
    assert f"Revoked client certificate {alice.serial:#x} of alice" in result.output
    assert "The servers do not know yet" in result.output
    crl = store.load_crl()
    assert crl is not None
    assert crl.get_revoked_certificate_by_serial_number(alice.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(bob.serial) is None

    colon = ":".join(f"{bob.serial:040x}"[i : i + 2] for i in range(0, 40, 2))
    assert run("cert", "revoke", colon, "--ca-dir", str(store.path)).exit_code == 0
    crl = store.load_crl()
    assert crl is not None
    assert crl.get_revoked_certificate_by_serial_number(bob.serial) is not None

    refused(run("cert", "revoke", "alice", "--ca-dir", str(store.path)), "already revoked")


def test_revoke_a_server_certificate_by_serial_not_by_name(store: CAStore, tmp_path: Path) -> None:
    ca = store.load()
    server = store.record(ca.issue_server(["db.example.com"]), "server", "db.example.com")
    before = snapshot(store.path)
    # By name only users are revoked; say how to revoke the server's certificate instead of "no certificate".
    refused(
        run("cert", "revoke", "db.example.com", "--ca-dir", str(store.path)),
        f"is a server certificate; revoke it by serial: pgbatten cert revoke {server.serial:#x}",
    )
    assert snapshot(store.path) == before
    result = run("cert", "revoke", f"{server.serial:#x}", "--ca-dir", str(store.path))
    assert result.exit_code == 0, result.output
    assert f"Revoked server certificate {server.serial:#x} of db.example.com" in result.output
    crl = store.load_crl()
    assert crl is not None
    assert crl.get_revoked_certificate_by_serial_number(server.serial) is not None


def test_revoke_with_a_missing_cluster_changes_nothing(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    before = snapshot(store.path)
    result = run("cert", "revoke", "alice", "--ca-dir", str(store.path), "--pgdata", str(tmp_path / "nope"))
    refused(result, "does not exist")
    assert snapshot(store.path) == before


def test_revoke_and_refresh_without_a_ca(ca_dir: Path) -> None:
    refused(run("cert", "revoke", "alice", "--ca-dir", str(ca_dir)), "no CA in")
    refused(run("crl", "refresh", "--ca-dir", str(ca_dir)), "no CA in")
    refused(run("cert", "list", "--ca-dir", str(ca_dir)), "no CA in")
    assert not ca_dir.exists()


# -- cert list and crl refresh --------------------------------------------------------------------------


def test_cert_list_shows_every_certificate_and_the_crl(store: CAStore, tmp_path: Path) -> None:
    empty = run("cert", "list", "--ca-dir", str(store.path))
    assert empty.exit_code == 0
    assert "No certificates issued yet" in empty.output
    assert "CRL: none written yet" in empty.output

    issue(store, "alice", tmp_path / "alice")
    issue(store, "bob", tmp_path / "bob", "--days", "10")
    assert run("cert", "revoke", "alice", "--ca-dir", str(store.path)).exit_code == 0
    alice, bob = store.entries()
    result = run("cert", "list", "--ca-dir", str(store.path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "SERIAL", "NOT", "AFTER", "(UTC)", "STATUS"]
    alice_line = next(line for line in lines if f"{alice.serial:#x}" in line)
    assert alice_line.split()[:2] == ["client", "alice"]
    assert f"{alice.not_after:%Y-%m-%d %H:%M}" in alice_line
    assert "revoked" in alice_line
    bob_line = next(line for line in lines if f"{bob.serial:#x}" in line)
    assert "valid" in bob_line
    assert "1 revoked" in result.output
    assert "next update" in result.output
    # bob's certificate ends within 30 days: a warning with the command that renews it.
    warning = next(line for line in lines if line.startswith("warning:") and "bob" in line)
    assert "ends in 9 days" in warning or "ends in 10 days" in warning
    assert "pgbatten cert client bob --force" in warning
    assert not any("CRL" in line for line in lines if line.startswith("warning:"))


def test_cert_list_warns_about_a_crl_near_or_past_next_update(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    assert run("cert", "revoke", "alice", "--ca-dir", str(store.path), "--crl-days", "3").exit_code == 0
    soon = run("cert", "list", "--ca-dir", str(store.path))
    assert "warning: the CRL's next update is" in soon.output
    assert "pgbatten crl refresh" in soon.output

    store.write_crl(store.load(), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=40), days=30)
    past = run("cert", "list", "--ca-dir", str(store.path))
    assert past.exit_code == 0
    assert "PostgreSQL now refuses EVERY client certificate" in past.output

    refreshed = run("crl", "refresh", "--ca-dir", str(store.path), "--crl-days", "60")
    assert refreshed.exit_code == 0, refreshed.output
    assert "Signed CRL" in refreshed.output
    crl = store.load_crl()
    assert crl is not None and crl.next_update_utc is not None
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=59)
    clean = run("cert", "list", "--ca-dir", str(store.path))
    assert "warning" not in clean.output


def test_cert_list_warns_when_revocations_are_missing_from_the_crl(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    store.revoke("alice")  # the inventory alone, as if the CRL write had been interrupted
    result = run("cert", "list", "--ca-dir", str(store.path))
    assert "revoked but no CRL was written" in result.output


# -- the pure CRL plan behind --pgdata ---------------------------------------------------------------------

ETC = Path("/etc/postgresql/16/main")


def crl_state(conf: str, auto: str = "", existing: dict[Path, bytes] | None = None) -> ClusterState:
    return ClusterState(
        major=16,
        cert_dir=ETC,
        conf_files=(
            conf_mod.parse_conf(conf, ETC / "postgresql.conf"),
            conf_mod.parse_conf(auto, Path("/var/lib/pg/postgresql.auto.conf")),
        ),
        hba=hba_mod.parse_hba("local all all peer\n", ETC / "pg_hba.conf"),
        ident=None,
        listen_addresses="127.0.0.1",
        machine=MachineNames(hostnames=(), addresses=()),
        existing=existing or {},
    )


SECURED = f"ssl = on\nssl_ca_file = '{ETC}/pgbatten-ca.crt'\n"


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create()


def test_crl_plan_installs_file_and_setting_then_nothing(authority: CertificateAuthority) -> None:
    crl = b"-----BEGIN X509 CRL-----\n...\n"
    plan = plan_crl_install(crl_state(SECURED), authority, authority.cert_pem(), crl)
    assert plan.crl_path == ETC / "pgbatten-ca.crl"
    assert plan.settings == {"ssl_crl_file": str(ETC / "pgbatten-ca.crl")}
    by_path = {c.path: c for c in plan.changes}
    assert by_path[ETC / "pgbatten-ca.crl"].new == crl
    assert by_path[ETC / "pgbatten-ca.crl"].mode == 0o644
    conf = by_path[ETC / "postgresql.conf"].new.decode()
    assert f"ssl_crl_file = '{ETC}/pgbatten-ca.crl'" in conf

    done = crl_state(conf, existing={ETC / "pgbatten-ca.crl": crl})
    assert not plan_crl_install(done, authority, authority.cert_pem(), crl).changed
    newer = plan_crl_install(done, authority, authority.cert_pem(), crl + b"x")
    assert [c.path for c in newer.changes] == [ETC / "pgbatten-ca.crl"]


def test_crl_plan_edits_the_line_postgresql_obeys(authority: CertificateAuthority) -> None:
    plan = plan_crl_install(
        crl_state(SECURED, auto="ssl_crl_file = ''\n"), authority, authority.cert_pem(), b"c"
    )
    edited = [c for c in plan.changes if c.purpose == "settings"]
    assert [c.path.name for c in edited] == ["postgresql.auto.conf"]
    assert plan.notes


@pytest.mark.parametrize(
    ("conf", "ca_file", "message"),
    [
        ("ssl = off\n", "ours", "ssl is off"),
        ("ssl = on\n", "none", "does not verify client certificates"),
        (SECURED, "other", "does not hold the pgbatten CA"),
        (SECURED, "none", "does not hold the pgbatten CA"),
        (SECURED + "ssl_crl_file = '/srv/other.crl'\n", "ours", "will not replace a CRL it does not manage"),
    ],
)
def test_crl_plan_refuses_clusters_it_cannot_protect(
    authority: CertificateAuthority, conf: str, ca_file: str, message: str
) -> None:
    pem = {
        "ours": authority.cert_pem(),
        "other": CertificateAuthority.create().cert_pem(),
        "none": None,
    }[ca_file]
    with pytest.raises(ClusterError, match=message):
        plan_crl_install(crl_state(conf), authority, pem, b"crl")


def test_stand_in_carries_the_revoked_serial(authority: CertificateAuthority) -> None:
    probe = stand_in(authority, 0xC0FFEE)
    assert probe.serial == 0xC0FFEE
    probe.certificate.verify_directly_issued_by(authority.certificate)
    assert probe.not_after - dt.datetime.now(dt.UTC) < dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ('connection to server at "127.0.0.1" failed: SSL error: sslv3 alert certificate revoked', "revoked"),
        ("failed: SSL error: ssl/tls alert certificate revoked", "revoked"),
        ('failed: FATAL: role "pgbatten_crl_probe" does not exist', "accepted"),
        ("failed: fe_sendauth: no password supplied", "accepted"),
        ("failed: SSL error: tlsv1 alert unknown ca", "refused"),
        ("failed: SSL error: sslv3 alert certificate expired", "refused"),
    ],
)
def test_classify_libpq_errors(message: str, outcome: str) -> None:
    assert classify(message)[0] == outcome


# -- never break a client by surprise: ports, served certificates, hints, JSON -----------------------------


def test_cert_client_without_port_or_cluster_refuses_to_guess(store: CAStore, tmp_path: Path) -> None:
    result = run("cert", "client", "alice", "--ca-dir", str(store.path), "--out", str(tmp_path / "a"))
    refused(result, "does not guess")
    assert "--port" in result.stderr and "--pgdata" in result.stderr
    assert store.entries() == []
    assert not (tmp_path / "a").exists()


def served_server(store: CAStore, tmp_path: Path) -> tuple[int, Path]:
    """A server certificate recorded as installed in a file that still holds it."""
    from pgbatten.pki import ClusterRef, Installation

    issued = store.load().issue_server(["db.example.com"])
    cert_file = tmp_path / "etc" / "pgbatten-server.crt"
    cert_file.parent.mkdir()
    cert_file.write_bytes(issued.cert_pem())
    where = Installation(cert_file, ClusterRef("--pgdata", str(tmp_path / "pgdata")))
    store.record(issued, "server", "db.example.com", installed=where)
    return issued.serial, cert_file


def test_revoking_the_served_server_certificate_needs_allow_served(store: CAStore, tmp_path: Path) -> None:
    serial, cert_file = served_server(store, tmp_path)
    before = snapshot(store.path)
    by_name = run("cert", "revoke", "db.example.com", "--ca-dir", str(store.path))
    refused(by_name, "names the server certificate")
    # No ready command to revoke it: that is the trap.
    assert "pgbatten cert revoke" not in by_name.stderr
    by_serial = run("cert", "revoke", f"{serial:#x}", "--ca-dir", str(store.path))
    refused(by_serial, f"server certificate {serial:#x} is the one cluster {tmp_path / 'pgdata'}")
    assert "--allow-served" in by_serial.stderr
    assert snapshot(store.path) == before

    result = run("cert", "revoke", f"{serial:#x}", "--ca-dir", str(store.path), "--allow-served")
    assert result.exit_code == 0, result.output
    assert f"Revoked server certificate {serial:#x} of db.example.com" in result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning:"))
    assert "still serves it" in warning
    assert f"pgbatten secure --ca-dir {store.path} --pgdata {tmp_path / 'pgdata'}" in warning

    listing = run("cert", "list", "--ca-dir", str(store.path))
    line = next(line for line in listing.output.splitlines() if f"{serial:#x}" in line)
    assert "still installed" in line
    assert f"is revoked but still installed in {cert_file}" in listing.output

    # Once the file holds another certificate, nothing is served any more.
    cert_file.write_bytes(store.load().issue_server(["db.example.com"]).cert_pem())
    assert "still installed" not in run("cert", "list", "--ca-dir", str(store.path)).output


def test_hints_carry_real_paths(store: CAStore, tmp_path: Path) -> None:
    issue(store, "alice", tmp_path / "alice")
    result = run("cert", "revoke", "alice", "--ca-dir", str(store.path))
    assert result.exit_code == 0, result.output
    assert "DIR" not in result.output
    assert f"pgbatten crl refresh --ca-dir {store.path} with the --pgdata or --cluster" in result.output

    # Once a cluster is known (here: the one serving a server certificate), the hint names it.
    served_server(store, tmp_path)
    store.write_crl(store.load(), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=40), days=30)
    listing = run("cert", "list", "--ca-dir", str(store.path))
    lapsed = next(line for line in listing.output.splitlines() if "EVERY client certificate" in line)
    assert lapsed.endswith(f"pgbatten crl refresh --ca-dir {store.path} --pgdata {tmp_path / 'pgdata'}")


def test_hints_quote_paths_with_spaces(tmp_path: Path) -> None:
    ca_dir = tmp_path / "my ca"
    assert run("ca", "init", "--ca-dir", str(ca_dir)).exit_code == 0
    issue(CAStore(ca_dir), "alice", tmp_path / "alice", "--days", "3")
    listing = run("cert", "list", "--ca-dir", str(ca_dir))
    hint = f"pgbatten cert client alice --force --ca-dir '{ca_dir}' --out {tmp_path / 'alice'} "
    assert hint + "--server-host " in listing.output


def test_json_documents_re_parse(store: CAStore, tmp_path: Path) -> None:
    import json

    made = run(
        "cert", "client", "alice", "--ca-dir", str(store.path), "--out", str(tmp_path / "alice"),
        "--server-host", "db.example.com", "--port", "6432", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    doc = json.loads(made.output)
    assert doc["schema"] == "pgbatten.cert-client/1"
    assert doc["server"] == {"host": "db.example.com", "port": 6432, "dbname": "postgres"}
    [entry] = store.entries()
    assert doc["certificate"]["serial"] == str(entry.serial)
    assert doc["certificate"]["serial_hex"] == f"{entry.serial:#x}"
    assert doc["bundle"]["files"]["key"] == str(tmp_path / "alice" / "postgresql.key")
    assert pkcs12.load_pkcs12(
        (tmp_path / "alice" / "postgresql.p12").read_bytes(), doc["p12_password"].encode()
    ).cert
    assert doc["earlier"] == [] and doc["warnings"] == []

    revoked = json.loads(run("cert", "revoke", "alice", "--ca-dir", str(store.path), "--json").output)
    assert revoked["schema"] == "pgbatten.cert-revoke/1"
    assert [r["serial"] for r in revoked["revoked"]] == [str(entry.serial)]
    assert revoked["crl"]["entries"] == 1 and revoked["crl"]["number"] == 1
    assert revoked["cluster"] is None

    refreshed = json.loads(run("crl", "refresh", "--ca-dir", str(store.path), "--json").output)
    assert refreshed["schema"] == "pgbatten.crl-refresh/1"
    assert refreshed["crl"]["number"] == 2
    assert refreshed["crl"]["size_bytes"] == store.crl_path.stat().st_size

    listing = json.loads(run("cert", "list", "--ca-dir", str(store.path), "--json").output)
    assert listing["schema"] == "pgbatten.cert-list/1"
    [item] = listing["certificates"]
    assert (item["name"], item["status"], item["serial"]) == ("alice", "revoked", str(entry.serial))
    assert listing["crl"]["entries"] == 1
    assert listing["warnings"] == []


def test_cert_list_summarises_many_warnings(store: CAStore, tmp_path: Path) -> None:
    from pgbatten.pki import InventoryEntry

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    store.inventory.add_many(InventoryEntry("client", f"u{i}", 1000 + i, soon, "AB:CD") for i in range(25))
    result = run("cert", "list", "--ca-dir", str(store.path))
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 21
    assert "... and 5 more like that (expiring); 'pgbatten cert list --json' lists every one" in warnings[-1]
    import json

    assert (
        len(json.loads(run("cert", "list", "--ca-dir", str(store.path), "--json").output)["warnings"]) == 25
    )


def test_ca_init_json(tmp_path: Path) -> None:
    import json

    from cryptography import x509

    from pgbatten.certfacts import fingerprint_sha256

    result = run("ca", "init", "--ca-dir", str(tmp_path / "ca"), "--common-name", "Ops CA", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
    assert doc["schema"] == "pgbatten.ca-init/1"
    assert doc["certificate"] == str(tmp_path / "ca" / "ca.crt")
    assert (doc["common_name"], doc["key_type"], doc["key_encrypted"]) == ("Ops CA", "ecdsa-p256", False)
    assert doc["serial"] == str(cert.serial_number)
    assert doc["fingerprint_sha256"] == fingerprint_sha256(cert)
    # An error stays one line on stderr, with no JSON on stdout.
    again = run("ca", "init", "--ca-dir", str(tmp_path / "ca"), "--json")
    refused(again, "already exists")
    assert again.stdout == ""


def test_revocation_is_a_library_call_that_returns_what_it_did(store: CAStore, tmp_path: Path) -> None:
    # The CLI only prints: revoke_and_install returns the revoked entries and the signed CRL, and tells its
    # caller (once, before any cluster work) that the CA side is done.
    from pgbatten.lifecycle.revoke import refresh_and_install, revoke_and_install

    issue(store, "alice", tmp_path / "alice")
    seen: list[int] = []
    run_ = revoke_and_install(
        store,
        "alice",
        passphrase=None,
        cluster=None,
        crl_days=30,
        timeout=5,
        progress=lambda revoked, _crl: seen.extend(e.serial for e in revoked),
    )
    assert [e.name for e in run_.revoked] == ["alice"] and seen == [run_.revoked[0].serial]
    assert run_.crl.entries == 1 and run_.installed is None and run_.still_served == ()
    assert [e.serial for e in store.entries() if e.revoked_at is not None] == seen
    refreshed = refresh_and_install(store, passphrase=None, cluster=None, crl_days=7, timeout=5)
    assert refreshed.crl.entries == 1 and refreshed.installed is None
    assert refreshed.crl.next_update is not None and run_.crl.next_update is not None
    assert refreshed.crl.next_update < run_.crl.next_update
