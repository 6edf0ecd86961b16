"""Notifications of workflow runs (issue 20.7): workflows.notify."""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("notify", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("notify")
