"""`mlflow-stack db doctor`: why the database grows or slows, each finding with its fix.

Read-only, as the application role (it owns every table, so it sees their statistics and its own
sessions' statements). What it looks at, in both databases:
- table and index sizes (largest first);
- dead tuples and estimated bloat per table (pg_stat_user_tables, pg_class, pg_stats);
- the slowest statements (pg_stat_statements, preloaded by the stack's parameter group and by the
  local stack's PostgreSQL);
- long transactions and sessions idle in a transaction (pg_stat_activity): they hold back VACUUM
  for every table, which is the usual reason dead tuples pile up;
- connections by state against the role's connection limit (the budget bootstrap-db sets).

About VACUUM FULL: it rewrites the table under an ACCESS EXCLUSIVE lock — every read and write of
the table (so every server request touching runs, metrics or params) waits until it finishes, and
it needs free disk for a full copy. The fixes below therefore say: plain `VACUUM (ANALYZE)` first
(no exclusive lock; space becomes reusable inside the table), `pg_repack` to give space back
online (an RDS-supported extension that holds the exclusive lock only briefly at the start and end:
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Appendix.PostgreSQL.CommonDBATasks.pg_repack.html),
and VACUUM FULL only in a maintenance window with the service scaled to zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from lifecycle.db_target import DatabaseTarget

# A table worth a finding: at least this many dead tuples, and this share of its live ones.
DEAD_TUPLES_MIN = 1000
DEAD_TUPLES_RATIO = 0.2
# Estimated bloat worth a finding: this share of the table and at least this many bytes.
BLOAT_RATIO = 0.5
BLOAT_MIN_BYTES = 64 * 1024 * 1024
# Connections of the application role above this share of its limit: the pool is close to the budget.
CONNECTION_WARN_RATIO = 0.8
DEFAULT_LONG_TRANSACTION_SECONDS = 300.0
DEFAULT_TOP = 5
PG_STAT_STATEMENTS = "pg_stat_statements"
# The schema docs/database.md has operators create the extension in (the local stack does too).
STATISTICS_SCHEMA = "monitoring"
# Statements left out of "slowest": those reading PostgreSQL's own catalogs and functions (this
# doctor, `db status`, pg_dump, SQLAlchemy's reflection) and the migrations' DDL, which runs once
# per upgrade. What is left is what the server's requests run.
_CATALOG_QUERY = r"\mpg_\w+"
_DDL_QUERY = r"^\s*(create|alter|drop|comment|grant|revoke|lock|copy)\M"


@dataclass
class Finding:
    severity: str  # "warning" or "info"
    check: str
    problem: str
    fix: str


@dataclass
class DoctorReport:
    target: dict[str, Any]
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: dict[str, Any] = field(default_factory=dict)
    long_transactions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "warning" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["healthy"] = self.healthy
        return body


def _rows(conn: psycopg.Connection, query: str | sql.Composed, params: Any = None) -> list[dict[str, Any]]:
    cursor = conn.execute(query, params)
    names = [c.name for c in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_TABLES = """
SELECT c.relname AS table,
       pg_table_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       pg_total_relation_size(c.oid) AS total_bytes,
       s.n_live_tup AS live_tuples,
       s.n_dead_tup AS dead_tuples,
       s.last_autovacuum, s.last_vacuum,
       -- Bloat estimate (the usual statistics-based one): the heap the live rows need at the
       -- table's fillfactor, from pg_stats' average column widths plus a 28-byte tuple overhead.
       CASE WHEN c.reltuples > 0 AND w.width IS NOT NULL THEN
         greatest(pg_relation_size(c.oid)
           - ceil(c.reltuples * (w.width + 28) / (current_setting('block_size')::int
               * coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                           WHERE o LIKE 'fillfactor=%%'), 100) / 100.0))
             * current_setting('block_size')::int, 0)
       END AS bloat_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN (SELECT tablename, sum(avg_width) AS width FROM pg_stats WHERE schemaname = 'public'
           GROUP BY tablename) w ON w.tablename = c.relname
WHERE c.relkind IN ('r', 'p', 'm')
ORDER BY pg_total_relation_size(c.oid) DESC
"""

_INDEXES = """
SELECT i.relname AS table, i.indexrelname AS index, pg_relation_size(i.indexrelid) AS bytes,
       i.idx_scan AS scans
