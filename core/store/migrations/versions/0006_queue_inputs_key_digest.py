"""queue_items.inputs_key: the SHA-256 of the canonical inputs, not the inputs themselves

The unique index on (kind, target, inputs_key) keeps one queued item per invocation. With
the whole JSON in the key, an 8 KB input could not be queued on PostgreSQL (a btree entry
is at most about 2.7 KB), while SQLite took it. A fixed-size digest indexes the same rule
on both backends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    cx = op.get_bind()
    rows = cx.execute(sa.text("SELECT id, inputs_key FROM queue_items")).fetchall()
    for item_id, key in rows:
        if len(key) == 64 and all(c in "0123456789abcdef" for c in key):
            continue  # already a digest
        digest = hashlib.sha256(key.encode()).hexdigest()
        cx.execute(
            sa.text("UPDATE queue_items SET inputs_key = :k WHERE id = :i"), {"k": digest, "i": item_id}
        )


def downgrade() -> None:
    # the digest cannot be reversed; the inputs column holds the same canonical JSON
    op.execute("UPDATE queue_items SET inputs_key = inputs")
