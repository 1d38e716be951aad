"""The chained history (SPEC 14) and `run rerun`

- events.seq, events.hash: each event's place in the chain and its link,
  sha256(previous hash + canonical JSON) (core/chain.py); ix_events_seq keeps one event per
  place, ix_events_unsealed finds the few the engine has still to seal;
- runs.rerun_of: the run a `run rerun` repeats.

The history that exists is sealed here, in id order (everything in it has committed).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

from core.chain import FIELDS, GENESIS, link

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index("ix_events_seq", ["seq"], unique=True)
        batch_op.create_index(
            "ix_events_unsealed",
            ["id"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rerun_of", sa.Integer(), nullable=True))
    cx = op.get_bind()
    previous, seq, last = GENESIS, 0, 0
    while True:
        rows = (
            cx.execute(
                sa.text(f"SELECT {', '.join(FIELDS)} FROM events WHERE id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": BATCH},
            )
            .mappings()
            .all()
        )
        if not rows:
            break
        links = []
        for row in rows:
            seq += 1
            previous = link(previous, row)
            links.append({"s": seq, "h": previous, "i": row["id"]})
        cx.execute(sa.text("UPDATE events SET seq = :s, hash = :h WHERE id = :i"), links)
        last = rows[-1]["id"]


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("rerun_of")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_unsealed", sqlite_where=sa.text("seq IS NULL"))
        batch_op.drop_index("ix_events_seq")
        batch_op.drop_column("hash")
        batch_op.drop_column("seq")
