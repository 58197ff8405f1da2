"""First-match semantics of pg_hba.conf: which connections a rule can match, and which rules can never match.

PostgreSQL uses the first rule whose type, database, user and address all match a connection. A rule is
dead ("shadowed") when an earlier rule catches every connection it could match. Only claimed when certain:
``@file`` lists, host names and regular expressions are compared as written.

``shadows`` answers that for every rule of a file at once in near-linear time, instead of comparing each
rule with every earlier one: each rule is read once into a compact form (its network parsed once), earlier
rules are indexed by connection type, one database key, one user key, and network or address, and a rule
looks only where a rule covering it could be, stopping at the first that does.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from itertools import pairwise

from pgbatten.pgconf._bulk import gc_paused
from pgbatten.pgconf.hba.syntax import ConnType, HbaRule, token_value

__all__ = [
    "TRANSPORTS",
    "address_network",
    "covers",
    "is_open_address",
    "name_key",
    "shadowing_rule",
    "shadows",
]

# Which kinds of TCP connection each type matches: plaintext, TLS, GSSAPI-encrypted.
TRANSPORTS: dict[ConnType, frozenset[str]] = {
    ConnType.LOCAL: frozenset({"local"}),
    ConnType.HOST: frozenset({"plain", "ssl", "gss"}),
    ConnType.HOSTSSL: frozenset({"ssl"}),
    ConnType.HOSTNOSSL: frozenset({"plain", "gss"}),
    ConnType.HOSTGSSENC: frozenset({"gss"}),
    ConnType.HOSTNOGSSENC: frozenset({"plain", "ssl"}),
}
# For each type, the types whose rules see at least every connection a rule of that type can see.
_WIDER: dict[ConnType, tuple[ConnType, ...]] = {
    b: tuple(a for a in ConnType if TRANSPORTS[b] <= TRANSPORTS[a]) for b in ConnType
}
_WIDER_PAIRS = frozenset((a, b) for b in ConnType for a in _WIDER[b])
_DB_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})

Key = tuple[str, str]
Net = tuple[int, int, int]
"""IP version, prefix length, and the address's first ``prefix length`` bits as a number."""


def name_key(token: str) -> Key:
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


# Inside this module a key is one string: a name is itself (usually the very string the rule holds, so a
# big file costs no extra memory), anything else is NUL, a kind letter and the value. No token can contain
# NUL: PostgreSQL stops reading a line there.
_KIND_MARK = {"kw": "\0K", "file": "\0F", "special": "\0S"}
_ALL = "\0Kall"
_REPLICATION = "\0Kreplication"
_FILE = "\0F"


_KEYWORDS = _DB_KEYWORDS | {"all"}
_MARKED_FIRST = frozenset("@+/")


def _key(token: str) -> str:
    if '"' not in token and token[:1] not in _MARKED_FIRST and token not in _KEYWORDS:
        return token  # a plain name, by far the most common token: itself
    kind, value = name_key(token)
    if kind == "name":
        return token if value == token else value
    return _KIND_MARK[kind] + value


def _keys(tokens: tuple[str, ...]) -> tuple[str, ...]:
    keys = tuple(map(_key, tokens))
    return tokens if keys == tokens else keys  # share the rule's own tuple when it holds plain names


def address_network(address: str) -> Net | None:
    """An address with a prefix as ``Net``; None for keywords, host names and non-prefix netmasks."""
    if "/" not in address:
        return None
    host, _, prefix = address.partition("/")
    if prefix.isascii() and prefix.isdigit():
        for family, size, version in ((socket.AF_INET, 32, 4), (socket.AF_INET6, 128, 6)):
            try:
                packed = socket.inet_pton(family, host)
            except OSError:
                continue
            bits = int(prefix)
            if bits > size:
                return None
            return version, bits, int.from_bytes(packed, "big") >> (size - bits)
    try:
        net = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None
    return net.version, net.prefixlen, int(net.network_address) >> (net.max_prefixlen - net.prefixlen)


def _pack(version: int, bits: int, top: int) -> int:
    # One int instead of a tuple of three: (top, 8 bits of prefix length, 1 bit of version).
    return (top << 9) | (bits << 1) | (version == 6)


class _Rule:
    """What matters about a rule for first-match, computed once."""

    __slots__ = ("address", "conn", "dbs", "index", "net", "users")

    def __init__(self, rule: HbaRule, index: int) -> None:
        self.index = index
        self.conn = rule.conn_type
        self.dbs = _keys(rule.databases)
        self.users = _keys(rule.users)
        self.address = rule.address
        net = None if rule.address is None else address_network(rule.address)
        self.net = None if net is None else _pack(*net)


