"""libpq verify-full host-name rules, on the cases of PostgreSQL's src/test/ssl/t/001_ssltests.pl."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pgbatten.probe.hostname import (
    hostname_matches,
    hostname_matches_before_15,
    is_ip_address,
    wildcard_matches,
)

_KEY = ec.generate_private_key(ec.SECP256R1())
_NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def cert(cn: str | None = None, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")]))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + dt.timedelta(days=1))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(_KEY, hashes.SHA256())


CN_ONLY = cert("common-name.pg-ssltest.test")
MULTI = cert(
    "multiple-alt-names.pg-ssltest.test",
    dns=("dns1.alt-name.pg-ssltest.test", "dns2.alt-name.pg-ssltest.test", "*.wildcard.pg-ssltest.test"),
)
SINGLE = cert("common-name.pg-ssltest.test", dns=("single.alt-name.pg-ssltest.test",))
IP_SANS = cert("common-name.pg-ssltest.test", ips=("192.0.2.1", "2001:DB8::1"))
IP_IN_DNSNAME = cert(dns=("192.0.2.1",))
IP_CN_ONLY = cert("192.0.2.1")
IP_CN_DNS_SANS = cert("192.0.2.1", dns=("dns1.alt-name.pg-ssltest.test", "dns2.alt-name.pg-ssltest.test"))
LOOPBACK_V6 = cert(ips=("::1",))
NO_NAMES = cert()


@pytest.mark.parametrize(
    ("certificate", "host", "matched", "via"),
    [
        # server-cn-only
        (CN_ONLY, "common-name.pg-ssltest.test", True, "cn"),
        (CN_ONLY, "COMMON-NAME.pg-ssltest.TEST", True, "cn"),
        (CN_ONLY, "wronghost.test", False, None),
        # server-multiple-alt-names
        (MULTI, "dns1.alt-name.pg-ssltest.test", True, "dns-san"),
        (MULTI, "dns2.alt-name.pg-ssltest.test", True, "dns-san"),
        (MULTI, "foo.wildcard.pg-ssltest.test", True, "dns-san"),
        (MULTI, "wronghost.alt-name.pg-ssltest.test", False, None),
        (MULTI, "deep.subdomain.wildcard.pg-ssltest.test", False, None),
        (MULTI, "wildcard.pg-ssltest.test", False, None),
        (MULTI, "multiple-alt-names.pg-ssltest.test", False, None),  # CN ignored: DNS SANs exist
        # server-single-alt-name: the CN must be ignored
        (SINGLE, "single.alt-name.pg-ssltest.test", True, "dns-san"),
        (SINGLE, "common-name.pg-ssltest.test", False, None),
        # server-ip-alt-names (+ CN that still applies to DNS hosts, no DNS SAN)
        (IP_SANS, "192.0.2.1", True, "ip-san"),
        (IP_SANS, "192.000.002.001", True, "ip-san"),  # inet_aton notation
        (IP_SANS, "2001:DB8::1", True, "ip-san"),
        (IP_SANS, "2001:db8:0:0:0:0:0:1", True, "ip-san"),
        (IP_SANS, "192.0.2.2", False, None),
        (IP_SANS, "2001:db8::2", False, None),
        (IP_SANS, "common-name.pg-ssltest.test", True, "cn"),
        # IP address inside a dNSName: compared as text
        (IP_IN_DNSNAME, "192.0.2.1", True, "dns-san"),
        (IP_IN_DNSNAME, "192.000.002.001", False, None),
        # server-ip-cn-only and CN fallback for an IP host with only DNS SANs
        (IP_CN_ONLY, "192.0.2.1", True, "cn"),
        (IP_CN_ONLY, "192.0.2.2", False, None),
        (IP_CN_DNS_SANS, "192.0.2.1", True, "cn"),
        (IP_CN_DNS_SANS, "dns1.alt-name.pg-ssltest.test", True, "dns-san"),
        # non-canonical IPv6 text
        (LOOPBACK_V6, "0:0::1", True, "ip-san"),
        (LOOPBACK_V6, "0000:0000:0000:0000:0000:0000:0000:0001", True, "ip-san"),
        (LOOPBACK_V6, "::2", False, None),
        (LOOPBACK_V6, "localhost", False, None),
    ],
)
def test_libpq_cases(certificate: x509.Certificate, host: str, matched: bool, via: str | None) -> None:
    result = hostname_matches(certificate, host)
    assert result.matched is matched, result.reason
    assert result.via == via


def test_mismatch_reason_names_first_name_and_count() -> None:
    result = hostname_matches(MULTI, "wronghost.test")
    assert "dns1.alt-name.pg-ssltest.test" in result.reason
    assert "and 2 other names" in result.reason
    assert "wronghost.test" in result.reason


CN_AND_DNS = cert(
    "common-name.pg-ssltest.test", dns=("dns1.alt-name.pg-ssltest.test", "dns2.alt-name.pg-ssltest.test")
)
IP_SANS_ONLY = cert(ips=("192.0.2.1", "2001:DB8::1"))
IP_CN_IP_SANS = cert("192.0.2.1", ips=("192.0.2.2", "2001:DB8::1"))
FOR = "server certificate for "
NOT = " does not match host name "


# The messages 001_ssltests.pl expects from libpq, word for word (its regular expressions are \Q...\E).
@pytest.mark.parametrize(
    ("certificate", "host", "message"),
    [
        (MULTI, "wronghost.alt-name.pg-ssltest.test",
         f'{FOR}"dns1.alt-name.pg-ssltest.test" (and 2 other names){NOT}'
         '"wronghost.alt-name.pg-ssltest.test"'),
        (SINGLE, "deep.subdomain.wildcard.pg-ssltest.test",
         f'{FOR}"single.alt-name.pg-ssltest.test"{NOT}"deep.subdomain.wildcard.pg-ssltest.test"'),
        (CN_AND_DNS, "common-name.pg-ssltest.test",
         f'{FOR}"dns1.alt-name.pg-ssltest.test" (and 1 other name){NOT}"common-name.pg-ssltest.test"'),
        (IP_CN_ONLY, "192.000.002.001", f'{FOR}"192.0.2.1"{NOT}"192.000.002.001"'),
        (IP_SANS_ONLY, "2001:DB8::1/128", f'{FOR}"192.0.2.1" (and 1 other name){NOT}"2001:DB8::1/128"'),
        (IP_CN_IP_SANS, "192.0.2.1", f'{FOR}"192.0.2.2" (and 1 other name){NOT}"192.0.2.1"'),
        (NO_NAMES, "common-name.pg-ssltest.test", "could not get server's host name from server certificate"),
        (CN_ONLY, "", "host name must be specified for a verified SSL connection"),
    ],
)  # fmt: skip
def test_reasons_are_libpqs_messages(certificate: x509.Certificate, host: str, message: str) -> None:
    result = hostname_matches(certificate, host)
    assert not result.matched and result.reason.startswith(message), result.reason


def test_libpq_14_messages_count_dns_names_only() -> None:
    both = cert("common-name.pg-ssltest.test", dns=("a.test", "b.test"), ips=("192.0.2.1",))
    old = hostname_matches_before_15(both, "192.0.2.1")
    assert not old.matched
    assert old.reason.startswith(
        'server certificate for "a.test" (and 1 other name) does not match host name'
    )
    # Only IP SANs and no CN: libpq 14 has no name at all (it examined none).
    assert hostname_matches_before_15(cert(ips=("192.0.2.1",)), "192.0.2.1").reason.startswith(
        "could not get"
    )


def test_case_folding_is_ascii_only_as_pg_strcasecmp() -> None:
    assert hostname_matches(cert(dns=("DB.Example.COM",)), "db.example.com").matched
    assert not hostname_matches(cert("\u00c9cole.test"), "\u00e9cole.test").matched  # a UTF-8 CN


def test_an_ip_range_in_the_sans_fails_the_check_as_in_libpq() -> None:
    ranged = x509.IPAddress(ipaddress.ip_network("192.0.2.0/24"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")]))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([ranged]), critical=False)
    )
    result = hostname_matches(builder.sign(_KEY, hashes.SHA256()), "192.0.2.1")
    assert result.reason == "certificate contains IP address with invalid length 8"


def test_ignored_cn_is_explained() -> None:
    assert "CN is ignored" in hostname_matches(SINGLE, "common-name.pg-ssltest.test").reason


def test_no_names_at_all() -> None:
    result = hostname_matches(NO_NAMES, "db")
    assert not result.matched
    assert "could not get" in result.reason


def test_empty_host() -> None:
    assert not hostname_matches(CN_ONLY, "").matched


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.EXAMPLE.com", "A.example.COM", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("a*.example.com", "ab.example.com", False),
        ("*", "a", False),
        ("*.", "a.", False),
    ],
)
def test_wildcards(pattern: str, host: str, expected: bool) -> None:
    assert wildcard_matches(pattern, host) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.1", True), ("::1", True), ("0:0::1", True), ("db.example.com", False)],
)
def test_is_ip_address(host: str, expected: bool) -> None:
    assert is_ip_address(host) is expected
