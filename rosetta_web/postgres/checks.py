"""A source's readiness for CDC: connection, settings, role, publication, slot.

One short connection runs every check within the monitor's timeout. Each check that does not
pass names the fix: the SQL or setting to apply, fitted to the database it is for (its own
tables, what its role may do), every identifier quoted as the server's quote_ident() quotes it,
so it runs as shown whatever the name holds and reads as psql would print it.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from ..formatting import pg_size_pretty
from ..readiness import FAIL, PASS, SKIP, WARN, Check, Readiness, skipped
from .connection import SampleFailure, Target, connect, explain, run
from .replication_objects import HEARTBEAT_DDL, HEARTBEAT_SCHEMA, HEARTBEAT_TABLE, TABLES

# The roles that stand in for REPLICATION on managed services.
CLOUD_REPLICATION_ROLES = ("rds_replication", "cloudsqlsuperuser", "azure_pg_admin")
# Tables named in an observation before "and N more".
LISTED_TABLES = 20
# A FOR TABLE list longer than this puts each table on a line of its own.
TABLES_ON_ONE_LINE = 4
# The keywords quote_ident() quotes (every category but unreserved), as pg_get_keywords() lists
# them on PostgreSQL 15, with those 16 and 17 added. Only a fix written without a connection
# uses this list; a connected check asks the server itself.
QUOTED_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary bit
    boolean both case cast char character check coalesce collate collation column concurrently
    constraint create cross current_catalog current_date current_role current_schema
    current_time current_timestamp current_user dec decimal default deferrable desc distinct do
    else end except exists extract false fetch float for foreign freeze from full grant greatest
    group grouping having ilike in initially inner inout int integer intersect interval into is
    isnull join json json_array json_arrayagg json_exists json_object json_objectagg json_query
    json_scalar json_serialize json_table json_value lateral leading least left like limit
    localtime localtimestamp merge_action national natural nchar none normalize not notnull null
    nullif numeric offset on only or order out outer overlaps overlay placing position precision
    primary real references returning right row select session_user setof similar smallint some
    substring symmetric system_user table tablesample then time timestamp to trailing treat trim
    true union unique user using values varchar variadic verbose when where window with
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot
    xmlserialize xmltable
    """.split()
)
SAFE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")

TITLES = {
    "connection": "Connection",
    "server_version": "PostgreSQL version",
    "wal_level": "wal_level is logical",
    "replication_role": "The role may replicate",
    "replication_slots_free": "A replication slot is free",
    "wal_senders_free": "A WAL sender is free",
    "publication": "The publication exists",
    "publication_tables": "The publication lists tables",
    "replica_identity": "Published tables can replicate updates and deletes",
    "heartbeat": "The engine's heartbeat table is published and writable",
    "slot": "The replication slot",
    "slot_wal_status": "The slot's WAL is reserved",
    "wal_directory_access": "The role may size the WAL directory",
    "max_slot_wal_keep_size": "max_slot_wal_keep_size bounds what a slot retains",
}
ORDER = tuple(TITLES)

FACTS = """
SELECT current_setting('wal_level'),
       r.rolsuper,
       r.rolreplication,
       ARRAY(SELECT g.rolname::text FROM pg_roles g
              WHERE g.rolname = ANY(%(cloud_roles)s) AND pg_has_role(r.oid, g.oid, 'MEMBER')
              ORDER BY 1),
       current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots)::int,
       current_setting('max_wal_senders')::int,
       -- pg_stat_replication lists every WAL sender to every role; pg_stat_activity hides
       -- other roles' backend_type from one without pg_monitor.
       (SELECT count(*) FROM pg_stat_replication)::int,
       has_function_privilege('pg_ls_waldir()', 'EXECUTE'),
       current_setting('max_slot_wal_keep_size', true),
       (SELECT row_to_json(s) FROM pg_replication_slots s WHERE s.slot_name = %(slot)s),
       (SELECT p.puballtables FROM pg_publication p WHERE p.pubname = %(publication)s),
       -- The fixes name the role and the publication as the server quotes them.
       quote_ident(r.rolname),
       quote_ident(%(publication)s)
  FROM pg_roles r
 WHERE r.rolname = current_user
"""

