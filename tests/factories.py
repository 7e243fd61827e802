"""Request bodies shaped like the shop platform's and carriers' payloads."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.conftest import START


def order_body(
    *, customer: str = "C-1", session: str = "LS-1", placed_at: datetime | None = None,
    items: list[dict[str, Any]] | None = None, paid_amount: str | None = None,
) -> dict[str, Any]:
    placed = placed_at or START - timedelta(days=5)
    items = items or [
        {"sku": "SKU-LIP-01", "product_id": "P-LIP", "product_name": "丝绒口红 #01", "category": "美妆", "quantity": 1, "unit_price": "89.00"},
        {"sku": "SKU-TEE-M", "product_id": "P-TEE", "product_name": "纯棉T恤 M", "category": "服饰", "quantity": 2, "unit_price": "59.50"},
    ]
    total = paid_amount or str(sum(float(i["unit_price"]) * i["quantity"] for i in items))
    return {
        "customer": {"external_id": customer, "name": "张三"},
        "live_session": {"external_id": session, "host": "小雅", "title": "双11美妆专场", "started_at": (placed - timedelta(hours=1)).isoformat()},
        "placed_at": placed.isoformat(),
        "paid_at": (placed + timedelta(minutes=1)).isoformat(),
        "paid_amount": f"{float(total):.2f}",
        "shop": "小雅的店",
        "channel": "douyin",
        "items": items,
    }


def ticket_body(order: str = "O-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_external_id": order,
        "kind": "return_refund",
        "reason_code": "quality.defect",
        "items": [{"sku": "SKU-LIP-01", "quantity": 1}],
        "requested_amount": "89.00",
        "description": "口红断了",
        # No photo: a small quality claim with one would be refunded at once by the default policy.
        "evidence_urls": [],
        "requested_at": (START - timedelta(hours=1)).isoformat(),
    }
    body.update(overrides)
    return body


def k100_event(tracking: str, state: int | str, at: datetime, *, carrier: str = "SF", event_id: str | None = None, desc: str = "") -> dict[str, Any]:
    event: dict[str, Any] = {
        "carrier": carrier,
        "tracking_number": tracking,
        "source": "kuaidi100",
        "status": str(state),
        "occurred_at": at.isoformat(),
        "location": "杭州",
        "description": desc or f"state {state}",
    }
    if event_id:
        event["event_id"] = event_id
    return event
