"""Notifications (issue 20.7): jobs.notify and jobs.notify_events, the outbox of events to
deliver, and server-wide webhooks."""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("notify", sa.Text))
        batch.add_column(sa.Column("notify_events", sa.String(40)))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.Column("gave_up", sa.Boolean, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_notifications_due", "delivered_at", "gave_up", "next_at"),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
    op.drop_table("notifications")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notify_events")
        batch.drop_column("notify")
