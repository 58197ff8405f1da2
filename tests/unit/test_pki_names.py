from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.errors import UsageError
from pgbatten.pki.names import classify_host, subject_alt_names

_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
# The last label must not be all digits: such names are rejected as mistyped IP addresses.
_last_label = _label.filter(lambda s: not s.isdigit())
dns_names = st.builds(
    lambda head, last: ".".join([*head, last]),
    st.lists(_label, max_size=4),
    _last_label,
).filter(lambda s: len(s) <= 253)


@given(st.ip_addresses())
def test_valid_ip_strings_always_become_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    result = classify_host(str(address))
    assert result == address
    assert type(result) is type(address)


@given(st.ip_addresses(v=6))
def test_bracketed_ipv6_becomes_address(address: ipaddress.IPv6Address) -> None:
    assert classify_host(f"[{address}]") == address


@given(dns_names)
def test_valid_dns_names_round_trip_lower_cased(name: str) -> None:
    assert classify_host(name) == name.lower()


@given(dns_names, st.sampled_from(list(" _/@!,;:'\"\\\t")), st.data())
def test_non_ldh_character_is_rejected(name: str, bad: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(name)))
    with pytest.raises(UsageError, match="invalid host name"):
        classify_host(name[:position] + bad + name[position:])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("x y", "letters, digits"),
        ("-db.example.com", "letters, digits"),
        ("db-.example.com", "letters, digits"),
        ("db..example.com", "empty label"),
        ("a" * 64 + ".example.com", "longer than 63"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("256.1.1.1", "looks like an IP"),
        ("10.0.0", "looks like an IP"),
        ("[10.0.0.1]", "brackets are only for IPv6"),
        ("[::1", "brackets"),
        ("fe80::1%eth0", "zone index"),
        ("bücher.example", "non-ASCII"),
        ("db.*.example.com", "only allowed as the whole first label"),
        ("*.example.com", "wildcards are not allowed"),
    ],
)
def test_invalid_hosts_give_one_line_usage_error(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        classify_host(text)
    message = str(info.value)
    assert message.startswith(f"invalid host name {text!r}: ")
    assert reason in message
    assert "\n" not in message


def test_wildcard_only_when_allowed_and_not_too_broad() -> None:
    assert classify_host("*.DB.Example.com", allow_wildcard=True) == "*.db.example.com"
    with pytest.raises(UsageError, match="at least two labels"):
        classify_host("*.com", allow_wildcard=True)
    with pytest.raises(UsageError):
        classify_host("*.*.example.com", allow_wildcard=True)


def test_single_trailing_dot_is_dropped() -> None:
    assert classify_host("DB.example.com.") == "db.example.com"
    with pytest.raises(UsageError):
        classify_host("db.example.com..")


def test_ipv4_mapped_and_short_ipv6_forms() -> None:
    assert classify_host("::ffff:10.0.0.1") == ipaddress.IPv6Address("::ffff:10.0.0.1")
    assert classify_host("[2001:DB8::1]") == ipaddress.IPv6Address("2001:db8::1")


def test_subject_alt_names_types_deduplicates_and_keeps_order() -> None:
    san = subject_alt_names(
        ["DB.example.com", "127.0.0.1", "db.example.com", "[::1]", "::1", "other.example"]
    )
    assert list(san) == [
        x509.DNSName("db.example.com"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        x509.IPAddress(ipaddress.IPv6Address("::1")),
        x509.DNSName("other.example"),
    ]


def test_subject_alt_names_needs_a_host_and_validates_each() -> None:
    with pytest.raises(UsageError, match="at least one"):
        subject_alt_names([])
    with pytest.raises(UsageError, match="'bad host'"):
        subject_alt_names(["ok.example", "bad host"])
