"""Job arrays (issue 20.4): one record per array; its tasks are jobs (jobs.array_id,
jobs.array_index, unique together), made as they may start."""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.create_table(
        "arrays",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("submitted_by", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("indices", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("throttle", sa.Integer),
        sa.Column("created", sa.Integer, nullable=False),
        sa.Column("state", sa.String(10), nullable=False, index=True),
        sa.Column("kill_requested", sa.Boolean, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("outcome", sa.String(20)),
        sa.Column("corr_array", sa.Integer),
        sa.Column("account", sa.String(64)),
        sa.Column("app", sa.String(200)),
    )
    op.create_table(
        "array_deps",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("array_id", sa.Integer, sa.ForeignKey("arrays.id"), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Index("ix_array_deps_array", "array_id"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("array_id", sa.Integer))
        batch.add_column(sa.Column("array_index", sa.Integer))
    op.create_index("ux_jobs_array_task", "jobs", ["array_id", "array_index"], unique=True)
    op.create_index("ix_jobs_state_array", "jobs", ["state", "array_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_array", "jobs")
    op.drop_index("ux_jobs_array_task", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("array_index")
        batch.drop_column("array_id")
    op.drop_table("array_deps")
    op.drop_table("arrays")
