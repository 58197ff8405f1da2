from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.errors import PKIError
from pgbatten.pki import (
    CAStore,
    CertificateAuthority,
    CertKind,
    IssuedCertificate,
    KeyType,
    default_ca_dir,
    parse_serial,
    private_key_pem,
)

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> CAStore:
    return CAStore(tmp_path / "ca")


# -- default location -------------------------------------------------------------------------------------


def test_default_ca_dir_prefers_env_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PGBATTEN_CA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_ca_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PGBATTEN_CA_DIR")
    assert default_ca_dir() == tmp_path / "xdg" / "pgbatten" / "ca"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_ca_dir() == tmp_path / "home" / ".local" / "share" / "pgbatten" / "ca"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_ca_dir() == tmp_path / "home" / ".local" / "share" / "pgbatten" / "ca"


# -- init / load ------------------------------------------------------------------------------------------


def test_init_writes_private_dir_and_modes(store: CAStore) -> None:
    assert not store.exists()
    ca = store.init(common_name="Test CA", now=NOW)
    assert store.exists()
    assert _mode(store.path) == 0o700
    assert _mode(store.ca_key_path) == 0o600
    assert _mode(store.ca_cert_path) == 0o644
    assert x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes()) == ca.certificate
    assert not [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")]


def test_init_refuses_an_existing_ca(store: CAStore) -> None:
    first = store.init()
    with pytest.raises(PKIError, match="already exists"):
        store.init()
    assert store.load().certificate == first.certificate


def test_load_round_trips_and_load_or_init_reuses(store: CAStore) -> None:
    created = store.load_or_init(key_type=KeyType.RSA_2048)
    loaded = store.load()
    assert loaded.certificate == created.certificate
    assert loaded.key.private_numbers() == created.key.private_numbers()
    assert store.load_or_init().certificate == created.certificate


def test_missing_ca_says_how_to_create_one(store: CAStore) -> None:
    with pytest.raises(PKIError) as info:
        store.load()
    assert str(info.value) == f"no CA in {store.path}; run 'pgbatten ca init' to create one"


def test_passphrase_protected_key(store: CAStore) -> None:
    created = store.init(passphrase=b"correct horse")
    assert b"ENCRYPTED" in store.ca_key_path.read_bytes()
    assert store.load(b"correct horse").key.private_numbers() == created.key.private_numbers()
    with pytest.raises(PKIError) as info:
        store.load(b"wrong")
    assert str(info.value) == f"wrong passphrase for CA key {store.ca_key_path}"
    with pytest.raises(PKIError) as info:
        store.load()
    assert str(info.value) == f"CA key {store.ca_key_path} is encrypted and no passphrase was given"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_accessible_key_is_refused(store: CAStore, mode: int) -> None:
    store.init()
    os.chmod(store.ca_key_path, mode)
    with pytest.raises(PKIError) as info:
        store.load()
    message = str(info.value)
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {store.ca_key_path}" in message
    assert "\n" not in message


def test_key_not_matching_certificate_is_refused(store: CAStore, tmp_path: Path) -> None:
    store.init()
    other = CAStore(tmp_path / "other")
    other.init()
    store.ca_key_path.write_bytes(other.ca_key_path.read_bytes())
    with pytest.raises(PKIError, match="does not belong to certificate"):
        store.load()


def test_half_a_ca_is_reported(store: CAStore) -> None:
    # A complete CA (its inventory exists) that lost its certificate may have signed what is in use.
    store.init()
    store.ca_cert_path.unlink()
    key = store.ca_key_path.read_bytes()
    assert store.exists() and not store.half_made()
    with pytest.raises(PKIError, match=r"ca\.crt is missing, and this CA was in use.*restore"):
        store.load()
    with pytest.raises(PKIError, match=r"will not replace a CA"):
        store.init()
    assert store.set_aside_half_made() is None
    assert store.ca_key_path.read_bytes() == key
    assert list(store.path.glob("ca.key.*")) == []


def _half_made(store: CAStore) -> bytes:
    """Only ca.key, as a run killed between writing the key and the certificate leaves it."""
    store.path.mkdir(parents=True)
    key = private_key_pem(CertificateAuthority.create().key)
    store.ca_key_path.write_bytes(key)
    store.ca_key_path.chmod(0o600)
    return key


def test_a_half_made_ca_says_how_to_finish_it(store: CAStore) -> None:
    _half_made(store)
    assert store.half_made()
    with pytest.raises(PKIError, match=r"interrupted 'pgbatten ca init'.*run 'pgbatten ca init'"):
        store.load()


def test_init_replaces_a_half_made_ca_and_keeps_its_key(store: CAStore) -> None:
    key = _half_made(store)
    ca = store.init()
    assert store.load().certificate == ca.certificate
    (kept,) = store.path.glob("ca.key.interrupted-*")
    assert kept.read_bytes() == key and _mode(kept) == 0o600
    assert store.ca_key_path.read_bytes() != key


@pytest.mark.parametrize("signed", ["inventory", "crl"])
def test_a_key_that_may_have_signed_something_is_never_replaced(store: CAStore, signed: str) -> None:
    key = _half_made(store)
    if signed == "inventory":
        store.inventory.create()
    else:
        store.crl_path.write_bytes(b"-----BEGIN X509 CRL-----\n")
    assert not store.half_made()
    with pytest.raises(PKIError, match="will not replace"):
        store.init()
    assert store.ca_key_path.read_bytes() == key and not store.ca_cert_path.exists()


# -- inventory, revocation, CRL ---------------------------------------------------------------------------


def test_record_and_entries_round_trip(store: CAStore) -> None:
    ca = store.init()
    server = ca.issue_server(["db.example.com"])
    alice = ca.issue_client("alice")
    store.record(server, "server", "db.example.com")
    store.record(alice, "client", "alice")
    entries = store.entries()
    assert [(e.kind, e.name, e.serial) for e in entries] == [
        ("server", "db.example.com", server.serial),
        ("client", "alice", alice.serial),
    ]
    assert entries[1].fingerprint_sha256 == alice.fingerprint_sha256
    assert entries[1].not_after == alice.not_after
    assert entries[1].revoked_at is None
    raw = entries[1].to_json()
    assert raw["serial"] == str(alice.serial)
    assert raw["not_after"].endswith("Z")
    assert _mode(store.inventory_path) == 0o600
    with pytest.raises(PKIError, match="already in the CA inventory"):
        store.record(alice, "client", "alice")


def test_find_by_name_and_every_serial_spelling(store: CAStore) -> None:
    ca = store.init()
    alice = ca.issue_client("alice")
    store.record(alice, "client", "alice")
    store.record(ca.issue_client("bob"), "client", "bob")
    hex_plain = f"{alice.serial:x}"
    colon = ":".join(f"{alice.serial:040x}"[i : i + 2] for i in range(0, 40, 2)).upper()
    for spelling in ("alice", str(alice.serial), f"0x{hex_plain}", f"0X{hex_plain.upper()}", colon):
        assert [e.serial for e in store.find(spelling)] == [alice.serial], spelling
    assert store.find("carol") == []


def test_parse_serial() -> None:
    assert parse_serial("255") == 255
    assert parse_serial("0xff") == 255
    assert parse_serial("0F:A0") == 0x0FA0
    assert parse_serial("alice") is None
    assert parse_serial("0xzz") is None
    assert parse_serial("abc:def") is None


def test_revoke_user_revokes_all_their_unrevoked_client_certs(store: CAStore) -> None:
    ca = store.init()
    first = ca.issue_client("bob")
    second = ca.issue_client("bob")
    alice = ca.issue_client("alice")
    # A server whose name equals a user must not be swept up by revoking that user.
    server = ca.issue_server(["bob"])
    records: list[tuple[IssuedCertificate, CertKind, str]] = [
        (first, "client", "bob"),
        (second, "client", "bob"),
        (alice, "client", "alice"),
        (server, "server", "bob"),
    ]
    for issued, kind, name in records:
        store.record(issued, kind, name)
    revoked = store.revoke("bob", now=NOW)
    assert {e.serial for e in revoked} == {first.serial, second.serial}
    assert all(e.revoked_at == NOW for e in revoked)
    state = {e.serial: e.revoked_at for e in store.entries()}
    assert state == {first.serial: NOW, second.serial: NOW, alice.serial: None, server.serial: None}
    with pytest.raises(PKIError) as info:
        store.revoke("bob")
    assert str(info.value) == "every certificate for 'bob' is already revoked"


def test_revoke_by_serial_and_unknown(store: CAStore) -> None:
    ca = store.init()
    server = ca.issue_server(["db.example.com"])
    store.record(server, "server", "db.example.com")
    assert [e.serial for e in store.revoke(f"0x{server.serial:x}", now=NOW)] == [server.serial]
    with pytest.raises(PKIError) as info:
        store.revoke("bob")
    assert str(info.value) == "no certificate for 'bob' in the CA inventory"


def test_crl_round_trip_with_increasing_numbers(store: CAStore) -> None:
    ca = store.init(now=NOW)
    assert store.load_crl() is None
    bob = ca.issue_client("bob", now=NOW)
    alice = ca.issue_client("alice", now=NOW)
    store.record(bob, "client", "bob")
    store.record(alice, "client", "alice")
    empty = store.write_crl(ca, now=NOW)
    assert len(empty) == 0
    store.revoke("bob", now=NOW + dt.timedelta(hours=1))
    store.write_crl(ca, now=NOW + dt.timedelta(hours=2), days=7)

    crl = store.load_crl()
    assert crl is not None
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert crl.next_update_utc == NOW + dt.timedelta(hours=2, days=7)
    entry = crl.get_revoked_certificate_by_serial_number(bob.serial)
    assert entry is not None
    assert entry.revocation_date_utc == NOW + dt.timedelta(hours=1)
    assert crl.get_revoked_certificate_by_serial_number(alice.serial) is None
    assert _mode(store.crl_path) == 0o644

    # The CRL number survives reloading the store from disk.
    again = CAStore(store.path).write_crl(store.load(), now=NOW + dt.timedelta(hours=3))
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_corrupt_inventory_is_a_pki_error(store: CAStore) -> None:
    store.init()
    store.inventory_path.unlink()  # a CA directory of an older pgbatten, about to be migrated
    store.legacy_inventory_path.write_text('{"certificates": [{"kind": "nope"}]}')
    with pytest.raises(PKIError, match=r"inventory\.json is corrupt"):
        store.entries()


def test_inventory_survives_a_different_ca_instance(store: CAStore, tmp_path: Path) -> None:
    # A store is just a path: two objects for one directory see the same inventory.
    ca: CertificateAuthority = store.init()
    store.record(ca.issue_client("alice"), "client", "alice")
    assert [e.name for e in CAStore(tmp_path / "ca").entries()] == ["alice"]


def test_inventory_that_is_not_utf8_is_a_pki_error(store: CAStore) -> None:
    store.init(now=NOW)
    store.inventory_path.unlink()
    store.legacy_inventory_path.write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(PKIError, match="is corrupt"):
        store.entries()


# -- the SQLite inventory: migration, concurrency, corruption ---------------------------------------------


def test_inventory_json_is_migrated_once_and_kept_as_backup(store: CAStore) -> None:
    ca = store.init(now=NOW)
    alice = ca.issue_client("alice", now=NOW)
    server = ca.issue_server(["db.example.com"], now=NOW)
    store.inventory_path.unlink()
    legacy = {
        "version": 1,
        "crl_number": 7,
        "certificates": [
            # an inventory written before 0.2: lower-case hex fingerprint without colons
            {
                "kind": "server",
                "name": "db.example.com",
                "serial": str(server.serial),
                "not_after": server.not_after.isoformat().replace("+00:00", "Z"),
                "fingerprint_sha256": server.fingerprint_sha256.replace(":", "").lower(),
                "revoked_at": None,
            },
            {
                "kind": "client",
                "name": "alice",
                "serial": str(alice.serial),
                "not_after": alice.not_after.isoformat().replace("+00:00", "Z"),
                "fingerprint_sha256": alice.fingerprint_sha256,
                "revoked_at": "2030-06-02T00:00:00Z",
            },
        ],
    }
    text = json.dumps(legacy, indent=2)
    store.legacy_inventory_path.write_text(text)

    entries = store.entries()  # a read migrates too
    assert [(e.kind, e.name, e.serial) for e in entries] == [
        ("server", "db.example.com", server.serial),
        ("client", "alice", alice.serial),
    ]
    assert entries[0].fingerprint_sha256 == server.fingerprint_sha256
    assert entries[1].revoked_at == dt.datetime(2030, 6, 2, tzinfo=dt.UTC)
    assert not store.legacy_inventory_path.exists()
    assert (store.path / "inventory.json.bak").read_text() == text
    assert _mode(store.inventory_path) == 0o600
    # The CRL numbering goes on where the JSON file left it.
    crl = store.write_crl(ca, now=NOW)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 8
    assert [r.serial_number for r in crl] == [alice.serial]
    # Once only: a JSON file that reappears is not read again.
    store.legacy_inventory_path.write_text(text.replace("alice", "mallory"))
    assert [e.name for e in store.entries()] == ["db.example.com", "alice"]


def test_a_corrupt_database_is_a_pki_error(store: CAStore) -> None:
    store.init()
    store.inventory_path.write_bytes(b"this is not an SQLite database, not at all" * 100)
    with pytest.raises(PKIError, match=r"inventory\.sqlite3 is corrupt"):
        store.entries()


def test_concurrent_runs_record_every_certificate(store: CAStore) -> None:
    # Separate processes, as two pgbatten commands would be: SQLite's locks serialise them.
    import multiprocessing

    store.init()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        serials = pool.map(_issue_into, [(str(store.path), f"user{i}") for i in range(24)])
    recorded = {e.serial: e.name for e in store.entries()}
    assert recorded == {serial: f"user{i}" for i, serial in enumerate(serials)}


def _issue_into(args: tuple[str, str]) -> int:
    path, user = args
    store = CAStore(Path(path))
    issued = store.load().issue_client(user)
    store.record(issued, "client", user)
    store.revoke(user)
    return issued.serial


def test_installation_and_crl_installs_are_remembered(store: CAStore) -> None:
    from pgbatten.pki import ClusterRef, Installation

    ca = store.init()
    ref = ClusterRef.of("15/main", Path("/var/lib/postgresql/15/main"))
    assert ref.args() == ["--cluster", "15/main"]
    assert ClusterRef.of("/srv/pg", Path("/srv/pg")).args() == ["--pgdata", "/srv/pg"]
    server = ca.issue_server(["db.example.com"])
    where = Installation(Path("/etc/postgresql/15/main/pgbatten-server.crt"), ref)
    store.record(server, "server", "db.example.com", installed=where)
    [entry] = store.entries()
    assert entry.installed == where
    later = ca.issue_server(["db.example.com"])
    store.record(later, "server", "db.example.com")
    store.set_installed(later.serial, where)
    assert store.entries()[1].installed == where

    store.note_crl_install(ref, Path("/etc/postgresql/15/main/pgbatten-ca.crl"), now=NOW)
    store.note_crl_install(ref, Path("/etc/postgresql/15/main/pgbatten-ca.crl"), now=NOW)
    [install] = store.inventory.crl_installs()
    assert (install.cluster, install.installed_at) == (ref, NOW)


def test_crl_refresh_of_a_directory_still_holding_inventory_json(store: CAStore) -> None:
    # The first command after an upgrade may be crl refresh: it migrates under the lock it already holds.
    ca = store.init(now=NOW)
    bob = ca.issue_client("bob", now=NOW)
    store.inventory_path.unlink()
    store.legacy_inventory_path.write_text(
        json.dumps(
            {
                "crl_number": 3,
                "certificates": [
                    {
                        "kind": "client",
                        "name": "bob",
                        "serial": str(bob.serial),
                        "not_after": bob.not_after.isoformat(),
                        "fingerprint_sha256": bob.fingerprint_sha256,
                        "revoked_at": NOW.isoformat(),
                    }
                ],
            }
        )
    )
    crl = store.write_crl(ca, now=NOW)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4
    assert [r.serial_number for r in crl] == [bob.serial]


# -- the CA directory's one lock ----------------------------------------------------------------------------


def test_the_ca_lock_nests_within_one_process(store: CAStore) -> None:
    # secure, renew, ca rotate and cert revoke hold the lock for their whole run; the store's own steps
    # (signing the CRL, creating the inventory) take it again inside and must not wait for themselves.
    ca = store.init(now=NOW)
    number = x509.CRLNumber
    # The same directory by another spelling is the same lock.
    with store.lock(wait=0), CAStore(store.path / ".." / "ca").lock(wait=0):
        crl = store.write_crl(ca, now=NOW)
        assert crl.extensions.get_extension_for_class(number).value.crl_number == 1
        with store.lock(wait=0):
            crl = store.write_crl(ca, now=NOW)
            assert crl.extensions.get_extension_for_class(number).value.crl_number == 2
    # Released when the outermost holder leaves: a second process gets it at once.
    assert _other_process_locks(store.path, wait=0) == "locked"


def test_a_second_process_waits_for_the_ca_lock_then_refuses(store: CAStore) -> None:
    store.init()
    with store.lock(wait=0):
        # Another run (here: another process) waits its lock_wait, then says who holds the directory.
        assert _other_process_locks(store.path, wait=0.3).startswith(
            f"busy: another pgbatten run is changing the CA in {store.path}"
        )
        # CRL signing in another process is refused the same way (it would otherwise race a rotation).
        assert _other_process_locks(store.path, wait=0.3, then="crl").startswith("busy:")
    assert _other_process_locks(store.path, wait=0, then="crl") == "locked"


def _other_process_locks(path: Path, *, wait: float, then: str = "") -> str:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pgbatten.errors import BusyError\n"
        "from pgbatten.pki import CAStore\n"
        "store = CAStore(Path(sys.argv[1]))\n"
        "try:\n"
        "    with store.lock(wait=float(sys.argv[2])):\n"
        "        if sys.argv[3] == 'crl':\n"
        "            store.write_crl(store.load())\n"
        "    print('locked')\n"
        "except BusyError as exc:\n"
        "    print('busy:', exc)\n"
    )
    if then == "crl":
        # write_crl takes the lock itself (waiting CA_LOCK_WAIT): ask it alone, with a short wait.
        code = code.replace(
            "    with store.lock(wait=float(sys.argv[2])):\n        if", "    if True:\n        if"
        )
        code = code.replace(
            "store = CAStore(",
            "import pgbatten.pki.store as m; m.CA_LOCK_WAIT = float(sys.argv[2])\nstore = CAStore(",
        )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(wait), then],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()
