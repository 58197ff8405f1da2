"""How PostgreSQL compares setting names and values (``guc.c``): ``SSL = true`` is ``ssl = on``.

Names are compared case-insensitively (ASCII only). A boolean setting accepts any case of ``on``, ``off``,
``true``, ``false``, ``yes``, ``no``, ``1``, ``0`` and the unambiguous prefixes of the words (``t``, ``fa``,
``of``; not ``o``), as ``parse_bool`` does; an enum setting matches its value names ignoring case, and those
that offer ``on``/``off`` also take the hidden boolean spellings. Anything else is compared as written.
The lists are PostgreSQL 15's (``pg_settings.vartype``) plus the booleans 12 to 18 added or dropped.
"""

from __future__ import annotations

__all__ = ["parse_bool", "same_setting_value", "setting_key"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_BOOLEANS = frozenset(
    [
        "allow_alter_system",
        "allow_in_place_tablespaces",
        "allow_system_table_mods",
        "array_nulls",
        "autovacuum",
        "bonjour",
        "check_function_bodies",
        "data_checksums",
        "data_sync_retry",
        "db_user_namespace",
        "debug_assertions",
        "debug_pretty_print",
        "debug_print_parse",
        "debug_print_plan",
        "debug_print_rewritten",
        "default_transaction_deferrable",
        "default_transaction_read_only",
        "enable_async_append",
        "enable_bitmapscan",
        "enable_distinct_reordering",
        "enable_gathermerge",
        "enable_group_by_reordering",
        "enable_hashagg",
        "enable_hashjoin",
        "enable_incremental_sort",
        "enable_indexonlyscan",
        "enable_indexscan",
        "enable_material",
        "enable_memoize",
        "enable_mergejoin",
        "enable_nestloop",
        "enable_parallel_append",
        "enable_parallel_hash",
        "enable_partition_pruning",
        "enable_partitionwise_aggregate",
        "enable_partitionwise_join",
        "enable_presorted_aggregate",
        "enable_self_join_elimination",
        "enable_seqscan",
        "enable_sort",
        "enable_tidscan",
        "escape_string_warning",
        "event_triggers",
        "exit_on_error",
        "fsync",
        "full_page_writes",
        "geqo",
        "gss_accept_delegation",
        "hot_standby",
        "hot_standby_feedback",
        "ignore_checksum_failure",
        "ignore_invalid_pages",
        "ignore_system_indexes",
        "in_hot_standby",
        "integer_datetimes",
        "jit",
        "jit_debugging_support",
        "jit_dump_bitcode",
        "jit_expressions",
        "jit_profiling_support",
        "jit_tuple_deforming",
        "krb_caseins_users",
        "lo_compat_privileges",
        "log_checkpoints",
        "log_connections",
        "log_disconnections",
        "log_duration",
        "log_executor_stats",
        "log_hostname",
        "log_lock_failure",
        "log_lock_waits",
        "log_parser_stats",
        "log_planner_stats",
        "log_recovery_conflict_waits",
        "log_replication_commands",
        "log_statement_stats",
        "log_truncate_on_rotation",
        "logging_collector",
        "md5_password_warnings",
        "operator_precedence_warning",
        "parallel_leader_participation",
        "quote_all_identifiers",
        "recovery_target_inclusive",
        "remove_temp_files_after_crash",
        "restart_after_crash",
        "row_security",
        "send_abort_for_crash",
        "send_abort_for_kill",
        "ssl",
        "ssl_passphrase_command_supports_reload",
        "ssl_prefer_server_ciphers",
        "standard_conforming_strings",
        "summarize_wal",
        "sync_replication_slots",
        "synchronize_seqscans",
        "syslog_sequence_numbers",
        "syslog_split_messages",
        "trace_connection_negotiation",
        "trace_notify",
        "trace_sort",
        "track_activities",
        "track_commit_timestamp",
        "track_cost_delay_timing",
        "track_counts",
        "track_io_timing",
        "track_wal_io_timing",
        "transaction_deferrable",
        "transaction_read_only",
        "transform_null_equals",
        "update_process_title",
        "wal_init_zero",
        "wal_log_hints",
        "wal_receiver_create_temp_slot",
        "wal_recycle",
        "zero_damaged_pages",
    ]
)
_ENUMS = frozenset(
    [
        "intervalstyle",
        "archive_mode",
        "backslash_quote",
        "bytea_output",
        "client_min_messages",
        "compute_query_id",
        "constraint_exclusion",
        "default_toast_compression",
        "default_transaction_isolation",
        "dynamic_shared_memory_type",
        "force_parallel_mode",
        "huge_pages",
        "log_error_verbosity",
        "log_min_error_statement",
        "log_min_messages",
        "log_statement",
        "password_encryption",
        "plan_cache_mode",
        "recovery_init_sync_method",
        "recovery_prefetch",
        "recovery_target_action",
        "session_replication_role",
        "shared_memory_type",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "stats_fetch_consistency",
        "synchronous_commit",
        "syslog_facility",
        "trace_recovery_messages",
        "track_functions",
        "transaction_isolation",
        "wal_compression",
        "wal_level",
        "wal_sync_method",
        "xmlbinary",
        "xmloption",
    ]
)
# Enums with "on" and "off" among their names accept these too (hidden entries in guc_tables.c).
_ENUMS_WITH_ON_OFF = frozenset(
    [
        "archive_mode",
        "backslash_quote",
        "compute_query_id",
        "constraint_exclusion",
        "force_parallel_mode",
        "huge_pages",
        "recovery_prefetch",
        "synchronous_commit",
        "wal_compression",
    ]
)
_ENUM_BOOLEAN_WORDS = {
    "on": True,
    "true": True,
    "yes": True,
    "1": True,
    "off": False,
    "false": False,
    "no": False,
    "0": False,
}


def setting_key(name: str) -> str:
    """The name as PostgreSQL compares it: ASCII letters lower-cased, nothing else changed."""
    return name.translate(_ASCII_LOWER)


def parse_bool(value: str) -> bool | None:
    """PostgreSQL's ``parse_bool``: the boolean ``value`` stands for, None if it is not one."""
    word = value.translate(_ASCII_LOWER)
    if not word:
        return None
    first = word[0]
    if first == "t":
        return True if "true".startswith(word) else None
    if first == "f":
        return False if "false".startswith(word) else None
    if first == "y":
        return True if "yes".startswith(word) else None
    if first == "n":
        return False if "no".startswith(word) else None
    if first == "o":
        # "o" alone is not unique enough: at least two characters decide between on and off.
        if word == "on":
            return True
        return False if len(word) >= 2 and "off".startswith(word) else None
    if word == "1":
        return True
    if word == "0":
        return False
    return None


def same_setting_value(name: str, a: str, b: str) -> bool:
    """Whether PostgreSQL reads ``a`` and ``b`` as the same value of setting ``name``.

    Names it does not know as boolean or enum must match as written: ``off`` and ``0`` are the same
    boolean, but for a setting of another type they are two values, and calling them equal would make
    ``set_values`` keep the old one.
    """
    if a == b:
        return True
    key = setting_key(name)
    if key in _ENUMS:
        la, lb = a.translate(_ASCII_LOWER), b.translate(_ASCII_LOWER)
        if la == lb:
            return True
        if key in _ENUMS_WITH_ON_OFF and la in _ENUM_BOOLEAN_WORDS and lb in _ENUM_BOOLEAN_WORDS:
            return _ENUM_BOOLEAN_WORDS[la] == _ENUM_BOOLEAN_WORDS[lb]
        return False
    if key in _BOOLEANS:
        pa = parse_bool(a)
        return pa is not None and pa == parse_bool(b)
    return False
