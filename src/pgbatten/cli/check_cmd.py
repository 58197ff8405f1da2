"""`pgbatten check`: the outside audit, one target or a fleet."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pgbatten.cli.app import (
    main,
    make_console,
)


@main.command("check")
@click.argument("targets", nargs=-1, required=False, metavar="HOST[:PORT]...")
@click.option(
    "--targets-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="More targets: one host[:port] a line, # comments.",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CA certificate(s) a verify-full client would trust (PEM).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per target.")
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 300),
    help="Seconds per connection.",
)
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
    as_json: bool,
    timeout: float,
    quick: bool,
    concurrency: int,
    per_server: int,
    dsn: str | None,
) -> None:
    """Audit servers from the outside, with no credentials: TLS versions and cipher suites, certificate
    chain, verify-full by libpq's rules, direct SSL, plaintext refused. Graded A+ to F.

    Exit status: 0 nothing of high severity, 1 a high or critical finding, 3 a target unreachable.
    """
    from pgbatten.certfacts import load_pem_file
    from pgbatten.errors import UsageError
    from pgbatten.probe import check_target, exit_status, parse_target
    from pgbatten.probe.fleet import read_targets_file, run_fleet
    from pgbatten.probe.grading import with_findings
    from pgbatten.probe.result import CheckResult
    from pgbatten.probe.wire import Target
    from pgbatten.report import check_json, print_check, print_summary, progress_bar

    # All input is validated before the first connection.
    parsed = [parse_target(t) for t in targets]
    if targets_file is not None:
        parsed += read_targets_file(targets_file)
    if not parsed:
        raise UsageError("no targets: give HOST[:PORT]... or --targets-file FILE")
    if dsn is not None and len(parsed) != 1:
        raise UsageError("--dsn audits one server: give exactly one target with it")
    ca = load_pem_file(ca_file) if ca_file else None

    def probe(target: Target) -> CheckResult:
        return check_target(target, ca=ca, timeout=timeout, full=not quick)

    show_progress = not as_json and len(parsed) > 1 and sys.stderr.isatty()
    with progress_bar(len(parsed), enabled=show_progress) as advance:
        results = run_fleet(
            parsed,
            probe,
            concurrency=concurrency,
            per_server=per_server,
            on_done=lambda _t, _r: advance(),
        )
    if dsn is not None:
        from pgbatten.audit import server_audit

        audit = server_audit(dsn, timeout=timeout)
        if audit.errors:
            click.echo(f"pgbatten: server audit incomplete: {'; '.join(audit.errors)}", err=True)
        results = [with_findings(results[0], audit.findings)]
    if as_json:
        click.echo(check_json(results))
    else:
        out = make_console()
        for result in results:
            print_check(out, result)
        if len(results) > 1:
            print_summary(out, results)
    raise SystemExit(exit_status(results))
