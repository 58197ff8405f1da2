"""First-match semantics of pg_hba.conf: which connections a rule can match, and which rules can never match.

PostgreSQL uses the first rule whose type, database, user and address all match a connection. A rule is
dead ("shadowed") when an earlier rule catches every connection it could match. Only claimed when certain:
``@file`` lists, host names and regular expressions are compared as written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pgbatten.pgconf.hba.syntax import ConnType, HbaRule, token_value

__all__ = ["TRANSPORTS", "covers", "is_open_address", "name_key", "shadowing_rule"]

# Which kinds of TCP connection each type matches: plaintext, TLS, GSSAPI-encrypted.
TRANSPORTS: dict[ConnType, frozenset[str]] = {
    ConnType.LOCAL: frozenset({"local"}),
    ConnType.HOST: frozenset({"plain", "ssl", "gss"}),
    ConnType.HOSTSSL: frozenset({"ssl"}),
    ConnType.HOSTNOSSL: frozenset({"plain", "gss"}),
    ConnType.HOSTGSSENC: frozenset({"gss"}),
    ConnType.HOSTNOGSSENC: frozenset({"plain", "ssl"}),
}
_DB_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})


def name_key(token: str) -> tuple[str, str]:
    """What a database or user token stands for: keyword, ``@file``, ``+group`` or ``/regex``, or a name."""
    value = token_value(token)
    if not token.startswith('"'):
        if value == "samegroup":
            return ("kw", "samerole")
        if value in _DB_KEYWORDS:
            return ("kw", value)
        if value.startswith("@") and len(value) > 1:
            return ("file", value)
        if value.startswith("+") or value.startswith("/"):
            return ("special", value)
    return ("name", value)


def _databases_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    a_keys = {name_key(t) for t in a}
    a_all = ("kw", "all") in a_keys
    for key in (name_key(t) for t in b):
        if key in a_keys:
            continue
        # "all" matches every database by name (and sameuser/samerole/regex pick names) but never a physical
        # replication connection, and we cannot know what an @file holds.
        if a_all and key != ("kw", "replication") and key[0] != "file":
            continue
        return False
    return True


def _users_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    a_keys = {name_key(t) for t in a}
    if ("kw", "all") in a_keys:
        return True
    return all(name_key(t) in a_keys for t in b)


def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in address:
        return None
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _address_covers(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == "all" or a == b:
        return True
    if a == "samenet" and b == "samehost":
        return True
    net_a, net_b = _network(a), _network(b)
    # IPv4 entries never match IPv6 connections and vice versa, even for IPv4-mapped addresses.
    return (
        net_a is not None and net_b is not None and net_a.version == net_b.version and net_b.subnet_of(net_a)  # type: ignore[arg-type]
    )


def covers(a: HbaRule, b: HbaRule) -> bool:
    """Whether every connection that could match ``b`` matches ``a`` (only claimed when certain)."""
    return (
        TRANSPORTS[b.conn_type] <= TRANSPORTS[a.conn_type]
        and _databases_cover(a.databases, b.databases)
        and _users_cover(a.users, b.users)
        and _address_covers(a.address, b.address)
    )


def shadowing_rule(rules: Iterable[HbaRule], rule: HbaRule) -> HbaRule | None:
    """The first rule before ``rule`` that catches every connection ``rule`` could match, if any."""
    for earlier in rules:
        if earlier.lineno >= rule.lineno:
            return None
        if covers(earlier, rule):
            return earlier
    return None


def is_open_address(address: str | None) -> bool:
    if address == "all":
        return True
    net = _network(address or "")
    return net is not None and net.prefixlen == 0
