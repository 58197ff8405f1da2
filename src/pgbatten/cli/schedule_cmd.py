"""`pgbatten schedule`: run `pgbatten renew` daily, from systemd or cron."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console


@main.command("schedule")
@opt.clusters
@opt.ca_dir
@opt.ca_passphrase
@click.option(
    "--systemd", "mode", flag_value="systemd", default=True, help="Write a service and a timer (default)."
)
@click.option("--cron", "mode", flag_value="cron", help="Print a cron line instead.")
@click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the units go (default: /etc/systemd/system as root, ~/.config/systemd/user otherwise).",
)
@click.option(
    "--name", default="pgbatten-renew", show_default=True, help="Unit name (one per set of clusters)."
)
@click.option("--before", default=None, metavar="DURATION", help="Passed to renew.")
@click.option("--all", "all_clients", is_flag=True, help="Also renew every client certificate that is due.")
@click.option("--force", is_flag=True, help="Replace units of that name that say something else.")
@opt.dry_run("Print the units without writing them.")
def schedule_cmd(
    pgdatas: tuple[Path, ...],
    cluster_names: tuple[str, ...],
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    mode: str,
    unit_dir: Path | None,
    name: str,
    before: str | None,
    all_clients: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Write a systemd service + timer (or print a cron line) that runs pgbatten renew daily."""
    import os

    from pgbatten.errors import FileProblem, UsageError
    from pgbatten.fsutil import atomic_write, read_bytes_or_none
    from pgbatten.lifecycle import schedule as sched
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import default_ca_dir

    refs = opt.cluster_refs(pgdatas, cluster_names)
    if not refs:
        raise UsageError("name the clusters to renew: --pgdata DIR or --cluster VERSION/NAME (repeatable)")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        raise UsageError(f"--name wants a unit name such as pgbatten-renew, not {name!r}")
    if before is not None:
        parse_duration(before)
    if ca_passphrase_file is not None and not ca_passphrase_file.is_file():
        raise FileProblem(ca_passphrase_file, "does not exist")
    ca = (ca_dir or default_ca_dir()).absolute()
    clusters = [ref.discover() for ref in refs]
    user = sched.run_as_user(sched.ca_key_owner(ca), [c.owner for c in clusters])
    extra = [*(["--before", before] if before else []), *(["--all"] if all_clients else [])]
    options = [o for ref in refs for o in ref.args()]
    job = sched.Job(
        argv=sched.renew_argv(
            sched.pgbatten_command(), options, ca, passphrase_file=ca_passphrase_file, extra=extra
        ),
        user=user,
        description=", ".join(c.label for c in clusters),
    )
    out = make_console()
    if mode == "cron":
        out.print("# /etc/cron.d/pgbatten-renew (or crontab -e without the user field):", markup=False)
        out.print(sched.cron_line(job), markup=False, soft_wrap=True)
        return
    target_dir = unit_dir or sched.default_unit_dir()
    # Root writes system units (which name the user to run as); anyone else a user unit of their own.
    system = os.geteuid() == 0
    if not system and user.uid != os.geteuid():
        raise UsageError(f"a user unit runs as you, but renew must run as {user.name}; run schedule as root")
    service_path, timer_path = sched.unit_paths(target_dir, name)
    units = {service_path: sched.service_unit(job, system=system), timer_path: sched.timer_unit(job)}
    if dry_run:
        for path, text in units.items():
            out.print(f"# {path}", markup=False)
            out.print(text, markup=False, soft_wrap=True)
        return
    for path, text in units.items():
        current = read_bytes_or_none(path)
        if current is not None and current != text.encode() and not force:
            raise FileProblem(
                path,
                "exists and says something else; schedule every cluster in one call, "
                "pick another --name, or --force",
            )
    # Verified before they are put in place: a unit systemd would refuse never reaches the unit directory.
    if verify_units(units, system=system):
        out.print("systemd-analyze verify: ok")
    target_dir.mkdir(parents=True, exist_ok=True)
    for path, text in units.items():
        atomic_write(path, text.encode(), mode=0o644)
        out.print(f"wrote {path}", markup=False)
    scope = [] if system else ["--user"]
    out.print("Enable it with:", markup=False)
    reload_cmd = shlex.join(["systemctl", *scope, "daemon-reload"])
    enable_cmd = shlex.join(["systemctl", *scope, "enable", "--now", timer_path.name])
    out.print(f"  {reload_cmd} && {enable_cmd}", markup=False, soft_wrap=True)
    out.print(
        f"Its runs log to the journal: {shlex.join(['journalctl', *scope, '-u', service_path.name])}",
        markup=False,
        soft_wrap=True,
    )
    out.print(f"Runs as {user.name}: {' '.join(job.argv)}", markup=False, soft_wrap=True)


def verify_units(units: dict[Path, str], *, system: bool) -> bool:
    """``systemd-analyze verify`` on copies of the units; False when systemd-analyze is not installed."""
    import tempfile

    from pgbatten.errors import FileProblem

    verify = shutil.which("systemd-analyze")
    if verify is None:
        return False
    with tempfile.TemporaryDirectory(prefix="pgbatten-units-") as tmp:
        copies = []
        for path, text in units.items():
            copy = Path(tmp) / path.name
            copy.write_text(text)
            copies.append(str(copy))
        checked = subprocess.run(
            [verify, "verify", *([] if system else ["--user"]), *copies],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if checked.returncode != 0:
        lines = (checked.stderr or checked.stdout).strip().splitlines()
        name = next(iter(units))
        raise FileProblem(
            name, f"systemd-analyze verify refuses it: {lines[-1] if lines else checked.returncode}"
        )
    return True
