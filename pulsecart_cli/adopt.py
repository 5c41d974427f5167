"""The application's tables in ``public``: created on a fresh database, adopted on one that has them.

``events`` belongs to the Pub/Sub consumer, which writes to it all the time; ``event_aggregates``,
``daily_metrics`` and ``personalization_scores`` may have been written by the seed's DAGs. Adoption never
rewrites a table and never holds a lock the consumer waits on for more than ``LOCK_BUDGET_S``: DDL takes its
locks one table at a time within that budget and starts again after a pause when it cannot; indexes on
live tables are built with ``CREATE INDEX CONCURRENTLY``, partition by partition. Every step looks at the
catalog first, so a second run (or one after an interruption) does only what is left.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pulsecart_cli.errors import DatabaseError, MissingPrivileges, SchemaMismatch
from pulsecart_cli.queries import one_row

APP_SCHEMA = "public"
Statement = sql.SQL | sql.Composed  # what psycopg executes
LOCK_BUDGET_S = 0.8   # under the 1 s a consumer may allow itself (lock_timeout), with room for the rest
LOCK_ATTEMPTS = 30
EVENT_COLUMNS = ("event_id", "user_id", "event_type", "timestamp", "payload")
DAY_INDEX = "events_pulsecart_day_idx"
AGGREGATES_INDEX = "event_aggregates_pulsecart_day_idx"
# BEFORE row triggers run at once, so the first row of a day sets the transaction's note and the day's
# later rows return at the function's first check. The insert trigger has no WHEN clause: PostgreSQL
# prepares one anew for every statement, which cost more than that check (0006). Row triggers on a
# partitioned table are cloned to every partition, present and future. BEFORE triggers fire in name order:
# the zz_ names run after the consumer's own (one that fills in "timestamp", say), so they see the final row.
EVENT_TRIGGERS = {
    "zz_pulsecart_note_insert": "BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {schema}.note_event_change()",
    "zz_pulsecart_note_update": "BEFORE UPDATE ON {table} FOR EACH ROW WHEN ((OLD.user_id, OLD.event_type, "
                                "OLD.\"timestamp\", OLD.payload::text) IS DISTINCT FROM (NEW.user_id, NEW.event_type, "
                                "NEW.\"timestamp\", NEW.payload::text)) EXECUTE FUNCTION {schema}.note_event_change()",
    "zz_pulsecart_note_delete": "BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {schema}.note_event_change()",
}
# What marks an earlier pulsecart's definition of a trigger: `db migrate` replaces it (CREATE OR REPLACE
# TRIGGER, cloned to the partitions). Before 0006 the insert trigger had a WHEN clause.
OUTDATED_TRIGGER_MARKS = {"zz_pulsecart_note_insert": " WHEN ("}
TRUNCATE_TRIGGER = ("zz_pulsecart_note_truncate",
                    "AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {schema}.note_event_change()")
AGGREGATE_TRIGGERS = {
    "changed_outside_aggregate": "AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
                                 "WHEN (current_setting('pulsecart.aggregating', true) IS DISTINCT FROM 'on') "
                                 "EXECUTE FUNCTION {schema}.note_change_outside_aggregate('date')",
    "truncated_outside_aggregate": "AFTER TRUNCATE ON {table} FOR EACH STATEMENT "
                                   "EXECUTE FUNCTION {schema}.note_change_outside_aggregate('date')",
}


@dataclass
class Table:
    """What the catalog says about one table of the application's schema."""

    name: str
    oid: int | None = None
    kind: str | None = None  # r: table, p: partitioned, v: view
    owned: bool = False  # the migrating role owns it (or is a member of its owner)
    columns: dict[str, str] = field(default_factory=dict)  # name: type
    triggers: dict[str, str] = field(default_factory=dict)  # name: definition
    partitions: list["Table"] = field(default_factory=list)  # leaf partitions, when partitioned
    schema: str = APP_SCHEMA  # a partition may live in another schema than its parent

    @property
    def exists(self) -> bool:
        return self.oid is not None

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