FROM pg_stat_user_indexes i
ORDER BY pg_relation_size(i.indexrelid) DESC
LIMIT %s
"""


def _table_findings(database: str, tables: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    for t in tables:
        dead, live = t["dead_tuples"] or 0, t["live_tuples"] or 0
        if dead >= DEAD_TUPLES_MIN and dead >= DEAD_TUPLES_RATIO * max(live, 1):
            findings.append(
                Finding(
                    "warning",
                    "dead tuples",
                    f"{database}.{t['table']}: {dead} dead tuples vs {live} live "
                    f"(last autovacuum {t['last_autovacuum'] or 'never'})",
                    f"VACUUM (ANALYZE) {t['table']}; — takes no exclusive lock, safe while serving. If it "
                    "keeps coming back, end the long transactions listed here (they stop VACUUM from "
                    "removing anything) and lower the table's autovacuum_vacuum_scale_factor "
                    f"(ALTER TABLE {t['table']} SET (autovacuum_vacuum_scale_factor = 0.05)).",
                )
            )
        bloat = t["bloat_bytes"] or 0
        if bloat >= BLOAT_MIN_BYTES and bloat >= BLOAT_RATIO * max(t["table_bytes"], 1):
            findings.append(
                Finding(
                    "warning",
                    "bloat",
                    f"{database}.{t['table']}: about {_size(bloat)} of {_size(t['table_bytes'])} is free "
                    "space inside the table",
                    "The space is reused by new rows, so only act if the disk needs it back: pg_repack "
                    f"--table {t['table']} (online). Not VACUUM FULL while serving — it takes an ACCESS "
                    "EXCLUSIVE lock and every request touching the table waits; use it only in a "
                    "maintenance window with the service scaled to 0.",
                )
            )
    return findings


def _statements(
    conn: psycopg.Connection, database: str, top: int
) -> tuple[list[dict[str, Any]], Finding | None]:
    schema = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = %s",
        (PG_STAT_STATEMENTS,),
    ).fetchone()
    if not schema:
        return [], Finding(
            "info",
            "slowest statements",
            f"{database}: the pg_stat_statements extension is not created in this database",
            "The server's bootstrap-db step creates it (in the schema "
            f"{STATISTICS_SCHEMA}) on a task start once the library is loaded: the stack's "
            "parameter group preloads it, which takes effect at the instance's next reboot (RDS applies "
            "shared_preload_libraries pending-reboot). After a reboot, starting one server task (or "
            "`python -m server.entrypoint bootstrap-db`) creates it at once.",
        )
    view = sql.Identifier(schema[0], PG_STAT_STATEMENTS)
    query = sql.SQL(
        """
        SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 200) AS query, s.calls,
               round(s.mean_exec_time::numeric, 2) AS mean_ms,
               round(s.total_exec_time::numeric, 1) AS total_ms, s.rows
        FROM {} s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database()
          AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND s.query !~* %s AND s.query !~* %s
        ORDER BY s.mean_exec_time DESC LIMIT %s
        """
    ).format(view)
    try:
        rows = _rows(conn, query, (_CATALOG_QUERY, _DDL_QUERY, top))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return [], Finding(
            "warning",
            "slowest statements",
            f"{database}: pg_stat_statements is created but its library is not loaded",
            "Add pg_stat_statements to shared_preload_libraries (the stack's parameter group does) and "
            "reboot the instance: it is a static parameter, applied only at the next reboot.",
        )
    except psycopg.errors.InsufficientPrivilege:
        return [], Finding(
            "info",
            "slowest statements",
            f"{database}: the application role may not read schema {schema[0]}",
            f"As the master user: GRANT USAGE ON SCHEMA {schema[0]} TO <application role>;",
        )
    return rows, None


def _activity(
    conn: psycopg.Connection, user: str, long_seconds: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    states = _rows(
        conn,
        "SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity "
        "WHERE usename = %s AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 2 DESC",
        (user,),
    )
    limits = _rows(
        conn,
        "SELECT r.rolconnlimit AS role_limit, current_setting('max_connections')::int AS max_connections, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS all_clients "
        "FROM pg_roles r WHERE r.rolname = %s",
        (user,),
    )[0]
    # The current role sees its own sessions' queries; others' show as <insufficient privilege>.
    long_rows = _rows(
        conn,
        """
        SELECT pid, usename AS user, application_name, client_addr::text AS client, state,
               datname AS database,
               round(extract(epoch FROM now() - xact_start)::numeric, 1) AS seconds,
               left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query
        FROM pg_stat_activity
        WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
          AND backend_type = 'client backend'
          AND now() - xact_start > make_interval(secs => %s)
        ORDER BY xact_start
        """,
        (long_seconds,),
    )
    used = sum(int(s["n"]) for s in states)
    connections = {
        "by_state": {s["state"]: int(s["n"]) for s in states},
        "application_role": user,
        "used": used,
        "role_limit": limits["role_limit"],
        "max_connections": limits["max_connections"],
        "all_client_connections": limits["all_clients"],
    }
    return connections, long_rows


def _connection_findings(c: dict[str, Any]) -> list[Finding]:
    limit = c["role_limit"] if c["role_limit"] and c["role_limit"] > 0 else c["max_connections"]
    if c["used"] < CONNECTION_WARN_RATIO * limit:
        return []
    idle = c["by_state"].get("idle", 0)
    return [
        Finding(
            "warning",
            "connections",
            f"{c['application_role']} holds {c['used']} of its {limit} connections ({idle} idle)",
            "New replicas will fail to connect at the limit. Lower server.dbPoolSize/dbMaxOverflow or "
            "server.maxReplicas, or pick a larger database.instanceClass (the settings check the budget).",
        )
    ]


def _long_transaction_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    for r in rows:
        idle = (r["state"] or "").startswith("idle in transaction")
        findings.append(
            Finding(
                "warning",
                "long transaction",
                f"pid {r['pid']} ({r['user']}, {r['application_name'] or 'no application_name'}, "
                f"{r['client'] or 'local'}) has been in a transaction for {r['seconds']} s"
                f"{' and is idle' if idle else ''} in {r['database']}: {r['query']}",
                "It keeps VACUUM from removing dead rows in every table. Find the client and end the work, "
                f"or SELECT pg_terminate_backend({r['pid']}); — its transaction rolls back. To stop it "
                "recurring, set idle_in_transaction_session_timeout for the role.",
            )
        )
    return findings


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run_doctor(
    target: DatabaseTarget,
    *,
    long_transaction_seconds: float = DEFAULT_LONG_TRANSACTION_SECONDS,
    top: int = DEFAULT_TOP,
) -> DoctorReport:
    report = DoctorReport(target.describe())
    for database in (target.tracking_db, target.auth_db):
        with target.connect(database) as conn:
            tables = _rows(conn, _TABLES)
            statements, missing = _statements(conn, database, top)
            report.databases[database] = {
                "size_bytes": conn.execute("SELECT pg_database_size(current_database())").fetchone()[0],  # type: ignore[index]
                "tables": tables[:top],
                "largest_indexes": _rows(conn, _INDEXES, (top,)),
                "slowest_statements": statements,
            }
            report.findings += _table_findings(database, tables)
            if missing:
                report.findings.append(missing)
    with target.connect(target.tracking_db) as conn:
        report.connections, report.long_transactions = _activity(conn, target.user, long_transaction_seconds)
    report.findings += _long_transaction_findings(report.long_transactions)
    report.findings += _connection_findings(report.connections)
    return report


def doctor_lines(report: DoctorReport) -> list[str]:
    t = report.target
    lines = [f"db doctor ({t['source']}, {t['host']}:{t['port']})"]
    for name, db in report.databases.items():
        lines.append(f"  {name}: {_size(db['size_bytes'])}")
        for table in db["tables"]:
            lines.append(
                f"    {table['table']:<28} table {_size(table['table_bytes']):>9}  "
                f"indexes {_size(table['index_bytes']):>9}  dead {table['dead_tuples']}"
            )
        for s in db["slowest_statements"]:
            lines.append(f"    slow: {s['mean_ms']} ms x {s['calls']}: {s['query'][:100]}")
    c = report.connections
    states = ", ".join(f"{k} {v}" for k, v in c["by_state"].items()) or "none"
    lines.append(
        f"  connections of {c['application_role']}: {c['used']} of limit {c['role_limit']} ({states}); "
        f"max_connections {c['max_connections']}"
    )
    if not report.findings:
        lines.append("  no findings")
    for f in report.findings:
        lines.append(f"  [{f.severity}] {f.check}: {f.problem}")
        lines.append(f"      fix: {f.fix}")
    return lines
