"""per-attempt usage: queue time, cpu seconds, peak memory, block I/O"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("queued_at", sa.Float))
        batch.add_column(sa.Column("cpu_seconds", sa.Float))
        batch.add_column(sa.Column("peak_memory_bytes", sa.Integer))
        batch.add_column(sa.Column("io_bytes", sa.Integer))
    op.create_index("ix_attempts_finished", "attempts", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_finished", "attempts")
    with op.batch_alter_table("attempts") as batch:
        for name in ("io_bytes", "peak_memory_bytes", "cpu_seconds", "queued_at"):
            batch.drop_column(name)