# Each published table, with what decides whether its updates and deletes replicate.
PUBLISHED_TABLES = """
SELECT t.schemaname::text, t.tablename::text, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       quote_ident(t.schemaname) || '.' || quote_ident(t.tablename)
  FROM pg_publication_tables t
  JOIN pg_namespace n ON n.nspname = t.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
 WHERE t.pubname = %s
 ORDER BY 1, 2
"""

# What decides whether the engine's heartbeat can run: the table, the publication listing it,
# what the role may do with each (a superuser may do everything; owning is being, or
# inheriting from, the owner).
HEARTBEAT_FACTS = """
SELECT c.oid IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_publication_tables t
                WHERE t.pubname = %(publication)s AND t.schemaname = %(schema)s
                  AND t.tablename = %(table)s),
       c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT')
         AND has_table_privilege(c.oid, 'INSERT') AND has_table_privilege(c.oid, 'UPDATE'),
       c.oid IS NOT NULL AND pg_has_role(c.relowner, 'USAGE'),
       n.oid IS NOT NULL,
       n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'CREATE'),
       p.oid IS NOT NULL AND pg_has_role(p.pubowner, 'USAGE'),
       quote_ident(%(schema)s),
       quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)
  FROM (SELECT 1) AS one
  LEFT JOIN pg_namespace n ON n.nspname = %(schema)s
  LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %(table)s
  LEFT JOIN pg_publication p ON p.pubname = %(publication)s
"""

# The tables a publication of the database can list (those the publication page offers), each
# named as the server quotes it, for a fix that names them.
QUOTED_TABLES = f"""
SELECT quote_ident(schema_name) || '.' || quote_ident(table_name)
  FROM ({TABLES}) AS tables (schema_name, table_name)
 ORDER BY schema_name, table_name
"""


@dataclass(frozen=True)
class SourceTarget:
    """A source to check: where to connect, and the publication and slot it should have."""

    target: Target
    publication: str
    slot: str | None
    # What to suggest for max_slot_wal_keep_size when it is unlimited.
    suggested_keep_bytes: int | None = None


def _check(check_id: str, status: str, observed: str, fix: str | None = None) -> Check:
    return Check(check_id, status, TITLES[check_id], observed, fix)


def _rest_skipped(done: list[Check], why: str) -> list[Check]:
    ran = {check.id for check in done}
    return done + skipped([(i, TITLES[i]) for i in ORDER if i not in ran], why)


def connection_failure(failure: SampleFailure, target: Target, timeout_s: float) -> Check:
    """Say which of DNS, refused, timeout, authentication, missing database or TLS failed."""
    text = str(failure)
    where = f"{target.host}:{target.port}"
    lowered = text.lower()
    if text.startswith("cannot look up"):
        kind, fix = "DNS", f"Check the host name: {target.host} does not resolve from Rosetta."
    elif text.startswith("timed out"):
        kind = "Timeout"
        fix = (
            f"Nothing answered {where} within {timeout_s:g} s: check the firewall or security "
            "group between Rosetta and the server."
        )
    elif text.startswith("cannot sign in"):
        kind = "Authentication"
        fix = (
            f"Check the username and password. pg_hba.conf must let {target.user} connect to "
            f"{target.database} from Rosetta's address, e.g.\n"
            f"host  {target.database}  {target.user}  <rosetta-address>/32  scram-sha-256"
        )
    elif text.startswith("no database"):
        kind = "Database missing"
        database = quote_ident(target.database)
        fix = f"Correct the database name, or create it: CREATE DATABASE {database};"
    elif "ssl" in lowered or "tls" in lowered or "certificate" in lowered:
        kind = "TLS"
        fix = "Check the server's TLS settings (ssl, its certificate) and the client's sslmode."
    elif "refused" in lowered:
        kind = "Refused"
        fix = (
            f"PostgreSQL does not listen on {where}: check the port, listen_addresses and that "
            "the server runs."
        )
    else:
        kind, fix = "Network", f"Check that {where} is reachable from Rosetta."
    return _check("connection", FAIL, f"{kind}: {text}", fix)


