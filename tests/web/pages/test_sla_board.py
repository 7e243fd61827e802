"""The supervisors' SLA board (/sla), the report page, and the notification / delivery pages.

What they protect: the board is a full page and its `sla_board` block is a fragment of itself that
polls every 30 s; every number on it — tickets by time left, paused, at-risk list, first responses,
load per agent and queue, today's / 7 / 30-day 48-hour closure rate — equals a direct count over
the tickets; filters narrow all of it; the reassign form on an at-risk row reassigns; agents are
refused. The report page shows the report and a CSV with a BOM. Everyone reads and marks their own
notifications (only their own); only admins see the delivery log and add webhook endpoints,
whose secret is shown once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from aftersales.db import create_sessionmaker
from aftersales.models import Ticket
from aftersales.notifications.models import Notification, WebhookEndpoint
from aftersales.sla import service as sla_service
from aftersales.tickets import policy_service
from aftersales.tickets.policy_service import PolicyService
from tests.factories import order_body, ticket_body
from tests.web.pages.helpers import fetch_csrf, post_form, sign_in

HTMX_BOARD = {"HX-Request": "true", "HX-Target": "sla_board"}
H = timedelta(hours=1)


@pytest.fixture()
def settings(settings):
    """Every figure read fresh: these tests change tickets between two reads of the board or report
    (the cache itself is tested in test_sla_cache.py)."""
    return msgspec.structs.replace(settings, sla_report_cache_seconds=0)


@pytest.fixture(autouse=True)
async def defaults(engine, clock):
    policy_service._parsed.clear()
    sla_service._policies.clear()
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        await session.commit()


@pytest.fixture()
async def as_role(client, users):
    """Sign the one test client in as `role` (dropping the previous sign-in). One client on purpose:
    the shared `clients` fixture gives each role its own event loop, which asyncpg cannot share."""
    async def switch(role: str):
        client.cookies.clear()
        if role == "anonymous":
            await fetch_csrf(client)
        else:
            response = await sign_in(client, users[role]["username"], users[role]["password"])
            assert response.status_code == 303, response.text
        return client

    return switch


async def _open(client, tokens, clock, n: int, hours_ago: float, **body: Any) -> dict[str, Any]:
    order = f"O-{n}"
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(customer=f"C-{n}", placed_at=clock.now() - timedelta(days=5)), headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text
    response = await client.post("/api/v1/tickets", json=ticket_body(order, requested_at=(clock.now() - hours_ago * H).isoformat(), **body),
                                 headers=tokens["integration"])
    assert response.status_code == 201, response.text
    return response.json()


async def _act(client, tokens, ticket: dict[str, Any], action: str, **body: Any) -> dict[str, Any]:
    current = (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tokens["supervisor"])).json()
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/actions/{action}", json={"version": current["version"], **body},
                                 headers=tokens["supervisor"])
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture()
async def floor(client, tokens, clock, users) -> dict[str, dict[str, Any]]:
    """Open tickets at every distance from their due time, one paused, some assigned, and closures
    today (one in time, one late) and a week ago."""
    t: dict[str, dict[str, Any]] = {}
    for n, (name, hours_ago) in enumerate((("breached", 50), ("lt2h", 47), ("lt6h", 44), ("lt12h", 40), ("later", 10), ("fresh", 0.5), ("lt6h_edge", 45.5)), 1):
        t[name] = await _open(client, tokens, clock, n, hours_ago)
    t["complaint"] = await _open(client, tokens, clock, 70, 46.5, kind="complaint", reason_code="price.promo_dispute", items=[])
    t["paused"] = await _open(client, tokens, clock, 8, 5)
    assert (await _act(client, tokens, t["paused"], "approve"))["status"] == "awaiting_return"
    # Closures today: one within 48 h, one after 60 h. And one closed eight days ago.
    t["closed_ok"] = await _open(client, tokens, clock, 9, 3, kind="complaint", reason_code="other", items=[])
    await _act(client, tokens, t["closed_ok"], "close")
    t["closed_late"] = await _open(client, tokens, clock, 10, 60, kind="complaint", reason_code="other", items=[])
    await _act(client, tokens, t["closed_late"], "close")
    t["cancelled"] = await _open(client, tokens, clock, 11, 47.5)
    await _act(client, tokens, t["cancelled"], "cancel")
    clock.advance(days=-8)
    t["old"] = await _open(client, tokens, clock, 12, 2, kind="complaint", reason_code="other", items=[])
    await _act(client, tokens, t["old"], "close")
    clock.advance(days=8)
    for name in ("breached", "lt2h"):
        response = await client.post(f"/api/v1/tickets/{t[name]['id']}/assign", json={"user_id": users["agent"]["id"]},
                                     headers=tokens["supervisor"])
        assert response.status_code == 200, response.text
    return t


async def direct_count(engine, now, zone) -> dict[str, Any]:
    """The board's figures counted straight from the tickets table, in Python."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Ticket))).mappings().all()
    open_rows = [r for r in rows if r["status"] not in ("closed", "cancelled")]
    buckets = dict.fromkeys(("breached", "lt2h", "lt6h", "lt12h", "more", "paused"), 0)
    for r in open_rows:
        due = r["sla_due_at"]
        if due is None:
            buckets["paused"] += 1
            continue
        due = due.replace(tzinfo=now.tzinfo) if due.tzinfo is None else due
        left = (due - now).total_seconds() / 3600
        key = "breached" if left < 0 else "lt2h" if left < 2 else "lt6h" if left < 6 else "lt12h" if left < 12 else "more"
        buckets[key] += 1
    at_risk = sorted((r for r in open_rows if r["sla_due_at"] is not None and
                      (r["sla_due_at"].replace(tzinfo=now.tzinfo) if r["sla_due_at"].tzinfo is None else r["sla_due_at"]) < now + 12 * H),
                     key=lambda r: (r["sla_due_at"], r["id"]))
    agents: dict[str, int] = {}
    queues: dict[str, int] = {}
    for r in open_rows:
        agents[str(r["assignee_id"] or "")] = agents.get(str(r["assignee_id"] or ""), 0) + 1
        queues[r["queue"] or ""] = queues.get(r["queue"] or "", 0) + 1
    today = now.astimezone(zone).date()
    closures: dict[str, list[int]] = {"today": [0, 0], "7d": [0, 0], "30d": [0, 0]}
    for r in rows:
        if r["status"] != "closed":
            continue
        age = (today - r["closed_at"].replace(tzinfo=now.tzinfo).astimezone(zone).date()).days
        for key, days in (("today", 1), ("7d", 7), ("30d", 30)):
            if 0 <= age < days:
                closures[key][0] += 1
                closures[key][1] += bool(r["resolution_met"])
    return {"buckets": buckets, "at_risk": [r["number"] for r in at_risk], "agents": agents, "queues": queues,
            "closures": {k: tuple(v) for k, v in closures.items()}, "open": len(open_rows)}


