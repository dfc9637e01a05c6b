"""Requests carry their outcome (no personal data found, completed with exceptions, ...) and when
the Airflow metadata DB was cleared of their identities.

Revision ID: 0002_request_outcome
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_request_outcome"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dsr_requests") as batch:
        batch.add_column(sa.Column("outcome", sa.String(40), nullable=True))
        batch.add_column(sa.Column("metadata_purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dsr_requests") as batch:
        batch.drop_column("metadata_purged_at")
        batch.drop_column("outcome")
