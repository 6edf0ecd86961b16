"""schedules and their runs"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("expr", sa.String(200), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("start_at", sa.Float, nullable=False),
        sa.Column("repeat", sa.Integer),
        sa.Column("max_lateness_s", sa.Float),
        sa.Column("overlap", sa.String(10), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("parents", sa.Text, nullable=False),
        sa.Column("after_mode", sa.String(10), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.Float),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("seen", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fire_time", sa.Float, nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("start_deadline", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ux_schedule_runs_fire", "schedule_runs", ["schedule_id", "fire_time"], unique=True)


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
