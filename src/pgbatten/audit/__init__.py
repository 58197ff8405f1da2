"""Server-side audit (``pgbatten check --dsn``): settings, pg_hba.conf as a whole, passwords, the key file.

:func:`server_audit` connects with psycopg and reads (``collect``); :func:`analyze` turns what was read into
findings without I/O, so the rules can be tested on hand-built rows.
"""

from pgbatten.audit.analyze import analyze, settings_findings
from pgbatten.audit.ciphers import CipherVerdict, judge_ciphers
from pgbatten.audit.collect import AUDITED_SETTINGS, ServerAudit, collect_facts, server_audit
from pgbatten.audit.facts import HbaRow, KeyFileStat, RoleRow, ServerFacts
from pgbatten.audit.hba_findings import hba_findings, hba_rules_from_rows
from pgbatten.audit.wording import CIS

__all__ = [
    "AUDITED_SETTINGS",
    "CIS",
    "CipherVerdict",
    "HbaRow",
    "KeyFileStat",
    "RoleRow",
    "ServerAudit",
    "ServerFacts",
    "analyze",
    "collect_facts",
    "hba_findings",
    "hba_rules_from_rows",
    "judge_ciphers",
    "server_audit",
    "settings_findings",
]
