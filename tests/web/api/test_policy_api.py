"""The policy, queue, assignment and report API: who may call what, queue validation, the report.

What they protect: only supervisors (and admins) change or simulate the policy, edit queues,
assign and read the report; tickets are owned by people, so a role token cannot take one; a queue
cannot get members who are not agents or supervisors; the auto-approval report's figures are the
same as a direct count over the stored decisions.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from aftersales.auth import service as auth_service
from aftersales.auth.service import AuthService
from aftersales.db import create_sessionmaker
from aftersales.models import Ticket
from aftersales.tickets.models import TicketDecision
from aftersales.tickets.policy import DEFAULT_POLICY
from aftersales.tickets.policy_service import PolicyService
from tests.conftest import START
from tests.factories import order_body, ticket_body

SH = ZoneInfo("Asia/Shanghai")
QUEUE = {"name_zh": "夜班", "name_en": "Night shift", "priority": 2, "description": "after 22:00", "auto_assign": True,
         "agent_cap": 5, "active": True}


@pytest.fixture()
async def people(engine, clock, monkeypatch) -> dict[str, int]:
    monkeypatch.setattr(auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        auth = AuthService(session, clock)
        out = {}
        for name, role, teams in (("a1", "agent", None), ("a2", "agent", None), ("boss", "supervisor", None), ("pm", "product", ["qc"]),
                                  ("root", "admin", None)):
            out[name] = (await auth.create_user(username=name, password=f"{name}-secret-pw", role=role, teams=teams)).id
        await session.commit()
    return out


# -- roles --------------------------------------------------------------------------------------


async def test_only_supervisors_and_admins_change_or_simulate_the_policy(client, tokens, people):
    draft = {"text": DEFAULT_POLICY.replace("amount <= 100", "amount <= 80"), "note": "tighter"}
    simulate = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-21T00:00:00Z", "text": DEFAULT_POLICY}
    for role in ("agent", "integration", "product"):
        headers = tokens[role]
        assert (await client.post("/api/v1/policy/drafts", json=draft, headers=headers)).status_code == 403, role
        assert (await client.post("/api/v1/policy/simulate", json=simulate, headers=headers)).status_code == 403, role
        assert (await client.post("/api/v1/policy/versions/1/publish", headers=headers)).status_code == 403, role
        assert (await client.put("/api/v1/queues/general", json={**QUEUE, "members": []}, headers=headers)).status_code == 403, role
        assert (await client.get("/api/v1/reports/auto-approval", headers=headers)).status_code == 403, role
    assert (await client.post("/api/v1/policy/drafts", json=draft)).status_code == 401
    # Reading the policy and the queues is for everyone who works tickets, not the product teams.
    for role in ("agent", "integration", "supervisor"):
        assert (await client.get("/api/v1/policy", headers=tokens[role])).status_code == 200, role
        assert (await client.get("/api/v1/queues", headers=tokens[role])).status_code == 200, role
    assert (await client.get("/api/v1/policy", headers=tokens["product"])).status_code == 403
    assert (await client.get("/api/v1/queues", headers=tokens["product"])).status_code == 403

    response = await client.post("/api/v1/policy/drafts", json=draft, headers=tokens["supervisor"])
    assert response.status_code == 201, response.text
    assert response.json()["author"] == "token:test-supervisor"
    response = await client.post("/api/v1/policy/simulate", json=simulate, headers=tokens["supervisor"])
    assert response.status_code == 200 and response.json()["tickets"] == 0
    response = await client.post("/api/v1/policy/versions/2/publish", headers=tokens["admin"])
    assert response.status_code == 200 and response.json()["published_by"] == "token:test-admin"


async def test_tickets_are_taken_by_people_only(client, tokens, people):
    await client.put("/api/v1/orders/O-1", json=order_body(), headers=tokens["integration"])
    ticket = (await client.post("/api/v1/tickets", json=ticket_body(), headers=tokens["integration"])).json()
    for path in ("/api/v1/tickets/next", f"/api/v1/tickets/{ticket['id']}/claim", f"/api/v1/tickets/{ticket['id']}/release"):
        assert (await client.post(path, headers=tokens["integration"])).status_code in (403, 422), path
        assert (await client.post(path, headers=tokens["product"])).status_code == 403, path
        # An agent role token is not a person: it may not own a ticket.
        response = await client.post(path, headers=tokens["agent"])
        assert response.status_code == 422 and "personal token" in response.text, path
    assign = {"user_id": people["a1"]}
    assert (await client.post(f"/api/v1/tickets/{ticket['id']}/assign", json=assign, headers=tokens["agent"])).status_code == 403
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/assign", json=assign, headers=tokens["supervisor"])
    assert response.status_code == 200 and response.json()["assignee_id"] == people["a1"]
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/assign", json={"user_id": people["pm"]}, headers=tokens["supervisor"])
    assert response.status_code == 422 and "user_id" in response.text


async def test_simulate_refuses_a_bad_request(client, tokens, people):
    sup = tokens["supervisor"]
    period = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-21T00:00:00Z"}
    response = await client.post("/api/v1/policy/simulate", json=period, headers=sup)
    assert response.status_code == 422 and "text" in response.text
    response = await client.post("/api/v1/policy/simulate", json={**period, "end": period["start"], "version": 1}, headers=sup)
    assert response.status_code == 422 and "end" in response.text
    response = await client.post("/api/v1/policy/simulate", json={**period, "version": 7}, headers=sup)
    assert response.status_code == 404
    response = await client.post("/api/v1/policy/simulate", json={**period, "text": "rule a: kind > x -> approve\ndefault -> queue general"},
                                 headers=sup)
    assert response.status_code == 422 and "line 1" in response.text


# -- queues -------------------------------------------------------------------------------------


async def test_put_queue_sets_members_and_refuses_unknown_ones(client, tokens, people):
    sup = tokens["supervisor"]
    queues = (await client.get("/api/v1/queues", headers=sup)).json()
    assert {q["key"] for q in queues} == {"quality_review", "high_value", "logistics", "risk", "complaints", "general"}

    response = await client.put("/api/v1/queues/night", json={**QUEUE, "members": [people["a1"], 987654]}, headers=sup)
    assert response.status_code == 422, response.text
    assert "members" in response.text and "987654" in response.text
    response = await client.put("/api/v1/queues/night", json={**QUEUE, "members": [people["pm"]]}, headers=sup)
    assert response.status_code == 422 and str(people["pm"]) in response.text
    assert "night" not in {q["key"] for q in (await client.get("/api/v1/queues", headers=sup)).json()}

    response = await client.put("/api/v1/queues/night", json={**QUEUE, "members": [people["a2"], people["a1"], people["boss"]]}, headers=sup)
    assert response.status_code == 200, response.text
    night = response.json()
    assert night == {**QUEUE, "key": "night", "members": sorted([people["a1"], people["a2"], people["boss"]])}
    # Members are replaced, not added to.
    response = await client.put("/api/v1/queues/night", json={**QUEUE, "name_en": "Nights", "members": [people["a2"]]}, headers=sup)
    assert response.json()["members"] == [people["a2"]] and response.json()["name_en"] == "Nights"
    # A draft may now route to the new queue; to an unknown one it may not.
    text = DEFAULT_POLICY.replace("default -> queue general", "default -> queue night")
    assert (await client.post("/api/v1/policy/drafts", json={"text": text}, headers=sup)).status_code == 201
    bad = (await client.post("/api/v1/policy/drafts", json={"text": text.replace("queue night", "queue nights")}, headers=sup))
    assert bad.status_code == 422 and "nights" in bad.text


async def test_put_queue_refuses_bad_fields(client, tokens, people):
    sup = tokens["supervisor"]
    for body in ({**QUEUE, "priority": 10}, {**QUEUE, "agent_cap": 0}, {**QUEUE, "name_zh": ""}):
        response = await client.put("/api/v1/queues/night", json=body, headers=sup)
        assert response.status_code in (400, 422), body
    response = await client.put("/api/v1/queues/Bad-Key", json=QUEUE, headers=sup)
    assert response.status_code in (400, 404, 422)


# -- the auto-approval report ---------------------------------------------------------------------


async def _report_data(client, tokens) -> None:
    """Tickets over two days: approvals, a fast refund and routed ones, plus one outside the window."""
    feed = tokens["integration"]
    day1, day2 = START - timedelta(days=1, hours=1), START - timedelta(hours=1)  # 09:00 Shanghai on 11-19 and 11-20
    specs = [
        ("C-1", day1, {"kind": "refund_only", "reason_code": "preference.changed_mind", "items": []}),  # approve
        ("C-2", day1, {"evidence_urls": ["https://img.example.com/a.jpg"]}),  # fast refund
        ("C-3", day1, {}),  # quality review
        ("C-4", day2, {"kind": "return_refund", "reason_code": "preference.changed_mind"}),  # approve
        ("C-5", day2, {"kind": "exchange", "reason_code": "fit.size"}),  # general
        ("C-6", day2, {"kind": "refund_only", "reason_code": "quality.defect", "items": [], "evidence_urls": ["https://img.example.com/b.jpg"]}),
        ("C-7", START - timedelta(days=40), {"kind": "refund_only", "reason_code": "other", "items": []}),  # before the window
    ]
    for i, (customer, at, overrides) in enumerate(specs):
        order = f"O-{i}"
        body = order_body(customer=customer, placed_at=at - timedelta(days=2))
        assert (await client.put(f"/api/v1/orders/{order}", json=body, headers=feed)).status_code == 201
        response = await client.post("/api/v1/tickets", json=ticket_body(order, requested_at=at.isoformat(), **overrides), headers=feed)
        assert response.status_code == 201, response.text


async def _direct(engine, key, start: datetime, end: datetime) -> dict[str, tuple[int, int]]:
    async with create_sessionmaker(engine)() as session:
        rows = (await session.execute(
            select(Ticket, TicketDecision.decision).join(TicketDecision, TicketDecision.ticket_id == Ticket.id)
        )).all()
    tickets, automatic = Counter(), Counter()
    for ticket, decision in rows:
        if start <= ticket.requested_at < end:
            tickets[key(ticket)] += 1
            automatic[key(ticket)] += decision in ("approve", "fast_refund")
    return {k: (tickets[k], automatic[k]) for k in tickets}


def _figures(report: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    for row in report:
        assert row["rate"] == round(row["auto_approved"] / row["tickets"], 4)
    return {row["group"]: (row["tickets"], row["auto_approved"]) for row in report}


async def test_auto_approval_report_matches_the_stored_decisions(client, tokens, engine, clock, people):
    await _report_data(client, tokens)
    sup = tokens["supervisor"]
    window = (START - timedelta(days=30), START)

    by_kind = (await client.get("/api/v1/reports/auto-approval", params={"group": "kind"}, headers=sup)).json()
    direct = await _direct(engine, lambda t: t.kind, *window)
    assert _figures(by_kind) == direct
    assert direct == {"refund_only": (2, 2), "return_refund": (3, 2), "exchange": (1, 0)}

    by_reason = (await client.get("/api/v1/reports/auto-approval", params={"group": "reason"}, headers=sup)).json()
    assert _figures(by_reason) == await _direct(engine, lambda t: t.reason_code, *window)
    assert _figures(by_reason)["quality.defect"] == (3, 2)

    by_day = (await client.get("/api/v1/reports/auto-approval", headers=sup)).json()
    assert _figures(by_day) == await _direct(engine, lambda t: t.requested_at.astimezone(SH).date().isoformat(), *window)
    assert _figures(by_day) == {"2026-11-19": (3, 2), "2026-11-20": (3, 2)}

    # An explicit period that reaches back 60 days includes the old ticket.
    params = {"group": "kind", "from": (START - timedelta(days=60)).isoformat(), "to": START.isoformat()}
    wide = (await client.get("/api/v1/reports/auto-approval", params=params, headers=sup)).json()
    assert _figures(wide) == await _direct(engine, lambda t: t.kind, START - timedelta(days=60), START)
    assert _figures(wide)["refund_only"] == (3, 3)
    assert (await client.get("/api/v1/reports/auto-approval", params={"group": "host"}, headers=sup)).status_code == 422


async def test_auto_approval_report_days_are_local_days(client, tokens, engine, people):
    feed = tokens["integration"]
    # 17:30 UTC on 11-19 is 01:30 on 11-20 in Shanghai: the same local day as 09:00 on 11-20.
    times = [datetime(2026, 11, 19, 17, 30, tzinfo=ZoneInfo("UTC")), START - timedelta(hours=1)]
    for i, at in enumerate(times):
        await client.put(f"/api/v1/orders/O-{i}", json=order_body(customer=f"C-{i}", placed_at=at - timedelta(days=1)), headers=feed)
        response = await client.post("/api/v1/tickets", json=ticket_body(f"O-{i}", requested_at=at.isoformat()), headers=feed)
        assert response.status_code == 201, response.text
    report = (await client.get("/api/v1/reports/auto-approval", headers=tokens["supervisor"])).json()
    assert _figures(report) == {"2026-11-20": (2, 0)}
