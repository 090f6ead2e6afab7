"""The console's browser suite: Debian's Chromium driven by Playwright for Python, against
`router-one serve --demo`. Every page a test opens is checked for console errors, for
accessibility (axe-core, no serious or critical violation) and screenshotted at a desktop and a
phone width (into $BROWSER_SCREENSHOTS, default target/console-screenshots)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import gateway as gw_mod  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", HERE.parent.parent / "target" / "console-screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def gw(tmp_path_factory):
    logs = Path(os.environ.get("E2E_LOG_DIR", tmp_path_factory.mktemp("logs")))
    logs.mkdir(parents=True, exist_ok=True)
    g = gw_mod.Gateway(tmp_path_factory.mktemp("console") / "data", log_path=logs / "browser-gateway.log")
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Tab:
    """A page of one browser context, watched: console errors and failed page scripts are
    collected, and `check` screenshots the page at both widths and runs axe-core on it."""

    def __init__(self, context: BrowserContext, root: str):
        self.context = context
        self.root = root
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"{self.page.url}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"{self.page.url}: {e}"))

    def open(self, path: str):
        response = self.page.goto(self.root + path if path.startswith("/") else path)
        assert response is not None
        return response

    def check(self, name: str) -> None:
        """Screenshots (desktop and phone) and accessibility of the page as it is now."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        page = self.page
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
            violations = axe(page)
            bad = [v for v in violations if v["impact"] in ("serious", "critical")]
            assert not bad, f"{name} ({label}): accessibility violations:\n" + json.dumps(
                [{"id": v["id"], "impact": v["impact"], "help": v["help"],
                  "nodes": [n["html"][:200] for n in v["nodes"][:5]]} for v in bad], indent=1)
        page.set_viewport_size(DESKTOP)
        # A page whose content is wider than a phone makes the whole page scroll sideways.
        page.set_viewport_size(PHONE)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.set_viewport_size(DESKTOP)
        assert overflow <= 1, f"{name}: the page is {overflow} px wider than a phone's screen"

    def assert_no_errors(self) -> None:
        assert not self.errors, "console errors:\n" + "\n".join(self.errors)


def axe(page: Page) -> list[dict]:
    """axe-core's violations on the page. It is evaluated through the DevTools protocol, which
    the page's Content-Security-Policy does not govern (the policy stays on for the page)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    return page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )


@pytest.fixture
def new_tab(browser: Browser, gw):
    """Opens a tab in a fresh browser context (its own cookies: one visitor)."""
    contexts: list[BrowserContext] = []
    tabs: list[Tab] = []

    def make() -> Tab:
        context = browser.new_context(viewport=DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.root)
        contexts.append(context)
        tab = Tab(context, gw.root)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.assert_no_errors()
    for c in contexts:
        c.close()
