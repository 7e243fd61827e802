"""ticket items carry product, reason and request time for repeat counts

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 04:20:00

The "≥ 3 size complaints on one product in 30 days" routing rule counted, at every intake batch,
the reason's tickets of the last 30 days joined to their items and order items: at 1,000,000
tickets ~11,500 rows joined per batch, 180–230 ms on PostgreSQL (bench F18). With the product,
reason and request time on the ticket item, a product's latest tickets of a reason are one short
range of ix_ticket_items_repeats. Existing rows are filled from their ticket and order item.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aftersales.db import UTCDateTime

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('product_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reason_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('requested_at', UTCDateTime(timezone=True), nullable=True))
    # UPDATE … FROM: PostgreSQL, and SQLite since 3.33.
    op.execute(
        "UPDATE ticket_items SET product_id = order_items.product_id, reason_code = tickets.reason_code, "
        "requested_at = tickets.requested_at FROM tickets, order_items "
        "WHERE tickets.id = ticket_items.ticket_id AND order_items.id = ticket_items.order_item_id"
    )
    with op.batch_alter_table('ticket_items', schema=None) as batch_op:
        batch_op.alter_column('product_id', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('reason_code', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('requested_at', existing_type=UTCDateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_ticket_items_repeats', ['product_id', 'reason_code', 'requested_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ticket_items', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_items_repeats')
        batch_op.drop_column('requested_at')
        batch_op.drop_column('reason_code')
        batch_op.drop_column('product_id')