def shown(html: str) -> dict[str, Any]:
    return {
        "buckets": {k: int(v) for k, v in re.findall(r'data-bucket="(\w+)"><strong>(\d+)</strong>', html)},
        "at_risk": re.findall(r'<tr data-ticket="([^"]+)"', html),
        "agents": {k: int(v) for k, v in re.findall(r'data-agent="(\d*)" data-open="(\d+)"', html)},
        "queues": {k: int(v) for k, v in re.findall(r'data-queue="([\w]*)" data-open="(\d+)"', html)},
        "closures": {k: (int(c), int(m)) for k, c, m in re.findall(r'data-window="(\w+)" data-closed="(\d+)" data-met="(\d+)"', html)},
        "open": int(re.search(r'data-open-total="(\d+)"', html).group(1)),
    }


async def test_board_numbers_equal_a_direct_count(as_role, floor, engine, clock, settings):
    supervisor = await as_role("supervisor")
    response = await supervisor.get("/sla")
    assert response.status_code == 200, response.text
    page = response.text
    assert "<html" in page and 'id="sla_filters"' in page
    expected = await direct_count(engine, clock.now(), settings.zone)
    got = shown(page)
    assert got == expected
    # The scenario itself, so that a count that is always zero cannot pass.
    assert expected["buckets"] == {"breached": 1, "lt2h": 2, "lt6h": 2, "lt12h": 1, "more": 2, "paused": 1}
    assert expected["closures"] == {"today": (2, 1), "7d": (2, 1), "30d": (3, 2)}
    assert got["at_risk"][:3] == [floor["breached"]["number"], floor["lt2h"]["number"], floor["complaint"]["number"]]
    assert expected["agents"][str((await _user_id(engine, floor["breached"]["id"])))] == 2
    # Rates vs the 95 % line, and the trend chart with its accessible title and the dashed target.
    assert "50 %" in page and "66.7 %" in page
    assert "<svg" in page and "<title" in page and 'stroke-dasharray="6 4"' in page
    # First responses: every ticket was decided by a token (no person answered): none met, several overdue.
    assert re.search(r'data-overdue="(\d+)"', page).group(1) == str(await _overdue_first_responses(engine, clock.now()))


