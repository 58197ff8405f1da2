"""PostgreSQL's own configuration files: postgresql.conf, pg_hba.conf and pg_ident.conf.

Parsers keep every line so that rendering an untouched file gives it back byte for byte; edits and transforms
are pure functions returning ``(new_file, changed)``. Only the ``load_*`` functions do I/O (reading).
"""

from pgbatten.pgconf import hba, pg_ident, postgresql_conf
from pgbatten.pgconf.hba import (
    AUTH_METHODS,
    PASSWORD_METHODS,
    ConnType,
    HbaComment,
    HbaFile,
    HbaInclude,
    HbaLine,
    HbaRule,
    lint,
    load_hba,
    parse_hba,
    require_tls,
    set_client_auth,
    shadowing_rule,
    token_value,
)
from pgbatten.pgconf.pg_ident import (
    IdentComment,
    IdentFile,
    IdentInclude,
    IdentLine,
    IdentMapping,
    add_mapping,
    load_ident,
    parse_ident,
)
from pgbatten.pgconf.postgresql_conf import (
    ConfFile,
    ConfLine,
    Include,
    IncludeKind,
    Setting,
    SettingSource,
    effective_settings,
    format_value,
    includes,
    load_conf,
    load_conf_tree,
    overridden_settings,
    parse_conf,
    quote_value,
    same_setting_value,
    set_values,
    unquote_value,
)

# Each module has its own ``render``; name them apart here.
render_conf = postgresql_conf.render
render_hba = hba.render
render_ident = pg_ident.render

__all__ = [
    "AUTH_METHODS",
    "PASSWORD_METHODS",
    "ConfFile",
    "ConfLine",
    "ConnType",
    "HbaComment",
    "HbaFile",
    "HbaInclude",
    "HbaLine",
    "HbaRule",
    "IdentComment",
    "IdentFile",
    "IdentInclude",
    "IdentLine",
    "IdentMapping",
    "Include",
    "IncludeKind",
    "Setting",
    "SettingSource",
    "add_mapping",
    "effective_settings",
    "format_value",
    "hba",
    "includes",
    "lint",
    "load_conf",
    "load_conf_tree",
    "load_hba",
    "load_ident",
    "overridden_settings",
    "parse_conf",
    "parse_hba",
    "parse_ident",
    "pg_ident",
    "postgresql_conf",
    "quote_value",
    "render_conf",
    "render_hba",
    "render_ident",
    "require_tls",
    "same_setting_value",
    "set_client_auth",
    "set_values",
    "shadowing_rule",
    "token_value",
    "unquote_value",
]
