"""Browser-test fixtures: the real server in a subprocess on a fresh SQLite file, and Chromium.

Always SQLite, whatever AFTERSALES_TEST_DATABASE_URL says: the server owns its database for the
whole module and must not empty or share the integration tests' PostgreSQL schema.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import order_body, ticket_body

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
BIN = Path(sys.executable).parent / "aftersales"

SEED_USERS = """
import asyncio
from aftersales.auth.demo_users import create_demo_users
from aftersales.clock import SystemClock
from aftersales.db import create_engine, create_sessionmaker
from aftersales.settings import Settings

async def main():
    engine = create_engine(Settings.from_env().database_url)
    async with create_sessionmaker(engine)() as session:
        await create_demo_users(session, SystemClock())
    await engine.dispose()

asyncio.run(main())
"""


@dataclass
class Server:
    base_url: str
    token: str
    process: subprocess.Popen
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer /healthz within {timeout}s:\n{log.read_text()}")


def _seed(server: Server) -> None:
    """A few orders and tickets through the HTTP API, as the shop platform would send them."""
    now = datetime.now(timezone.utc)
    placed = now - timedelta(days=3)
    asked = (now - timedelta(hours=1)).isoformat()
    specs = {
        "return_a": ("E-1", {}),
        "return_b": ("E-2", {}),
        "exchange": ("E-3", {"kind": "exchange", "requested_amount": "120.00"}),
        "complaint": ("E-4", {"kind": "complaint", "reason_code": "logistics.delay", "items": [], "requested_amount": "0"}),
    }
    with server.api() as api:
        for name, (order, overrides) in specs.items():
            response = api.put(f"/api/v1/orders/{order}", json=order_body(customer=f"C-{order}", placed_at=placed))
            assert response.status_code == 201, response.text
            response = api.post("/api/v1/tickets", json=ticket_body(order, requested_at=asked, **overrides))
            assert response.status_code == 201, response.text
            ticket = response.json()
            assert ticket["status"] == "pending_review", (name, ticket["status"])  # precondition: a person decides
            server.tickets[name] = ticket


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERSALES_")}
    env.update(
        AFTERSALES_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'e2e.db'}",
        AFTERSALES_DEFAULT_LOCALE="zh_CN",
        AFTERSALES_TIMEZONE="Asia/Shanghai",
    )
    subprocess.run([str(BIN), "migrate"], env=env, check=True, capture_output=True, timeout=60)
    port = _free_port()
    log = workdir / "server.log"
    # Start the server while the users and the token are being created: start-up is the slow part.
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        users = subprocess.Popen([sys.executable, "-c", SEED_USERS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        made = subprocess.run(
            [str(BIN), "token", "create", "--role", "integration", "--name", "e2e"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        seeded_users = users.communicate(timeout=60)[0]
        assert made.returncode == 0, made.stdout + made.stderr
        assert users.returncode == 0, seeded_users.decode()
        token = made.stdout.strip().splitlines()[-1]
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, process, log)
        srv = Server(base_url=base_url, token=token, process=process)
        _seed(srv)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture()
async def context(browser, server) -> AsyncIterator[Any]:
    """A fresh browser profile per test: no cookies carried from one journey to the next."""
    ctx = await browser.new_context(base_url=server.base_url, locale="zh-CN")
    ctx.set_default_timeout(20_000)  # generous: the machine may be busy running other suites
    try:
        yield ctx
    finally:
        await ctx.close()
