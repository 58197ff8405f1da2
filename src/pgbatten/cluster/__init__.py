"""Finding, describing and driving PostgreSQL clusters: binaries, OS users, SQL as owner, temp clusters."""

from pgbatten.cluster.binaries import PgBinaries, find_binaries
from pgbatten.cluster.osuser import OsUser, run_as
from pgbatten.cluster.sql import OwnerSQL

__all__ = ["OsUser", "OwnerSQL", "PgBinaries", "find_binaries", "run_as"]
