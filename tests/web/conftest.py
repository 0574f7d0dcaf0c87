"""Browser-test fixtures: a real gunicorn (gevent) web process on loopback, a real Celery worker,
and Debian's Chromium driven by Playwright's sync API."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, artifacts_dir
from tests.servers.web import WebProcess

# Debian's Chromium when it is there (CI installs it); else the one `playwright install`
# fetched for this user, which bin/dev.py does on a machine without root
CHROMIUM = os.environ.get("CHROMIUM_PATH") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Short keepalives: a cut stream is noticed, and replaced, within a second or two.
KEEPALIVE_SECONDS = "2"
EXPECT_TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def web_server(app, app_env, celery_worker_process):
    """The product as a browser meets it: gunicorn with gevent workers serving the page and
    the API, on the run's database (migrated by `app`), with a worker running the pipeline."""
    server = WebProcess({**app_env, "SSE_KEEPALIVE_SECONDS": KEEPALIVE_SECONDS},
                       artifacts_dir() / "gunicorn-web-ui.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, or Playwright's where Debian's is absent. Missing is a failure,
    never a skip: CI installs Debian's with `apt-get install -y chromium`."""
    if CHROMIUM is not None and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests need it "
                    "(apt-get install -y chromium, or set CHROMIUM_PATH)", pytrace=False)
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Screen:
    """One browser context (one person) with its page, and the stream requests it sent."""
    context: object
    page: object
    stream_requests: list

    def login(self, email: str, password: str = TEST_PASSWORD) -> None:
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def open_screen(browser, web_server, request):
    """Open the queue page in a fresh browser context; pages are screenshotted into the
    artifacts when the test fails, and every context is closed at the end."""
    screens: list[Screen] = []

    def open_screen(path: str = "/queue", *, width: int = 1280, height: int = 860,
                    reduced_motion: str = "no-preference", before_load=None) -> Screen:
        context = browser.new_context(base_url=web_server.base_url,
                                      viewport={"width": width, "height": height},
                                      reduced_motion=reduced_motion)
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        page = context.new_page()
        screen = Screen(context, page, [])
        page.on("request", lambda req: screen.stream_requests.append(req)
                if req.url.endswith("/escalations/stream") else None)
        if before_load:
            before_load(screen)
        page.goto(path)
        screens.append(screen)
        return screen

    yield open_screen
    failed = getattr(request.node, "rep_call", None)
    for index, screen in enumerate(screens):
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):  # a crashed page has nothing to show
                screen.page.screenshot(path=str(
                    artifacts_dir() / f"web-failure-{request.node.name}-{index}.png"),
                    full_page=True)
        screen.context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


@pytest.fixture
def http(web_server):
    """An HTTP client on the web process, for what other people do meanwhile."""
    with httpx.Client(base_url=web_server.base_url, timeout=10.0) as client:
        yield client
