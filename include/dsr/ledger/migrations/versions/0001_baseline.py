"""Baseline: the ledger as the first releases created it with ``metadata.create_all``.

Requests, request x system results and the hash-chained event log. A ledger created by
that code (no version table) is stamped at this revision and then upgraded.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dsr_requests",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("right", sa.String(32), nullable=False),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("subject_fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("extended_due_at", TS, nullable=True),
        sa.Column("extension_reason", sa.Text, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("dag_run_id", sa.String(250), nullable=True),
        sa.Column("package_uri", sa.String(1024), nullable=True),
        sa.Column("package_url_expires_at", TS, nullable=True),
        sa.Column("outcome_summary", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_dsr_requests_status", "dsr_requests", ["status"])
    op.create_index("ix_dsr_requests_subject_fingerprint", "dsr_requests", ["subject_fingerprint"])
    op.create_table(
        "dsr_request_systems",
        sa.Column("request_id", sa.String(128), sa.ForeignKey("dsr_requests.request_id"), primary_key=True),
        sa.Column("system", sa.String(128), primary_key=True),
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("record_count", sa.Integer, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "dsr_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=True, unique=True),
    )
    op.create_index("ix_dsr_events_request_id", "dsr_events", ["request_id"])


def downgrade() -> None:
    op.drop_table("dsr_events")
    op.drop_table("dsr_request_systems")
    op.drop_table("dsr_requests")
