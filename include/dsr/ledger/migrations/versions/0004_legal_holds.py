"""Legal holds ops place on a subject or a collection; the retention run touches nothing under one.

Revision ID: 0004_legal_holds
Revises: 0003_registries
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_legal_holds"
down_revision = "0003_registries"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dsr_legal_holds",
        sa.Column("hold_id", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("system", sa.String(128), nullable=False),
        sa.Column("collection", sa.String(128), nullable=True),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("until", TS, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("released_at", TS, nullable=True),
        sa.Column("released_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_dsr_legal_holds_open", "dsr_legal_holds", ["released_at", "until"])


def downgrade() -> None:
    op.drop_table("dsr_legal_holds")