def inspect(conn: psycopg.Connection, name: str) -> Table:
    table = Table(name)
    row = conn.execute("""
        SELECT c.oid, c.relkind, pg_has_role(c.relowner, 'USAGE')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s""", (APP_SCHEMA, name)).fetchone()
    if row is None:
        return table
    table.oid, table.kind, table.owned = row
    _describe(conn, table)
    if table.kind == "p":
        for oid, part_name, schema, owned in conn.execute("""
                SELECT c.oid, c.relname, n.nspname, pg_has_role(c.relowner, 'USAGE')
                FROM pg_partition_tree(%s) t JOIN pg_class c ON c.oid = t.relid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.isleaf ORDER BY c.relname""", (table.oid,)):
            part = Table(part_name, oid, "r", owned, schema=schema)
            _describe(conn, part)
            table.partitions.append(part)
    return table


def _describe(conn: psycopg.Connection, table: Table) -> None:
    table.columns = dict(conn.execute("""
        SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped""", (table.oid,)).fetchall())
    table.triggers = dict(conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s", (table.oid,)).fetchall())


# --- locks ------------------------------------------------------------------------------------------------

def with_brief_locks(conn: psycopg.Connection, locks: list[tuple[sql.Composable, str]],
                     statements: list[Statement], what: str) -> None:
    """Run ``statements`` in one transaction whose lock waits add up to LOCK_BUDGET_S at most: a writer
    queued behind them waits no longer than that. The locks (table, mode) are taken one at a time first,
    each with what is left of the budget; a role that may not LOCK the tables (it holds only TRIGGER, say)
    lets the statements take them, each wait bounded by an equal share of the budget. Starts again after a
    pause when the budget runs out (a long transaction holds one of the tables)."""
    explicit = _may_lock(conn, [table for table, _ in locks])
    for attempt in range(LOCK_ATTEMPTS):
        started = time.monotonic()
        try:
            with conn.transaction():
                if explicit:
                    for table, mode in locks:
                        _set_lock_timeout(conn, started)
                        conn.execute(sql.SQL("LOCK TABLE ONLY {} IN {} MODE").format(table, sql.SQL(mode)))
                    _set_lock_timeout(conn, started)
                else:
                    _set_lock_timeout(conn, started, share=max(len(locks), 1))
                for statement in statements:
                    conn.execute(statement)
            return
        except psycopg.errors.LockNotAvailable:
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
    raise DatabaseError(f"{what}: could not take its locks within {LOCK_BUDGET_S:g} s in {LOCK_ATTEMPTS} tries "
                        "(a long transaction holds the table)", hint="run `pulsecart db migrate` again later")


def _may_lock(conn: psycopg.Connection, tables: list[sql.Composable]) -> bool:
    """LOCK TABLE in these modes needs UPDATE, DELETE or TRUNCATE on the table (its owner has them all)."""
    return all(one_row(conn.execute("SELECT has_table_privilege(to_regclass(%s), 'UPDATE, DELETE, TRUNCATE')",
                                    (table.as_string(conn),)))[0] for table in tables)


def _set_lock_timeout(conn: psycopg.Connection, started: float, share: int = 1) -> None:
    remaining_ms = int((LOCK_BUDGET_S - (time.monotonic() - started)) * 1000 / share)
    if remaining_ms <= 0:
        raise psycopg.errors.LockNotAvailable("lock budget spent")
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{remaining_ms}ms",))


def build_index_concurrently(conn: psycopg.Connection, name: str, table: sql.Composable, schema: str,
                             definition: sql.Composable) -> None:
    """CREATE INDEX CONCURRENTLY, outside any transaction; an INVALID leftover of a cut build is dropped
    and built again."""
    ident = sql.Identifier(schema, name)
    invalid = conn.execute("""
        SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s""",
                           (schema, name)).fetchone()
    if invalid and invalid[0]:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(ident))
    conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}").format(
        sql.Identifier(name), table, definition))


# --- the plan ---------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One change to the application's tables: what it does, and who may do it."""

    description: str
    run: Callable[[psycopg.Connection], object]
    needs: str | None = None  # what the migrating role lacks for it, or None
    owner_sql: list[str] = field(default_factory=list)  # what the owner runs instead, when it lacks it
    creates: bool = False  # it creates a relation (table, index, view) in the application's schema


@dataclass
class Plan:
    steps: list[Step]
    adopted: list[str]  # existing tables taken as they are