def _address_covers(a: _Rule, b: _Rule) -> bool:
    if a.address is None or b.address is None:
        return a.address is None and b.address is None
    if a.address == "all" or a.address == b.address:
        return True
    if a.address == "samenet" and b.address == "samehost":
        return True
    # IPv4 entries never match IPv6 connections and vice versa, even for IPv4-mapped addresses.
    na, nb = a.net, b.net
    if na is None or nb is None or (na & 1) != (nb & 1):
        return False
    bits_a, bits_b = (na >> 1) & 0xFF, (nb >> 1) & 0xFF
    return bits_a <= bits_b and (nb >> 9) >> (bits_b - bits_a) == na >> 9


def _covers(a: _Rule, b: _Rule) -> bool:
    if (a.conn, b.conn) not in _WIDER_PAIRS:
        return False
    a_dbs = a.dbs
    a_all = _ALL in a_dbs
    for key in b.dbs:
        # "all" matches every database by name (and sameuser/samerole/regex pick names) but never a physical
        # replication connection, and we cannot know what an @file holds.
        if key not in a_dbs and not (a_all and key != _REPLICATION and not key.startswith(_FILE)):
            return False
    a_users = a.users
    if _ALL not in a_users and any(key not in a_users for key in b.users):
        return False
    return _address_covers(a, b)


def covers(a: HbaRule, b: HbaRule) -> bool:
    """Whether every connection that could match ``b`` matches ``a`` (only claimed when certain)."""
    return _covers(_Rule(a, 0), _Rule(b, 1))


def shadowing_rule(rules: Iterable[HbaRule], rule: HbaRule) -> HbaRule | None:
    """The first rule before ``rule`` that catches every connection ``rule`` could match, if any.

    One question, answered by a scan; ``shadows`` answers it for a whole file at once.
    """
    target = _Rule(rule, 0)
    for earlier in rules:
        if earlier.lineno >= rule.lineno:
            return None
        if _covers(_Rule(earlier, 0), target):
            return earlier
    return None


class _Slot:
    """Earlier rules of one type, database key, user key and network (or address) that can matter.

    A rule with a single database and a single user token sees exactly what the first such rule in its slot
    sees, so it can never be the first to cover anything and is not kept. A slot holding only that first
    rule is the rule itself (no ``_Slot``): most slots are like that, and a big file has many.
    """

    __slots__ = ("others", "single")

    def __init__(self, single: _Rule | None, others: list[_Rule]) -> None:
        self.single = single
        self.others = others  # rules with several database or user tokens, in file order


_Entry = _Rule | _Slot
_AddressKey = str | int | None
# A bucket holding one lone rule is that rule (the usual case in a big generated file: one rule per user);
# one address is a pair; more, a dict. A dict per bucket would double the memory the index needs.
_Bucket = _Rule | tuple[_AddressKey, _Entry] | dict[_AddressKey, _Entry]


def _single(rule: _Rule) -> bool:
    return len(rule.dbs) == 1 and len(rule.users) == 1


def _address_key(rule: _Rule) -> _AddressKey:
    # Two rules with the same network text have the same network, so a rule with a network needs no place
    # under its text: the network finds it.
    return rule.address if rule.net is None else rule.net


def _with(entry: _Entry | None, rule: _Rule) -> _Entry:
    """``entry`` with ``rule`` added (see ``_Slot``)."""
    single = _single(rule)
    if entry is None:
        return rule if single else _Slot(None, [rule])
    if isinstance(entry, _Rule):  # a lone single
        return entry if single else _Slot(entry, [rule])
    if not single:
        entry.others.append(rule)
    elif entry.single is None:
        entry.single = rule
    return entry


def _first_in(entry: _Entry, rule: _Rule, best: int | None) -> int | None:
    """The smaller of ``best`` and the position of the first rule of ``entry`` that covers ``rule``."""
    if isinstance(entry, _Rule):
        return entry.index if (best is None or entry.index < best) and _covers(entry, rule) else best
    first = entry.single
    if first is not None and (best is None or first.index < best) and _covers(first, rule):
        best = first.index
    for cand in entry.others:
        if best is not None and cand.index >= best:
            break  # in file order: nothing later here can come first
        if _covers(cand, rule):
            return cand.index
    return best