async def _user_id(engine, ticket_id: int) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(Ticket.assignee_id).where(Ticket.id == ticket_id))).scalar_one()


async def _overdue_first_responses(engine, now) -> int:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Ticket.status, Ticket.first_response_seconds, Ticket.first_response_due_at))).all()
    return sum(1 for status, seconds, due in rows
               if status not in ("closed", "cancelled") and seconds is None and due is not None and due.replace(tzinfo=now.tzinfo) < now)


async def test_board_block_is_a_polling_fragment_of_itself(as_role, floor, engine, clock, settings):
    supervisor = await as_role("supervisor")
    page = (await supervisor.get("/sla")).text
    tag = re.search(r'<div id="sla_board"[^>]*>', page).group(0)
    assert 'hx-get="/sla"' in tag and 'hx-trigger="every 30s' in tag and 'hx-target="#sla_board"' in tag
    response = await supervisor.get("/sla", headers=HTMX_BOARD)
    assert response.status_code == 200
    fragment = response.text.strip()
    assert fragment.startswith('<div id="sla_board"') and "<html" not in fragment and 'id="sla_filters"' not in fragment
    assert "HX-Request" in response.headers.get("vary", "")
    assert shown(fragment) == shown(page)
    # Filters narrow everything, and the poll keeps them.
    filtered = (await supervisor.get("/sla?kind=complaint", headers=HTMX_BOARD)).text
    assert 'hx-get="/sla?kind=complaint"' in filtered
    got = shown(filtered)
    assert got["open"] == 1 and got["buckets"]["lt2h"] == 1 and sum(got["buckets"].values()) == 1
    assert got["closures"]["30d"] == (3, 2)
    assert got["at_risk"] == [floor["complaint"]["number"]]


async def test_reassign_from_the_at_risk_list(as_role, floor, users, engine):
    supervisor = await as_role("supervisor")
    page = (await supervisor.get("/sla")).text
    ticket = floor["lt6h"]
    assert f'action="/tickets/{ticket["id"]}/owner"' in page and 'name="intent" value="assign"' in page
    response = await post_form(supervisor, f"/tickets/{ticket['id']}/owner", {"intent": "assign", "user_id": users["agent"]["id"]})
    assert response.status_code == 303
    assert await _user_id(engine, ticket["id"]) == users["agent"]["id"]
    got = shown((await supervisor.get("/sla", headers=HTMX_BOARD)).text)
    assert got["agents"][str(users["agent"]["id"])] == 3


