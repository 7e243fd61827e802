"""The feedback JSON API.

What it protects:
- digests: 404 until generated; POST (supervisor / admin) generates once — 201, then 200 with the
  same digest; a period that is not over, a week not starting on Monday, an unknown team are
  refused; product-team members read only their own team's digests;
- analytics and problem products: the figures of the seeded order and ticket, CSV with a BOM,
  bad input answered with a problem naming the field, who may read them.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from aftersales.auth.service import AuthService
from aftersales.auth.tokens import create_token
from aftersales.db import create_sessionmaker
from tests.conftest import START
from tests.factories import order_body, ticket_body

DAY = "2026-11-20"  # local day of START (Asia/Shanghai)
URL = f"/api/v1/feedback/digests/qc/day/{DAY}"


@pytest.fixture(autouse=True)
def fresh_process_caches() -> None:
    from aftersales.sla import service as sla_service
    from aftersales.tickets import policy_service

    getattr(sla_service, "_policies", {}).clear()
    getattr(policy_service, "_parsed", {}).clear()


@pytest.fixture()
async def seeded(client, tokens):
    feed = tokens["integration"]
    assert (await client.put("/api/v1/orders/O-1", json=order_body(), headers=feed)).status_code == 201
    response = await client.post("/api/v1/tickets", json=ticket_body(), headers=feed)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture()
async def qc_member(engine, clock) -> dict[str, str]:
    """A personal token of a QC team member (the shared `product` token belongs to no team)."""
    async with create_sessionmaker(engine)() as session:
        user = await AuthService(session, clock).create_user(username="quinn", password="quinn-secret-1", role="product",
                                                             teams=["qc"])
        value = await create_token(session, clock, name="quinn", role="product", user_id=user.id)
        await session.commit()
    return {"Authorization": f"Bearer {value}"}


async def test_digest_generated_on_demand_exactly_once(client, tokens, seeded, clock, qc_member):
    supervisor = tokens["supervisor"]
    assert (await client.get(URL, headers=supervisor)).status_code == 404
    early = await client.post(URL, headers=supervisor)
    assert early.status_code == 422 and early.json()["errors"][0]["field"] == "start"
    clock.set(START + timedelta(days=1))
    first = await client.post(URL, headers=supervisor)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["team"], body["period"], body["period_start"]) == ("qc", "day", DAY)
    assert body["content"]["items"] == 1 and body["content"]["categories"][0]["category"] == "quality.defect"
    assert body["url"] == f"/feedback/digests/qc/day/{DAY}"
    second = await client.post(URL, headers=tokens["admin"])
    assert second.status_code == 200 and second.json() == body
    assert (await client.get(URL, headers=qc_member)).json() == body
    listed = await client.get("/api/v1/feedback/digests?team=qc", headers=supervisor)
    assert [d["id"] for d in listed.json()] == [body["id"]]
    assert [d["id"] for d in (await client.get("/api/v1/feedback/digests", headers=qc_member)).json()] == [body["id"]]



async def test_building_a_digest_does_not_stop_other_writers(client, app, tokens, seeded, clock, monkeypatch):
    """The digest is built in a read session and only stored in a write transaction: while it is
    being built, another request of the same process can still write (on SQLite, built inside
    the write transaction, it held the one write lock for the whole build; bench F25)."""
    import asyncio

    from aftersales.feedback import controllers, digests

    real_build = digests.build_digest
    written: list[str] = []

    async def build_while_someone_writes(session, *args, **kwargs):
        async def write() -> None:
            async with app.state.sessionmaker() as other:
                await create_token(other, clock, name="written-during-build", role="integration")
                await other.commit()
                written.append("token")

        await asyncio.wait_for(write(), timeout=5)
        return await real_build(session, *args, **kwargs)

    monkeypatch.setattr(controllers, "build_digest", build_while_someone_writes)
    monkeypatch.setattr(digests, "build_digest", build_while_someone_writes)
    clock.set(START + timedelta(days=1))
    response = await client.post(URL, headers=tokens["supervisor"])
    assert response.status_code == 201, response.text
    assert written == ["token"] and response.json()["content"]["items"] == 1

async def test_digest_access_and_bad_keys(client, tokens, seeded, clock, qc_member):
    clock.set(START + timedelta(days=1))
    assert (await client.post(URL, headers=qc_member)).status_code == 403  # members read, supervisors generate
    assert (await client.post(URL, headers=tokens["agent"])).status_code == 403
    assert (await client.post(f"/api/v1/feedback/digests/script/day/{DAY}", headers=tokens["supervisor"])).status_code == 201
    assert (await client.get(f"/api/v1/feedback/digests/script/day/{DAY}", headers=qc_member)).status_code == 403
    assert (await client.get("/api/v1/feedback/digests?team=script", headers=qc_member)).status_code == 403
    assert (await client.get(URL, headers=tokens["product"])).status_code == 403  # a token of no team
    assert (await client.get(URL)).status_code == 401
    cases = {"/api/v1/feedback/digests/qc/week/2026-11-18": ("start", 422), "/api/v1/feedback/digests/qc/month/2026-11-01": ("period", 422),
             "/api/v1/feedback/digests/qc/day/2026-13-01": ("start", 422), "/api/v1/feedback/digests/nope/day/2026-11-01": (None, 404)}
    for url, (field, status) in cases.items():
        response = await client.post(url, headers=tokens["supervisor"])
        assert response.status_code == status, url
        if field:
            assert response.json()["errors"][0]["field"] == field


async def test_analytics_json_and_csv(client, tokens, seeded):
    reader = tokens["integration"]
    response = await client.get("/api/v1/feedback/analytics?group=product", headers=reader)
    assert response.status_code == 200, response.text
    rows = {r["key"][0]: r for r in response.json()["rows"]}
    assert set(rows) == {"P-LIP", "P-TEE"}
    lip = rows["P-LIP"]
    assert (lip["units"], lip["returned_units"], lip["return_rate"], lip["amount"], lip["returned_amount"], lip["tickets"]) == (
        1, 1, 1.0, "89.00", "89.00", 1)
    assert (rows["P-TEE"]["units"], rows["P-TEE"]["returned_units"], rows["P-TEE"]["return_rate"]) == (2, 0, 0.0)
    by_reason = (await client.get("/api/v1/feedback/analytics?group=category&reason=fit.size", headers=reader)).json()
    assert {r["key"][0]: r["returned_units"] for r in by_reason["rows"]} == {"美妆": 0, "服饰": 0}
    hosts = (await client.get("/api/v1/feedback/analytics?group=host&from=2026-11-01&to=2026-11-20", headers=reader)).json()
    assert [(r["key"], r["units"], r["returned_units"]) for r in hosts["rows"]] == [(["小雅"], 3, 1)]
    empty = (await client.get("/api/v1/feedback/analytics?group=host&from=2026-10-01&to=2026-10-31", headers=reader)).json()
    assert empty["rows"] == []
    exported = await client.get("/api/v1/feedback/analytics?group=sku&format=csv", headers=reader)
    assert exported.content.startswith(b"\xef\xbb\xbf") and exported.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert sorted(r[0] for r in table[1:]) == ["SKU-LIP-01", "SKU-TEE-M"]
    for url, field in (("/api/v1/feedback/analytics?group=nope", "group"), ("/api/v1/feedback/analytics?reason=nope", "reason"),
                       ("/api/v1/feedback/analytics?from=2026-11-20&to=2026-11-01", "to"),
                       ("/api/v1/feedback/analytics?from=yesterday", "from")):
        bad = await client.get(url, headers=reader)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, url
    assert (await client.get("/api/v1/feedback/analytics", headers=tokens["agent"])).status_code == 403
    assert (await client.get("/api/v1/feedback/analytics", headers=tokens["product"])).status_code == 200


async def test_problem_products(client, tokens, seeded):
    response = await client.get("/api/v1/feedback/problem-products", headers=tokens["supervisor"])
    assert response.status_code == 200
    body = response.json()
    assert body["reasons"] == [None, "quality.defect", "quality.damaged"]
    assert body["products"] == [] and body["tested"] == 0  # one unit sold: too small to be tested
    one = (await client.get("/api/v1/feedback/problem-products?reason=quality.defect&all=true", headers=tokens["supervisor"])).json()
    assert one["reasons"] == ["quality.defect"]
    assert (await client.get("/api/v1/feedback/problem-products?reason=bogus", headers=tokens["supervisor"])).status_code == 422
