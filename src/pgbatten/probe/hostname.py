"""libpq's ``sslmode=verify-full`` host-name rules, reimplemented without I/O.

Follows ``pgtls_verify_peer_name_matches_certificate_guts`` (fe-secure-openssl.c) and
``pq_verify_peer_name_matches_certificate_name/_ip`` (fe-secure-common.c), PostgreSQL 15+:

* The host is an IP address when ``inet_aton`` (so ``127.1`` counts) or ``inet_pton(AF_INET6)`` accepts it.
* Every dNSName and iPAddress SAN is examined, in order, until one matches. dNSName entries are compared as
  text against the host (even when the host is an IP address); iPAddress entries are compared as bytes
  against the host parsed as an address of the entry's length (4 or 16), so ``0:0::1`` matches ``::1``.
* The Subject CN is consulted only when no SAN of the host's own kind (dNSName for a name, iPAddress for an
  address) exists. So an IP host can match the CN of a certificate whose SANs are all dNSNames.
* Text comparison is case-insensitive in ASCII only (``pg_strcasecmp``); ``*.`` is allowed only as the
  whole leftmost label and matches one label: ``*.example.com`` matches ``a.example.com`` but neither
  ``example.com`` nor ``a.b.example.com``.
* A name with an embedded NUL, or an iPAddress of a length other than 4 or 16, fails the whole check.

libpq before 15 (:func:`hostname_matches_before_15`) ignores iPAddress SANs: only dNSName entries are
compared, as text, and the CN only when there is no dNSName at all. An old client connecting by address
therefore needs the address as a dNSName (or as the CN of a certificate without DNS SANs).

Reasons are libpq's own messages, word for word (``server certificate for "a" (and 2 other names) does not
match host name "b"``), sometimes followed by what they mean after a semicolon.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from pgbatten.certfacts import subject_alt_names

MatchVia = Literal["dns-san", "ip-san", "cn"]


@dataclass(frozen=True)
class HostMatch:
    """Whether a libpq ``verify-full`` client would accept the certificate's names for ``host``."""

    matched: bool
    via: MatchVia | None
    reason: str
    names_examined: tuple[str, ...] = ()


def _inet_aton(host: str) -> bytes | None:
    # libpq uses inet_aton deliberately (accepts 127.1, 0x7f.0.0.1); the C library's is the same one.
    try:
        return socket.inet_aton(host)
    except (OSError, UnicodeError, ValueError):
        return None