def plan(conn: psycopg.Connection, schema: str, role: str) -> Plan:
    """What creating or adopting the application's tables takes for ``role`` (the migrating one); looks,
    changes nothing."""
    steps: list[Step] = []
    adopted: list[str] = []
    tables = {name: inspect(conn, name) for name in ("events", "event_aggregates", "daily_metrics",
                                                      "personalization_scores")}
    for name, table in tables.items():
        if table.exists:
            adopted.append(f"{APP_SCHEMA}.{name}" + (f" ({len(table.partitions)} partitions)" if table.partitions else ""))
    steps += _events_steps(conn, tables["events"], schema, role)
    steps += _aggregates_steps(conn, tables["event_aggregates"], schema, role)
    steps += _metrics_steps(conn, tables["daily_metrics"], role)
    steps += _scores_steps(conn, tables["personalization_scores"], schema, role)
    if any(s.creates for s in steps) and not one_row(
            conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (APP_SCHEMA,)))[0]:
        steps.insert(0, Step(f"(CREATE on schema {APP_SCHEMA})", lambda c: None,
                             f"the CREATE privilege on schema {APP_SCHEMA} (indexes, views and tables go there)",
                             [f"GRANT CREATE ON SCHEMA {APP_SCHEMA} TO {sql.Identifier(role).as_string(conn)};"]))
    return Plan(steps, adopted)


def _needs_owner(conn: psycopg.Connection, table: Table, role: str) -> tuple[str | None, list[str]]:
    if table.owned:
        return None, []
    return (f"ownership of {APP_SCHEMA}.{table.name}",
            [f"ALTER TABLE {table.ident.as_string(conn)} OWNER TO {sql.Identifier(role).as_string(conn)};"])