class _Index:
    """Earlier rules by (type, database key, user key), then by network, or by address text without one."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[ConnType, str, str], _Bucket] = {}
        self.prefixes: set[int] = set()  # (prefix length << 1 | IPv6) of every network indexed
        self.dbs: set[str] = set()  # every database and user key indexed: most lookups end here
        self.users: set[str] = set()

    def add(self, rule: _Rule) -> None:
        key = _address_key(rule)
        if rule.net is not None:
            self.prefixes.add(rule.net & 0x1FF)
        buckets = self.buckets
        self.dbs.update(rule.dbs)
        self.users.update(rule.users)
        for d in rule.dbs:
            for u in rule.users:
                name = (rule.conn, d, u)
                bucket = buckets.get(name)
                if bucket is None:
                    buckets[name] = rule if _single(rule) else (key, _with(None, rule))
                elif isinstance(bucket, _Rule):
                    if _address_key(bucket) == key:
                        buckets[name] = bucket if _single(rule) else (key, _with(bucket, rule))
                    else:
                        buckets[name] = {_address_key(bucket): bucket, key: _with(None, rule)}
                elif isinstance(bucket, tuple):
                    if bucket[0] == key:
                        buckets[name] = (key, _with(bucket[1], rule))
                    else:
                        buckets[name] = {bucket[0]: bucket[1], key: _with(None, rule)}
                else:
                    bucket[key] = _with(bucket.get(key), rule)

    def first_cover(self, rule: _Rule) -> int | None:
        """The position of the first indexed rule that covers ``rule`` (which has databases and users)."""
        # A covering rule lists one of our database keys itself, or "all" when "all" can stand for that key;
        # replication and @file keys only ever match themselves. Likewise for users, where "all" is "all".
        strict = next((k for k in rule.dbs if k == _REPLICATION or k.startswith(_FILE)), None)
        db = rule.dbs[0] if strict is None else strict
        known_dbs, known_users = self.dbs, self.users
        db_keys = [k for k in ((db,) if strict is not None or db == _ALL else (db, _ALL)) if k in known_dbs]
        user = rule.users[0]
        user_keys = [k for k in ((user,) if user == _ALL else (user, _ALL)) if k in known_users]
        if not db_keys or not user_keys:
            return None
        address = rule.address
        keys: list[_AddressKey]
        if address is None:
            keys = [None]
        elif address == "samehost":
            keys = ["all", "samehost", "samenet"]
        elif rule.net is None:
            keys = ["all", address]
        else:
            keys = ["all"]
            net = rule.net
            v6, bits, top = net & 1, (net >> 1) & 0xFF, net >> 9
            for p in self.prefixes:
                b = p >> 1
                if p & 1 == v6 and b <= bits:
                    keys.append(((top >> (bits - b)) << 9) | p)  # the supernet of ours at that length
        best: int | None = None
        buckets = self.buckets
        for conn in _WIDER[rule.conn]:
            for d in db_keys:
                for u in user_keys:
                    bucket = buckets.get((conn, d, u))
                    if bucket is None:
                        continue
                    if isinstance(bucket, _Rule):
                        if _address_key(bucket) in keys:
                            best = _first_in(bucket, rule, best)
                    elif isinstance(bucket, tuple):
                        if bucket[0] in keys:
                            best = _first_in(bucket[1], rule, best)
                    else:
                        for key in keys:
                            entry = bucket.get(key)
                            if entry is not None:
                                best = _first_in(entry, rule, best)
        return best


@gc_paused
def shadows(rules: Sequence[HbaRule]) -> list[HbaRule | None]:
    """For each rule, the first earlier rule that catches every connection it could match (or None).

    The same answers as ``shadowing_rule(rules, r)`` for every ``r``, without comparing every pair.
    """
    if any(a.lineno >= b.lineno for a, b in pairwise(rules)) or any(
        not r.databases or not r.users for r in rules
    ):
        # Not in file order, or an empty list (hand-built input only): keep the plain definition.
        return [shadowing_rule(rules, r) for r in rules]
    index = _Index()
    out: list[HbaRule | None] = []
    for i, r in enumerate(rules):
        rule = _Rule(r, i)
        best = index.first_cover(rule)
        out.append(None if best is None else rules[best])
        index.add(rule)
    return out


def is_open_address(address: str | None) -> bool:
    """Whether an address matches every client: ``all``, ``0.0.0.0/0`` or ``::/0``."""
    if address is None or "/" not in address:
        return address == "all"
    prefix = address.rpartition("/")[2]
    if prefix.isdigit() and prefix.isascii() and int(prefix) != 0:
        return False  # the common case, decided without parsing the address
    net = address_network(address)
    return net is not None and net[1] == 0
