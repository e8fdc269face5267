"""Roles, account state, session kinds and grants narrowed to a folder or a document.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user") as b:
        b.add_column(
            sa.Column(
                "display_name",
                sqlmodel.sql.sqltypes.AutoString(length=200),
                nullable=False,
                server_default="",
            )
        )
        b.add_column(
            sa.Column(
                "role",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="staff",
            )
        )
        b.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        b.add_column(
            sa.Column(
                "auth_source",
                sqlmodel.sql.sqltypes.AutoString(length=32),
                nullable=False,
                server_default="local",
            )
        )
        b.add_column(
            sa.Column("password_changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        b.add_column(sa.Column("last_login_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.execute(sa.text("UPDATE \"user\" SET role = 'admin' WHERE is_admin"))
    with op.batch_alter_table("user") as b:
        b.drop_column("is_admin")

    with op.batch_alter_table("authtoken") as b:
        b.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="bearer",
            )
        )
        b.add_column(sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))

    op.create_table(
        "scopegrant",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), sa.ForeignKey("library.id"), nullable=False),
        sa.Column("folder", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("document_id", sa.Integer(), sa.ForeignKey("document.id"), nullable=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("user.id"), nullable=True),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("group_.id"), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("user.id"), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    for column in ("library_id", "document_id", "user_id", "group_id"):
        op.create_index(f"ix_scopegrant_{column}", "scopegrant", [column])


def downgrade() -> None:
    for column in ("library_id", "document_id", "user_id", "group_id"):
        op.drop_index(f"ix_scopegrant_{column}", "scopegrant")
    op.drop_table("scopegrant")
    with op.batch_alter_table("authtoken") as b:
        b.drop_column("last_seen_at")
        b.drop_column("kind")
    with op.batch_alter_table("user") as b:
        b.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(sa.text("UPDATE \"user\" SET is_admin = (role = 'admin')"))
    with op.batch_alter_table("user") as b:
        for column in (
            "last_login_at",
            "password_changed_at",
            "auth_source",
            "must_change_password",
            "role",
            "display_name",
        ):
            b.drop_column(column)
