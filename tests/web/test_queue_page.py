"""The escalation queue page in a real browser against the real stack: gunicorn (gevent) serving
the page, the API and the live stream, Postgres, Redis and a Celery worker."""
import re

import httpx
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD, artifacts_dir
from tests.factories import app_without_broker, escalate
from tests.servers.chat import TEAMS, ChatServer
from tests.servers.psa import PsaServer

OUTSIDE_URL = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.I)


def rows(page):
    return page.locator("#queue-list > li")


def row(page, handoff):
    return page.locator(f"#row-{handoff['id']}")


def save_screenshot(page, name: str) -> None:
    """A test artifact; animations are run to their end so the picture is the settled page."""
    page.screenshot(path=str(artifacts_dir() / name), full_page=True, animations="disabled")


def hide_tab(page, hidden: bool) -> None:
    """What switching to another tab does to the page: document.hidden and visibilitychange."""
    page.evaluate("""hidden => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def test_root_redirects_to_the_page_which_needs_no_token_and_loads_nothing_from_outside(
        web_server):
    with httpx.Client(base_url=web_server.base_url, timeout=10.0) as http:
        root = http.get("/")
        assert root.status_code == 302 and root.headers["location"].endswith("/queue")
        page = http.get("/queue")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert sorted(a.split("?")[0] for a in assets) == ["/static/queue.css",
                                                           "/static/queue.js"]
        bodies = {asset: http.get(asset) for asset in assets}
    assert all(answer.status_code == 200 for answer in bodies.values())
    script = next(a.text for name, a in bodies.items() if ".js" in name)
    style = next(a.text for name, a in bodies.items() if ".css" in name)
    for text in (page.text, script, style):
        assert not OUTSIDE_URL.search(text), OUTSIDE_URL.search(text)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, f"queue.js renders markup through {sink}"


def test_a_senior_logs_in_sees_the_open_queue_newest_first_and_new_escalations_arrive_live(
        open_screen, http, tenant):
    older = escalate(http, tenant, title="Printer offline on floor 3",
                     client_name="Fabrikam", note="Driver reinstall did not help")
    newer = escalate(http, tenant, title="Exchange mail stuck", client_name="Contoso",
                     urgency="high")
    taken = escalate(http, tenant, title="Already taken", client_name="Litware")
    assert http.post(f"/api/v1/handoffs/{taken['id']}/claim",
                     headers=tenant.headers("owner")).status_code == 200
    escalator = tenant.users["engineer"]["name"]

    screen = open_screen()
    page = screen.page
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screen.login(tenant.users["admin"]["email"], "not-the-password")
    expect(page.locator("#login-error")).to_have_text("Invalid email or password")
    save_screenshot(page, "web-login.png")

    screen.login(tenant.users["admin"]["email"])
    expect(page.get_by_role("heading", name="Open escalations")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.locator("#account-name")).to_have_text(tenant.users["admin"]["name"])
    expect(rows(page)).to_have_count(2)
    first, second = rows(page).nth(0), rows(page).nth(1)
    expect(first).to_have_id(f"row-{newer['id']}")
    expect(first.locator(".row-client")).to_have_text("Contoso")
    expect(first.locator(".row-title")).to_have_text("Exchange mail stuck")
    expect(first.locator(".row-escalator")).to_have_text(escalator)
    expect(first.locator(".row-urgency")).to_have_text("High urgency")
    expect(first).to_have_class(re.compile(r"\brow-high\b"))
    expect(first.locator(".row-age")).to_have_text("just now")
    expect(first.locator(".row-ticket")).to_have_text("Ticket T-100")
    expect(second).to_have_id(f"row-{older['id']}")
    expect(second.locator(".row-urgency")).to_be_hidden()
    expect(second).not_to_have_class(re.compile(r"\brow-high\b"))
    expect(first.get_by_role("button", name="Claim")).to_be_visible()
    # the worker's assessment lands while the page is open, and the badge follows it
    expect(first.locator(".row-assessment")).to_have_text("Assessment ready")
    expect(first.locator(".row-psa")).to_have_text("No PSA note")

    page.evaluate("window.__notReloaded = true")
    arrived = escalate(http, tenant, title="VPN tunnel down", client_name="Northwind",
                       note="Site-to-site VPN drops every 10 minutes")
    expect(rows(page)).to_have_count(3)
    expect(rows(page).nth(0)).to_have_id(f"row-{arrived['id']}")
    expect(row(page, arrived).locator(".row-title")).to_have_text("VPN tunnel down")
    expect(page.locator("#announcer")).to_contain_text(
        f"New escalation: Northwind, VPN tunnel down, from {escalator}.")
    assert page.evaluate("window.__notReloaded") is True
    expect(row(page, arrived).locator(".row-assessment")).to_have_text("Assessment ready")

    # while the tab is hidden the title counts what arrived; it stops once it is seen
    hide_tab(page, True)
    hidden_arrival = escalate(http, tenant, title="Backup job failed",
                              client_name="Tailspin", urgency="high")
    expect(row(page, hidden_arrival)).to_be_attached()
    page.wait_for_function("document.title === '(1) New escalation'")
    hide_tab(page, False)
    expect(page).to_have_title("Escalation queue")
    page.wait_for_timeout(1200)  # a flash left running would have changed it by now
    expect(page).to_have_title("Escalation queue")

    expect(rows(page).locator(".row-assessment", has_text="Assessment ready")).to_have_count(4)
    save_screenshot(page, "web-queue.png")

    token = page.evaluate("JSON.parse(sessionStorage.getItem('escalations.session')).token")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("You have signed out.")
    assert page.evaluate("sessionStorage.getItem('escalations.session')") is None
    assert http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_of_two_seniors_the_claimer_gets_the_context_screen_and_the_other_sees_it_claimed(
        open_screen, http, tenant):
    with PsaServer(tickets=("1001",)) as psa:
        configured = http.put("/api/v1/account/psa", headers=tenant.headers("owner"),
                              json={"provider": "connectwise", **psa.settings("connectwise")})
        assert configured.status_code == 200, configured.text
        handoff = escalate(
            http, tenant, title="Exchange mail stuck", client_name="Contoso",
            problem="Outbound mail has been queued since 9am", psa_ticket_id="1001",
            urgency="high", note="Transport queue keeps growing; I lack Exchange admin rights",
            messages=(("engineer", "Outbound mail queued since 9am; restarted transport"),
                      ("assistant", "Check the send connector's smart host and TLS cert"),
                      ("engineer", "Cert expired yesterday, cannot renew without admin")))
        winner = open_screen()
        other = open_screen(reduced_motion="reduce")
        winner.login(tenant.users["owner"]["email"])
        other.login(tenant.users["admin"]["email"])
        for screen in (winner, other):
            expect(screen.page.locator("#connection")).to_have_text("Live")
            expect(row(screen.page, handoff)).to_be_visible()

        row(winner.page, handoff).get_by_role("button", name="Claim").click()

        # the other senior sees it claimed, live (the row lingers a few seconds, then goes)
        lost = row(other.page, handoff)
        expect(lost.locator(".row-status")).to_have_text(
            f"Claimed by {tenant.users['owner']['name']}")
        expect(lost.get_by_role("button", name="Claim")).to_have_count(0)
        expect(other.page.locator("#announcer")).to_contain_text(
            f"Claimed by {tenant.users['owner']['name']}")

        page = winner.page
        expect(page).to_have_url(re.compile(f"#handoff-{handoff['id']}$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Exchange mail stuck")
        expect(page.locator("#handoff-client")).to_have_text("Contoso")
        expect(page.locator("#handoff-notice")).to_contain_text("You claimed this escalation")
        expect(page.locator("#handoff-status")).to_have_text("Claimed by you")
        expect(page.locator("#handoff-urgency")).to_have_text("High urgency")
        expect(page.locator("#handoff-byline")).to_contain_text(
            f"Escalated by {tenant.users['engineer']['name']}")
        expect(page.locator("#handoff-claim")).to_be_hidden()
        expect(page.locator("#handoff-note")).to_have_text(
            "Transport queue keeps growing; I lack Exchange admin rights")
        expect(page.locator("#snapshot-problem")).to_have_text(
            "Outbound mail has been queued since 9am")
        messages = page.locator("#snapshot-messages > li")
        expect(messages).to_have_count(3)
        expect(messages.locator(".message-role")).to_have_text(
            ["Engineer", "Assistant", "Engineer"])
        expect(messages.nth(1)).to_have_class(re.compile("message-assistant"))
        expect(messages.nth(1).locator(".message-body")).to_have_text(
            "Check the send connector's smart host and TLS cert")
        # the assessment and the PSA note land while the screen is open
        expect(page.locator("#assessment-badge")).to_have_text("Assessment ready")
        expect(page.locator("#assessment-summary")).not_to_be_empty()
        expect(page.locator("#assessment-confidence")).to_have_text(re.compile(r"^\d{1,3}%$"))
        expect(page.locator("#assessment-causes > li").first).not_to_be_empty()
        expect(page.locator("#assessment-steps > li").first).not_to_be_empty()
        expect(page.locator("#psa-badge")).to_have_text("PSA note sent")
        expect(page.locator("#psa-ticket")).to_have_text("1001")
        expect(page.locator("#psa-note")).not_to_have_text("—")
        expect(page.locator("#psa-attempts")).to_have_text(re.compile(r"^[1-9]"))
        deliveries = page.locator("#deliveries-rows > tr")
        expect(deliveries).to_have_count(3)  # PSA, admin's email, owner's email
        expect(page.locator("#deliveries-rows > tr[data-channel=email]")).to_have_count(2)
        psa_row = page.locator("#deliveries-rows > tr[data-channel=psa]")
        expect(psa_row.locator("td").nth(1)).to_have_text("Ticket 1001")
        expect(psa_row.locator(".badge")).to_have_text("Sent")
        assert len(psa.notes("1001")) == 1
        save_screenshot(page, "web-handoff-context.png")

    # ... then the claimed row left the other senior's open queue
    expect(lost).to_have_count(0)
    expect(other.page.locator("#queue-empty")).to_be_visible()

    # back on the queue; a new arrival slides in, except for whoever asked for less motion
    page.get_by_role("link", name="Back to queue").click()
    expect(page.get_by_role("heading", name="Open escalations")).to_be_visible()
    fresh = escalate(http, tenant, title="DNS not resolving", client_name="Contoso")
    expect(row(page, fresh)).to_have_class(re.compile(r"\brow-enter\b"))
    expect(row(other.page, fresh)).to_be_visible()
    expect(row(other.page, fresh)).not_to_have_class(re.compile(r"\brow-enter\b"))
    assert other.page.eval_on_selector(
        f"#row-{fresh['id']} .row-card", "card => getComputedStyle(card).animationName") == "none"


def test_a_late_claim_says_who_claimed_it_first(open_screen, http, tenant):
    handoff = escalate(http, tenant)
    opened = escalate(http, tenant, title="Opened then taken")
    # this page never gets its live stream, so it still offers the claim
    late = open_screen(before_load=lambda screen: screen.page.route(
        "**/escalations/stream", lambda route: route.abort()))
    late.login(tenant.users["admin"]["email"])
    expect(late.page.locator("#connection")).to_have_text("Reconnecting…")
    expect(row(late.page, handoff)).to_be_visible()
    assert http.post(f"/api/v1/handoffs/{handoff['id']}/claim",
                     headers=tenant.headers("owner")).status_code == 200

    row(late.page, handoff).get_by_role("button", name="Claim").click()
    expect(row(late.page, handoff).locator(".row-status")).to_have_text(
        f"Already claimed by {tenant.users['owner']['name']}")
    expect(row(late.page, handoff).get_by_role("button", name="Claim")).to_have_count(0)
    expect(late.page).not_to_have_url(re.compile("#handoff-"))
    expect(row(late.page, handoff)).to_have_count(0)

    # the same on the handoff-context screen
    row(late.page, opened).get_by_role("link", name="Opened then taken").click()
    claim = late.page.locator("#handoff-claim")
    expect(claim).to_be_visible()
    assert http.post(f"/api/v1/handoffs/{opened['id']}/claim",
                     headers=tenant.headers("engineer")).status_code == 200
    claim.click()
    expect(late.page.locator("#handoff-claim-error")).to_have_text(
        f"Already claimed by {tenant.users['engineer']['name']}")
    expect(late.page.locator("#handoff-status")).to_have_text(
        f"Claimed by {tenant.users['engineer']['name']}")
    expect(claim).to_be_hidden()
    expect(late.page.locator("#handoff-claim-error")).to_have_text(
        f"Already claimed by {tenant.users['engineer']['name']}")


def test_a_cut_stream_reconnects_with_last_event_id_and_misses_nothing(
        open_screen, http, client, tenant, web_server):
    claimed_meanwhile = escalate(http, tenant, title="Printer offline")
    screen = open_screen()
    page = screen.page
    screen.login(tenant.users["admin"]["email"])
    expect(page.locator("#connection")).to_have_text("Live")
    expect(row(page, claimed_meanwhile)).to_be_visible()
    assert screen.stream_requests[0].headers.get("last-event-id") is None
    seen_before_cut = len(screen.stream_requests)

    web_server.stop()
    try:
        expect(page.locator("#connection")).to_have_text("Reconnecting…")
        expect(page.locator("#announcer")).to_contain_text("Live updates interrupted")
        save_screenshot(page, "web-queue-reconnecting.png")
        # meanwhile, through another web process (the test app): one arrives, one is taken
        created_meanwhile = escalate(client, tenant, title="Firewall rule lost",
                                     client_name="Northwind")
        assert client.post(f"/api/v1/handoffs/{claimed_meanwhile['id']}/claim",
                           headers=tenant.headers("owner")).status_code == 200
    finally:
        web_server.start()

    expect(page.locator("#connection")).to_have_text("Live", timeout=25_000)
    expect(page.locator("#announcer")).to_contain_text("Live updates restored")
    expect(row(page, created_meanwhile)).to_be_visible()
    expect(row(page, created_meanwhile).locator(".row-title")).to_have_text("Firewall rule lost")
    expect(row(page, claimed_meanwhile).locator(".row-status")).to_have_text(
        f"Claimed by {tenant.users['owner']['name']}")
    expect(row(page, claimed_meanwhile)).to_have_count(0)
    expect(rows(page)).to_have_count(1)
    replayed = [r for r in screen.stream_requests[seen_before_cut:]
                if r.headers.get("last-event-id")]
    assert replayed, "no reconnect carried Last-Event-ID"
    # a replayed event is not applied twice, and the next live one still arrives
    after = escalate(http, tenant, title="Laptop will not boot", client_name="Fabrikam")
    expect(row(page, after)).to_be_visible()
    expect(page.locator(f"#row-{created_meanwhile['id']}")).to_have_count(1)
    expect(rows(page)).to_have_count(2)


def test_a_viewer_sees_the_queue_without_claim_buttons_or_stream_and_it_refreshes(
        open_screen, http, tenant):
    first = escalate(http, tenant, title="Printer offline", client_name="Fabrikam")
    viewer = open_screen(width=390, height=844,
                         before_load=lambda screen: screen.page.clock.install())
    page = viewer.page
    viewer.login(tenant.users["viewer"]["email"])
    expect(row(page, first)).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Updates every 15 s")
    expect(page.get_by_role("button", name="Claim")).to_have_count(0)

    second = escalate(http, tenant, title="Mailbox full", client_name="Contoso",
                      urgency="high")
    page.clock.fast_forward(16_000)
    expect(row(page, second)).to_be_visible()
    expect(rows(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Claim")).to_have_count(0)
    assert viewer.stream_requests == [], "a viewer's page opened the live stream"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    save_screenshot(page, "web-queue-narrow.png")

    page.clock.fast_forward("05:00")
    expect(row(page, first).locator(".row-age")).to_have_text("5 min ago")

    row(page, second).get_by_role("link", name="Mailbox full").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mailbox full")
    expect(page.locator("#handoff-status")).to_have_text("Open")
    expect(page.locator("#handoff-claim")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_an_email_link_opens_the_context_after_login_and_errors_show_the_api_message(
        open_screen, http, tenant):
    handoff = escalate(http, tenant, title="Exchange mail stuck")
    screen = open_screen(f"/queue#handoff-{handoff['id']}")
    page = screen.page
    screen.login(tenant.users["owner"]["email"])
    expect(page.get_by_role("heading", level=1)).to_have_text("Exchange mail stuck")
    expect(page.get_by_role("button", name="Claim")).to_be_visible()

    page.goto(f"/queue#handoff-{handoff['id'] + 100000}")
    expect(page.locator("#handoff-error")).to_have_text("Handoff not found")
    expect(page.locator("#handoff-body")).to_be_hidden()

    # the token dies elsewhere (say, a logout in another tab): the page asks to sign in again
    assert http.post("/api/v1/auth/logout",
                     headers={"Authorization": "Bearer " + page.evaluate(
                         "JSON.parse(sessionStorage.getItem('escalations.session')).token")}
                     ).status_code == 204
    page.goto(f"/queue#handoff-{handoff['id']}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("invalid or expired token")


def test_the_stream_parser_reads_the_sse_wire_format_however_it_is_chunked(open_screen):
    page = open_screen().page
    events = page.evaluate("""() => {
        const wire = ": keepalive\\r\\n\\r\\nevent: ready\\r\\nid: 1-0\\r\\ndata: {}\\r\\n\\r\\n"
            + "event: handoff_created\\nid: 2-0\\ndata: {\\"a\\":\\ndata:  1}\\n: note\\n\\n"
            + "data:x\\rid:3-1\\r\\r" + "event: ignored-without-data\\n\\n" + "data: tail";
        const runs = [];
        for (const size of [1, 2, 3, 7, wire.length]) {
            const seen = [];
            const parser = new window.EscalationQueue.SseParser(e => seen.push(e));
            for (let i = 0; i < wire.length; i += size) parser.push(wire.slice(i, i + size));
            runs.push(seen);
        }
        return runs;
    }""")
    expected = [{"type": "ready", "data": "{}", "id": "1-0"},
                {"type": "handoff_created", "data": '{"a":\n 1}', "id": "2-0"},
                {"type": "message", "data": "x", "id": "3-1"}]
    assert events == [expected] * 5


CONTRAST_FAILURES = """() => {
  const parse = (value) => {
    const match = /rgba?\\(([^)]+)\\)/.exec(value);
    if (!match) return null;
    const parts = match[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1};
  };
  const over = (top, bottom) => ({r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a), b: top.b * top.a + bottom.b * (1 - top.a), a: 1});
  const backdrop = (element) => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const color = parse(getComputedStyle(e).backgroundColor);
      if (color && color.a > 0) { layers.push(color); if (color.a >= 1) break; }
    }
    return layers.reduceRight((below, layer) => over(layer, below), {r: 255, g: 255, b: 255, a: 1});
  };
  const luminance = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const element = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !element.getClientRects().length) continue;
    if (element.closest(".visually-hidden, template")) continue;
    const style = getComputedStyle(element);
    let opacity = 1;
    for (let e = element; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    const back = backdrop(element);
    const fore = parse(style.color);
    const text = over({...fore, a: fore.a * opacity}, back);
    const [hi, lo] = [luminance(text), luminance(back)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      failures.push(`${ratio.toFixed(2)}: "${walker.currentNode.textContent.trim().slice(0, 40)}"`);
    }
  }
  return failures;
}"""

FOCUS_RING = """() => {
  const style = getComputedStyle(document.activeElement);
  return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
}"""


def test_keyboard_alone_signs_in_and_claims_with_a_visible_focus_and_readable_contrast(
        open_screen, http, tenant):
    escalate(http, tenant, title="Printer offline", client_name="Fabrikam")
    handoff = escalate(http, tenant, title="Exchange mail stuck", urgency="high")
    screen = open_screen()
    page = screen.page
    expect(page.locator("header")).to_have_count(1)
    expect(page.locator("main")).to_have_count(1)
    assert page.evaluate(CONTRAST_FAILURES) == []

    def tab_to(selector: str, limit: int = 25) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement.matches({selector!r})"):
                assert page.evaluate(FOCUS_RING), f"no visible focus on {selector}"
                return
        raise AssertionError(f"{selector} not reachable with Tab")

    tab_to("#login-email")
    page.keyboard.type(tenant.users["engineer"]["email"])
    tab_to("#login-password")
    page.keyboard.type(TEST_PASSWORD)
    page.keyboard.press("Enter")
    expect(row(page, handoff)).to_be_visible()
    expect(rows(page).locator(".row-assessment", has_text="Assessment ready")).to_have_count(2)
    assert page.evaluate(CONTRAST_FAILURES) == []

    tab_to(f"#row-{handoff['id']} .row-link")
    tab_to(f"#row-{handoff['id']} .row-claim")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#handoff-{handoff['id']}$"))
    expect(page.locator("#handoff-status")).to_have_text("Claimed by you")
    expect(page.locator("#assessment-badge")).to_have_text("Assessment ready")
    expect(page.locator("#deliveries-rows > tr")).not_to_have_count(0)
    assert page.evaluate(CONTRAST_FAILURES) == []
    tab_to("a.back-link")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Open escalations")).to_be_visible()


def test_load_more_pages_through_a_long_queue_newest_first(open_screen, http, tenant):
    made = [escalate(http, tenant, title=f"Escalation number {n}", psa_ticket_id=None)
            for n in range(27)]
    screen = open_screen()
    page = screen.page
    screen.login(tenant.users["admin"]["email"])
    expect(rows(page)).to_have_count(25)
    expect(page.get_by_role("button", name="Load more")).to_be_visible()
    page.get_by_role("button", name="Load more").click()
    expect(rows(page)).to_have_count(27)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    shown = rows(page).evaluate_all("items => items.map(item => Number(item.dataset.id))")
    assert shown == [h["id"] for h in reversed(made)]


def test_an_escalation_whose_live_event_was_lost_still_shows_within_a_minute_while_live(
        open_screen, http, app_env, tenant):
    screen = open_screen(before_load=lambda screen: screen.page.clock.install())
    page = screen.page
    screen.login(tenant.users["admin"]["email"])
    expect(page.locator("#connection")).to_have_text("Live")
    # written by a web process that could not reach Redis: no live event, no replay entry
    unannounced = app_without_broker(app_env)
    lost = escalate(unannounced.test_client(), tenant, title="Backup job failing")
    announced = escalate(http, tenant, title="Printer offline")
    expect(row(page, announced)).to_be_visible()
    expect(row(page, lost)).to_have_count(0)
    page.clock.fast_forward(46_000)     # the page's periodic re-read, on the same stream
    expect(row(page, lost)).to_be_visible()
    expect(row(page, lost).locator(".row-title")).to_have_text("Backup job failing")
    expect(page.locator("#connection")).to_have_text("Live")
    expect(rows(page)).to_have_count(2)
    assert len(screen.stream_requests) == 1, "the stream was reopened: not the re-read"


def test_a_missing_psa_ticket_reads_as_failed_not_retrying(open_screen, http, tenant):
    """The PSA answered 404 for the ticket: the push is dead with its reason, and the page
    says the note failed rather than that it is being retried."""
    with PsaServer(tickets=("1001",)) as psa:
        configured = http.put("/api/v1/account/psa", headers=tenant.headers("owner"),
                              json={"provider": "connectwise", **psa.settings("connectwise")})
        assert configured.status_code == 200, configured.text
        handoff = escalate(http, tenant, psa_ticket_id="4040")
        screen = open_screen(f"/queue#handoff-{handoff['id']}")
        screen.login(tenant.users["owner"]["email"])
        page = screen.page
        expect(page.locator("#psa-badge")).to_have_text("PSA note failed")
        expect(page.locator("#psa-status")).to_have_text("Failed, gave up")
        expect(page.locator("#psa-error")).to_contain_text("4040")
        psa_row = page.locator("#deliveries-rows > tr[data-channel=psa]")
        expect(psa_row.locator(".badge")).to_have_text("Failed")
    body = http.get(f"/api/v1/handoffs/{handoff['id']}", headers=tenant.headers()).json()
    assert body["psa"]["status"] == "dead" and "not found" in body["psa"]["last_error"]


def test_an_admin_sets_the_chat_channel_and_reminders_and_the_context_shows_the_chat_row(
        open_screen, http, tenant):
    with ChatServer() as chat:
        screen = open_screen("/queue")
        screen.login(tenant.users["admin"]["email"])
        page = screen.page
        page.get_by_role("link", name="Settings").click()
        expect(page.get_by_role("heading", name="Team settings")).to_be_visible()
        expect(page.locator("#chat-url-state")).to_have_text("No webhook URL saved.")
        expect(page.locator("#policy-minutes")).to_have_value("15")

        page.get_by_label("Service").select_option("teams")
        page.get_by_role("button", name="Save chat channel").click()
        expect(page.locator("#chat-error")).to_have_text("Enter the channel's webhook URL.")
        page.get_by_label("Webhook URL").fill("ftp://files.example.com/hook")
        page.get_by_role("button", name="Save chat channel").click()
        expect(page.locator("#chat-error")).to_contain_text("https")
        page.get_by_label("Webhook URL").fill(chat.teams_url)
        page.get_by_role("button", name="Save chat channel").click()
        expect(page.locator("#chat-saved")).to_have_text("Saved.")
        expect(page.locator("#chat-url-state")).to_have_text("A webhook URL is saved.")
        expect(page.get_by_label("Webhook URL")).to_have_value("")   # never shown again

        page.get_by_label("Remind after (minutes)").fill("5000")
        page.get_by_role("button", name="Save reminders").click()
        expect(page.locator("#policy-error")).to_contain_text("0 to 1440")
        page.get_by_label("Remind after (minutes)").fill("1")
        page.get_by_role("button", name="Save reminders").click()
        expect(page.locator("#policy-saved")).to_have_text("Saved: a reminder after 1 min.")
        save_screenshot(page, "web-settings.png")

        policy = http.get("/api/v1/account/escalation-policy", headers=tenant.headers()).json()
        assert policy["remind_after_minutes"] == 1
        assert http.get("/api/v1/account/chat", headers=tenant.headers()).json()["provider"] == \
            "teams"
        handoff = escalate(http, tenant, title="Chat row on the context screen")
        page.goto(f"/queue#handoff-{handoff['id']}")
        chat_row = page.locator("#deliveries-rows > tr[data-channel=chat]")
        expect(chat_row).to_contain_text("Team chat")
        expect(chat_row).to_contain_text("The team's channel")
        expect(chat_row.locator(".badge")).to_have_text("Sent")
        assert len(chat.messages_to(TEAMS)) == 1


def test_engineers_get_no_settings_link_and_no_settings_screen(open_screen, tenant):
    screen = open_screen("/queue#settings")
    screen.login(tenant.users["engineer"]["email"])
    page = screen.page
    expect(page.get_by_role("heading", name="Open escalations")).to_be_visible()
    expect(page.locator("#settings-link")).to_be_hidden()
    expect(page.locator("#settings-view")).to_be_hidden()