def _require_columns(table: Table, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SchemaMismatch(f"{APP_SCHEMA}.{table.name} has no column {', '.join(missing)}: pulsecart "
                             f"{'reads' if table.name == 'events' else 'writes'} {', '.join(columns)}")


def _events_steps(conn: psycopg.Connection, events: Table, schema: str, role: str) -> list[Step]:
    fmt = {"schema": schema}
    if not events.exists:
        return [Step("created public.events", lambda c: c.execute(sql.SQL(_CREATE_EVENTS).format(
            **{k: sql.Identifier(v) for k, v in fmt.items()})), creates=True)]
    _require_columns(events, EVENT_COLUMNS)
    if events.columns["timestamp"] != "timestamp with time zone":
        raise SchemaMismatch(f"public.events.timestamp is {events.columns['timestamp']}: pulsecart reads UTC days "
                             "from a timestamp with time zone")
    if one_row(conn.execute("SELECT count(*) FROM pg_partition_tree(%s) WHERE level > 1", (events.oid,)))[0]:
        raise SchemaMismatch("public.events has partitions of partitions: pulsecart adopts one level of "
                             "partitions (index and triggers per partition)")
    other = conn.execute("""
        SELECT n.nspname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE t.tgrelid = %s AND t.tgname LIKE '%%pulsecart_note_%%' AND n.nspname <> %s LIMIT 1""",
                         (events.oid, schema)).fetchone()
    if other:
        raise SchemaMismatch(f"public.events is tracked by the pulsecart schema {other[0]}, not {schema}: "
                             f"set PULSECART_SCHEMA={other[0]}")
    steps = []
    if not _has_day_index(conn, events):
        steps.append(_day_index_step(conn, events))
    tables = [events, *events.partitions]
    statements = [_trigger_sql(name, body, events.ident, schema, replace=name in events.triggers)
                  for name, body in EVENT_TRIGGERS.items() if not _current(events, name)]
    statements += [_trigger_sql(TRUNCATE_TRIGGER[0], TRUNCATE_TRIGGER[1], table.ident, schema)
                   for table in tables if TRUNCATE_TRIGGER[0] not in table.triggers]
    if statements:
        locks = [(table.ident, "SHARE ROW EXCLUSIVE") for table in tables]
        done = ("added change tracking to public.events" if any(name not in events.triggers for name in EVENT_TRIGGERS)
                else "updated the change tracking on public.events (a cheaper insert trigger)")
        step = Step(f"{done} (triggers on {len(tables)} table(s), run in the writer's transaction)",
                    lambda c: with_brief_locks(c, locks, statements, "change tracking on events"))
        lacking = [t for t in tables if not _can_trigger(conn, t)]
        if lacking:
            step.needs = "the TRIGGER privilege on public.events" + (" and its partitions" if events.partitions else "")
            step.owner_sql = [f"GRANT TRIGGER ON {t.ident.as_string(conn)} TO "
                              f"{sql.Identifier(role).as_string(conn)};" for t in lacking]
        steps.append(step)
    return steps


def _current(table: Table, trigger: str) -> bool:
    """Whether ``table`` has ``trigger`` with its current definition."""
    definition = table.triggers.get(trigger)
    outdated = OUTDATED_TRIGGER_MARKS.get(trigger)
    return definition is not None and not (outdated and outdated in definition)


def _trigger_sql(name: str, body: str, table: sql.Composable, schema: str, replace: bool = False) -> Statement:
    return sql.SQL(("CREATE OR REPLACE TRIGGER " if replace else "CREATE TRIGGER ") + "{name} " + body).format(
        name=sql.Identifier(name), table=table, schema=sql.Identifier(schema))


def _can_trigger(conn: psycopg.Connection, table: Table) -> bool:
    return bool(one_row(conn.execute("SELECT has_table_privilege(%s::oid, 'TRIGGER')", (table.oid,)))[0])


def _has_day_index(conn: psycopg.Connection, events: Table) -> bool:
    """A valid index on events (the parent, when partitioned) whose first column is "timestamp"."""
    return bool(one_row(conn.execute("""
        SELECT EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                       WHERE i.indrelid = %s AND i.indisvalid AND i.indpred IS NULL AND a.attname = 'timestamp')""",
                                     (events.oid,)))[0])


DAY_INDEX_DEFINITION = sql.SQL('("timestamp") INCLUDE (user_id, event_type)')


def _day_index_step(conn: psycopg.Connection, events: Table) -> Step:
    """The day index on a live events table: concurrently; on a partitioned one, an index ON ONLY the
    parent, one built concurrently on each partition and attached, which makes the parent's valid."""
    parent_ddl = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY {} {}").format(
        sql.Identifier(DAY_INDEX), events.ident, DAY_INDEX_DEFINITION)

    def concurrently(name: str, table: Table) -> Statement:
        return sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}").format(
            sql.Identifier(name), table.ident, DAY_INDEX_DEFINITION)

    def attach(part: Table) -> Statement:
        return sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
            sql.Identifier(APP_SCHEMA, DAY_INDEX), sql.Identifier(part.schema, _partition_index_name(part)))

    owners_sql: list[Statement] = [concurrently(DAY_INDEX, events)]
    if events.partitions:
        owners_sql = [parent_ddl]
        for part in events.partitions:
            owners_sql += [concurrently(_partition_index_name(part), part), attach(part)]

    def run(c: psycopg.Connection) -> None:
        if not events.partitions:
            build_index_concurrently(c, DAY_INDEX, events.ident, APP_SCHEMA, DAY_INDEX_DEFINITION)
            return
        with_brief_locks(c, [], [parent_ddl], "the day index on events")
        attached = {r[0] for r in c.execute("""
            SELECT i.indrelid FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
            JOIN pg_class p ON p.oid = h.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE n.nspname = %s AND p.relname = %s""", (APP_SCHEMA, DAY_INDEX))}
        for part in events.partitions:
            if part.oid in attached:
                continue
            build_index_concurrently(c, _partition_index_name(part), part.ident, part.schema, DAY_INDEX_DEFINITION)
            with_brief_locks(c, [], [attach(part)], f"the day index on {part.name}")

    unowned = [t for t in (events, *events.partitions) if not t.owned]
    step = Step(f"built the day index {DAY_INDEX} on public.events concurrently"
                + (f" ({len(events.partitions)} partitions)" if events.partitions else ""), run, creates=True)
    if unowned:
        step.needs = "ownership of public.events (only its owner can index it)"
        step.owner_sql = [ddl.as_string(conn) + ";" for ddl in owners_sql]
    return step


def _partition_index_name(part: Table) -> str:
    return f"{part.name[:36]}_{part.oid}_pulsecart_day_idx"   # the oid: partition names may share 36 characters


