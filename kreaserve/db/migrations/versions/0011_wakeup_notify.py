"""wake-up notifications: PostgreSQL triggers that NOTIFY when work arrives

Workers and callback senders in other processes LISTEN on these channels
(kreaserve/db/pg_listen.py) instead of polling the tables at their base interval. The
triggers are statement-level on INSERT (one notification per statement; PostgreSQL folds
identical ones of a transaction into one, sent at commit), plus a row-level one, limited
by its WHEN clause, for a task that goes back to pending (a retry, a requeue). Nothing
on SQLite, whose writers share one process's in-process wake-ups.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 03:20:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_FUNCTIONS = {
    "kreaserve_notify_tasks": "kreaserve_tasks",
    "kreaserve_notify_callbacks": "kreaserve_callbacks",
}
_TRIGGERS = (
    ("kreaserve_tasks_inserted", "tasks", "AFTER INSERT", "STATEMENT", "", "tasks"),
    (
        "kreaserve_tasks_requeued",
        "tasks",
        "AFTER UPDATE OF status",
        "ROW",
        "WHEN (OLD.status <> NEW.status AND NEW.status = 'pending')",
        "tasks",
    ),
    (
        "kreaserve_callbacks_inserted",
        "callback_deliveries",
        "AFTER INSERT",
        "STATEMENT",
        "",
        "callbacks",
    ),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function, channel in _FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$"
        )
    for name, table, event, level, when, channel in _TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} {event} ON {table} FOR EACH {level} {when} "
            f"EXECUTE FUNCTION kreaserve_notify_{channel}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, *_ in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