async def test_agents_are_refused_and_strangers_sent_to_sign_in(as_role):
    agent = await as_role("agent")
    assert (await agent.get("/sla")).status_code == 403
    assert (await agent.get("/sla/report")).status_code == 403
    assert (await agent.get("/sla", headers=HTMX_BOARD)).status_code == 403
    anonymous = await as_role("anonymous")
    response = await anonymous.get("/sla", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    admin = await as_role("admin")
    assert (await admin.get("/sla")).status_code == 200


async def test_report_page_and_csv(as_role, floor, clock):
    supervisor = await as_role("supervisor")
    today = clock.now().date().isoformat()
    response = await supervisor.get(f"/sla/report?to={today}&group=kind")
    assert response.status_code == 200, response.text
    rows = dict(re.findall(r'data-group="([^"]*)" data-closed="(\d+)"', response.text))
    assert rows == {"complaint": "3", "*": "3"}
    assert '/sla/report.csv?to=' in response.text
    fragment = (await supervisor.get(f"/sla/report?to={today}&group=kind", headers={"HX-Request": "true", "HX-Target": "sla_report"})).text
    assert fragment.strip().startswith('<div id="sla_report"')
    csv_response = await supervisor.get(f"/sla/report.csv?to={today}&group=kind")
    assert csv_response.status_code == 200 and csv_response.content.startswith(b"\xef\xbb\xbf")
    assert ",complaint,3,2," in csv_response.content.decode("utf-8-sig")
    bad = await supervisor.get("/sla/report?group=colour")
    assert bad.status_code == 422 and "group" in bad.text


async def test_notifications_are_read_by_their_owner_only(as_role, users, engine, clock):
    async with create_sessionmaker(engine)() as session:
        for role, title in (("supervisor", "AS-1: 75 % of SLA used"), ("supervisor", "AS-2: SLA breached"), ("agent", "AS-3: for the agent")):
            session.add(Notification(user_id=users[role]["id"], kind="sla.at_risk", title=title, body="", created_at=clock.now()))
        await session.commit()
        mine = (await session.execute(select(Notification.id).where(Notification.user_id == users["supervisor"]["id"]))).scalars().all()
        theirs = (await session.execute(select(Notification.id).where(Notification.user_id == users["agent"]["id"]))).scalar_one()
    supervisor = await as_role("supervisor")
    page = (await supervisor.get("/notifications")).text
    assert 'data-unread="2"' in page and "AS-2: SLA breached" in page and "for the agent" not in page
    response = await post_form(supervisor, f"/notifications/{mine[0]}/read")
    assert response.status_code == 303
    fragment = (await post_form(supervisor, f"/notifications/{theirs}/read", htmx_target="notification_list")).text
    assert fragment.strip().startswith('<div id="notification_list"') and 'data-unread="1"' in fragment
    async with engine.connect() as conn:
        read = dict((await conn.execute(select(Notification.id, Notification.read_at))).all())
    assert read[mine[0]] is not None and read[mine[1]] is None and read[theirs] is None  # not the agent's
    product = await as_role("product")
    assert (await product.get("/notifications")).status_code == 200


async def test_admin_pages_for_webhooks_and_deliveries(as_role, engine):
    supervisor = await as_role("supervisor")
    assert (await supervisor.get("/admin/deliveries")).status_code == 403
    assert (await supervisor.get("/admin/webhooks")).status_code == 403
    admin = await as_role("admin")
    page = (await admin.get("/admin/deliveries")).text
    assert 'id="delivery_list"' in page and 'href="/admin/deliveries"' in page
    response = await post_form(admin, "/admin/webhooks", {"name": "值班群", "url": "https://example.com/hook", "format": "wecom",
                                                          "events": "sla.at_risk, sla.breach"})
    assert response.status_code == 201, response.text
    secret = re.search(r"<code class=\"secret\" data-secret>([^<]+)</code>", response.text).group(1)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(WebhookEndpoint.id, WebhookEndpoint.secret, WebhookEndpoint.events, WebhookEndpoint.format))).one()
    assert stored.secret == secret and stored.events == ["sla.at_risk", "sla.breach"] and stored.format == "wecom"
    listing = (await admin.get("/admin/webhooks")).text
    assert "值班群" in listing and secret not in listing
    bad = await post_form(admin, "/admin/webhooks", {"name": "x", "url": "ftp://nowhere", "format": "json"}, htmx_target="webhooks")
    assert bad.status_code == 422 and "url" in bad.text and bad.text.strip().startswith('<div id="webhooks"')
    response = await post_form(admin, f"/admin/webhooks/{stored.id}/deactivate")
    assert response.status_code == 303
    async with engine.connect() as conn:
        assert (await conn.execute(select(WebhookEndpoint.active))).scalar_one() is False