def quote_ident(identifier: str) -> str:
    """Quote an identifier as PostgreSQL's quote_ident() does, for a fix written without a
    connection: bare when lowercase letters, digits and '_' and no keyword, else in quotes."""
    if SAFE_IDENTIFIER.fullmatch(identifier) and identifier not in QUOTED_KEYWORDS:
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def check_source(spec: SourceTarget, timeout_s: float) -> Readiness:
    """Run every check on the source within `timeout_s` seconds; never raise for the source's
    sake (an unreachable source is a failed `connection` check)."""
    target = spec.target
    deadline = time.monotonic() + timeout_s
    conn = None
    connecting = True
    checks: list[Check] = []
    try:
        conn = connect(target, deadline, timeout_s)
        connecting = False
        _checks(conn, spec, deadline, timeout_s, checks)
    except psycopg2.Error as exc:
        checks = _failed(spec, explain(exc, target, connecting), connecting, timeout_s, checks)
    except SampleFailure as exc:
        checks = _failed(spec, exc, connecting, timeout_s, checks)
    except OSError as exc:
        failure = SampleFailure(f"cannot connect to {target.host}:{target.port}: {exc}")
        checks = _failed(spec, failure, connecting, timeout_s, checks)
    finally:
        if conn is not None:
            conn.close()
    return Readiness(checks)


def _failed(
    spec: SourceTarget,
    failure: SampleFailure,
    connecting: bool,
    timeout_s: float,
    done: list[Check],
) -> list[Check]:
    """The checklist after a failure: the connection's, or the check under way's, with what
    was done before it kept."""
    if connecting:
        done = [connection_failure(failure, spec.target, timeout_s)]
        return _rest_skipped(done, "Not checked: Rosetta cannot connect.")
    ran = {check.id for check in done}
    under_way = next(check_id for check_id in ORDER if check_id not in ran)
    failed = [*done, _check(under_way, FAIL, str(failure))]
    return _rest_skipped(failed, f"Not checked: {under_way} failed.")


