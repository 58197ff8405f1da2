"""Commands pgbatten prints for the user to run next, with the real paths in them, quoted for the shell.

A hint that says ``--pgdata DIR`` fails when pasted; these name the CA directory in use and the clusters
the inventory knows, and where no cluster is known they say so in words rather than with a placeholder.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pgbatten.pki.records import ClusterRef, InventoryEntry
from pgbatten.pki.store import CAStore


def command(*args: str) -> str:
    """``pgbatten ARGS…`` quoted so that it can be pasted into a POSIX shell."""
    return shlex.join(["pgbatten", *args])


def crl_refresh(store: CAStore, cluster: ClusterRef) -> str:
    """The command that re-signs this CA's CRL and installs it on ``cluster``."""
    return command("crl", "refresh", "--ca-dir", str(store.path), *cluster.args())


def known_clusters(store: CAStore, entries: Sequence[InventoryEntry] | None = None) -> list[ClusterRef]:
    """Clusters the inventory knows use this CA: its CRL installed there, or a server certificate.

    ``entries``, when the caller has read them already, saves a query.
    """
    found: list[ClusterRef] = [install.cluster for install in store.inventory.crl_installs()]
    servers = store.inventory.installed_servers() if entries is None else entries
    for entry in servers:
        if entry.installed is not None and entry.installed.cluster is not None:
            found.append(entry.installed.cluster)
    return list(dict.fromkeys(found))


def crl_refresh_hint(store: CAStore, clusters: Sequence[ClusterRef] | None = None) -> str:
    """What to run to get the CRL to the servers: ``pgbatten crl refresh …`` for each known cluster.

    Meant to end a message, so that it can be copied to the end of the line. Where no cluster is known the
    text says which option is missing instead of inventing a path.
    """
    targets = known_clusters(store) if clusters is None else list(clusters)
    if targets:
        return " && ".join(crl_refresh(store, ref) for ref in targets)
    base = command("crl", "refresh", "--ca-dir", str(store.path))
    return f"{base} with the --pgdata or --cluster of each cluster that checks these certificates"