def _inet_pton6(host: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except (OSError, UnicodeError, ValueError):
        return None


def is_ip_address(host: str) -> bool:
    """libpq's test: does ``host`` parse as an IPv4 (inet_aton) or IPv6 (inet_pton) address?"""
    return _inet_aton(host) is not None or _inet_pton6(host) is not None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    """``pg_strcasecmp``'s folding: A-Z only, so ``É`` and ``é`` stay different as in libpq."""
    return text.translate(_ASCII_LOWER)


def wildcard_matches(pattern: str, host: str) -> bool:
    """libpq's wildcard rule: ``*.`` prefix only, one label, case-insensitive."""
    if len(pattern) < 3 or not pattern.startswith("*."):
        return False
    if len(pattern) > len(host):
        return False
    suffix = _fold(pattern[1:])
    if not _fold(host).endswith(suffix):
        return False
    covered = host[: len(host) - len(suffix)]
    # Same arithmetic as libpq's strchr() test, which tolerates a dot as the last covered character.
    return covered != "" and "." not in covered[:-1]


def name_matches(name: str, host: str) -> bool:
    """Exact (case-insensitive) or wildcard match of a certificate name against the host."""
    return _fold(name) == _fold(host) or wildcard_matches(name, host)


def _ip_matches(packed: bytes, host: str) -> bool:
    if len(packed) == 4:
        return _inet_aton(host) == packed
    return _inet_pton6(host) == packed


@dataclass(frozen=True)
class _San:
    kind: Literal["dns", "ip"]
    text: str
    packed: bytes = b""


def _sans(cert: x509.Certificate) -> list[_San] | str:
    try:
        value = subject_alt_names(cert)
    except ValueError as exc:  # unparseable extension: libpq would fail too
        return f"unreadable subjectAltName: {exc}"
    if value is None:
        return []
    out: list[_San] = []
    for gn in value:
        if isinstance(gn, x509.DNSName):
            out.append(_San("dns", gn.value))
        elif isinstance(gn, x509.IPAddress):
            if isinstance(gn.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                out.append(_San("ip", str(gn.value), gn.value.packed))
            else:  # 8 or 32 bytes (address and mask), which libpq refuses
                length = 2 * gn.value.network_address.max_prefixlen // 8
                return f"certificate contains IP address with invalid length {length}"
    return out


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


NO_HOST = "host name must be specified for a verified SSL connection"
NO_NAMES = "could not get server's host name from server certificate"
EMBEDDED_NUL = "SSL certificate's name contains embedded null"


def mismatch_message(first: str, examined: int, host: str) -> str:
    """libpq's message when no name matched (``pq_verify_peer_name_matches_certificate``)."""
    if examined == 0:
        return NO_NAMES
    others = examined - 1
    more = f" (and {others} other name{'s' if others != 1 else ''})" if others else ""
    return f'server certificate for "{first}"{more} does not match host name "{host}"'


def hostname_matches(cert: x509.Certificate, host: str) -> HostMatch:
    """Decide, as libpq ``sslmode=verify-full`` would, whether ``cert`` is valid for ``host``."""
    if not host:
        return HostMatch(False, None, NO_HOST)
    host_kind = "ip" if is_ip_address(host) else "dns"
    sans = _sans(cert)
    if isinstance(sans, str):
        return HostMatch(False, None, sans)
    examined: list[str] = []
    check_cn = True
    for san in sans:
        if san.kind == host_kind:
            check_cn = False
        if san.kind == "dns":
            examined.append(f"DNS:{san.text}")
            if "\0" in san.text:
                return HostMatch(False, None, EMBEDDED_NUL, tuple(examined))
            if name_matches(san.text, host):
                return HostMatch(True, "dns-san", f'DNS SAN "{san.text}" matches "{host}"', tuple(examined))
        else:
            examined.append(f"IP:{san.text}")
            if _ip_matches(san.packed, host):
                return HostMatch(True, "ip-san", f'IP SAN {san.text} matches "{host}"', tuple(examined))
    if check_cn:
        cn = _common_name(cert)
        if cn is not None:
            examined.append(f"CN:{cn}")
            if "\0" in cn:
                return HostMatch(False, None, EMBEDDED_NUL, tuple(examined))
            if name_matches(cn, host):
                return HostMatch(True, "cn", f'subject CN "{cn}" matches "{host}"', tuple(examined))
    if not examined:
        return HostMatch(False, None, NO_NAMES)
    first = examined[0].split(":", 1)[1]
    ignored = ""
    if not check_cn and _common_name(cert) is not None:
        kind = "DNS" if host_kind == "dns" else "IP"
        ignored = f"; the subject CN is ignored because the certificate has {kind} SANs"
    return HostMatch(False, None, mismatch_message(first, len(examined), host) + ignored, tuple(examined))


def hostname_matches_before_15(cert: x509.Certificate, host: str) -> HostMatch:
    """Decide as libpq 14 and older would (``verify_peer_name_matches_certificate``): dNSName SANs only."""
    if not host:
        return HostMatch(False, None, NO_HOST)
    sans = _sans(cert)
    if isinstance(sans, str):
        return HostMatch(False, None, sans)
    examined: list[str] = []
    for san in sans:
        if san.kind != "dns":
            continue
        examined.append(f"DNS:{san.text}")
        if "\0" in san.text:
            return HostMatch(False, None, EMBEDDED_NUL, tuple(examined))
        if name_matches(san.text, host):
            return HostMatch(True, "dns-san", f'DNS SAN "{san.text}" matches "{host}"', tuple(examined))
    if not examined:
        cn = _common_name(cert)
        if cn is not None:
            examined.append(f"CN:{cn}")
            if "\0" in cn:
                return HostMatch(False, None, EMBEDDED_NUL, tuple(examined))
            if name_matches(cn, host):
                return HostMatch(True, "cn", f'subject CN "{cn}" matches "{host}"', tuple(examined))
    if not examined:
        return HostMatch(False, None, NO_NAMES)
    ips = [s.text for s in sans if s.kind == "ip"]
    ignored = f"; libpq before 15 ignores the IP SANs ({', '.join(ips)})" if ips else ""
    first = examined[0].split(":", 1)[1]
    return HostMatch(False, None, mismatch_message(first, len(examined), host) + ignored, tuple(examined))
