"""`pgbatten check`: the outside audit, one target or a fleet."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console


@main.command("check")
@click.argument("targets", nargs=-1, required=False, metavar="TARGET...")
@click.option(
    "--targets-file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    help="More targets, one a line (any TARGET form), # comments; - reads standard input.",
)
@opt.file(
    "--ca", "CA certificate(s) a verify-full client would trust (PEM), as its sslrootcert.", dest="ca_file"
)
@click.option(
    "--crl",
    "crl_file",
    type=click.Path(path_type=Path),
    default=None,
    help="CRL(s) a verify-full client checks: a PEM file (as its sslcrl) or a hashed directory (sslcrldir).",
)
@click.option(
    "--ca-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A pgbatten CA directory: its ca.crt as --ca and its crl.pem as --crl.",
)
@opt.json_output("Print a JSON array, one object per target.")
@opt.timeout("Seconds per connection.")
@click.option(
    "--quick",
    is_flag=True,
    help="Skip the cipher-suite/group enumeration and direct SSL: versions, certificate, plaintext only.",
)
@click.option(
    "--concurrency",
    default=16,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Targets probed at the same time.",
)
@click.option(
    "--per-server",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Targets of one host:port probed at the same time.",
)
@click.option(
    "--dsn",
    default=None,
    metavar="DSN",
    help="Also audit the server from inside (settings, pg_hba.conf, md5 roles, key file); one target only.",
)
def check_cmd(
    targets: tuple[str, ...],
    targets_file: Path | None,
    ca_file: Path | None,
    crl_file: Path | None,
    ca_dir: Path | None,
    as_json: bool,
    timeout: float,
    quick: bool,
    concurrency: int,
    per_server: int,
    dsn: str | None,
) -> None:
    """Audit servers from the outside, with no credentials: TLS versions and cipher suites, certificate
    chain, verify-full by libpq's rules, direct SSL, plaintext refused. Graded A+ to F.

    TARGET is HOST[:PORT], a libpq connection string ('host=db port=5433 hostaddr=10.0.0.5'), a
    postgresql:// URI or service=NAME; with none, PGHOST/PGPORT/PGSERVICE as libpq reads them.

    Exit status: 0 nothing of high severity, 1 a high or critical finding, 3 a target unreachable.
    """
    from pgbatten.errors import UsageError
    from pgbatten.probe import check_target, exit_status
    from pgbatten.probe.fixes import with_known_data_dir
    from pgbatten.probe.fleet import read_targets_file, run_fleet
    from pgbatten.probe.grading import with_findings
    from pgbatten.probe.result import CheckResult
    from pgbatten.probe.targets import parse_target_text, targets_from_environment
    from pgbatten.probe.trust import TrustStore, load_trust_store, openssl_command
    from pgbatten.probe.wire import Target
    from pgbatten.report import check_json, print_check, print_summary, progress_bar

    # All input is validated before the first connection.
    parsed = [t for text in targets for t in parse_target_text(text)]
    if targets_file is not None:
        parsed += read_targets_file(targets_file)
    if not parsed and targets_file is None:
        parsed = targets_from_environment()
    if not parsed:
        raise UsageError("no targets: give TARGET..., --targets-file FILE, or set PGHOST/PGSERVICE")
    if dsn is not None and len(parsed) != 1:
        raise UsageError("--dsn audits one server: give exactly one target with it")
    if ca_dir is not None:
        from pgbatten.pki.store import CAStore

        store_dir = CAStore(ca_dir)
        if ca_file is not None:
            raise UsageError("--ca-dir gives the CA itself: use --ca or --ca-dir, not both")
        ca_file = store_dir.ca_cert_path
        if crl_file is None and store_dir.crl_path.exists():
            crl_file = store_dir.crl_path
    if crl_file is not None and ca_file is None and not any(t.sslrootcert for t in parsed):
        raise UsageError("--crl needs the CA it belongs to: give --ca or --ca-dir as well")
    stores: dict[tuple[str | None, str | None, str | None, bool], TrustStore | None] = {}

    def trust_for(target: Target) -> TrustStore | None:
        ca = target.sslrootcert or (str(ca_file) if ca_file else None)
        if target.sslcrl or target.sslcrldir:
            # The target's own CRL settings replace --crl, and load exactly as libpq loads them.
            key = (ca, target.sslcrl, target.sslcrldir, True)
        else:
            key = (ca, str(crl_file) if crl_file else None, None, False)
        if key not in stores:
            stores[key] = load_trust_store(key[0], key[1], key[2], as_libpq=key[3])
        return stores[key]

    for target in parsed:
        trust_for(target)
    if any(stores.values()) and openssl_command() is None:
        click.echo(
            "pgbatten: warning: the openssl command is not installed (apt-get install openssl); chains are "
            "judged by cryptography instead, which refuses X.509 v1 certificates and ignores their purpose",
            err=True,
        )

    def probe(target: Target) -> CheckResult:
        return check_target(target, ca=trust_for(target), timeout=timeout, full=not quick)

    show_progress = not as_json and len(parsed) > 1 and sys.stderr.isatty()
    with progress_bar(len(parsed), enabled=show_progress) as advance:
        results = run_fleet(
            parsed,
            probe,
            concurrency=concurrency,
            per_server=per_server,
            on_done=lambda _t, _r: advance(),
        )
    known: str | None = None  # the data directory, once the server audit has read it
    if dsn is not None:
        from pgbatten.audit import server_audit

        audit = server_audit(dsn, timeout=timeout)
        if audit.errors:
            click.echo(f"pgbatten: server audit incomplete: {'; '.join(audit.errors)}", err=True)
        results = [with_findings(results[0], audit.findings)]
        known = audit.settings.get("data_directory")
    # Fixes name the data directory where it is known (the audit read it, or the server is on this machine).
    results = [with_known_data_dir(r, known) for r in results]
    if as_json:
        click.echo(check_json(results))
    else:
        out = make_console()
        for result in results:
            print_check(out, result)
        if len(results) > 1:
            print_summary(out, results)
    raise SystemExit(exit_status(results))
