"""open-ticket partial indexes, SLA-due listing index, resolution breach flag

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status NOT IN ('closed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolution_breached', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.create_index('ix_tickets_queue_status_due', ['queue', 'status', 'sla_due_at', 'id'], unique=False)
        batch_op.create_index('ix_tickets_open', ['queue', 'assignee_id', 'sla_due_at', 'first_response_due_at'],
                              unique=False, sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
        batch_op.create_index('ix_tickets_open_requested', ['requested_at', 'id'],
                              unique=False, sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
    # Existing breach warnings become the flag.
    op.execute(
        "UPDATE tickets SET resolution_breached = true WHERE id IN "
        "(SELECT ticket_id FROM sla_events WHERE metric = 'resolution' AND event = 'breach')"
    )


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_open_requested')
        batch_op.drop_index('ix_tickets_open')
        batch_op.drop_index('ix_tickets_queue_status_due')
        batch_op.drop_column('resolution_breached')
