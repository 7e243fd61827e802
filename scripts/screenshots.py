"""Regenerate docs/screenshots/: the demo data set served and photographed in both languages.

    .venv/bin/python scripts/screenshots.py      (needs Debian's chromium at /usr/bin/chromium)
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# (file name, path, signed-in user, password)
PAGES = [
    ("queue", "/queue", "agent", "agent-demo-1"),
    ("ticket", "TICKET", "agent", "agent-demo-1"),
    ("policy", "/policy", "lead", "lead-demo-1"),
    ("sla-board", "/sla", "lead", "lead-demo-1"),
    ("feedback", "/feedback", "qc", "qc-demo-1"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def shoot(base: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for locale in ("zh_CN", "en"):
            for name, path, user, password in PAGES:
                context = await browser.new_context(viewport={"width": 1360, "height": 900})
                await context.add_cookies([{"name": "lang", "value": locale, "url": base}])
                page = await context.new_page()
                await page.goto(base + "/login")
                await page.fill("input[name=username]", user)
                await page.fill("input[name=password]", password)
                await page.click("form.stack button[type=submit]")
                await page.wait_for_load_state("networkidle")
                if path == "TICKET":
                    await page.goto(base + "/queue?status=return_received")
                    path = await page.get_attribute("#ticket_list tbody tr a", "href") or "/queue"
                response = await page.goto(base + path)
                if response is None or response.status >= 400:
                    print(f"skipped {name} ({locale}): {response.status if response else 'no answer'}")
                    await context.close()
                    continue
                target = OUT / f"{name}-{locale}.png"
                await page.screenshot(path=str(target), full_page=name in ("ticket",))
                print("wrote", target.relative_to(ROOT))
                await context.close()
        await browser.close()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AFTERSALES_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/shots.db"}
        cli = str(ROOT / ".venv" / "bin" / "aftersales")
        subprocess.run([cli, "demo"], env=env, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        server = subprocess.Popen([cli, "serve", "--port", str(port), "--no-migrate"], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(shoot(base))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
