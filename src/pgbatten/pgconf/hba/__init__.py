"""pg_hba.conf: the file format, first-match semantics, TLS-enforcing transforms, and a security lint.

- ``syntax``: the typed, line-preserving model (parse, render, load);
- ``matching``: which connections a rule can match, and which rules can never match;
- ``enforce``: ``require_tls`` and ``set_client_auth`` (``*_edit``: the same, saying which lines they kept);
- ``security_lint``: ``lint``.

Everything public is importable from here.
"""

from pgbatten.pgconf.hba.enforce import (
    DISABLED_MARK,
    GUARD_MARK,
    HbaEdit,
    client_auth_edit,
    require_tls,
    require_tls_edit,
    set_client_auth,
)
from pgbatten.pgconf.hba.matching import covers, shadowing_rule, shadows
from pgbatten.pgconf.hba.security_lint import lint
from pgbatten.pgconf.hba.syntax import (
    AUTH_METHODS,
    PASSWORD_METHODS,
    ConnType,
    HbaComment,
    HbaFile,
    HbaInclude,
    HbaLine,
    HbaRule,
    load_hba,
    parse_hba,
    render,
    token_value,
)

__all__ = [
    "AUTH_METHODS",
    "DISABLED_MARK",
    "GUARD_MARK",
    "PASSWORD_METHODS",
    "ConnType",
    "HbaComment",
    "HbaEdit",
    "HbaFile",
    "HbaInclude",
    "HbaLine",
    "HbaRule",
    "client_auth_edit",
    "covers",
    "lint",
    "load_hba",
    "parse_hba",
    "render",
    "require_tls",
    "require_tls_edit",
    "set_client_auth",
    "shadowing_rule",
    "shadows",
    "token_value",
]
