"""The matrix's pure parts (judging a cell, libpq's documented sslmodes, departures), the forger's
certificates, and the SCRAM proof the man in the middle computes."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509

from pgbatten.attack.auth import client_proof, startup_params
from pgbatten.attack.drivers import Outcome, Setting, Variant
from pgbatten.attack.forge import WRONG_HOST, Attack, forge
from pgbatten.attack.matrix import (
    EXPECTED_VALUE,
    NO_ATTACK,
    Cell,
    MatrixResult,
    judge,
    libpq_documented,
    parse_clients,
)
from pgbatten.attack.mitm_connection import MitmConnection, Verdict
from pgbatten.certfacts import host_names, is_self_signed, issued_by
from pgbatten.errors import UsageError
from pgbatten.pki import CertificateAuthority
from pgbatten.probe.wire import startup_message


def _conn(**kw: object) -> MitmConnection:
    conn = MitmConnection(1, ("127.0.0.1", 1), Attack.SELF_SIGNED)
    for key, value in kw.items():
        setattr(conn, key, value)
    return conn


def test_judge_takes_the_worst_connection_and_checks_the_client() -> None:
    setting = Setting("prefer")
    refused = _conn(refusal="alert unknown_ca")
    read = _conn(startup={"user": "app"}, upstream_login="ok", ready=True, queries=["SELECT 1"])
    cell = judge("psql", setting, Attack.SELF_SIGNED, Outcome(EXPECTED_VALUE), [refused, read])
    assert (cell.verdict, cell.consistent) == (Verdict.READ, True)
    assert cell.captured == ("user", "SQL")
    # Rows through the attacker without a read verdict (or the other way round) is a bug, and shows.
    fooled = _conn(startup={"user": "app"}, upstream_login="failed: x")
    assert not judge("psql", setting, Attack.SELF_SIGNED, Outcome(EXPECTED_VALUE), [fooled]).consistent
    assert not judge("psql", setting, Attack.SELF_SIGNED, Outcome(None, "err"), [read]).consistent
    assert judge("psql", setting, Attack.SELF_SIGNED, Outcome(None, "x"), []).verdict == "no connection"
    na = judge("node", setting, Attack.STRIP, Outcome(None, unsupported="no require_auth"), [])
    assert (na.verdict, na.detail) == ("n/a", "no require_auth")


def test_libpq_documented_sslmodes() -> None:
    went_on = {
        mode: {a for a in Attack if libpq_documented(mode, a)}
        for mode in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
    }
    assert went_on["prefer"] == set(Attack)
    assert went_on["require"] == set(Attack) - {Attack.STRIP}
    assert went_on["verify-ca"] == {Attack.SAME_CA_WRONG_HOST, Attack.DOWNGRADE_AUTH}
    assert went_on["verify-full"] == set()


def test_departures_name_what_differs_from_libpq() -> None:
    require = Setting("require")
    result = MatrixResult(
        [], [require, Setting("require", Variant.CHANNEL_BINDING)], [Attack.STRIP, Attack.SELF_SIGNED]
    )
    result.cells = [
        Cell(
            "node", require, NO_ATTACK, "fails", Outcome(None, "self-signed certificate in certificate chain")
        ),
        Cell("node", require, str(Attack.STRIP), Verdict.REFUSED, Outcome(None)),
        Cell("node", require, str(Attack.SELF_SIGNED), Verdict.REFUSED, Outcome(None)),
    ]
    assert result.departures("node") == [
        "sslmode=require does not connect with no attacker (self-signed certificate in certificate chain); "
        "refuses self-signed, which libpq's require lets through"
    ]
    assert result.departures("psql") == []


def test_parse_clients() -> None:
    assert parse_clients(None) == ["psql", "psycopg", "jdbc", "node"]
    assert parse_clients("node, psql,node") == ["node", "psql"]
    with pytest.raises(UsageError, match="--clients"):
        parse_clients("psql,odbc")


def test_forgeries() -> None:
    ca = CertificateAuthority.create()
    names = ("db.example.test", "127.0.0.1")
    now = dt.datetime.now(dt.UTC)
    assert forge(Attack.STRIP, names) is None
    self_signed = forge(Attack.SELF_SIGNED, names)
    assert self_signed is not None and is_self_signed(self_signed.certificate)
    assert host_names(self_signed.certificate) == names
    other = forge(Attack.OTHER_CA, names, ca=ca)
    assert other is not None and not issued_by(other.certificate, ca.certificate)
    assert issued_by(other.certificate, other.chain[0]) and host_names(other.certificate) == names
    wrong = forge(Attack.SAME_CA_WRONG_HOST, names, ca=ca)
    assert wrong is not None and issued_by(wrong.certificate, ca.certificate)
    assert host_names(wrong.certificate) == (WRONG_HOST,) and not wrong.follows_names
    expired = forge(Attack.EXPIRED, names, ca=ca)
    assert expired is not None and issued_by(expired.certificate, ca.certificate)
    assert expired.certificate.not_valid_after_utc < now
    alone = forge(Attack.EXPIRED, names)
    assert alone is not None and is_self_signed(alone.certificate)
    downgrade = forge(Attack.DOWNGRADE_AUTH, names)
    assert downgrade is not None and is_self_signed(downgrade.certificate)
    with pytest.raises(UsageError, match="needs the CA the client trusts"):
        forge(Attack.SAME_CA_WRONG_HOST, names)
    assert isinstance(self_signed.certificate, x509.Certificate)


def test_scram_client_proof_rfc7677_vector() -> None:
    proof = client_proof(
        "pencil",
        "n=user,r=rOprNGfwEbeRWgbNEkqO",
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    )
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


def test_startup_params() -> None:
    assert startup_params(startup_message("app", "shop", {"application_name": "x"})) == {
        "user": "app",
        "database": "shop",
        "application_name": "x",
    }
    assert startup_params(b"\x00\x00\x00\x08\x04\xd2\x16\x2f") == {}
