"""job dependencies: job_deps table, jobs.blocked"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "job_deps",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("dep_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
    )
    op.create_index("ix_job_deps_dep", "job_deps", ["dep_id"])


def downgrade() -> None:
    op.drop_table("job_deps")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("blocked")
