"""Chunk.embedding_en: the English embedder's vector, for chunks written mostly in English.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunk") as batch_op:
        batch_op.add_column(sa.Column("embedding_en", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunk") as batch_op:
        batch_op.drop_column("embedding_en")
