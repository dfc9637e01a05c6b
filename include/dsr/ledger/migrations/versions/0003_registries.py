"""Registries beside the ledger: the keyed identities each request resolved to, and the data an
erasure kept under a legal hold (until when, on which basis).

Revision ID: 0003_registries
Revises: 0002_request_outcome
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_registries"
down_revision = "0002_request_outcome"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dsr_subject_keys",
        sa.Column("request_id", sa.String(128), sa.ForeignKey("dsr_requests.request_id"), primary_key=True),
        sa.Column("key_type", sa.String(16), primary_key=True),
        sa.Column("key_hash", sa.String(64), primary_key=True),
    )
    op.create_index("ix_dsr_subject_keys_key_hash", "dsr_subject_keys", ["key_hash"])
    op.create_table(
        "dsr_held_data",
        sa.Column("request_id", sa.String(128), sa.ForeignKey("dsr_requests.request_id"), primary_key=True),
        sa.Column("system", sa.String(128), primary_key=True),
        sa.Column("collection", sa.String(128), primary_key=True),
        sa.Column("row_key", sa.String(128), primary_key=True),
        sa.Column("fields_kept", sa.Text, nullable=False),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("retain_until", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
    )
    op.create_index("ix_dsr_held_data_due", "dsr_held_data", ["status", "retain_until"])


def downgrade() -> None:
    op.drop_table("dsr_held_data")
    op.drop_table("dsr_subject_keys")
