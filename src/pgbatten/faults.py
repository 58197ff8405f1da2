"""Named points where a fault-injection test can stop a real run, to kill it at an exact instant.

``PGBATTEN_FAULT_PAUSE=name[,name…]`` makes the run announce ``pgbatten: fault point NAME`` on stderr when it
reaches one of those points and wait there: until the file named by ``PGBATTEN_FAULT_RELEASE`` exists, or
forever. The test then kills the process (SIGKILL, SIGTERM, the process or its group) while it is known to
be exactly there: after the files changed on disk and before the reload, say. Unset (always, outside the
tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PAUSE_ENV = "PGBATTEN_FAULT_PAUSE"
RELEASE_ENV = "PGBATTEN_FAULT_RELEASE"

POINTS = (
    "locked",  # both locks held, nothing read yet
    "planned",  # the plan exists, nothing written
    "ca-created",  # a new CA is on disk, the cluster untouched
    "backed-up",  # every backup written, no file replaced yet
    "first-file",  # one file replaced, the rest not yet
    "written",  # every file replaced, before PostgreSQL validates them
    "validated",  # validated, before the reload
    "reloaded",  # the new files are in effect, before any proof
    "proving",  # the throwaway proof role exists
    "proved",  # every proof passed: the change is complete (a signal now leaves it), not yet recorded
    "ca-key-written",  # a new CA's key is on disk, its certificate not yet (ca init, or secure's new CA)
)


def point(name: str) -> None:
    """Pause here if a test asked to (see the module docs)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or name not in wanted.split(","):
        return
    sys.stderr.write(f"pgbatten: fault point {name} (pid {os.getpid()})\n")
    sys.stderr.flush()
    release = os.environ.get(RELEASE_ENV)
    while not (release and Path(release).exists()):
        time.sleep(0.02)
