"""Web tests for the feedback pages (DESIGN "Conventions" 6, 8, 9).

What they protect:
- every feedback page is a fragment of itself (full page, and only the named block for htmx);
- a product-team member sees only their own team's items and digests, and cannot reach the queue;
- the inbox's filters, free-text search, grouping counts and paging;
- acknowledging in bulk and recording an action through forms (htmx and plain, CSRF enforced),
  and the action page's before / after figures with the verify / reopen decision;
- digests on demand (exactly once), their printable variant; the analytics page and its CSV;
- the agent's confirm / correct of a ticket's feedback category, and the accuracy it feeds.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from aftersales.feedback import pages as feedback_pages
from aftersales.feedback.models import Digest, FeedbackAction, FeedbackItem, FeedbackRecord
from tests.conftest import START
from tests.factories import order_body
from tests.web.pages.helpers import open_ticket, post_form

NAV = '<nav class="nav">'
DAY = "2026-11-20"  # the local (Asia/Shanghai) day of START
CLAIM = "主播说是纯棉的收到是化纤"


def htmx(target: str) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target}


def full_page(response: Any) -> str:
    assert response.status_code == 200, response.text[:500]
    assert "<html" in response.text and NAV in response.text
    assert "hx-target" in response.headers.get("vary", "").lower()
    return response.text


def fragment(response: Any, block: str, status: int = 200) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.text.lstrip()
    assert re.match(rf'<[a-z]+ id="{block}"[ >]', body), body[:200]
    assert "<html" not in body and NAV not in body
    return body


def item_ids(body: str) -> list[str]:
    return re.findall(r'<tr data-item="(\d+)"', body)


async def items(engine, **where: Any) -> list[FeedbackItem]:
    async with engine.connect() as conn:
        query = select(FeedbackItem).filter_by(**where).order_by(FeedbackItem.id)
        return list((await conn.execute(query)).all())


async def script_ticket(client, tokens, order: str = "O-2", *, session: str = "LS-2") -> dict[str, Any]:
    response = await client.put(f"/api/v1/orders/{order}", json=order_body(session=session), headers=tokens["integration"])
    assert response.status_code in (200, 201), response.text
    return await open_ticket(client, tokens, order, reason_code="description.host_claim_mismatch", description=CLAIM,
                             items=[{"sku": "SKU-TEE-M", "quantity": 1}], requested_amount="59.50")


# -- inbox -------------------------------------------------------------------------------------------


async def test_inbox_full_page_and_inbox_fragment(clients, seeded):
    product = await clients("product")
    full = full_page(await product.get("/feedback"))
    inbox = fragment(await product.get("/feedback", headers=htmx("inbox")), "inbox")
    assert "丝绒口红 #01" in full and "丝绒口红 #01" in inbox
    assert item_ids(full) == item_ids(inbox) and len(item_ids(full)) == 1
    assert 'id="record_action"' in full and 'id="record_action"' not in inbox
    assert 'id="inbox_filters"' in full and 'id="inbox_filters"' not in inbox


async def test_product_member_sees_only_their_team(clients, seeded, client, tokens, engine):
    await script_ticket(client, tokens)
    product = await clients("product")  # team qc
    for url in ("/feedback", "/feedback?team=script", "/feedback?team=script&status=all"):
        body = full_page(await product.get(url))
        assert CLAIM not in body and "丝绒口红 #01" in body, url
        assert 'data-team="script"' not in body
    assert (await product.get(f"/feedback/digests/script/day/{DAY}")).status_code == 403
    assert (await product.get("/queue", follow_redirects=False)).status_code == 403
    assert (await product.get("/feedback/overview")).status_code == 403
    script_item = (await items(engine, team="script"))[0]
    response = await post_form(product, "/feedback/acknowledge", {"item": str(script_item.id), "back": "team=script"})
    assert response.status_code == 403
    assert (await items(engine, team="script"))[0].status == "new"
    # A supervisor sees the script team's items.
    supervisor = await clients("supervisor")
    assert CLAIM in full_page(await supervisor.get("/feedback?team=script"))


async def test_filters_search_grouping_and_paging(clients, seeded, client, tokens, monkeypatch):
    await script_ticket(client, tokens, "O-2", session="LS-2")
    await script_ticket(client, tokens, "O-3", session="LS-3")
    response = await client.put("/api/v1/orders/O-4", json=order_body(session="LS-3"), headers=tokens["integration"])
    assert response.status_code == 201
    await open_ticket(client, tokens, "O-4", reason_code="price.promo_dispute", description="说好的满减没有给",
                      items=[{"sku": "SKU-TEE-M", "quantity": 1}], requested_amount="10.00")
    supervisor = await clients("supervisor")
    base = "/feedback?team=script"
    all_three = item_ids(fragment(await supervisor.get(base, headers=htmx("inbox")), "inbox"))
    assert len(all_three) == 3
    found = fragment(await supervisor.get(base + "&q=满减", headers=htmx("inbox")), "inbox")
    assert len(item_ids(found)) == 1 and "说好的满减没有给" in found
    by_reason = fragment(await supervisor.get(base + "&category=description.host_claim_mismatch", headers=htmx("inbox")), "inbox")
    assert len(item_ids(by_reason)) == 2
    grouped = fragment(await supervisor.get(base + "&group=session", headers=htmx("inbox")), "inbox")
    counts = dict(re.findall(r'<tr data-group="(\d+)">.*?<td class="num">(\d+)</td>', grouped, flags=re.S))
    assert sorted(counts.values()) == ["1", "2"]  # LS-2: 1, LS-3: 2
    by_host = fragment(await supervisor.get(base + "&host=小雅", headers=htmx("inbox")), "inbox")
    assert len(item_ids(by_host)) == 3
    nobody = fragment(await supervisor.get(base + "&host=nobody", headers=htmx("inbox")), "inbox")
    assert item_ids(nobody) == []
    tomorrow = fragment(await supervisor.get(base + "&from=2026-11-21", headers=htmx("inbox")), "inbox")
    assert item_ids(tomorrow) == []
    # Paging: two per page.
    monkeypatch.setattr(feedback_pages, "PAGE_SIZE", 2)
    first = fragment(await supervisor.get(base, headers=htmx("inbox")), "inbox")
    assert len(item_ids(first)) == 2
    next_url = re.search(r'href="([^"]+)"[^>]*rel="next"', first).group(1).replace("&amp;", "&")
    assert "page=2" in next_url and "team=script" in next_url
    second = fragment(await supervisor.get(next_url, headers=htmx("inbox")), "inbox")
    assert item_ids(first) + item_ids(second) == all_three


async def test_acknowledge_in_bulk(clients, seeded, client, tokens, engine):
    response = await client.put("/api/v1/orders/O-5", json=order_body(), headers=tokens["integration"])
    await open_ticket(client, tokens, "O-5", description="又坏了")
    product = await clients("product")
    qc = [i.id for i in await items(engine, team="qc")]
    assert len(qc) == 2
    # Without the CSRF token nothing happens.
    refused = await post_form(product, "/feedback/acknowledge", {"item": str(qc[0])}, with_csrf=False)
    assert refused.status_code == 403
    assert {i.status for i in await items(engine, team="qc")} == {"new"}
    # htmx: the inbox block comes back with the items acknowledged.
    token = product.cookies.get("csrftoken")
    response = await product.post("/feedback/acknowledge", data={"item": [str(i) for i in qc], "back": "team=qc&status=all",
                                                                 "_csrf_token": token}, headers=htmx("inbox"))
    body = fragment(response, "inbox")
    assert "2 items acknowledged" in body or "已确认 2 条" in body
    assert body.count('data-status="acknowledged"') == 2
    rows = await items(engine, team="qc")
    assert {r.status for r in rows} == {"acknowledged"} and {r.acknowledged_by for r in rows} == {"user:product1"}
    # Plain form post: a redirect back to the same view; selection items stay untouched.
    again = await post_form(product, "/feedback/acknowledge", {"item": str(qc[0]), "back": "team=qc&status=all"})
    assert again.status_code == 303 and again.headers["location"].startswith("/feedback?") and "team=qc" in again.headers["location"]
    assert {i.status for i in await items(engine, team="selection")} == {"new"}


async def test_record_an_action_then_decide_on_its_page(clients, seeded, engine):
    product = await clients("product")
    response = await post_form(product, "/feedback/actions", {"team": "qc", "product_id": "P-LIP", "reason": "quality.defect",
                                                             "description": "增加出厂抽检", "action_date": DAY})
    assert response.status_code == 303, response.text[:300]
    url = response.headers["location"]
    assert re.fullmatch(r"/feedback/actions/\d+", url)
    (qc_item,) = await items(engine, team="qc")
    assert qc_item.status == "actioned" and f"/feedback/actions/{qc_item.action_id}" == url
    assert (await items(engine, team="selection"))[0].status == "new"

    full = full_page(await product.get(url))
    assert "增加出厂抽检" in full and 'id="before_after"' in full
    block = fragment(await product.get(url, headers=htmx("action_outcome")), "action_outcome")
    # The order was placed 5 days before the action: 1 of 1 unit returned before, nothing sold after.
    assert re.search(r'data-window="before">.*?<td class="num">1</td><td class="num">1</td><td class="num">100.0 %</td>', block, re.S)
    assert 'data-suggestion=""' in block
    # Verify is refused (the rate did not fall), reopen is accepted.
    refused = await post_form(product, f"{url}/outcome", {"outcome": "verified"}, htmx_target="action_outcome")
    assert 'role="alert"' in fragment(refused, "action_outcome", status=409)
    done = await post_form(product, f"{url}/outcome", {"outcome": "reopened", "note": "再观察"})
    assert done.status_code == 303 and done.headers["location"] == url
    (qc_item,) = await items(engine, team="qc")
    assert qc_item.status == "reopened"
    async with engine.connect() as conn:
        action = (await conn.execute(select(FeedbackAction))).one()
    assert action.outcome == "reopened" and action.outcome_data["before"] == {"units": 1, "returned": 1, "rate": 1.0}
    assert 'data-outcome="reopened"' in full_page(await product.get(url))
    # Another team's action is not shown to this member.
    bad = await post_form(product, "/feedback/actions", {"team": "script", "product_id": "P-LIP", "description": "x"})
    assert bad.status_code == 403


async def test_recording_an_action_with_bad_input_explains_itself(clients, seeded, engine):
    product = await clients("product")
    response = await post_form(product, "/feedback/actions", {"team": "qc", "product_id": "P-LIP", "description": " ", "action_date": DAY})
    assert response.status_code == 422 and 'role="alert"' in response.text and "<html" in response.text
    future = await post_form(product, "/feedback/actions", {"team": "qc", "product_id": "P-LIP", "description": "x", "action_date": "2026-12-30"})
    assert future.status_code == 422
    assert await items(engine, status="actioned") == []


async def test_overview_shows_open_items_and_waits(clients, seeded, clock):
    clock.advance(hours=5)
    supervisor = await clients("supervisor")
    full = full_page(await supervisor.get("/feedback/overview"))
    block = fragment(await supervisor.get("/feedback/overview", headers=htmx("overview_body")), "overview_body")
    for body in (full, block):
        assert re.search(r'<tr data-team="qc" data-open="1">', body)
        assert re.search(r'<tr data-team="script" data-open="0">', body)
        assert 'data-wait="18000"' in body  # the oldest new QC item has waited 5 hours


# -- digests -----------------------------------------------------------------------------------------


async def test_digest_page_generates_once_and_has_a_printable_variant(clients, seeded, clock, engine):
    clock.set(START + timedelta(days=1))
    product = await clients("product")
    # Today is not over yet: a preview, nothing stored.
    preview = full_page(await product.get("/feedback/digests/qc/day/2026-11-21"))
    assert 'data-json' not in preview and 'data-period="day"' in preview
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Digest)) == 0
    url = f"/feedback/digests/qc/day/{DAY}"
    full = full_page(await product.get(url))
    block = fragment(await product.get(url, headers=htmx("digest")), "digest")
    for body in (full, block):
        assert '<tr data-category="quality.defect" data-count="1">' in body and "丝绒口红 #01" in body
        assert 'id="digest_problems"' in body and 'id="digest_sessions"' not in body
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Digest)) == 1
    full_page(await product.get(url))
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Digest)) == 1
    printable = await product.get(url + "?print=1")
    assert printable.status_code == 200 and 'class="printable"' in printable.text
    assert NAV not in printable.text and "丝绒口红 #01" in printable.text
    listing = full_page(await product.get("/feedback/digests"))
    assert f'href="/feedback/digests/qc/day/{DAY}"' in listing and "data-digest=" in listing
    assert 'href="/feedback/digests?team=script"' not in listing
    fragment(await product.get("/feedback/digests?team=qc", headers=htmx("digest_list")), "digest_list")
    assert (await product.get("/feedback/digests/qc/week/2026-11-18")).status_code == 422  # a Wednesday
    assert (await product.get("/feedback/digests/qc/month/2026-11-01")).status_code == 422


# -- analytics ---------------------------------------------------------------------------------------


def read_csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


async def test_analytics_page_fragment_and_csv(clients, seeded):
    supervisor = await clients("supervisor")
    full = full_page(await supervisor.get("/feedback/analytics"))
    block = fragment(await supervisor.get("/feedback/analytics", headers=htmx("analytics_body")), "analytics_body")
    for body in (full, block):
        assert '<svg class="chart"' in body and 'data-chart="return-rate"' in body
        assert 'id="analytics_totals" data-units="3" data-returned="1"' in body
        for group in ("category", "product", "sku", "session", "host"):
            assert f'id="rates_{group}"' in body
    rows = read_csv(await supervisor.get("/feedback/analytics?format=csv&table=product"))
    header, data = rows[0], {r[0]: r for r in rows[1:]}
    assert len(header) == 12 and set(data) == {"P-LIP", "P-TEE"}
    assert data["P-LIP"][1:] == ["美妆", "丝绒口红 #01", "1", "89.00", "1", "1.0000", "0", "0.0000", "89.00", "1.0000", "1"]
    assert data["P-TEE"][3:6] == ["2", "119.00", "0"]
    sessions = read_csv(await supervisor.get("/feedback/analytics?format=csv&table=session"))
    assert [r[:3] for r in sessions[1:]] == [["LS-1", "双11美妆专场", "小雅"]]
    problems = read_csv(await supervisor.get("/feedback/analytics?format=csv&table=problems"))
    assert len(problems[0]) == 13 and problems[1:] == []  # one unit sold: too small to test
    narrowed = read_csv(await supervisor.get("/feedback/analytics?format=csv&table=category&reason=fit.size"))
    assert {r[0]: r[3] for r in narrowed[1:]} == {"美妆": "0", "服饰": "0"}
    bad = await supervisor.get("/feedback/analytics?from=2026-12-01&to=2026-11-01", headers=htmx("analytics_body"))
    assert 'role="alert"' in fragment(bad, "analytics_body", status=422)


# -- the agent's confirm / correct ------------------------------------------------------------------------


async def test_agent_confirms_or_corrects_the_feedback_category(clients, seeded, engine):
    agent = await clients("agent")
    ticket_url = f"/tickets/{seeded['id']}"
    page = full_page(await agent.get(ticket_url))
    assert 'id="ticket_feedback"' in page and 'data-source="reason_code"' in page
    header = fragment(await agent.get(ticket_url, headers=htmx("ticket_header")), "ticket_header")
    assert 'id="ticket_feedback"' in header
    # The correction form (htmx) lists every category.
    form = await agent.get(f"{ticket_url}/feedback", headers={"HX-Request": "true"})
    assert form.status_code == 200 and form.text.lstrip().startswith('<div id="ticket_feedback"')
    assert 'value="fulfillment.missing_item"' in form.text
    assert full_page(await agent.get(f"{ticket_url}/feedback"))
    # No CSRF token: refused, nothing changes.
    assert (await post_form(agent, f"{ticket_url}/feedback", {"category": "quality.damaged"}, with_csrf=False)).status_code == 403
    unknown = await post_form(agent, f"{ticket_url}/feedback", {"category": "nope"}, htmx_target="ticket_feedback")
    assert unknown.status_code == 422 and 'role="alert"' in unknown.text
    done = await post_form(agent, f"{ticket_url}/feedback", {"category": "quality.damaged"}, htmx_target="ticket_feedback")
    assert done.status_code == 200 and 'data-category="quality.damaged" data-source="agent"' in done.text
    async with engine.connect() as conn:
        record = (await conn.execute(select(FeedbackRecord))).one()
    assert (record.category, record.source, record.confirmed_by) == ("quality.damaged", "agent", "user:agent1")
    # Re-routed: quality.damaged goes to QC only, the unread selection item is gone.
    assert {i.team for i in await items(engine)} == {"qc"}
    plain = await post_form(agent, f"{ticket_url}/feedback", {"category": record.suggested_category})
    assert plain.status_code == 303 and plain.headers["location"] == ticket_url
    # The analytics page counts confirmations and corrections.
    supervisor = await clients("supervisor")
    body = full_page(await supervisor.get("/feedback/analytics"))
    assert 'data-confirmed="1" data-corrected="0"' in body
    product = await clients("product")
    assert (await post_form(product, f"{ticket_url}/feedback", {"category": "other"})).status_code == 403