def check_sources(specs: list[SourceTarget], timeout_s: float, concurrency: int) -> list[Readiness]:
    """Check every source concurrently, as the sampler samples them; results in order."""
    if not specs:
        return []
    workers = max(1, min(concurrency, len(specs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="readiness") as pool:
        return list(pool.map(lambda spec: check_source(spec, timeout_s), specs))


class _Quoting:
    """Render literals for the fixes as the connected server reads them (identifiers come
    quoted by the server's own quote_ident(), in the checks' queries)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def literal(self, value: str) -> str:
        return str(sql.Literal(value).as_string(self.conn))


@dataclass(frozen=True)
class _Role:
    """The source's role as the fixes need it: its name quoted, and whether it is superuser."""

    name: str
    quoted: str
    superuser: bool


def _checks(
    conn: Any, spec: SourceTarget, deadline: float, timeout_s: float, checks: list[Check]
) -> None:
    """Append each check's outcome to `checks` as it is known (what was done stays done
    should a later query fail)."""
    target = spec.target
    q = _Quoting(conn)
    checks.append(
        _check(
            "connection",
            PASS,
            f"Connected to {target.host}:{target.port}/{target.database} as {target.user}.",
        )
    )
    version_num, version = run(
        conn,
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
        deadline,
        timeout_s,
    ).fetchone()
    if version_num < 100000:
        checks.append(
            _check(
                "server_version",
                FAIL,
                f"PostgreSQL {version}: logical replication with pgoutput needs 10 or later.",
                "Upgrade the server to PostgreSQL 13 or later.",
            )
        )
        checks.extend(_rest_skipped(checks, "Not checked: the server is older than PostgreSQL 10."))
        return
    if version_num < 130000:
        checks.append(
            _check(
                "server_version",
                WARN,
                f"PostgreSQL {version}: before 13, slots report no wal_status or "
                "safe_wal_size and max_slot_wal_keep_size does not exist.",
                "Upgrade to PostgreSQL 13 or later to see how close a slot is to being lost.",
            )
        )
    else:
        checks.append(_check("server_version", PASS, f"PostgreSQL {version}."))
    row = run(
        conn,
        FACTS,
        deadline,
        timeout_s,
        {
            "cloud_roles": list(CLOUD_REPLICATION_ROLES),
            "slot": spec.slot or "",
            "publication": spec.publication,
        },
    ).fetchone()
    (
        wal_level,
        superuser,
        replication,
        cloud_roles,
        max_slots,
        used_slots,
        max_senders,
        used_senders,
        may_list_waldir,
        keep_size,
        slot,
        all_tables,
        quoted_role,
        quoted_publication,
    ) = row
    role = _Role(target.user, quoted_role, superuser)
    checks.append(_wal_level(wal_level))
    checks.append(_replication_role(role, replication, cloud_roles))
    checks.append(_slots_free(spec.slot, slot, max_slots, used_slots))
    checks.append(_senders_free(max_senders, used_senders))
    publication = (spec.publication, quoted_publication)
    checks.extend(_publication(conn, role, publication, all_tables, deadline, timeout_s))
    if all_tables is not None:
        facts = run(
            conn,
            HEARTBEAT_FACTS,
            deadline,
            timeout_s,
            {"publication": spec.publication, "schema": HEARTBEAT_SCHEMA, "table": HEARTBEAT_TABLE},
        ).fetchone()
        checks.append(_heartbeat(role, publication, all_tables, _HeartbeatFacts(*facts)))
    checks.extend(_slot(q, spec.slot, slot, target.database))
    checks.append(_waldir(role, may_list_waldir))
    checks.append(_keep_size(keep_size, spec.suggested_keep_bytes))


def _wal_level(wal_level: str) -> Check:
    if wal_level == "logical":
        return _check("wal_level", PASS, "wal_level is logical.")
    return _check(
        "wal_level",
        FAIL,
        f"wal_level is {wal_level}: the server writes no logical decoding information.",
        "ALTER SYSTEM SET wal_level = logical;\n"
        "-- then restart PostgreSQL (wal_level takes effect only at start).\n"
        "-- Amazon RDS and Aurora: set rds.logical_replication = 1 in the parameter group;\n"
        "-- Cloud SQL: set the cloudsql.logical_decoding flag to on.",
    )


def _replication_role(role: _Role, replication: bool, cloud_roles: list[str]) -> Check:
    user = role.name
    if role.superuser:
        return _check("replication_role", PASS, f"{user} is a superuser.")
    if replication:
        return _check("replication_role", PASS, f"{user} has the REPLICATION attribute.")
    if cloud_roles:
        return _check("replication_role", PASS, f"{user} is a member of {', '.join(cloud_roles)}.")
    return _check(
        "replication_role",
        FAIL,
        f"{user} is not a superuser, has no REPLICATION attribute and is in none of "
        f"{', '.join(CLOUD_REPLICATION_ROLES)}.",
        f"ALTER ROLE {role.quoted} WITH REPLICATION;\n"
        f"-- Amazon RDS and Aurora: GRANT rds_replication TO {role.quoted};",
    )


def _slots_free(
    name: str | None, slot: dict[str, Any] | None, max_slots: int, used_slots: int
) -> Check:
    observed = f"{used_slots} of max_replication_slots = {max_slots} in use."
    if slot is not None:
        return _check("replication_slots_free", PASS, f"{observed} The source's slot exists.")
    if used_slots < max_slots:
        return _check("replication_slots_free", PASS, f"{observed} {max_slots - used_slots} free.")
    return _check(
        "replication_slots_free",
        FAIL,
        f"{observed} None is free for the source's slot{f' {name}' if name else ''}.",
        f"ALTER SYSTEM SET max_replication_slots = {max_slots + 4};\n"
        "-- then restart PostgreSQL; or drop a slot nobody uses.",
    )


def _senders_free(max_senders: int, used_senders: int) -> Check:
    observed = f"{used_senders} of max_wal_senders = {max_senders} in use."
    if used_senders < max_senders:
        return _check("wal_senders_free", PASS, observed)
    return _check(
        "wal_senders_free",
        WARN,
        f"{observed} A consumer connecting now would be refused.",
        f"ALTER SYSTEM SET max_wal_senders = {max_senders + 4};\n-- then restart PostgreSQL.",
    )


def _table_list(tables: list[str]) -> str:
    """Name tables for FOR TABLE or ADD TABLE: on one line when few, one a line when many."""
    if len(tables) <= TABLES_ON_ONE_LINE:
        return " " + ", ".join(tables)
    return "\n    " + ",\n    ".join(tables)


def _comment(text: str) -> str:
    """Comment a line of a fix out; nothing when a name in it holds a line break, which would
    end the comment and leave the rest of the line to run."""
    return "" if "\n" in text or "\r" in text else f"-- {text}\n"


def _create_publication(publication: str, superuser: bool, tables: list[str]) -> str:
    """The statement that creates the publication, as the source's role may run it.

    FOR ALL TABLES needs a superuser; for any other role the fix names the database's tables.
    """
    press = "-- or press Create publication on the source's page."
    if superuser:
        fix = f"CREATE PUBLICATION {publication} FOR ALL TABLES;\n"
        if tables:
            shown = tables[:LISTED_TABLES]
            more = (
                f" ({len(tables) - len(shown)} more not shown)" if len(tables) > len(shown) else ""
            )
            example = _comment(f"CREATE PUBLICATION {publication} FOR TABLE {', '.join(shown)};")
            if example:
                fix += f"-- or only some of its tables, e.g.{more}:\n{example}"
        return fix + press
    why = "-- FOR ALL TABLES needs a superuser, and the source's role is not one"
    if not tables:
        return (
            f"{why}; the database\n-- has no table yet:\n"
            f"CREATE PUBLICATION {publication};\n"
            + _comment(f"then add each table: ALTER PUBLICATION {publication} ADD TABLE <table>;")
        ).rstrip("\n")
    return (
        f"{why}: this names each\n"
        "-- table of the database (run it as the tables' owner, or as a superuser).\n"
        f"CREATE PUBLICATION {publication} FOR TABLE{_table_list(tables)};\n{press}"
    )


def _publication(
    conn: Any,
    role: _Role,
    publication: tuple[str, str],
    all_tables: bool | None,
    deadline: float,
    timeout_s: float,
) -> list[Check]:
    name, quoted = publication
    if all_tables is None:
        tables = [row[0] for row in run(conn, QUOTED_TABLES, deadline, timeout_s).fetchall()]
        return [
            _check(
                "publication",
                FAIL,
                f"No publication {name} in this database.",
                _create_publication(quoted, role.superuser, tables),
            ),
            *skipped(
                [(i, TITLES[i]) for i in ("publication_tables", "replica_identity", "heartbeat")],
                "Not checked: the publication does not exist.",
            ),
        ]
    checks = [_check("publication", PASS, f"Publication {name} exists.")]
    published = run(conn, PUBLISHED_TABLES, deadline, timeout_s, (name,)).fetchall()
    names = [f"{schema}.{table}" for schema, table, _, _, _ in published]
    listed = ", ".join(names[:LISTED_TABLES])
    if len(names) > LISTED_TABLES:
        listed += f" and {len(names) - LISTED_TABLES} more"
    if all_tables:
        checks.append(
            _check(
                "publication_tables",
                PASS,
                f"All tables ({len(names)} now{': ' + listed if names else ''}).",
            )
        )
    elif names:
        checks.append(_check("publication_tables", PASS, f"{len(names)} table(s): {listed}."))
    else:
        tables = [row[0] for row in run(conn, QUOTED_TABLES, deadline, timeout_s).fetchall()]
        fix = (
            f"ALTER PUBLICATION {quoted} ADD TABLE{_table_list(tables)};"
            if tables
            else (
                "-- The database has no table yet; once it has, add each:\n"
                + _comment(f"ALTER PUBLICATION {quoted} ADD TABLE <table>;")
            ).rstrip("\n")
        )
        checks.append(
            _check(
                "publication_tables",
                WARN,
                "The publication lists no table: nothing would be captured.",
                fix,
            )
        )
    lacking = [
        (schema, table, identity, quoted_table)
        for schema, table, identity, has_key, quoted_table in published
        if identity == "n" or (identity == "d" and not has_key)
    ]
    if not lacking:
        checks.append(
            _check(
                "replica_identity",
                PASS,
                "Every published table has a primary key or a replica identity."
                if published
                else "No table is published.",
            )
        )
        return checks
    described = ", ".join(
        f"{schema}.{table} ({'REPLICA IDENTITY NOTHING' if identity == 'n' else 'no primary key'})"
        for schema, table, identity, _ in lacking[:LISTED_TABLES]
    )
    if len(lacking) > LISTED_TABLES:
        described += f" and {len(lacking) - LISTED_TABLES} more"
    fixes = "\n".join(
        f"ALTER TABLE {quoted_table} REPLICA IDENTITY FULL;" for _, _, _, quoted_table in lacking
    )
    checks.append(
        # PostgreSQL refuses the application's own UPDATE and DELETE on such a table once it
        # is published: a failure, not a warning.
        _check(
            "replica_identity",
            FAIL,
            f"Updates and deletes of {described} cannot replicate.",
            f"-- Add a primary key, or have PostgreSQL log whole old rows:\n{fixes}",
        )
    )
    return checks


@dataclass(frozen=True)
class _HeartbeatFacts:
    """The heartbeat table as the source's role sees it (HEARTBEAT_FACTS)."""

    exists: bool
    published: bool
    writable: bool  # SELECT, INSERT and UPDATE: the heartbeat's upsert needs all three
    owns_table: bool
    schema_exists: bool
    may_create: bool  # CREATE on the schema
    owns_publication: bool
    quoted_schema: str
    quoted_table: str


def _heartbeat(
    role: _Role, publication: tuple[str, str], all_tables: bool, facts: _HeartbeatFacts
) -> Check:
    """Say whether START can give the engine its heartbeat: the table there, published and
    writable, or the role able to make it so (START creates and publishes it); else the SQL
    an administrator runs.

    Adding a table to a publication takes owning both (or a superuser); a FOR ALL TABLES
    publication lists the table as soon as it exists.
    """
    name, quoted_publication = publication
    table = f"{HEARTBEAT_SCHEMA}.{HEARTBEAT_TABLE}"
    in_publication = facts.published or (all_tables and facts.exists)
    may_publish = all_tables or (
        facts.owns_publication and (facts.owns_table if facts.exists else True)
    )
    if facts.exists and facts.writable:
        if in_publication:
            return _check(
                "heartbeat",
                PASS,
                f"{table} is in publication {name} and {role.name} may write to it.",
            )
        if may_publish:
            return _check(
                "heartbeat",
                PASS,
                f"{table} exists and {role.name} may write to it; START adds it to "
                f"publication {name}.",
            )
    if not facts.exists and facts.may_create and may_publish:
        where = (
            f"publication {name} is FOR ALL TABLES, so it lists it at once"
            if all_tables
            else f"adds it to publication {name}"
        )
        return _check(
            "heartbeat",
            PASS,
            f"{table} does not exist yet: START creates it ({role.name} may create tables in "
            f"schema {HEARTBEAT_SCHEMA}) and {where}.",
        )
    lacking = []
    if not facts.schema_exists:
        lacking.append(f"schema {HEARTBEAT_SCHEMA} does not exist")
    elif not facts.exists:
        lacking.append(
            f"{table} does not exist"
            + (
                ""
                if facts.may_create
                else f" and {role.name} may not create tables in schema {HEARTBEAT_SCHEMA}"
            )
        )
    if not may_publish:
        owned = "the table" if facts.owns_publication else "the publication"
        lacking.append(
            f"{role.name} may not add it to publication {name} (it does not own {owned})"
        )
    if facts.exists and not facts.writable:
        lacking.append(f"{role.name} may not write to it")
    fix = []
    if not facts.schema_exists:
        fix.append(f"CREATE SCHEMA {facts.quoted_schema};")
    if not facts.exists:
        fix.append(HEARTBEAT_DDL.format(facts.quoted_table) + ";")
    if not in_publication and not all_tables:
        fix.append(f"ALTER PUBLICATION {quoted_publication} ADD TABLE {facts.quoted_table};")
    if not (facts.exists and facts.writable):
        fix.append(f"GRANT SELECT, INSERT, UPDATE ON {facts.quoted_table} TO {role.quoted};")
    return _check(
        "heartbeat",
        FAIL,
        f"The engine's heartbeat (which moves the slot while the published tables are idle) "
        f"cannot run: {'; '.join(lacking)}.",
        "-- As a superuser: the heartbeat table, published, and writable by the source's role\n"
        "-- (its upsert needs SELECT, INSERT and UPDATE).\n" + "\n".join(fix),
    )


NO_SLOT = "The source names no replication slot."
MISSING_SLOT = "No replication slot {name} on this server."


def slot_missing(stored: dict[str, Any] | None) -> bool:
    """Tell from a stored result whether the source's slot is to be made: none is named, or
    the server has none of that name (not: one exists but is of the wrong kind)."""
    for check in (stored or {}).get("checks", []):
        if check["id"] == "slot" and check["status"] == FAIL:
            observed = str(check["observed"])
            return observed == NO_SLOT or observed.startswith(MISSING_SLOT.split("{")[0])
    return False


def _slot(q: _Quoting, name: str | None, slot: dict[str, Any] | None, database: str) -> list[Check]:
    status_skipped = skipped(
        [("slot_wal_status", TITLES["slot_wal_status"])], "Not checked: no usable slot."
    )
    if name is None:
        return [
            _check(
                "slot",
                FAIL,
                NO_SLOT,
                "Press Create slot on the source's page, or enter the slot's name in the "
                "source's settings.",
            ),
            *status_skipped,
        ]
    create = (
        f"SELECT pg_create_logical_replication_slot({q.literal(name)}, 'pgoutput');\n"
        "-- or press Create slot on the source's page."
    )
    if slot is None:
        return [
            _check("slot", FAIL, MISSING_SLOT.format(name=name), create),
            *status_skipped,
        ]
    drop_first = f"SELECT pg_drop_replication_slot({q.literal(name)});\n{create}"
    problem = None
    if slot.get("slot_type") != "logical":
        problem = f"Slot {name} is a {slot.get('slot_type')} slot, not a logical one."
    elif slot.get("plugin") != "pgoutput":
        problem = f"Slot {name} decodes with {slot.get('plugin')}, not pgoutput."
    elif slot.get("database") != database:
        problem = f"Slot {name} belongs to database {slot.get('database')}, not {database}."
    if problem is not None:
        fix = (
            "Give the source a slot name of its own, or drop this slot (if nothing uses it) and "
            f"create it again:\n{drop_first}"
        )
        return [_check("slot", FAIL, problem, fix), *status_skipped]
    consumer = "a consumer is connected" if slot.get("active") else "no consumer is connected"
    checks = [_check("slot", PASS, f"Logical slot {name} (pgoutput) in {database}; {consumer}.")]
    wal_status = slot.get("wal_status")
    if wal_status is None:
        checks.append(
            _check(
                "slot_wal_status", SKIP, "The server reports no wal_status before PostgreSQL 13."
            )
        )
    elif wal_status == "lost":
        checks.append(
            _check(
                "slot_wal_status",
                FAIL,
                f"Slot {name} is lost: the WAL it needed was removed, it can never stream again.",
                f"{drop_first}\n-- then REFRESH the pipeline: its tables must be copied anew.",
            )
        )
    elif wal_status == "unreserved":
        checks.append(
            _check(
                "slot_wal_status",
                WARN,
                f"Slot {name} retains more than max_slot_wal_keep_size: the next checkpoint may "
                "remove WAL it needs and lose it.",
                "Start the slot's consumer now, or raise max_slot_wal_keep_size:\n"
                "ALTER SYSTEM SET max_slot_wal_keep_size = '<larger>';\nSELECT pg_reload_conf();",
            )
        )
    else:
        checks.append(_check("slot_wal_status", PASS, f"wal_status is {wal_status}."))
    return checks


def _waldir(role: _Role, allowed: bool) -> Check:
    if allowed:
        return _check("wal_directory_access", PASS, f"{role.name} may run pg_ls_waldir().")
    return _check(
        "wal_directory_access",
        WARN,
        f"{role.name} may not run pg_ls_waldir(): Rosetta cannot chart the WAL directory's size.",
        f"GRANT pg_monitor TO {role.quoted};",
    )


def size_setting(size_bytes: int) -> str:
    """Spell a size as a PostgreSQL setting, rounded up to a whole GB or MB."""
    gb, mb = 1024**3, 1024**2
    if size_bytes >= gb:
        return f"{-(-size_bytes // gb)}GB"
    return f"{max(1, -(-size_bytes // mb))}MB"


def _keep_size(setting: str | None, suggested: int | None) -> Check:
    if setting is None:
        return _check(
            "max_slot_wal_keep_size", SKIP, "The server has no max_slot_wal_keep_size (before 13)."
        )
    if setting not in ("-1", "-1B"):  # SHOW spells it -1 for unlimited
        return _check("max_slot_wal_keep_size", PASS, f"max_slot_wal_keep_size is {setting}.")
    value = size_setting(suggested or 10 * 1024**3)
    why = (
        f"twice Rosetta's critical threshold of {pg_size_pretty(suggested // 2)}, so the alert "
        "fires first"
        if suggested
        else "an example"
    )
    return _check(
        "max_slot_wal_keep_size",
        WARN,
        "max_slot_wal_keep_size is -1: a slot whose consumer stops keeps WAL until the disk fills.",
        f"ALTER SYSTEM SET max_slot_wal_keep_size = '{value}';\nSELECT pg_reload_conf();\n"
        f"-- {value} is {why}; keep it below the free space of the WAL disk.",
    )
