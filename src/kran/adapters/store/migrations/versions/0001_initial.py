"""initial schema: jobs, attempts, labels, events, meta"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("image", sa.String(500)),
        sa.Column("req_millicpus", sa.Integer, nullable=False),
        sa.Column("req_mem_mb", sa.Integer, nullable=False),
        sa.Column("req_gpus", sa.Integer, nullable=False),
        sa.Column("req_disk_mb", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("queued_since", sa.Float, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("kill_reason", sa.String(20)),
        sa.Column("timeout_s", sa.Float),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("node", sa.String(200)),
        sa.Column("alloc_millicpus", sa.Integer),
        sa.Column("alloc_mem_mb", sa.Integer),
        sa.Column("alloc_gpus", sa.Integer),
        sa.Column("alloc_disk_mb", sa.Integer),
    )
    op.create_index("ix_jobs_queue", "jobs", ["state", sa.text("priority DESC"), "id"])
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("handle", sa.String(200)),
        sa.Column("alloc_millicpus", sa.Integer, nullable=False),
        sa.Column("alloc_mem_mb", sa.Integer, nullable=False),
        sa.Column("alloc_gpus", sa.Integer, nullable=False),
        sa.Column("alloc_disk_mb", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("collected", sa.Boolean, nullable=False),
    )
    op.create_index("ix_attempts_state", "attempts", ["state"])
    op.create_table(
        "job_labels",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_index("ix_job_labels_kv", "job_labels", ["key", "value"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer),
        sa.Column("from_state", sa.String(20)),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_events_job", "events", ["job_id"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in ("meta", "events", "job_labels", "attempts", "jobs"):
        op.drop_table(name)
