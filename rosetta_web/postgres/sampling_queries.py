"""The SQL the monitor runs on a source: read-only, version-tolerant from PostgreSQL 10 to 17."""

# One round trip for everything but the WAL directory size, with `publication` (None: the
# source names none) as its parameter. The current position is the
# primary's insert position, or on a standby the furthest WAL received or replayed.
# row_to_json(s) keeps working when a server lacks a column (wal_status and safe_wal_size
# arrived in 13, inactive_since in 17), so one query serves every version. Slots belong to the
# server: system_identifier tells two sources that are databases of one server apart from two
# servers (pg_control_system() is open to every role). Whether the source's publication exists
# is asked of its own database (publications belong to a database, not the server): a stored
# readiness that says otherwise is stale.
_SAMPLE = """
WITH pos AS (
    SELECT CASE WHEN pg_is_in_recovery()
                THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                ELSE pg_current_wal_lsn() END AS lsn
)
SELECT
    current_setting('server_version') AS server_version,
    pg_is_in_recovery() AS in_recovery,
    pos.lsn::text AS current_lsn,
    pg_wal_lsn_diff(pos.lsn, '0/0')::bigint AS wal_position_bytes,
    has_function_privilege('pg_ls_waldir()', 'EXECUTE') AS may_list_waldir,
    (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
    current_setting('max_slot_wal_keep_size', true) AS max_slot_wal_keep_size,
    (SELECT coalesce(json_agg(json_build_object(
                'slot', row_to_json(s),
                'retained_bytes', pg_wal_lsn_diff(pos.lsn, s.restart_lsn)::bigint,
                'lag_bytes', pg_wal_lsn_diff(pos.lsn, s.confirmed_flush_lsn)::bigint
            ) ORDER BY s.slot_name), '[]'::json)
       FROM pg_replication_slots s) AS slots,
    CASE WHEN %(publication)s::text IS NOT NULL
         THEN EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %(publication)s)
    END AS publication_exists{wal_directory}
FROM pos
"""

# Needs superuser, pg_monitor or an explicit grant; PostgreSQL checks that before running any
# part of a statement, so it cannot ride in SAMPLE behind a CASE: SAMPLE says whether the role
# may, and this follows it when it may.
WAL_DIRECTORY_BYTES = "SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()"
SAMPLE = _SAMPLE.format(wal_directory="")
# For a role that a sample found may list the WAL directory: everything in one round trip.
SAMPLE_WITH_WAL_DIRECTORY = _SAMPLE.format(
    wal_directory=f",\n    ({WAL_DIRECTORY_BYTES}) AS wal_directory_bytes"
)

# The current position alone, as SAMPLE reads it: the engine's lag in bytes is this minus the
# last LSN it loaded, read when the lag is written.
POSITION = """
SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()
                            THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                            ELSE pg_current_wal_lsn() END, '0/0')::bigint
"""
