"""What ``renew`` shows and proves: the diff of a plan (certificates and CRLs described, keys never shown),
and the proofs from outside, with each root a client may hold."""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pgbatten.cluster.discover import Cluster
from pgbatten.fsutil import atomic_write
from pgbatten.lifecycle.renew_plan import RenewPlan
from pgbatten.netutil import is_ip_address
from pgbatten.pki.trust import Trust
from pgbatten.secure.plan import FileChange, describe_pem
from pgbatten.secure.verify import Proof, probe_role, prove_login, prove_outside


def render_changes(changes: Sequence[FileChange]) -> str:
    """The diff of one plan: certificates and CRLs described, keys never shown."""
    out: list[str] = []
    for change in changes:
        action = "new file" if change.is_new else "replace"
        if change.secret:
            out.append(f"{action} {change.path} (private key, mode {change.mode:04o}; content not shown)\n")
        elif change.purpose in ("server cert", "CA cert", "CRL"):
            described = describe_pem(change.new)
            count = change.new.count(b"-----BEGIN ")
            extra = f" + {count - 1} more in the file" if count > 1 else ""
            out.append(f"{action} {change.path} ({described}{extra})\n")
        else:
            old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
            new = change.new.decode(errors="replace").splitlines(keepends=True)
            out.append("".join(difflib.unified_diff(old, new, f"a{change.path}", f"b{change.path}")))
    return "".join(out)


def prove_renewal(
    cluster: Cluster,
    plan: RenewPlan,
    trust: Trust,
    *,
    addresses: Sequence[str],
    client_auth: bool,
    timeout: float,
) -> list[Proof]:
    """From outside: the certificate served is the planned one, plaintext is refused, and real libpq logins
    with ``verify-full`` pass by name and by address — with each root a client may hold."""
    assert plan.certificate is not None
    port = cluster.require_running().port
    proofs = prove_outside(port, addresses, plan.certificate, trust.root, timeout)
    names = [h for h in plan.hosts if not is_ip_address(h)]
    logins = [(names[0] if names else addresses[0], addresses[0])]
    if names:
        logins.append((addresses[0], addresses[0]))
    with tempfile.TemporaryDirectory(prefix="pgbatten-renew-") as tmp:
        roots: list[tuple[str, Path]] = []
        for label, pem_bytes in _root_sets(trust):
            path = Path(tmp) / f"root-{len(roots)}.crt"
            atomic_write(path, pem_bytes, mode=0o644)
            roots.append((label, path))
        with probe_role(cluster.sql(), trust.signer(), "verify-full" if client_auth else "none") as probe:
            role, password, cert_dir = probe
            for label, path in roots:
                for host, hostaddr in logins:
                    p = prove_login(
                        host=host,
                        hostaddr=hostaddr,
                        port=port,
                        ca_path=path,
                        role=role,
                        password=password,
                        cert_dir=cert_dir,
                        timeout=timeout,
                    )
                    proofs.append(Proof(f"{p.what}, client holding {label}", p.ok, p.detail))
    return proofs


def _root_sets(trust: Trust) -> list[tuple[str, bytes]]:
    from pgbatten.pki.trust import pem

    if not trust.rotating:
        return [("the CA's root", trust.roots_pem())]
    assert trust.previous is not None
    return [
        ("both roots", trust.roots_pem()),
        ("only the new root", pem(trust.root)),
        ("only the old root", pem(trust.previous)),
    ]
