"""Supervisor pages for the policy editor / simulator and the queues, and the agent's "next ticket".

What they protect: /policy and /queues are full pages and fragments of themselves; simulate,
save and publish work through the form (the simulation's figures are shown, a saved draft is
listed, publishing puts it in force); a draft with a mistake answers 422 naming the line; queue
members are edited through the form (plain post → 303, htmx → the queue_table fragment); agents
are refused; POST /queue/next takes an agent to the ticket it was handed.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select

from aftersales.db import create_sessionmaker
from aftersales.tickets.models import PolicyVersion, QueueMember, Ticket
from aftersales.tickets.policy import DEFAULT_POLICY
from aftersales.tickets.policy_service import PolicyService
from tests.web.pages.helpers import open_ticket, post_form, put_order

SEVEN_DAY_200 = "and amount <= 200 and requests_30d < 3 -> approve"
SEVEN_DAY_50 = "and amount <= 50 and requests_30d < 3 -> approve"
NAV = '<nav class="nav">'


@pytest.fixture(autouse=True)
async def defaults(engine, clock):
    """What `migrate` loads: the default queues and policy version 1."""
    async with create_sessionmaker(engine)() as session:
        await PolicyService(session, clock).ensure_defaults()
        await session.commit()


def htmx(target: str) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target}


def full_page(response: Any, status: int = 200) -> str:
    assert response.status_code == status, response.text
    assert "<html" in response.text and NAV in response.text
    assert "hx-request" in response.headers.get("vary", "").lower()
    return html.unescape(response.text)


def fragment(response: Any, block: str, status: int = 200) -> str:
    assert response.status_code == status, response.text
    body = response.text
    assert re.match(rf'<[a-z]+ id="{block}"[ >]', body.lstrip()), body[:200]
    assert "<html" not in body and NAV not in body
    assert "hx-request" in response.headers.get("vary", "").lower()
    return html.unescape(body)


def figure(body: str, name: str) -> int:
    found = re.search(rf'data-figure="{name}">(\d+)<', body)
    assert found, f"no {name} figure in {body[:300]!r}"
    return int(found.group(1))


async def no_reason_returns(client, tokens) -> list[dict[str, Any]]:
    """Three 7-day no-reason returns of ¥89 (approved today by version 1) and one quality claim (queued)."""
    tickets = []
    for i in range(3):
        await put_order(client, tokens, f"O-{i}", customer=f"C-{i}")
        tickets.append(await open_ticket(client, tokens, f"O-{i}", reason_code="preference.changed_mind"))
    await put_order(client, tokens, "O-Q", customer="C-Q")
    tickets.append(await open_ticket(client, tokens, "O-Q"))
    assert [t["status"] for t in tickets] == ["awaiting_return"] * 3 + ["pending_review"]
    return tickets


# -- the policy page ------------------------------------------------------------------------------


async def test_policy_page_is_a_full_page_and_its_fragments(clients):
    sup = await clients("supervisor")
    body = full_page(await sup.get("/policy"))
    assert 'id="policy_editor"' in body and 'id="policy_versions"' in body
    assert "rule seven_day_no_reason:" in body and "amount <= 200" in body  # the text in force, ready to edit
    assert "<strong>v1</strong>" in body
    editor = fragment(await sup.get("/policy", headers=htmx("policy_editor")), "policy_editor")
    assert "rule seven_day_no_reason:" in editor and 'id="policy_versions"' not in editor
    versions = fragment(await sup.get("/policy", headers=htmx("policy_versions")), "policy_versions")
    assert "<strong>v1</strong>" in versions and 'id="policy_editor"' not in versions


async def test_simulate_through_the_form_shows_the_figures(clients, client, tokens):
    await no_reason_returns(client, tokens)
    sup = await clients("supervisor")
    draft = DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50)
    form = {"text": draft, "note": "cap at 50", "intent": "simulate", "start": "2026-11-01", "end": "2026-11-20"}
    body = fragment(await post_form(sup, "/policy", form, htmx_target="policy_editor"), "policy_editor")
    assert (figure(body, "tickets"), figure(body, "auto_approved"), figure(body, "changed")) == (4, 0, 3)
    # The draft stays in the editor; nothing was stored.
    assert "amount <= 50" in body and 'value="cap at 50"' in body
    # The current policy changes nothing; a period without tickets has none.
    same = fragment(await post_form(sup, "/policy", {**form, "text": DEFAULT_POLICY}, htmx_target="policy_editor"), "policy_editor")
    assert (figure(same, "tickets"), figure(same, "auto_approved"), figure(same, "changed")) == (4, 3, 0)
    empty = fragment(await post_form(sup, "/policy", {**form, "start": "2025-01-01", "end": "2025-01-31"}, htmx_target="policy_editor"),
                     "policy_editor")
    assert figure(empty, "tickets") == 0
    # Without htmx the same form answers with the whole page.
    page = full_page(await post_form(sup, "/policy", form))
    assert figure(page, "changed") == 3


async def test_save_then_publish_through_the_form(clients, client, tokens, engine, users):
    sup = await clients("supervisor")
    draft = DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50)
    page = full_page(await post_form(sup, "/policy", {"text": draft, "note": "cap at 50", "intent": "save"}))
    assert "<strong>v2</strong>" in page and "cap at 50" in page
    assert 'name="version" value="2"' in page  # its publish button
    async with engine.connect() as conn:
        row = (await conn.execute(select(PolicyVersion.version, PolicyVersion.author, PolicyVersion.published_at)
                                  .where(PolicyVersion.version == 2))).one()
    assert (row.author, row.published_at) == (f"user:{users['supervisor']['username']}", None)
    # Still version 1 in force until published.
    await put_order(client, tokens, "O-1", customer="C-1")
    before = await open_ticket(client, tokens, "O-1", reason_code="preference.changed_mind")
    assert before["status"] == "awaiting_return"

    response = await post_form(sup, "/policy", {"intent": "publish", "version": "2"})
    assert response.status_code == 303 and response.headers["location"] == "/policy"
    page = full_page(await sup.get("/policy"))
    assert "amount <= 50" in page and 'name="version" value="2"' not in page
    await put_order(client, tokens, "O-2", customer="C-2")
    after = await open_ticket(client, tokens, "O-2", reason_code="preference.changed_mind")
    assert after["status"] == "pending_review" and after["timeline"][1]["data"]["policy_version"] == 2
    # Publishing it twice is refused in the editor, not a crash.
    again = await post_form(sup, "/policy", {"intent": "publish", "version": "2"}, htmx_target="policy_editor")
    assert 'role="alert"' in fragment(again, "policy_editor", status=409)


async def test_saving_through_htmx_shows_the_new_draft_to_publish(clients):
    sup = await clients("supervisor")
    draft = DEFAULT_POLICY.replace(SEVEN_DAY_200, SEVEN_DAY_50)
    response = await post_form(sup, "/policy", {"text": draft, "note": "cap", "intent": "save"}, htmx_target="policy_editor")
    body = fragment(response, "policy_editor")
    assert 'name="version" value="2"' in body
    # The versions list rides along out of band, so htmx swaps it in place instead of into the editor.
    assert re.search(r'<aside id="policy_versions"[^>]*hx-swap-oob="true"', body)
    # A plain GET of the editor fragment does not carry it.
    assert "hx-swap-oob" not in (await sup.get("/policy", headers=htmx("policy_editor"))).text


async def test_an_invalid_draft_shows_the_line_and_the_problem(clients, engine):
    sup = await clients("supervisor")
    text = DEFAULT_POLICY.replace("amount <= 200", "amout <= 200")
    line = next(i for i, raw in enumerate(text.splitlines(), start=1) if "amout" in raw)
    for intent in ("save", "simulate"):
        body = fragment(await post_form(sup, "/policy", {"text": text, "intent": intent}, htmx_target="policy_editor"),
                        "policy_editor", status=422)
        alert = re.search(r'<div class="alert" role="alert">([^<]*)</div>', body)
        assert alert, body[:400]
        assert f"line {line}" in alert.group(1) and "unknown fact 'amout'" in alert.group(1) and "did you mean 'amount'" in alert.group(1)
        assert "amout <= 200" in body  # the text is kept for fixing
    async with engine.connect() as conn:
        assert list((await conn.execute(select(PolicyVersion.version))).scalars()) == [1]


async def test_an_invalid_draft_posted_without_htmx_shows_the_full_page_with_the_error(clients):
    # Regression: the error path rolled back and then rendered the versions loaded before the
    # rollback (expired objects, lazy load in the template → 500; on PostgreSQL it also leaked the
    # connection mid-transaction, which blocked the next test's TRUNCATE forever).
    sup = await clients("supervisor")
    text = DEFAULT_POLICY.replace("amount <= 200", "amout <= 200")
    line = next(i for i, raw in enumerate(text.splitlines(), start=1) if "amout" in raw)
    page = full_page(await post_form(sup, "/policy", {"text": text, "intent": "save"}), status=422)
    assert f"line {line}: unknown fact 'amout'" in page and "<strong>v1</strong>" in page


async def test_agents_and_anonymous_cannot_use_the_supervisor_pages(clients):
    agent = await clients("agent")
    for path in ("/policy", "/queues"):
        assert (await agent.get(path)).status_code == 403, path
    assert (await post_form(agent, "/policy", {"text": DEFAULT_POLICY, "intent": "save"})).status_code == 403
    assert (await post_form(agent, "/queues/general", {"name_zh": "通用", "name_en": "General"})).status_code == 403
    product = await clients("product")
    assert (await product.get("/policy")).status_code == 403
    anonymous = await clients("anonymous")
    response = await anonymous.get("/policy", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


# -- queues ----------------------------------------------------------------------------------------


def queue_form(body: str, key: str) -> str:
    found = re.search(rf'<form[^>]*data-queue="{key}".*?</form>', body, re.S)
    assert found, f"no form for queue {key}"
    return found.group(0)


def checked_members(form_html: str) -> set[int]:
    return {int(v) for v in re.findall(r'name="members" value="(\d+)" checked', form_html)}


async def test_queues_page_edits_members_by_form(clients, users, engine):
    sup = await clients("supervisor")
    agent_id, sup_id = users["agent"]["id"], users["supervisor"]["id"]
    page = full_page(await sup.get("/queues"))
    keys = re.findall(r'data-queue="([a-z_]+)"', page)
    assert set(keys) == {"quality_review", "high_value", "logistics", "risk", "complaints", "general"}
    assert checked_members(queue_form(page, "general")) == set()
    fragment(await sup.get("/queues", headers=htmx("queue_table")), "queue_table")

    form = {"name_zh": "通用", "name_en": "General", "priority": "1", "agent_cap": "20", "active": "on",
            "description": "Everything else", "members": [str(agent_id), str(sup_id)]}
    response = await post_form(sup, "/queues/general", form)
    assert response.status_code == 303 and response.headers["location"] == "/queues"
    page = full_page(await sup.get("/queues"))
    assert checked_members(queue_form(page, "general")) == {agent_id, sup_id}

    # htmx: the queue_table fragment comes back, with the change in it.
    body = fragment(await post_form(sup, "/queues/general", {**form, "members": [str(agent_id)], "auto_assign": "on"},
                                    htmx_target="queue_table"), "queue_table")
    assert 'role="status"' in body
    general = queue_form(body, "general")
    assert checked_members(general) == {agent_id}
    assert re.search(r'name="auto_assign" checked', general)
    async with engine.connect() as conn:
        members = set((await conn.execute(select(QueueMember.user_id).where(QueueMember.queue_key == "general"))).scalars())
    assert members == {agent_id}

    # A member who is not an agent or supervisor is refused with the reason, and nothing changes.
    bad = await post_form(sup, "/queues/general", {**form, "members": [str(users["product"]["id"])]}, htmx_target="queue_table")
    assert 'role="alert"' in fragment(bad, "queue_table", status=422)
    bad = await post_form(sup, "/queues/general", {**form, "priority": "high"}, htmx_target="queue_table")
    assert bad.status_code == 422
    async with engine.connect() as conn:
        members = set((await conn.execute(select(QueueMember.user_id).where(QueueMember.queue_key == "general"))).scalars())
    assert members == {agent_id}


# -- next ticket -------------------------------------------------------------------------------------


async def test_next_ticket_takes_the_agent_to_the_ticket_it_was_given(clients, users, seeded, engine):
    sup, agent = await clients("supervisor"), await clients("agent")
    agent_id = users["agent"]["id"]
    # Not a member of any queue yet: nothing to hand out.
    response = await post_form(agent, "/queue/next")
    assert response.status_code == 303 and response.headers["location"] == "/queue?empty=1"
    form = {"name_zh": "质量审核", "name_en": "Quality review", "priority": "2", "agent_cap": "20", "active": "on",
            "members": [str(agent_id)]}
    assert (await post_form(sup, "/queues/quality_review", form)).status_code == 303

    response = await post_form(agent, "/queue/next")
    assert response.status_code == 303 and response.headers["location"] == f"/tickets/{seeded['id']}"
    async with engine.connect() as conn:
        assert await conn.scalar(select(Ticket.assignee_id).where(Ticket.id == seeded["id"])) == agent_id
    page = await agent.get(response.headers["location"])
    assert page.status_code == 200 and seeded["number"] in page.text
    # The only ticket is taken now.
    response = await post_form(agent, "/queue/next")
    assert response.headers["location"] == "/queue?empty=1"
    # Without the CSRF token the post is refused.
    assert (await post_form(agent, "/queue/next", with_csrf=False)).status_code == 403
