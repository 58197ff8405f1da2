"""Who would be locked out when client certificates become mandatory. Pure.

Before ``--client-auth cert|verify-full`` takes effect, every role that can log in over TCP through a rule
that will now demand a certificate needs one from the CA in use; a role without a valid one (not revoked,
not expired) could no longer log in over the network.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pgbatten.pgconf import hba as hba_mod
from pgbatten.pki import InventoryEntry


@dataclass(frozen=True)
class LoginRole:
    """A role with ``rolcanlogin``, and the groups (among those pg_hba.conf names) it is a member of."""

    name: str
    member_of: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CertificateNeed:
    """A role that will need a client certificate, and the valid one the CA inventory holds, if any."""

    role: str
    certificate: InventoryEntry | None

    @property
    def covered(self) -> bool:
        return self.certificate is not None


def group_tokens(rules: Iterable[hba_mod.HbaRule]) -> tuple[str, ...]:
    """The ``+group`` names the user columns of ``rules`` mention (for the membership query)."""
    found: dict[str, None] = {}
    for rule in rules:
        for token in rule.users:
            value = hba_mod.token_value(token)
            if not token.startswith('"') and value.startswith("+") and len(value) > 1:
                found[value[1:]] = None
    return tuple(found)


def file_tokens(rules: Iterable[hba_mod.HbaRule]) -> tuple[str, ...]:
    """The ``@file`` references of the user columns of ``rules``."""
    found: dict[str, None] = {}
    for rule in rules:
        for token in rule.users:
            if token.startswith("@") and len(token) > 1:
                found[token[1:]] = None
    return tuple(found)


def user_matches(token: str, role: LoginRole, files: Mapping[str, Sequence[str]]) -> bool:
    """Whether one token of a pg_hba.conf user column matches ``role``, as PostgreSQL's check_role does."""
    if token.startswith('"'):
        return hba_mod.token_value(token) == role.name
    if token == "all":  # noqa: S105 - the pg_hba.conf keyword, not a password
        return True
    if token.startswith("+") and len(token) > 1:
        return token[1:] in role.member_of
    if token.startswith("@") and len(token) > 1:
        return any(user_matches(t, role, {}) for t in files.get(token[1:], ()))
    if token.startswith("/") and len(token) > 1:
        try:
            return re.search(token[1:], role.name) is not None
        except re.error:
            return False
    return token == role.name


def roles_matched(
    rules: Sequence[hba_mod.HbaRule], roles: Iterable[LoginRole], files: Mapping[str, Sequence[str]]
) -> list[LoginRole]:
    """The roles some rule of ``rules`` lets in by its user column (database and address aside)."""
    # Distinct tokens only: a large pg_hba.conf repeats the same few user columns many times.
    tokens = list(dict.fromkeys(t for rule in rules for t in rule.users))
    if "all" in tokens:
        return list(roles)
    return [r for r in roles if any(user_matches(t, r, files) for t in tokens)]


def certificate_needs(
    rules: Sequence[hba_mod.HbaRule],
    roles: Iterable[LoginRole],
    inventory: Iterable[InventoryEntry],
    *,
    files: Mapping[str, Sequence[str]] | None = None,
    now: dt.datetime,
    ignore: Iterable[str] = (),
) -> tuple[CertificateNeed, ...]:
    """Each role that ``rules`` (about to require a certificate) let in today, with its valid certificate.

    A certificate counts when it is a client certificate of the CA in use whose CN is the role's name (what
    ``cert`` and ``clientcert=verify-full`` compare), neither revoked nor expired; the newest is kept.
    """
    if not rules:
        return ()
    valid: dict[str, InventoryEntry] = {}
    for entry in inventory:
        if entry.kind == "client" and not entry.revoked and entry.not_after > now:
            kept = valid.get(entry.name)
            if kept is None or entry.not_after > kept.not_after:
                valid[entry.name] = entry
    skip = set(ignore)
    matched = roles_matched(rules, (r for r in roles if r.name not in skip), files or {})
    return tuple(CertificateNeed(r.name, valid.get(r.name)) for r in sorted(matched, key=lambda r: r.name))


def parse_user_file(text: str) -> tuple[str, ...]:
    """The names in a pg_hba.conf ``@file``: separated by blanks or commas, ``#`` to the end of a line."""
    names: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.extend(part for part in re.split(r"[\s,]+", line) if part)
    return tuple(names)
