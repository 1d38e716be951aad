"""Claims matched in SQL, and events read in commit order on PostgreSQL

- runs.environment: the run's environment (from its plan), so an agent's claim fences
  environments in the claiming statement instead of parsing every waiting job's plan;
- jobs.resources (JSON list, NULL for none) and jobs.only_agent (run_on_all_agents copies):
  the rest of the matching an agent does in its claim; ix_jobs_claim walks the waiting jobs
  in dispatch order, so a claim reads only as many rows as it takes;
- events.tx: on PostgreSQL the id of the transaction that wrote the event. Without one global
  write lock, events commit out of id order; a reader that follows events takes only those of
  transactions older than every transaction still running (pg_snapshot_xmin), so it never
  passes over an event that commits later with a smaller id.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import json

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ACTIVE = "('pending', 'running', 'on_hold')"


def upgrade() -> None:
    cx = op.get_bind()
    postgres = cx.dialect.name == "postgresql"
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("environment", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resources", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("only_agent", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index("ix_jobs_claim", ["status", "gate", "run_id", "position", "id"], unique=False)
    if postgres:
        op.add_column(
            "events",
            sa.Column(
                "tx",
                sa.BigInteger(),
                nullable=True,
                server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
            ),
        )
        op.create_index("ix_events_tx", "events", ["tx", "id"], unique=False)
    else:
        with op.batch_alter_table("events", schema=None) as batch_op:
            batch_op.add_column(sa.Column("tx", sa.BigInteger(), nullable=True))
    # the runs that can still start jobs get their matching columns from their plans
    for run_id, plan_text in cx.execute(
        sa.text(f"SELECT id, plan FROM runs WHERE status IN {_ACTIVE}")
    ).fetchall():
        plan = json.loads(plan_text)
        cx.execute(
            sa.text("UPDATE runs SET environment = :e WHERE id = :i"),
            {"e": plan.get("environment"), "i": run_id},
        )
        for job_id, base, copy_key in cx.execute(
            sa.text("SELECT id, base, copy_key FROM jobs WHERE run_id = :i"), {"i": run_id}
        ).fetchall():
            spec = plan["jobs"].get(base) or {}
            res = sorted(spec.get("resources") or [])
            cx.execute(
                sa.text("UPDATE jobs SET resources = :r, only_agent = :a WHERE id = :i"),
                {
                    "r": json.dumps(res) if res else None,
                    "a": copy_key if spec.get("run_on_all_agents") else None,
                    "i": job_id,
                },
            )


def downgrade() -> None:
    cx = op.get_bind()
    if cx.dialect.name == "postgresql":
        op.drop_index("ix_events_tx", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("tx")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_claim")
        batch_op.drop_column("only_agent")
        batch_op.drop_column("resources")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("environment")