def _aggregates_steps(conn: psycopg.Connection, table: Table, schema: str, role: str) -> list[Step]:
    if not table.exists:
        return [Step("created public.event_aggregates", lambda c: c.execute(sql.SQL(_CREATE_AGGREGATES).format(
            schema=sql.Identifier(schema))), creates=True)]
    _require_columns(table, ("user_id", "date", "event_type", "event_count"))
    needs, owner_sql = _needs_owner(conn, table, role)
    steps = []
    has_index = one_row(conn.execute("""
        SELECT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = %s AND i.indisvalid AND i.indpred IS NULL
                       AND (SELECT array_agg(attname ORDER BY k.n) FROM unnest(i.indkey[0:2]) WITH ORDINALITY k(attnum, n)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
                           = ARRAY['date', 'user_id', 'event_type']::name[])""", (table.oid,)))[0]
    if not has_index:
        steps.append(Step(f"built {AGGREGATES_INDEX} on public.event_aggregates concurrently",
                          lambda c: build_index_concurrently(c, AGGREGATES_INDEX, table.ident, APP_SCHEMA,
                                                             sql.SQL("(date, user_id, event_type)")),
                          needs, owner_sql, creates=True))
    missing = [name for name in AGGREGATE_TRIGGERS if name not in table.triggers]
    if missing:
        statements = [_trigger_sql(name, AGGREGATE_TRIGGERS[name], table.ident, schema) for name in missing]
        steps.append(Step("added the outside-change triggers to public.event_aggregates",
                          lambda c: with_brief_locks(c, [(table.ident, "SHARE ROW EXCLUSIVE")], statements,
                                                     "triggers on event_aggregates"), needs, owner_sql))
    return steps


def _metrics_steps(conn: psycopg.Connection, table: Table, role: str) -> list[Step]:
    if not table.exists:
        return [Step("created public.daily_metrics", lambda c: c.execute(_CREATE_METRICS), creates=True)]
    _require_columns(table, ("date", "orders_placed", "carts_abandoned", "abandonment_rate", "revenue"))
    needs, owner_sql = _needs_owner(conn, table, role)
    changes: list[Statement] = []
    if "invalid_order_totals" not in table.columns:
        changes.append(sql.SQL("ADD COLUMN invalid_order_totals bigint NOT NULL DEFAULT 0"))
    for column in ("abandonment_rate", "revenue"):
        if table.columns.get(column, "").startswith("numeric("):  # no ceiling: a relaxed typmod rewrites nothing
            changes.append(sql.SQL("ALTER COLUMN {} TYPE numeric").format(sql.Identifier(column)))
    if not changes:
        return []
    statement = sql.SQL("ALTER TABLE {} ").format(table.ident) + sql.SQL(", ").join(changes)
    return [Step("public.daily_metrics: " + ", ".join(c.as_string(conn) for c in changes).replace('"', ""),
                 lambda c: with_brief_locks(c, [(table.ident, "ACCESS EXCLUSIVE")], [statement], "daily_metrics"),
                 needs, owner_sql)]


SEED_SCORES = "seed_personalization_scores"


def _scores_steps(conn: psycopg.Connection, table: Table, schema: str, role: str) -> list[Step]:
    """personalization_scores is a view of the current day's scores. The seed's table of that name moves
    into pulsecart's schema, and the view shows its rows until pulsecart's first scores (a write to
    event_aggregates by the seed's old DAG does not end it), with the same column types and the grants
    the table had."""
    schema_ident = sql.Identifier(schema)
    if not table.exists:
        return [Step("created the view public.personalization_scores",
                     lambda c: c.execute(sql.SQL(_CREATE_SCORES_VIEW).format(schema=schema_ident)), creates=True)]
    if table.kind == "v":
        return []
    _require_columns(table, ("user_id", "score", "computed_at"))
    needs, owner_sql = _needs_owner(conn, table, role)
    types = {c: table.columns.get(c, "text") for c in ("user_id", "score", "computed_at")}
    grants = conn.execute("""
        SELECT format('GRANT %%s ON public.personalization_scores TO %%s',
                      a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END)
        FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = %s AND a.grantee <> c.relowner AND a.privilege_type IN ('SELECT')""", (table.oid,)).fetchall()
    view: Statement = sql.SQL(_ADOPTED_SCORES_VIEW).format(
        schema=schema_ident, seed=sql.Identifier(SEED_SCORES),
        **{f"{c}_type": sql.SQL(t) for c, t in types.items()})
    statements: list[Statement] = [
        sql.SQL("ALTER TABLE public.personalization_scores SET SCHEMA {}").format(schema_ident),
        sql.SQL("ALTER TABLE {}.personalization_scores RENAME TO {}").format(schema_ident, sql.Identifier(SEED_SCORES)),
        view,
        *(sql.SQL(g[0]) for g in grants),
    ]
    return [Step(f"public.personalization_scores: the seed's table is now {schema}.{SEED_SCORES}; a view of the "
                 "same name shows its rows until pulsecart's first aggregate, then pulsecart's current scores",
                 lambda c: with_brief_locks(c, [(table.ident, "ACCESS EXCLUSIVE")], statements,
                                            "personalization_scores"), needs, owner_sql, creates=True)]


