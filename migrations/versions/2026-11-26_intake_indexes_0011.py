"""intake's indexes: shipments by order and direction; no index on ticket kind

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 13:40:00

Every intake batch asks which of its orders have an outbound parcel: through ix_shipments_order_id
each parcel row was read from the table for its direction (1.9 ms of a 64-ticket batch at
1,000,000 tickets on SQLite). ix_shipments_order_direction answers it from the index alone and
still serves lookups by order. ix_tickets_kind served no query (the SLA report filters kind
without an index on purpose: four values), yet every new ticket and every change of kind paid
for it (bench F26).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.create_index('ix_shipments_order_direction', ['order_id', 'direction'], unique=False)
        batch_op.drop_index('ix_shipments_order_id')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_kind')


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_kind', ['kind'], unique=False)
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.create_index('ix_shipments_order_id', ['order_id'], unique=False)
        batch_op.drop_index('ix_shipments_order_direction')
