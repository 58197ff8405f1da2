"""Host names and IP addresses as they go into certificates (subjectAltName)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

from cryptography import x509

from pgbatten.errors import UsageError

HostName = ipaddress.IPv4Address | ipaddress.IPv6Address | str

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_NAME = 253


def classify_host(text: str, *, allow_wildcard: bool = False) -> HostName:
    """Turn user input into an IP address or a normalised (lower-case) DNS name.

    IPv4 and IPv6 literals (IPv6 also in brackets, ``[::1]``) become address objects. Anything else must be
    an LDH host name: labels of letters, digits and inner hyphens, at most 63 characters each and 253 in all,
    with an optional single trailing dot dropped. A leading ``*.`` wildcard is allowed only with
    ``allow_wildcard`` and needs at least two labels after it (``*.com`` would match far too much).
    Raises ``UsageError("invalid host name ...")`` otherwise.
    """

    def bad(reason: str) -> UsageError:
        return UsageError(f"invalid host name {text!r}: {reason}")

    if text.startswith("[") or text.endswith("]"):
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else ""
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            raise bad("brackets are only for IPv6 addresses") from None
        return _no_scope(address, bad)
    try:
        address_any = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(address_any, ipaddress.IPv6Address):
            return _no_scope(address_any, bad)
        return address_any

    if not text:
        raise bad("empty")
    if not text.isascii():
        raise bad("non-ASCII characters; use the IDNA (xn--) form")
    name = text.lower()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    if len(name) > _MAX_NAME:
        raise bad(f"longer than {_MAX_NAME} characters")
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        if not allow_wildcard:
            raise bad("wildcards are not allowed here")
        labels = labels[1:]
        if len(labels) < 2:
            raise bad("a wildcard needs at least two labels after '*.'")
    for label in labels:
        if not label:
            raise bad("empty label")
        if len(label) > 63:
            raise bad(f"label {label[:20]!r}... is longer than 63 characters")
        if "*" in label:
            raise bad("'*' is only allowed as the whole first label")
        if not _LABEL.fullmatch(label):
            raise bad(f"label {label!r} must be letters, digits and inner hyphens")
    # An all-numeric last label is almost always a mistyped IP address (e.g. 256.1.1.1); no TLD is numeric.
    if labels[-1].isdigit():
        raise bad("looks like an IP address but is not a valid one")
    return name


def _no_scope(address: ipaddress.IPv6Address, bad: Callable[[str], UsageError]) -> ipaddress.IPv6Address:
    # A zone index (fe80::1%eth0) is local to one machine and cannot be expressed in a certificate.
    if address.scope_id is not None:
        raise bad("an IPv6 zone index (%...) cannot go into a certificate")
    return address


def subject_alt_names(
    hosts: Iterable[str], *, allow_wildcard: bool = False, ip_as_dns: bool = False
) -> x509.SubjectAlternativeName:
    """A SAN extension naming every host once, in the given order: IPs as IPAddress, names as DNSName.

    ``ip_as_dns`` adds each IP address once more as a DNSName, after the others, for clients that only
    compare DNS names (libpq before 15).
    """
    seen: set[HostName] = set()
    general: list[x509.GeneralName] = []
    legacy: list[x509.GeneralName] = []
    for host in hosts:
        value = classify_host(host, allow_wildcard=allow_wildcard)
        if value in seen:
            continue
        seen.add(value)
        if isinstance(value, str):
            general.append(x509.DNSName(value))
        else:
            general.append(x509.IPAddress(value))
            if ip_as_dns:
                legacy.append(x509.DNSName(str(value)))
    general.extend(legacy)
    if not general:
        raise UsageError("at least one host name or IP address is needed")
    return x509.SubjectAlternativeName(general)
