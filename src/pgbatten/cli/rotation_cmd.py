"""`pgbatten ca rotate` and `pgbatten ca retire`: a new CA with an overlap in which no client loses its
connection, and its end."""

from __future__ import annotations

from pathlib import Path

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import make_console, read_secret_file
from pgbatten.cli.ca_cmd import ca
from pgbatten.cli.renew_cmd import _confirm, failure_line, print_result


def _renew_clusters(
    ca_dir: Path,
    pgdatas: tuple[Path, ...],
    names: tuple[str, ...],
    passphrase: bytes | None,
    yes: bool,
    timeout: float,
) -> None:
    from pgbatten.errors import VerificationError
    from pgbatten.lifecycle.renew import RenewOptions, renew

    refs = opt.cluster_refs(pgdatas, names)
    if not refs:
        return
    out = make_console()
    options = RenewOptions(clusters=tuple(refs), yes=yes, ca_passphrase=passphrase, timeout=timeout)
    result = renew(
        ca_dir, options, log=lambda m: out.print(m, markup=False, soft_wrap=True), confirm=_confirm
    )
    print_result(out, result, ca_dir, refs_option=[o for r in refs for o in r.args()])
    if result.failed:
        raise VerificationError("; ".join(failure_line(c) for c in result.failed))


def _refuse() -> bool:
    from pgbatten.errors import UsageError

    raise UsageError("nothing was changed (not confirmed)")


@ca.command("rotate")
@opt.ca_dir
@opt.ca_passphrase
@click.option(
    "--common-name", default=None, help="Subject CN of the new CA (default: the old one's with G2, G3…)."
)
@click.option(
    "--days",
    default=None,
    type=click.IntRange(1, 36500),
    help="Validity of the new CA (default: the old one's).",
)
@click.option(
    "--overlap",
    default="90d",
    show_default=True,
    metavar="DURATION",
    help="How long the overlap is planned to last.",
)
@opt.clusters
@opt.timeout()
@opt.yes("Switch the clusters named without asking.")
def ca_rotate(
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    common_name: str | None,
    days: int | None,
    overlap: str,
    pgdatas: tuple[Path, ...],
    cluster_names: tuple[str, ...],
    timeout: float,
    yes: bool,
) -> None:
    """Create the next CA and start an overlap; with clusters, switch their servers to it right away."""
    from pgbatten.lifecycle.rotation import rotate
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.operations import open_store

    period = parse_duration(overlap)
    refs = opt.cluster_refs(pgdatas, cluster_names)
    if refs and not yes:
        _confirm("Start a CA rotation and switch these clusters to the new CA?") or _refuse()
    for ref in refs:
        ref.discover().require_running()  # refuse before the CA directory changes
    store = open_store(ca_dir or default_ca_dir())
    passphrase = read_secret_file(ca_passphrase_file)
    result = rotate(store.path, passphrase=passphrase, common_name=common_name, days=days, overlap=period)
    out = make_console()
    verb = "Finished the interrupted CA rotation" if result.resumed else "Started a CA rotation"
    out.print(f"{verb} in {store.path}:", markup=False)
    out.print(
        f"  new CA  {result.current.subject.rfc4514_string()}, "
        f"until {result.current.not_valid_after_utc:%Y-%m-%d}",
        markup=False,
    )
    out.print(
        f"  old CA  {result.previous.subject.rfc4514_string()}, trusted until pgbatten ca retire",
        markup=False,
    )
    out.print(
        f"  cross certificate (the old CA vouches for the new one), "
        f"until {result.cross.not_valid_after_utc:%Y-%m-%d}",
        markup=False,
    )
    out.print(f"  overlap planned until {result.rotation.planned_end:%Y-%m-%d}", markup=False)
    out.print(
        f"Hand clients {result.roots_path} as sslrootcert from now on: it holds both roots.",
        markup=False,
        soft_wrap=True,
    )
    _renew_clusters(store.path, pgdatas, cluster_names, passphrase, yes, timeout)
    import shlex

    ca_opt = ["--ca-dir", str(store.path)]
    if not refs:
        out.print(
            "Next: switch every server to the new CA: "
            + shlex.join(["pgbatten", "renew", "--pgdata", "DIR", *ca_opt]),
            markup=False,
            soft_wrap=True,
        )
    out.print(
        "Then re-issue client certificates from the new CA: "
        + shlex.join(["pgbatten", "renew", "--all", *ca_opt]),
        markup=False,
        soft_wrap=True,
    )
    out.print(
        "When nothing depends on the old CA: " + shlex.join(["pgbatten", "ca", "retire", *ca_opt]),
        markup=False,
        soft_wrap=True,
    )


@ca.command("retire")
@opt.ca_dir
@opt.ca_passphrase
@opt.clusters
@click.option(
    "--revoke-replaced",
    is_flag=True,
    help="First revoke old-CA client certificates whose user already has one of the new CA.",
)
@click.option(
    "--force", is_flag=True, help="Retire although client certificates of the old CA are still valid."
)
@opt.timeout()
@opt.yes("Update the clusters named without asking.")
def ca_retire(
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    pgdatas: tuple[Path, ...],
    cluster_names: tuple[str, ...],
    revoke_replaced: bool,
    force: bool,
    timeout: float,
    yes: bool,
) -> None:
    """End the overlap: the old CA is trusted no more; with clusters, remove it from their servers."""
    import shlex

    from pgbatten.errors import PKIError
    from pgbatten.lifecycle.facts import read_cluster
    from pgbatten.lifecycle.rotation import retire
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.operations import open_store
    from pgbatten.pki.overlap import load_rotation

    store = open_store(ca_dir or default_ca_dir())
    rotation = load_rotation(store.path)
    if rotation is None:
        raise PKIError(f"no CA rotation in progress in {store.path}; start one with pgbatten ca rotate")
    current = store.path / "ca.crt"
    from pgbatten.certfacts import issued_by, load_pem_file

    new_root = load_pem_file(current)[0]
    for ref in opt.cluster_refs(pgdatas, cluster_names):
        facts = read_cluster(ref, timeout=timeout)
        served = facts.served.chain[0] if facts.served is not None and facts.served.chain else None
        if facts.error is not None or served is None:
            raise PKIError(
                f"{facts.label}: cannot tell which certificate it serves ({facts.error or 'no TLS answer'})"
            )
        if not issued_by(served, new_root) and not force:
            raise PKIError(
                f"{facts.label} still serves a certificate of the old CA; switch it first: "
                + shlex.join(["pgbatten", "renew", *ref.args(), "--ca-dir", str(store.path)])
            )
    result = retire(store.path, force=force, revoke_replaced=revoke_replaced)
    out = make_console()
    out.print(
        f"Retired the CA {result.retired.subject.rfc4514_string()}; it is kept in {result.archive}",
        markup=False,
        soft_wrap=True,
    )
    if result.forced:
        out.print(
            f"[yellow]warning:[/] {len(result.forced)} client certificate(s) of the old CA "
            "are refused from now on"
        )
    out.print(
        f"Clients need only {result.roots_path} (the new root) from now on.", markup=False, soft_wrap=True
    )
    _renew_clusters(store.path, pgdatas, cluster_names, read_secret_file(ca_passphrase_file), yes, timeout)
    if not pgdatas and not cluster_names:
        out.print(
            "Next: remove the old CA from every server: "
            + shlex.join(["pgbatten", "renew", "--pgdata", "DIR", "--ca-dir", str(store.path)]),
            markup=False,
            soft_wrap=True,
        )
