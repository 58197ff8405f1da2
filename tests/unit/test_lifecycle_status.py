"""status as a pure judgement of facts at a given ``now``: levels, exit statuses, findings, next steps,
and the JSON and Prometheus renderings."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.lifecycle.export import prometheus_text, report_json, write_textfile
from pgbatten.lifecycle.facts import CAFacts, ClusterFacts, Served, split_crls
from pgbatten.lifecycle.status import evaluate
from pgbatten.lifecycle.timeline import Thresholds, Window
from pgbatten.pki import CertificateAuthority, ClusterRef, InventoryEntry

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
CA_DIR = Path("/srv/ca")
PGDATA = Path("/srv/pg/data")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=T0)


def server(ca: CertificateAuthority, days: int = 365) -> x509.Certificate:
    return ca.issue_server(["db.example.test", "127.0.0.1"], days=days, now=T0).certificate


def ca_facts(
    ca: CertificateAuthority, entries: tuple[InventoryEntry, ...] = (), crl_days: int | None = None
) -> CAFacts:
    crl = ca.build_crl([], number=1, days=crl_days, now=T0) if crl_days else None
    return CAFacts(
        path=CA_DIR, certificate=ca.certificate, entries=entries, crl=crl, crl_size=300 if crl else None
    )


def cluster(
    cert: x509.Certificate | None,
    ca: CertificateAuthority,
    *,
    served: x509.Certificate | None = None,
    crl: x509.CertificateRevocationList | None = None,
) -> ClusterFacts:
    chain = (cert,) if cert is not None else ()
    return ClusterFacts(
        ref=ClusterRef.data_directory(PGDATA),
        label=str(PGDATA),
        running=True,
        pid=4711,
        port=5432,
        settings={"ssl": "on", "listen_addresses": "localhost"},
        cert_path=PGDATA / "pgbatten-server.crt",
        chain=chain,
        ca_file_path=PGDATA / "pgbatten-ca.crt",
        ca_file=(ca.certificate,),
        crl_file_path=PGDATA / "pgbatten-ca.crl" if crl is not None else None,
        crls=(crl,) if crl is not None else (),
        crl_file_size=300 if crl is not None else None,
        served=Served("127.0.0.1", 5432, chain=(served,) if served is not None else chain),
    )


def ids(report: object) -> set[str]:
    return {f.id for f in report.findings}  # type: ignore[attr-defined]


def test_fresh_cluster_is_ok_and_says_when_renewal_comes(ca: CertificateAuthority) -> None:
    cert = server(ca)
    report = evaluate(ca_facts(ca), [cluster(cert, ca)], now=T0 + DAY)
    assert report.exit_status == 0
    assert report.actions == ()
    view = report.clusters[0].server_certificate
    assert view is not None
    assert view.served is True and not view.renew_due
    assert view.renew_at is not None
    assert view.renew_at.date() == (cert.not_valid_after_utc - dt.timedelta(days=365) / 3).date()
    assert view.sans == ("db.example.test", "127.0.0.1")


def test_moving_the_clock_walks_through_due_warning_critical(ca: CertificateAuthority) -> None:
    cert = server(ca)
    end = cert.not_valid_after_utc
    facts = [cluster(cert, ca)]
    due = evaluate(ca_facts(ca), facts, now=end - 100 * DAY)
    assert due.exit_status == 0
    assert "server-cert-renewal-due" in ids(due)
    renew = f"pgbatten renew --pgdata {PGDATA} --ca-dir {CA_DIR}"
    assert [a.command for a in due.actions] == [renew]
    warning = evaluate(ca_facts(ca), facts, now=end - 20 * DAY)
    assert warning.exit_status == 1 and "server-cert-expiring" in ids(warning)
    critical = evaluate(ca_facts(ca), facts, now=end - 3 * DAY)
    assert critical.exit_status == 2
    expired = evaluate(ca_facts(ca), facts, now=end + DAY)
    assert expired.exit_status == 2 and "server-cert-expired" in ids(expired)
    assert renew in [a.command for a in expired.actions]


def test_thresholds_are_settable(ca: CertificateAuthority) -> None:
    cert = server(ca)
    facts = [cluster(cert, ca)]
    limits = Thresholds(certificate=Window(400 * DAY, 7 * DAY))
    assert evaluate(ca_facts(ca), facts, now=T0 + DAY, thresholds=limits).exit_status == 1
    limits = Thresholds(certificate=Window(400 * DAY, 400 * DAY))
    assert evaluate(ca_facts(ca), facts, now=T0 + DAY, thresholds=limits).exit_status == 2
    before = Thresholds(renew_before=364 * DAY)
    assert "server-cert-renewal-due" in ids(evaluate(ca_facts(ca), facts, now=T0 + DAY, thresholds=before))


def test_a_certificate_on_disk_that_is_not_served_is_a_warning(ca: CertificateAuthority) -> None:
    installed, old = server(ca), server(ca)
    report = evaluate(ca_facts(ca), [cluster(installed, ca, served=old)], now=T0 + DAY)
    assert report.exit_status == 1
    assert "server-cert-not-served" in ids(report)
    served = report.clusters[0].served
    assert served is not None and served.matches_installed is False and served.serial == old.serial_number


def test_crl_resign_and_expiry(ca: CertificateAuthority) -> None:
    crl = ca.build_crl([], number=3, days=30, now=T0)
    facts = [cluster(server(ca), ca, crl=crl)]
    fresh = evaluate(ca_facts(ca, crl_days=30), facts, now=T0 + DAY)
    assert fresh.exit_status == 0
    assert fresh.clusters[0].crls[0].number == 3
    half = evaluate(ca_facts(ca, crl_days=30), facts, now=T0 + 16 * DAY)
    assert half.exit_status == 0 and "crl-resign-due" in ids(half)
    close = evaluate(ca_facts(ca, crl_days=30), facts, now=T0 + 25 * DAY)
    assert close.exit_status == 1 and "installed-crl-expiring" in ids(close)
    lapsed = evaluate(ca_facts(ca, crl_days=30), facts, now=T0 + 31 * DAY)
    assert lapsed.exit_status == 2 and {"installed-crl-expired", "crl-expired"} <= ids(lapsed)


def test_an_installed_crl_older_than_the_cas_is_stale(ca: CertificateAuthority) -> None:
    installed = ca.build_crl([], number=1, days=30, now=T0)
    newer = ca.build_crl([(12345, T0)], number=2, days=30, now=T0)
    facts = CAFacts(path=CA_DIR, certificate=ca.certificate, crl=newer)
    report = evaluate(facts, [cluster(server(ca), ca, crl=installed)], now=T0 + DAY)
    assert "installed-crl-stale" in ids(report) and report.exit_status == 1


def test_client_certificates_newest_per_user_counts(ca: CertificateAuthority) -> None:
    def entry(name: str, serial: int, days: int, revoked: bool = False) -> InventoryEntry:
        return InventoryEntry("client", name, serial, T0 + days * DAY, "AA:BB", T0 if revoked else None)

    entries = (
        entry("alice", 1, 10),  # replaced by 2, ends soon: not alice's problem
        entry("alice", 2, 365),
        entry("bob", 3, 20),  # bob's only certificate: a warning
        entry("carol", 4, 5, revoked=True),
    )
    report = evaluate(ca_facts(ca, entries), [], now=T0 + DAY)
    assert report.exit_status == 1
    found = ids(report)
    assert "client-cert-expiring" in found and "client-cert-replaced" in found
    bob = next(f for f in report.findings if f.id == "client-cert-expiring")
    assert "bob" in bob.title and bob.fix == f"pgbatten renew --client bob --ca-dir {CA_DIR}"
    states = {(c.name, c.serial): str(c.state) for c in report.clients}
    assert states[("carol", 4)] == "revoked"


def test_ca_close_to_its_end_asks_for_rotation(ca: CertificateAuthority) -> None:
    end = ca.not_after
    report = evaluate(ca_facts(ca), [], now=end - 200 * DAY)
    assert report.exit_status == 1
    assert [a.command for a in report.actions] == [f"pgbatten ca rotate --ca-dir {CA_DIR}"]
    assert evaluate(ca_facts(ca), [], now=end - 10 * DAY).exit_status == 2


def test_missing_ca_and_unreadable_cluster_are_critical() -> None:
    report = evaluate(CAFacts(path=CA_DIR, certificate=None, error="no CA"), [], now=T0)
    assert report.exit_status == 2
    bad = ClusterFacts(ref=ClusterRef.named("15/main"), label="15/main", error="no cluster 15/main")
    ca = CertificateAuthority.create(now=T0)
    assert evaluate(ca_facts(ca), [bad], now=T0).exit_status == 2


def test_json_is_plain_data(ca: CertificateAuthority) -> None:
    report = evaluate(ca_facts(ca, crl_days=30), [cluster(server(ca), ca)], now=T0 + DAY)
    data = json.loads(json.dumps(report_json(report)))
    assert data["exit_status"] == 0 and data["level"] == "ok"
    cluster_json = data["clusters"][0]
    assert cluster_json["server_certificate"]["served"] is True
    assert cluster_json["server_certificate"]["serial"].startswith("0x")
    assert data["crl"]["next_update"].endswith("Z")
    assert data["rotation"] is None


def test_prometheus_textfile(ca: CertificateAuthority, tmp_path: Path) -> None:
    crl = ca.build_crl([], number=1, days=30, now=T0)
    cert = server(ca)
    report = evaluate(ca_facts(ca, crl_days=30), [cluster(cert, ca, crl=crl)], now=T0 + DAY)
    text = prometheus_text(report)
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('pgbatten_certificate_not_after_timestamp_seconds{kind="server"')
    )
    assert f'serial="{cert.serial_number:#x}"' in line
    assert line.endswith(f" {int(cert.not_valid_after_utc.timestamp())}")
    assert "# TYPE pgbatten_crl_next_update_timestamp_seconds gauge" in text
    assert f'pgbatten_crl_next_update_timestamp_seconds{{where="{PGDATA}"' in text
    assert "pgbatten_status_level 0" in text
    # Every sample line is "name{labels} value" or "name value".
    for ln in text.splitlines():
        if not ln.startswith("#"):
            float(ln.rsplit(" ", 1)[1])
    target = tmp_path / "pgbatten.prom"
    write_textfile(target, report)
    assert target.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["pgbatten.prom"]


def test_prometheus_escapes_label_values(ca: CertificateAuthority) -> None:
    entries = (InventoryEntry("client", 'we"ird\\name', 7, T0 + 300 * DAY, "AA"),)
    text = prometheus_text(evaluate(ca_facts(ca, entries), [], now=T0))
    assert 'name="we\\"ird\\\\name"' in text


def test_split_crls_reads_every_crl_of_a_file(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives import serialization

    other = CertificateAuthority.create(common_name="other", now=T0)
    pem = b"".join(
        c.build_crl([], number=1, days=30, now=T0).public_bytes(serialization.Encoding.PEM)
        for c in (ca, other)
    )
    crls = split_crls(pem)
    assert [c.issuer.rfc4514_string() for c in crls] == ["CN=pgbatten CA", "CN=other"]
    with pytest.raises(ValueError, match="no PEM CRL"):
        split_crls(b"nothing")
