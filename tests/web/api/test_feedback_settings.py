"""The feedback settings API: the reason taxonomy and the routing rules as data.

What it protects:
- an admin adds a reason category (quality.smell) and a rule sending it to QC; a ticket opened
  with that reason is accepted at intake and its feedback item lands in QC's inbox, naming the
  rule; an unknown or deactivated added reason is refused at intake (built-in ones never are);
- a rule limited to a product category routes only that category's items;
- a deactivated rule routes no new ticket (items already routed stay);
- who may do what: supervisors edit rules but not the taxonomy; agents and product teams edit
  neither; bad input answers 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from aftersales.feedback.models import FeedbackItem, ReasonCategory, RoutingRule
from aftersales.feedback.service import FeedbackService
from aftersales.feedback.taxonomy import REASONS
from tests.factories import order_body, ticket_body

SMELL = {"name_zh": "有异味", "name_en": "Bad smell", "quality": True}
RULES = "/api/v1/feedback/routing-rules"


@pytest.fixture(autouse=True)
def fresh_process_caches() -> None:
    from aftersales.sla import service as sla_service
    from aftersales.tickets import policy_service

    getattr(sla_service, "_policies", {}).clear()
    getattr(policy_service, "_parsed", {}).clear()


@pytest.fixture(autouse=True)
async def defaults(session, clock):
    """What `migrate` loads: the built-in taxonomy and the default routing rules."""
    await FeedbackService(session, clock).ensure_defaults()
    await session.commit()


async def open_ticket(client, tokens, order: str, **overrides: Any) -> Any:
    """A fresh order (so the refundable amount is never the limit) and one ticket on it."""
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(customer=f"C-{order}"), headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return await client.post("/api/v1/tickets", json=ticket_body(order, **overrides), headers=tokens["integration"])


async def routed(session, ticket_id: int) -> list[tuple[str, str]]:
    session.expire_all()
    rows = await session.execute(
        select(FeedbackItem.team, FeedbackItem.product_id).where(FeedbackItem.ticket_id == ticket_id).order_by(FeedbackItem.team, FeedbackItem.product_id)
    )
    out = [tuple(r) for r in rows.all()]
    await session.rollback()  # on SQLite an open transaction would hold the write lock the app needs
    return out


async def add_smell(client, tokens) -> None:
    response = await client.put("/api/v1/feedback/taxonomy/quality.smell", json=SMELL, headers=tokens["admin"])
    assert response.status_code == 201, response.text


async def add_rule(client, headers, **body: Any) -> dict[str, Any]:
    response = await client.post(RULES, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def field_of(response: Any) -> str:
    assert response.status_code == 422, response.text
    return response.json()["errors"][0]["field"]


async def test_admin_adds_a_category_and_a_rule_and_new_tickets_route_by_them(client, tokens, session):
    unknown = await open_ticket(client, tokens, "O-0", reason_code="quality.smell")
    assert field_of(unknown) == "reason_code"  # not a reason until an admin adds it

    await add_smell(client, tokens)
    taxonomy = {c["code"]: c for c in (await client.get("/api/v1/feedback/taxonomy", headers=tokens["agent"])).json()}
    assert taxonomy["quality.smell"] == {"code": "quality.smell", "parent": "quality", "quality": True, "name_zh": "有异味",
                                         "name_en": "Bad smell", "active": True, "builtin": False}
    assert taxonomy["quality.defect"]["builtin"] is True and len(taxonomy) == 15
    rule = await add_rule(client, tokens["admin"], category="quality.smell", team="qc", note="smell is a QC problem")
    assert rule["category"] == "quality.smell" and rule["team"] == "qc" and rule["active"] is True and rule["min_repeat"] == 1

    response = await open_ticket(client, tokens, "O-1", reason_code="quality.smell", description="口红有股怪味")
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert await routed(session, ticket["id"]) == [("qc", "P-LIP")]
    item = await session.scalar(select(FeedbackItem).where(FeedbackItem.ticket_id == ticket["id"]))
    assert item is not None and item.category == "quality.smell" and item.routed_because == "quality.smell → qc"


async def test_a_deactivated_added_reason_is_refused_at_intake_a_built_in_one_never(client, tokens, session):
    await add_smell(client, tokens)
    off = await client.put("/api/v1/feedback/taxonomy/quality.smell", json={**SMELL, "active": False}, headers=tokens["admin"])
    assert off.status_code == 200 and off.json()["active"] is False
    assert field_of(await open_ticket(client, tokens, "O-1", reason_code="quality.smell")) == "reason_code"
    edited = await client.put("/api/v1/feedback/taxonomy/quality.defect",
                              json={"name_zh": "质量缺陷", "name_en": "Defect", "active": False}, headers=tokens["admin"])
    assert edited.status_code == 200 and edited.json()["quality"] is True  # left out: kept
    assert (await open_ticket(client, tokens, "O-2")).status_code == 201
    row = await session.get(ReasonCategory, "quality.defect")
    assert row is not None and row.name_zh == "质量缺陷"


async def test_a_rule_limited_to_a_product_category_routes_only_its_items(client, tokens, session):
    await add_smell(client, tokens)
    await add_rule(client, tokens["supervisor"], category="quality.smell", team="qc", product_categories=["美妆", " 美妆 "])
    await add_rule(client, tokens["supervisor"], category="quality", team="selection")  # a whole group, every product
    both = [{"sku": "SKU-LIP-01", "quantity": 1}, {"sku": "SKU-TEE-M", "quantity": 1}]
    response = await open_ticket(client, tokens, "O-1", reason_code="quality.smell", items=both, requested_amount="148.50")
    assert response.status_code == 201, response.text
    assert await routed(session, response.json()["id"]) == [("qc", "P-LIP"), ("selection", "P-LIP"), ("selection", "P-TEE")]
    tee_only = await open_ticket(client, tokens, "O-2", reason_code="quality.smell", items=[{"sku": "SKU-TEE-M", "quantity": 1}],
                                 requested_amount="59.50")
    assert await routed(session, tee_only.json()["id"]) == [("selection", "P-TEE")]
    rules = (await client.get(RULES, headers=tokens["product"])).json()
    assert [r["product_categories"] for r in rules if r["category"] == "quality.smell"] == [["美妆"]]


async def test_deactivating_a_rule_stops_routing_for_new_tickets(client, tokens, session):
    await add_smell(client, tokens)
    rule = await add_rule(client, tokens["supervisor"], category="quality.smell", team="qc")
    first = (await open_ticket(client, tokens, "O-1", reason_code="quality.smell")).json()
    assert await routed(session, first["id"]) == [("qc", "P-LIP")]

    response = await client.delete(f"{RULES}/{rule['id']}", headers=tokens["supervisor"])
    assert response.status_code == 200 and response.json()["active"] is False
    second = await open_ticket(client, tokens, "O-2", reason_code="quality.smell")
    assert second.status_code == 201
    assert await routed(session, second.json()["id"]) == []
    assert await routed(session, first["id"]) == [("qc", "P-LIP")]  # already routed: stays

    # A built-in default rule can be switched off too, and back on with PUT.
    default = next(r for r in (await client.get(RULES, headers=tokens["supervisor"])).json()
                   if r["category"] == "quality.damaged" and r["team"] == "qc")
    body = {**{k: default[k] for k in ("category", "team", "product_categories", "min_repeat", "note")}, "active": False}
    assert (await client.put(f"{RULES}/{default['id']}", json=body, headers=tokens["supervisor"])).json()["active"] is False
    damaged = await open_ticket(client, tokens, "O-3", reason_code="quality.damaged")
    assert await routed(session, damaged.json()["id"]) == []
    body["active"] = True
    assert (await client.put(f"{RULES}/{default['id']}", json=body, headers=tokens["admin"])).json()["active"] is True
    again = await open_ticket(client, tokens, "O-4", reason_code="quality.damaged")
    assert await routed(session, again.json()["id"]) == [("qc", "P-LIP")]


async def test_min_repeat_routes_only_once_a_product_repeats(client, tokens, session):
    await add_smell(client, tokens)
    await add_rule(client, tokens["supervisor"], category="quality.smell", team="selection", min_repeat=2)
    first = (await open_ticket(client, tokens, "O-1", reason_code="quality.smell")).json()
    assert await routed(session, first["id"]) == []
    second = (await open_ticket(client, tokens, "O-2", reason_code="quality.smell")).json()
    assert await routed(session, second["id"]) == [("selection", "P-LIP")]


async def test_who_may_edit_what(client, tokens, session):
    smell = "/api/v1/feedback/taxonomy/quality.smell"
    rule = {"category": "quality.damaged", "team": "selection"}
    assert (await client.put(smell, json=SMELL, headers=tokens["supervisor"])).status_code == 403
    for role in ("agent", "product", "integration"):
        assert (await client.put(smell, json=SMELL, headers=tokens[role])).status_code == 403, role
        assert (await client.post(RULES, json=rule, headers=tokens[role])).status_code == 403, role
    assert (await client.get(RULES, headers=tokens["agent"])).status_code == 403
    assert (await client.get(RULES)).status_code == 401
    assert (await session.get(ReasonCategory, "quality.smell")) is None
    await session.rollback()

    created = await add_rule(client, tokens["supervisor"], **rule)
    for role in ("agent", "product"):
        assert (await client.put(f"{RULES}/{created['id']}", json=rule, headers=tokens[role])).status_code == 403
        assert (await client.delete(f"{RULES}/{created['id']}", headers=tokens[role])).status_code == 403
    changed = await client.put(f"{RULES}/{created['id']}", json={**rule, "min_repeat": 3, "note": "repeat damage"}, headers=tokens["supervisor"])
    assert changed.status_code == 200 and changed.json()["min_repeat"] == 3
    session.expire_all()
    stored = await session.get(RoutingRule, created["id"])
    assert stored is not None and (stored.min_repeat, stored.note, stored.active) == (3, "repeat damage", True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"category": "quality.smelly", "team": "qc"}, "category"),
        ({"category": "nonsense", "team": "qc"}, "category"),
        ({"category": "", "team": "qc"}, "category"),
        ({"category": "quality.defect", "team": "marketing"}, "team"),
        ({"category": "quality.defect", "team": "qc", "min_repeat": 0}, "min_repeat"),
        ({"category": "quality.defect", "team": "qc", "min_repeat": 101}, "min_repeat"),
        ({"category": "quality.defect", "team": "qc", "product_categories": ["x" * 65]}, "product_categories"),
        ({"category": "quality.defect", "team": "qc", "note": "n" * 501}, "note"),
    ],
)
async def test_bad_rules_are_refused_naming_the_field(client, tokens, session, body, field):
    before = len((await client.get(RULES, headers=tokens["supervisor"])).json())
    assert field_of(await client.post(RULES, json=body, headers=tokens["supervisor"])) == field
    assert len((await client.get(RULES, headers=tokens["supervisor"])).json()) == before


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        ("Quality.Smell", SMELL, "code"),
        ("smell", SMELL, "code"),
        ("quality.smell.strong", SMELL, "code"),
        ("quality.", SMELL, "code"),
        ("quality.smell", {**SMELL, "name_zh": "  "}, "name_zh"),
        ("quality.smell", {**SMELL, "name_en": "x" * 101}, "name_en"),
    ],
)
async def test_bad_categories_are_refused_naming_the_field(client, tokens, session, code, body, field):
    assert field_of(await client.put(f"/api/v1/feedback/taxonomy/{code}", json=body, headers=tokens["admin"])) == field
    session.expire_all()
    assert await session.scalar(select(ReasonCategory.code).where(ReasonCategory.code.not_in(list(REASONS)))) is None


async def test_a_new_group_becomes_a_routable_group(client, tokens, session):
    response = await client.put("/api/v1/feedback/taxonomy/packaging.leaking", json={"name_zh": "漏液", "name_en": "Leaking"},
                                headers=tokens["admin"])
    assert response.status_code == 201 and response.json()["parent"] == "packaging" and response.json()["quality"] is False
    await add_rule(client, tokens["supervisor"], category="packaging", team="qc")
    ticket = (await open_ticket(client, tokens, "O-1", reason_code="packaging.leaking")).json()
    assert await routed(session, ticket["id"]) == [("qc", "P-LIP")]


async def test_unknown_rule_is_404(client, tokens):
    body = {"category": "quality.defect", "team": "qc"}
    assert (await client.put(f"{RULES}/999999", json=body, headers=tokens["supervisor"])).status_code == 404
    assert (await client.delete(f"{RULES}/999999", headers=tokens["supervisor"])).status_code == 404
