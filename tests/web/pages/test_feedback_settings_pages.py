"""The feedback settings page (/feedback/settings): the reason taxonomy and the routing rules.

What it protects (DESIGN "Conventions" 6 and 4):
- it is a full page and a fragment of itself (`feedback_settings`), for supervisors and admins;
  the feedback sub-navigation links to it for them;
- admins add and edit reasons through the form (plain → 303, htmx → the block); supervisors see
  the taxonomy read-only and a post to it is refused (403), while they add, edit and deactivate
  routing rules; agents and product teams cannot open the page;
- a rule added on the page routes the next ticket; a deactivated one routes none;
- a refused form answers 422 naming the field and keeps what was typed; CSRF is enforced.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select

from aftersales.db import create_sessionmaker
from aftersales.feedback.models import FeedbackItem, ReasonCategory, RoutingRule
from aftersales.feedback.service import FeedbackService
from tests.web.pages.helpers import open_ticket, post_form, put_order

PAGE = "/feedback/settings"
BLOCK = "feedback_settings"
NAV = '<nav class="nav">'
SMELL = {"code": "quality.smell", "name_zh": "有异味", "name_en": "Bad smell", "quality": "on", "active": "on"}


@pytest.fixture(autouse=True)
async def defaults(engine, clock):
    """What `migrate` loads: the built-in taxonomy and the default routing rules."""
    async with create_sessionmaker(engine)() as session:
        await FeedbackService(session, clock).ensure_defaults()
        await session.commit()


def htmx(target: str = BLOCK) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target}


def full_page(response: Any, status: int = 200) -> str:
    assert response.status_code == status, response.text[:500]
    assert "<html" in response.text and NAV in response.text
    assert "hx-target" in response.headers.get("vary", "").lower()
    return html.unescape(response.text)


def fragment(response: Any, status: int = 200) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.text.lstrip()
    assert re.match(rf'<div id="{BLOCK}"[ >]', body), body[:200]
    assert "<html" not in body and NAV not in body
    return html.unescape(body)


def rule_rows(body: str) -> dict[str, dict[str, str]]:
    """rule id -> its data attributes, from the routing table."""
    return {m.group(1): {"category": m.group(2), "team": m.group(3), "active": m.group(4)}
            for m in re.finditer(r'<tr data-rule="(\d+)" data-category="([^"]*)" data-team="([^"]*)" data-active="(true|false)"', body)}


def category_codes(body: str) -> list[str]:
    return re.findall(r'<tr data-code="([^"]+)"', body)


async def rules_in_db(engine, **where: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(RoutingRule).filter_by(**where).order_by(RoutingRule.id))).all())


async def routed(engine, ticket_id: int) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(FeedbackItem.team, FeedbackItem.product_id)
                                  .where(FeedbackItem.ticket_id == ticket_id).order_by(FeedbackItem.team))
        return [tuple(r) for r in rows.all()]


async def test_full_page_and_fragment_for_supervisor_and_admin(clients):
    for role in ("supervisor", "admin"):
        browser = await clients(role)
        full = full_page(await browser.get(PAGE))
        part = fragment(await browser.get(PAGE, headers=htmx()))
        assert 'href="/feedback/settings" aria-current="page"' in full  # the feedback sub-navigation
        assert category_codes(full) == category_codes(part) and "quality.defect" in category_codes(full)
        assert rule_rows(full) == rule_rows(part) and len(rule_rows(full)) >= 13
        assert 'id="new_rule"' in part
        assert ('id="new_category"' in part) is (role == "admin")
        assert ('action="/feedback/settings/taxonomy"' in part) is (role == "admin")
    # The page's htmx block is served only when asked for it; another target gets the page.
    assert "<html" in (await browser.get(PAGE, headers=htmx("elsewhere"))).text


async def test_the_nav_links_to_settings_only_for_supervisors_and_admins(clients):
    supervisor = await clients("supervisor")
    assert 'href="/feedback/settings"' in (await supervisor.get("/feedback/overview")).text
    product = await clients("product")
    inbox = await product.get("/feedback")
    assert inbox.status_code == 200 and 'href="/feedback/settings"' not in inbox.text


async def test_agents_product_teams_and_strangers_are_kept_out(clients, engine):
    for role in ("agent", "product"):
        browser = await clients(role)
        assert (await browser.get(PAGE)).status_code == 403, role
        response = await post_form(browser, f"{PAGE}/rules", {"category": "quality.damaged", "team": "selection", "min_repeat": "1"})
        assert response.status_code == 403, role
    anonymous = await clients("anonymous")
    response = await anonymous.get(PAGE, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert await rules_in_db(engine, team="selection", category="quality.damaged") == []


async def test_admin_adds_a_reason_plain_and_edits_one_through_htmx(clients, engine):
    admin = await clients("admin")
    response = await post_form(admin, f"{PAGE}/taxonomy", SMELL)
    assert response.status_code == 303 and response.headers["location"] == PAGE
    page = full_page(await admin.get(PAGE))
    assert "quality.smell" in category_codes(page) and "有异味" in page
    # A new reason is offered to the rule form right away.
    assert '<option value="quality.smell"' in page

    edited = fragment(await post_form(admin, f"{PAGE}/taxonomy", {"code": "quality.smell", "name_zh": "异味重", "name_en": "Strong smell",
                                                                  "quality": "on"}, htmx_target=BLOCK))
    assert 'data-code="quality.smell" data-active="false"' in edited and 'role="status"' in edited
    async with create_sessionmaker(engine)() as session:
        row = await session.get(ReasonCategory, "quality.smell")
        assert row is not None and (row.parent, row.quality, row.name_zh, row.name_en, row.active) == ("quality", True, "异味重", "Strong smell", False)


async def test_supervisor_sees_the_taxonomy_but_cannot_change_it(clients, engine):
    supervisor = await clients("supervisor")
    response = await post_form(supervisor, f"{PAGE}/taxonomy", SMELL)
    assert response.status_code == 403
    response = await post_form(supervisor, f"{PAGE}/taxonomy", {**SMELL, "code": "quality.defect"}, htmx_target=BLOCK)
    assert response.status_code == 403
    async with create_sessionmaker(engine)() as session:
        assert await session.get(ReasonCategory, "quality.smell") is None
        defect = await session.get(ReasonCategory, "quality.defect")
        assert defect is not None and defect.name_zh == "质量问题"


async def test_rules_added_edited_and_deactivated_on_the_page_drive_routing(clients, client, tokens, engine):
    admin, supervisor = await clients("admin"), await clients("supervisor")
    assert (await post_form(admin, f"{PAGE}/taxonomy", SMELL)).status_code == 303

    # Add through htmx: the block comes back with the new rule in it.
    part = fragment(await post_form(supervisor, f"{PAGE}/rules", {"category": "quality.smell", "team": "qc", "product_categories": "美妆，服饰",
                                                                   "min_repeat": "1", "note": "smell", "active": "on"}, htmx_target=BLOCK))
    [rule] = await rules_in_db(engine, category="quality.smell")
    assert rule_rows(part)[str(rule.id)] == {"category": "quality.smell", "team": "qc", "active": "true"}
    assert rule.product_categories == ["美妆", "服饰"] and rule.note == "smell"

    await put_order(client, tokens, "O-1")
    ticket = await open_ticket(client, tokens, "O-1", reason_code="quality.smell")
    assert await routed(engine, ticket["id"]) == [("qc", "P-LIP")]

    # Edit with the plain form: only 服饰 now, so the lipstick (美妆) is no longer routed.
    response = await post_form(supervisor, f"{PAGE}/rules/{rule.id}", {"category": "quality.smell", "team": "qc", "product_categories": "服饰",
                                                                        "min_repeat": "1", "note": "smell", "active": "on"})
    assert response.status_code == 303 and response.headers["location"] == PAGE
    await put_order(client, tokens, "O-2", customer="C-2")
    assert await routed(engine, (await open_ticket(client, tokens, "O-2", reason_code="quality.smell"))["id"]) == []

    # Back to every product category, then deactivate through htmx: routing stops.
    await post_form(supervisor, f"{PAGE}/rules/{rule.id}", {"category": "quality.smell", "team": "qc", "product_categories": "",
                                                           "min_repeat": "1", "active": "on"})
    part = fragment(await post_form(supervisor, f"{PAGE}/rules/{rule.id}/deactivate", {}, htmx_target=BLOCK))
    assert rule_rows(part)[str(rule.id)]["active"] == "false" and f'data-deactivate="{rule.id}"' not in part
    await put_order(client, tokens, "O-3", customer="C-3")
    assert await routed(engine, (await open_ticket(client, tokens, "O-3", reason_code="quality.smell"))["id"]) == []
    [stored] = await rules_in_db(engine, id=rule.id)
    assert stored.active is False and stored.product_categories == []

    # Plain deactivate answers 303 too.
    other = (await rules_in_db(engine, category="quality.damaged", team="qc"))[0]
    response = await post_form(supervisor, f"{PAGE}/rules/{other.id}/deactivate", {})
    assert response.status_code == 303
    assert (await rules_in_db(engine, id=other.id))[0].active is False


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"category": "nonsense", "team": "qc", "min_repeat": "1"}, "category"),
        ({"category": "", "team": "qc", "min_repeat": "1"}, "category"),
        ({"category": "quality.defect", "team": "marketing", "min_repeat": "1"}, "team"),
        ({"category": "quality.defect", "team": "qc", "min_repeat": "0"}, "min_repeat"),
        ({"category": "quality.defect", "team": "qc", "min_repeat": "many"}, "min_repeat"),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_field_and_keeps_what_was_typed(clients, engine, form, field):
    supervisor = await clients("supervisor")
    before = len(await rules_in_db(engine))
    typed = {**form, "note": "typed-note-kept"}
    part = fragment(await post_form(supervisor, f"{PAGE}/rules", typed, htmx_target=BLOCK), status=422)
    assert f'data-error-field="{field}"' in part and 'value="typed-note-kept"' in part
    page = full_page(await post_form(supervisor, f"{PAGE}/rules", typed), status=422)
    assert f'data-error-field="{field}"' in page
    assert len(await rules_in_db(engine)) == before


async def test_a_bad_reason_is_refused_naming_the_field(clients, engine):
    admin = await clients("admin")
    part = fragment(await post_form(admin, f"{PAGE}/taxonomy", {**SMELL, "code": "Quality Smell"}, htmx_target=BLOCK), status=422)
    assert 'data-error-field="code"' in part and 'value="Quality Smell"' in part
    page = full_page(await post_form(admin, f"{PAGE}/taxonomy", {**SMELL, "name_en": ""}), status=422)
    assert 'data-error-field="name_en"' in page and 'value="有异味"' in page
    async with create_sessionmaker(engine)() as session:
        assert await session.get(ReasonCategory, "quality.smell") is None


async def test_unknown_rule_and_missing_csrf_are_refused(clients, engine):
    supervisor = await clients("supervisor")
    part = fragment(await post_form(supervisor, f"{PAGE}/rules/999999/deactivate", {}, htmx_target=BLOCK), status=404)
    assert 'role="alert"' in part
    before = len(await rules_in_db(engine))
    response = await post_form(supervisor, f"{PAGE}/rules", {"category": "quality.damaged", "team": "selection"}, with_csrf=False)
    assert response.status_code == 403
    assert len(await rules_in_db(engine)) == before
