"""runs(target, id): `run list --workflow W` newest first without sorting every run of W

With 100,000 runs the filtered list sorted all of a workflow's runs by id in a temporary
b-tree (P5, bench/README.md); this index walks them in order and stops at the limit.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_target_id", ["target", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_target_id")
