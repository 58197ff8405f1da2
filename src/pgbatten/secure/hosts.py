"""Which names and addresses the server certificate must carry, and where to prove them from outside."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pgbatten.errors import UsageError
from pgbatten.netutil import ipv6_loopback_available
from pgbatten.pki import classify_host

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# listen_addresses values meaning "every interface".
WILDCARDS = ("*", "0.0.0.0", "::")  # noqa: S104 - we read these, we bind nothing


@dataclass(frozen=True)
class MachineNames:
    """What this machine calls itself, gathered once (I/O) and handed to the pure planner."""

    hostnames: tuple[str, ...]
    addresses: tuple[str, ...]
    ipv6_loopback: bool = True
    resolved: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """What each host name in listen_addresses resolves to, as PostgreSQL will bind it."""
    link_local: tuple[str, ...] = ()
    """Link-local interface addresses: a wildcard listens there too, but they need a scope to be reached."""


def split_listen_addresses(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def listens_on_loopback(listen: Sequence[str]) -> bool:
    for item in listen:
        if item in WILDCARDS or item == "localhost":
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(item).is_loopback:
                return True
    return False


def certificate_hosts(listen_addresses: str, extra: Iterable[str], machine: MachineNames) -> tuple[str, ...]:
    """SAN entries: every ``--host``, the machine's names, and the addresses the server listens on.

    Order matters only for the subject CN (the first DNS name); duplicates are dropped. Host names that
    are not valid DNS names (a container's random host name is, an underscore is not) are skipped rather
    than refused, since the user did not type them.
    """
    wanted: list[str] = []
    for host in extra:
        classify_host(host)  # a bad --host is the user's to fix: let the UsageError through
        wanted.append(host)
    listen = split_listen_addresses(listen_addresses)
    wanted.extend(machine.hostnames)
    if listens_on_loopback(listen):
        wanted.extend(LOOPBACK_NAMES)
    for item in listen:
        if item in WILDCARDS:
            wanted.extend(machine.addresses)
        elif item != "localhost":
            wanted.append(item)
    result: list[str] = []
    seen: set[str] = set()
    for host in wanted:
        try:
            key = str(classify_host(host))
        except UsageError:
            continue
        if key not in seen:
            seen.add(key)
            result.append(key)
    return tuple(result)


def probe_addresses(listen_addresses: str, machine: MachineNames) -> tuple[str, ...]:
    """Addresses to prove the result from: where the server really listens, as PostgreSQL binds them.

    PostgreSQL binds each listen_addresses entry to what getaddrinfo() returns for it, so ``localhost`` is
    only ::1 too when the resolver says so; ``*`` is every IPv4 and IPv6 address of the machine (loopback
    and each interface address); ``0.0.0.0`` and ``::`` are one family each, since PostgreSQL sets
    IPV6_V6ONLY. Link-local addresses are left out (see ``unproved_addresses``).
    """
    found: list[str] = []

    def add(address: str) -> None:
        if address not in found:
            found.append(address)

    def add_family(version: int | None) -> None:
        if version in (None, 4):
            add("127.0.0.1")
        if version in (None, 6) and machine.ipv6_loopback:
            add("::1")
        for address in machine.addresses:
            if version is None or ipaddress.ip_address(address).version == version:
                add(address)

    for item in split_listen_addresses(listen_addresses):
        if item == "*":
            add_family(None)
            continue
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            for resolved in machine.resolved.get(item, ()):
                add(resolved)
            continue
        if address.is_unspecified:
            add_family(address.version)
        else:
            add(str(address))
    return tuple(a for a in found if a != "::1" or machine.ipv6_loopback)


def unproved_addresses(listen_addresses: str, machine: MachineNames) -> tuple[str, ...]:
    """Addresses a wildcard listens on that the proofs cannot reach (link-local ones need a scope id)."""
    listen = split_listen_addresses(listen_addresses)
    out: list[str] = []
    for address in machine.link_local:
        version = ipaddress.ip_address(address).version
        wanted = {"*", "0.0.0.0" if version == 4 else "::"}  # noqa: S104 - a setting, no bind
        if wanted & set(listen):
            out.append(address)
    return tuple(out)


def gather_machine_names(listen_addresses: str = "") -> MachineNames:
    """Host names, non-loopback interface addresses, and the listen_addresses names resolved. I/O."""
    names: list[str] = []
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names and name != "localhost":
            names.append(name.lower())
    addresses: list[str] = []
    link_local: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5)
        for link in json.loads(out.stdout or "[]"):
            if "UP" not in link.get("flags", ()):
                continue  # an interface that is down has no reachable address
            for info in link.get("addr_info", []):
                try:
                    address = ipaddress.ip_address(info.get("local", ""))
                except ValueError:
                    continue
                if address.is_loopback:
                    continue
                target = link_local if address.is_link_local else addresses
                if str(address) not in target:
                    target.append(str(address))
    resolved = {}
    for item in split_listen_addresses(listen_addresses):
        if item in WILDCARDS:
            continue
        try:
            ipaddress.ip_address(item)
        except ValueError:
            resolved[item] = resolve_like_postgres(item)
    return MachineNames(
        hostnames=tuple(names),
        addresses=tuple(addresses),
        ipv6_loopback=ipv6_loopback_available(),
        resolved=resolved,
        link_local=tuple(link_local),
    )


def resolve_like_postgres(name: str) -> tuple[str, ...]:
    """The addresses PostgreSQL binds for a listen_addresses host name (getaddrinfo, AI_PASSIVE)."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except OSError:
        return ()
    found: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(ipaddress.ip_address(sockaddr[0]))
        if address not in found:
            found.append(address)
    return tuple(found)
