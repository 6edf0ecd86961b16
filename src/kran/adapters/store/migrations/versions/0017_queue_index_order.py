"""The queue's indexes in queue order: priority descending, then id (0001 and 0013 made
them ascending, and every read of the queue sorted each priority's jobs by id again: a
page of a 100k-job queue cost a sort of 100k rows)."""

from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.drop_index("ix_jobs_queue", "jobs")
    op.drop_index("ix_jobs_fair", "jobs")
    op.execute("CREATE INDEX ix_jobs_queue ON jobs (state, priority DESC, id)")
    op.execute("CREATE INDEX ix_jobs_fair ON jobs (state, assoc, priority DESC, id)")


def downgrade() -> None:
    op.drop_index("ix_jobs_fair", "jobs")
    op.drop_index("ix_jobs_queue", "jobs")
    op.execute("CREATE INDEX ix_jobs_queue ON jobs (state, priority, id)")
    op.execute("CREATE INDEX ix_jobs_fair ON jobs (state, assoc, priority, id)")
