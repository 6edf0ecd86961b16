"""GA4GH TES tasks (issue 21)"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_table(
        "tes_tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(40), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("submitted_by", sa.String(200)),
        sa.Column("name", sa.Text),
        sa.Column("phase", sa.String(20), nullable=False, index=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("jobs", sa.Text, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("system_logs", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tes_tasks")