def apply(conn: psycopg.Connection, steps: list[Step]) -> list[str]:
    done = []
    for step in steps:
        step.run(conn)
        done.append(step.description)
    return done


def refuse_missing(steps: list[Step], role: str) -> None:
    missing = [s for s in steps if s.needs]
    if missing:
        needs = "; ".join(dict.fromkeys(s.needs for s in missing if s.needs))
        owner_sql = [line for s in missing for line in s.owner_sql]
        raise MissingPrivileges(
            f"role {role} lacks {needs}: nothing was changed; have the owner run the SQL printed above, "
            "then run `pulsecart db migrate` again", owner_sql="\n".join(dict.fromkeys(owner_sql)))


_CREATE_EVENTS = """
CREATE TABLE public.events (
    event_id    uuid PRIMARY KEY,
    user_id     text NOT NULL,
    event_type  text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_timestamp_idx ON public.events ("timestamp") INCLUDE (user_id, event_type);
""" + "\n".join(f"CREATE TRIGGER {name} {body.format(table='public.events', schema='{schema}')};"
                for name, body in [*EVENT_TRIGGERS.items(), TRUNCATE_TRIGGER])

_CREATE_AGGREGATES = """
CREATE TABLE public.event_aggregates (
    user_id     text NOT NULL,
    date        date NOT NULL,
    event_type  text NOT NULL,
    event_count bigint NOT NULL,
    PRIMARY KEY (date, user_id, event_type)
);
""" + "\n".join(f"CREATE TRIGGER {name} {body.format(table='public.event_aggregates', schema='{schema}')};"
                for name, body in AGGREGATE_TRIGGERS.items())

_CREATE_METRICS = """
CREATE TABLE public.daily_metrics (
    date                 date PRIMARY KEY,
    orders_placed        bigint NOT NULL,
    carts_abandoned      bigint NOT NULL,
    abandonment_rate     numeric,
    revenue              numeric NOT NULL,
    invalid_order_totals bigint NOT NULL DEFAULT 0
)"""

# The current scores: those as of the newest aggregated day that is not in the future. Derived, never a
# second copy that could be left behind or moved to a mistyped day.
_CURRENT_SCORES = """
SELECT h.user_id, h.score, h.computed_at, h.as_of
FROM {schema}.personalization_score_history h
WHERE h.as_of = (SELECT max(day) FROM {schema}.aggregated_days WHERE day <= (now() AT TIME ZONE 'UTC')::date)"""

_CREATE_SCORES_VIEW = "CREATE VIEW public.personalization_scores AS" + _CURRENT_SCORES

_ADOPTED_SCORES_VIEW = """
CREATE VIEW public.personalization_scores AS
SELECT h.user_id::{user_id_type} AS user_id, h.score::{score_type} AS score,
       h.computed_at::{computed_at_type} AS computed_at, h.as_of
FROM {schema}.personalization_score_history h
WHERE h.as_of = (SELECT max(day) FROM {schema}.aggregated_days WHERE day <= (now() AT TIME ZONE 'UTC')::date)
UNION ALL
SELECT s.user_id, s.score, s.computed_at, NULL::date
FROM {schema}.{seed} s
WHERE NOT EXISTS (SELECT FROM {schema}.personalization_score_history)"""
