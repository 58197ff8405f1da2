"""``pgbatten secure``: plan, show, validate, apply by reload, prove from outside, roll back on failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pgbatten.cluster.discover import Cluster
from pgbatten.errors import ClusterError
from pgbatten.pki import CAStore, CertificateAuthority, KeyType, classify_host, default_ca_dir
from pgbatten.secure.apply import ApplyResult, apply_plan
from pgbatten.secure.facts import read_state
from pgbatten.secure.hosts import probe_addresses
from pgbatten.secure.plan import ClientAuth, SecurePlan, SecureRequest, plan_secure, render_diff
from pgbatten.secure.settings import TlsMin
from pgbatten.secure.verify import Proof, prove_all

__all__ = ["SecureOptions", "SecurePlan", "SecureResult", "secure"]


@dataclass(frozen=True)
class SecureOptions:
    """Everything ``pgbatten secure`` takes from the command line."""

    hosts: tuple[str, ...] = ()
    ca_dir: Path | None = None
    tls_min: TlsMin = "1.2"
    client_auth: ClientAuth = "none"
    cert_map: str | None = None
    key_type: KeyType = KeyType.ECDSA_P256
    days: int = 365
    dry_run: bool = False
    yes: bool = False
    ca_passphrase: bytes | None = field(default=None, repr=False)
    timeout: float = 5.0

    def request(self) -> SecureRequest:
        return SecureRequest(
            hosts=self.hosts,
            tls_min=self.tls_min,
            client_auth=self.client_auth,
            cert_map=self.cert_map,
            key_type=self.key_type,
            days=self.days,
        )


@dataclass(frozen=True)
class SecureResult:
    """The outcome: the plan, whether it was applied, the proofs, and what to hand to clients."""

    plan: SecurePlan
    applied: bool
    outcome: ApplyResult | None
    ca_cert_path: Path
    conninfo: str
    direct_conninfo: str | None = None
    """``conninfo`` with ``sslnegotiation=direct``, when the server is PostgreSQL 17+ (needs libpq 17+)."""

    @property
    def proofs(self) -> tuple[Proof, ...]:
        return self.outcome.proofs if self.outcome else ()


def secure(
    cluster: Cluster,
    options: SecureOptions,
    *,
    console: Console,
    confirm: Callable[[str], bool] | None = None,
) -> SecureResult:
    """Run ``secure`` on ``cluster``, printing to ``console``; ``confirm`` asks before applying."""
    request = options.request()  # validates --host and friends before anything is read
    store = CAStore(options.ca_dir or default_ca_dir())
    new_ca = not store.exists()
    if new_ca:
        # Planned with a CA that lives in memory; it reaches the disk only once the change is confirmed, so
        # a dry run or a "no" leaves nothing behind, not even a CA directory.
        console.print(f"[dim]no CA in {escape(str(store.path))}: a new one will be created[/]")
        authority = CertificateAuthority.create(key_type=options.key_type)
    else:
        authority = store.load(options.ca_passphrase)
    crl = store.crl_path.read_bytes() if store.crl_path.exists() else None
    state = read_state(cluster, crl=crl)
    plan = plan_secure(state, request, authority)
    _print_lint(console, plan)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    port = cluster.running.port if cluster.running else _port_of(cluster)
    conninfo = client_conninfo(plan.hosts, port, store.ca_cert_path)
    if not plan.changed:
        console.print(
            "[green]Nothing to change:[/] the cluster is already TLS-only with the planned settings."
        )
    else:
        console.print(f"[bold]Plan for {escape(cluster.label)}[/] ({len(plan.changes)} file(s)):")
        console.out(render_diff(plan), highlight=False, end="")
    if options.dry_run:
        console.print("Dry run: nothing was written.")
        return SecureResult(plan, False, None, store.ca_cert_path, conninfo)
    cluster.require_running()
    addresses = probe_addresses(state.listen_addresses, state.machine)
    if not addresses:
        raise ClusterError(
            f"listen_addresses is {state.listen_addresses!r}: the server takes no TCP connections, so there"
            " is nothing to secure or prove on the network; set listen_addresses first"
        )
    if plan.changed and not options.yes and confirm is not None and not confirm("Apply these changes?"):
        console.print("Nothing was written.")
        return SecureResult(plan, False, None, store.ca_cert_path, conninfo)
    if new_ca:
        store.init(authority=authority, passphrase=options.ca_passphrase)
        console.print(
            f"Created CA in {escape(str(store.path))} (clients verify the server with"
            f" {escape(str(store.ca_cert_path))})"
        )

    def prove() -> list[Proof]:
        return prove_all(
            cluster,
            addresses=addresses,
            hosts=plan.hosts,
            installed=plan.certificate,
            ca=authority,
            ca_path=plan.ca_path,
            client_auth=request.client_auth,
            timeout=options.timeout,
        )

    outcome = apply_plan(cluster, plan, prove=prove, log=lambda msg: console.print(f"[dim]{escape(msg)}[/]"))
    if plan.issued is not None:
        store.record(plan.issued, "server", plan.hosts[0])
    _print_proofs(console, outcome.proofs)
    for original, backup in outcome.backups:
        console.print(f"backup of {original}: {backup}", markup=False)
    console.print()
    console.print("[bold]For clients[/]: hand out the CA certificate and connect with verify-full:")
    console.print(f"  sslrootcert: {store.ca_cert_path}", markup=False)
    console.print(f"  psql '{conninfo}'", markup=False)
    direct = f"{conninfo} sslnegotiation=direct" if cluster.major >= 17 else None
    if direct is not None:
        console.print("With libpq 17 or newer on the client, TLS can start at once (one round trip less):")
        console.print(f"  psql '{direct}'", markup=False)
    return SecureResult(plan, True, outcome, store.ca_cert_path, conninfo, direct)


def client_conninfo(hosts: tuple[str, ...], port: int, ca_path: Path) -> str:
    """A libpq connection string that verifies the server by name, with the CA clients are given."""
    names = [h for h in hosts if isinstance(classify_host(h), str)]
    host = names[0] if names else hosts[0]
    return f"host={host} port={port} dbname=postgres sslmode=verify-full sslrootcert={ca_path}"


def _port_of(cluster: Cluster) -> int:
    from pgbatten.pgconf import postgresql_conf as conf_mod

    source = conf_mod.effective_settings(conf_mod.load_conf_tree(cluster.config_file)).get("port")
    return int(source.value) if source is not None and source.value.isdigit() else 5432


def _print_lint(console: Console, plan: SecurePlan) -> None:
    if not plan.lint_before:
        return
    console.print("[bold]pg_hba.conf today[/]:")
    for finding in plan.lint_before:
        console.print(
            f"  line {finding.lineno}: [{_colour(finding.severity)}]{finding.severity}[/] {finding.title}"
        )
    remaining = [f for f in plan.lint_after if f.severity in ("high", "medium")] if plan.changed else []
    for finding in remaining:
        console.print(f"  [yellow]after secure, still[/] line {finding.lineno}: {escape(finding.title)}")


def _colour(severity: str) -> str:
    return {"high": "red", "medium": "yellow"}.get(severity, "cyan")


def _print_proofs(console: Console, proofs: tuple[Proof, ...]) -> None:
    table = Table(title="Proved from outside", show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for proof in proofs:
        # Text, not markup: details quote server messages and addresses such as [::1].
        table.add_row(Text(proof.what), "[green]ok[/]" if proof.ok else "[red]FAILED[/]", Text(proof.detail))
    console.print(table)
