"""The supervisors' site in a real browser (Debian chromium via Playwright) on a real server."""

import asyncio
import csv
import io
import json
import re

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.admin_seed import PASSWORD, SEARCH_WORD, Seeded, add_user, seed
from tests.support import ROOT, caller, have, speech_8k

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.skipif(not have("chromium"), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
async def site(server) -> Seeded:
    add_user(server, "boss", "admin")
    add_user(server, "sue", "supervisor")
    return await seed(server)


@pytest.fixture(scope="module")
async def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                        accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    yield page
    await context.close()


async def sign_in(page: Page, server, username: str, password: str = PASSWORD) -> None:
    await page.context.clear_cookies()
    await page.goto(f"{server.url}/admin/")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def until(locator, predicate: str, timeout_s: float = 15.0) -> None:
    """Poll `predicate(element)`: the site's CSP (rightly) forbids wait_for_function's eval."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await locator.evaluate(predicate):
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {predicate}"
        await asyncio.sleep(0.1)


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


async def test_review_a_call_end_to_end(server, site, page):
    await sign_in(page, server, "sue")
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await expect(page.locator("svg.chart")).to_have_count(5)
    await shot(page, "dashboard")

    # Find the call by a word spoken in it.
    await page.get_by_role("link", name="Calls", exact=True).click()
    await page.get_by_label("Words said").fill(SEARCH_WORD)
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#count")).to_have_text("1 call")
    await expect(page.locator("table.calls mark")).to_have_text(SEARCH_WORD)
    await shot(page, "calls-search")
    await page.locator("table.calls tbody a").first.click()
    await expect(page).to_have_url(re.compile(rf"/admin/calls/{site.call_id}$"))

    # The conversation: labels, interruption (heard vs planned), latency, flow, slots.
    turns = page.locator("ol.turns > li.turn")
    await expect(turns).to_have_count(6)
    await expect(turns.nth(4).locator(".who")).to_have_text("Speaker 2")
    cut = turns.nth(2)
    await expect(cut.locator(".badge.warn")).to_have_text("interrupted")
    await expect(cut.locator(".unheard")).to_have_text("the booking under? Any dietary needs?")
    await expect(cut.locator(".latency")).to_have_text("voice-to-voice 640 ms")
    await expect(page.locator(".flow-path li")).to_have_text(
        ["greeting", "booking", "confirm", "goodbye"])
    await expect(page.locator(".slots")).to_contain_text("Friday")

    # Play the recording, then jump to a line.
    audio = page.locator("#recording")
    await until(audio, "a => a.readyState >= 1")
    await audio.evaluate("a => a.play()")
    await until(audio, "a => a.currentTime > 0.2")
    target_s = site.turn_starts_ms[3] / 1000
    await turns.nth(3).locator("button.seek").click()
    await until(audio, f"a => Math.abs(a.currentTime - {target_s}) < 1.0 && !a.paused")
    await expect(turns.nth(3)).to_have_attribute("aria-current", "true")

    # Annotate the interrupted turn.
    await cut.locator("summary", has_text="Annotate").click()
    await cut.get_by_label("Tag").select_option("should have transferred")
    await cut.get_by_label("Note").fill("Caller asked twice; hand over to staff.")
    await cut.get_by_role("button", name="Save").click()
    cut = page.locator(f"#turn-{site.turn_ids[2]}")
    await expect(cut.locator(".annotation")).to_contain_text("hand over to staff")
    await shot(page, "call")

    # The annotation shows in the list filter, and exports carry it.
    await page.goto(f"{server.url}/admin/calls")
    await page.get_by_label("Tagged").select_option("should have transferred")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#count")).to_have_text("1 call")
    await expect(page.locator("table.calls .badge.tag")).to_have_text("should have transferred")
    await shot(page, "calls-tagged")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="CSV").click()
    rows = list(csv.DictReader(io.StringIO(
        (await (await download_info.value).path()).read_text())))
    assert [(r["call_id"], r["turn_seq"], r["tag"]) for r in rows] == [
        (str(site.call_id), "2", "should have transferred")]
    assert rows[0]["note"] == "Caller asked twice; hand over to staff."
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="JSON").click()
    exported = json.loads((await (await download_info.value).path()).read_text())["calls"]
    assert [c["id"] for c in exported] == [site.call_id]
    assert exported[0]["turns"][2]["annotations"][0]["author"] == "sue"

    # What the supervisor did is in the audit log, which only admins read.
    await page.goto(f"{server.url}/admin/users")
    await expect(page.get_by_role("heading", name="This page is for administrators."))\
        .to_be_visible()
    async with httpx.AsyncClient(base_url=server.url) as client:
        cookie = await signed_in_cookie(client, "boss")
        audit = (await client.get("/admin/audit", params={"q": "sue"},
                                  headers={"cookie": cookie})).text
    for action in ("view", "listen", "change", "export", "denied"):
        assert f"<td>{action}</td>" in audit, action


async def test_caller_page_corrects_and_deletes_memories(server, site, page):
    await sign_in(page, server, "sue")
    await page.goto(f"{server.url}/admin/callers/{site.caller_id}")
    fact = page.locator(f"#memory-{site.memory_ids[1]}")
    await fact.get_by_label("Memory").fill("Allergic to zucchini and peanuts")
    await fact.get_by_role("button", name="Save correction").click()
    await expect(page.locator(f"#memory-{site.memory_ids[1]} textarea")).to_have_value(
        "Allergic to zucchini and peanuts")
    await shot(page, "caller")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.locator(f"#memory-{site.memory_ids[0]}").get_by_role("button",
                                                                      name="Delete").click()
    await expect(page.locator(f"#memory-{site.memory_ids[0]}")).to_have_count(0)
    await expect(page.locator(".memories > li")).to_have_count(1)
    await expect(page.locator("table a")).to_have_count(1)  # the caller's one call


async def test_wrong_password_fails(server, site, page):
    await sign_in(page, server, "sue", "not the password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await expect(page).to_have_url(re.compile(r"/admin/login$"))
    await page.goto(f"{server.url}/admin/calls")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await shot(page, "login")


async def test_supervisor_cannot_reach_admin_pages(server, site, page):
    await sign_in(page, server, "sue")
    await expect(page.get_by_role("link", name="Users")).to_have_count(0)
    for path in ("/admin/users", "/admin/audit"):
        response = await page.goto(server.url + path)
        assert response.status == 403, path
    async with httpx.AsyncClient(base_url=server.url) as client:
        cookie = await signed_in_cookie(client, "sue")
        page_html = (await client.get("/admin/calls", headers={"cookie": cookie})).text
        token = csrf_of(page_html)
        refused = await client.post("/admin/users", headers={"cookie": cookie}, data={
            "csrf_token": token, "username": "mallory", "password": "x" * 12, "role": "admin"})
        assert refused.status_code == 403
    await sign_in(page, server, "boss")
    await page.get_by_role("link", name="Users").click()
    await expect(page.locator("table")).not_to_contain_text("mallory")
    await shot(page, "users")


async def signed_in_cookie(client: httpx.AsyncClient, username: str) -> str:
    """Sign in over plain HTTP; returns the Cookie header a browser would send."""
    form = await client.get("/admin/login")
    signin = form.cookies["cw_admin_signin"]
    response = await client.post(
        "/admin/login",
        data={"csrf_token": csrf_of(form.text), "username": username, "password": PASSWORD},
        headers={"cookie": f"cw_admin_signin={signin}"},
    )
    assert response.status_code == 303, response.text
    session = response.headers["set-cookie"]
    return session.split(";", 1)[0]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def test_session_cookie_and_csrf(server, site):
    async with httpx.AsyncClient(base_url=server.url) as client:
        form = await client.get("/admin/login")
        # The sign-in form itself refuses a post without its token.
        refused = await client.post("/admin/login", data={"username": "sue",
                                                          "password": PASSWORD})
        assert refused.status_code == 403
        signin = form.cookies["cw_admin_signin"]
        response = await client.post(
            "/admin/login", headers={"cookie": f"cw_admin_signin={signin}"},
            data={"csrf_token": csrf_of(form.text), "username": "sue", "password": PASSWORD})
        assert response.status_code == 303
        flags = {p.strip().lower() for p in response.headers["set-cookie"].split(";")}
        # PUBLIC_URL is https in the test server, so the cookie is Secure too.
        assert {"httponly", "samesite=lax", "secure", "path=/admin"} <= flags
        cookie = {"cookie": response.headers["set-cookie"].split(";", 1)[0]}
        call_page = (await client.get(f"/admin/calls/{site.call_id}", headers=cookie)).text
        turn = {"turn_id": str(site.turn_ids[0]), "tag": "good", "note": "forged"}
        url = f"/admin/calls/{site.call_id}/annotations"
        assert (await client.post(url, headers=cookie, data=turn)).status_code == 403
        wrong = {**turn, "csrf_token": "x" * 43}
        assert (await client.post(url, headers=cookie, data=wrong)).status_code == 403
        ok = await client.post(url, headers=cookie, data={**turn, "note": "fine",
                                                          "csrf_token": csrf_of(call_page)})
        assert ok.status_code == 303
        page_now = (await client.get(f"/admin/calls/{site.call_id}", headers=cookie)).text
        assert "forged" not in page_now and "fine" in page_now
        # The recording streams with byte ranges, so the player can seek.
        part = await client.get(f"/admin/calls/{site.call_id}/recording",
                                headers={**cookie, "range": "bytes=100-299"})
        assert part.status_code == 206 and len(part.content) == 200
        assert (await client.get(f"/admin/calls/{site.call_id}/recording")).status_code == 303


async def test_sign_in_is_rate_limited(server, site):
    add_user(server, "rita", "supervisor")
    async with httpx.AsyncClient(base_url=server.url) as client:
        form = await client.get("/admin/login")
        headers = {"cookie": f"cw_admin_signin={form.cookies['cw_admin_signin']}"}
        data = {"csrf_token": csrf_of(form.text), "username": "rita"}
        codes = [(await client.post("/admin/login", headers=headers,
                                    data={**data, "password": f"guess {i}"})).status_code
                 for i in range(5)]
        assert codes == [401] * 5
        locked = await client.post("/admin/login", headers=headers,
                                   data={**data, "password": PASSWORD})
        assert locked.status_code == 429 and "Retry-After" in locked.headers


@pytest.mark.e2e
async def test_live_page_follows_a_running_call(server, site, page):
    await sign_in(page, server, "sue")
    await page.get_by_role("link", name="Live").click()
    await expect(page.locator("#live-status")).to_have_text(re.compile("^Live"))
    twilio = caller(server, from_number="+15550177777")
    call = asyncio.create_task(twilio.call([
        speech_8k("Hello, I would like to make a reservation for tomorrow evening."),
        speech_8k("No thanks, goodbye."),
    ]))
    try:
        live = page.locator(".live-call", has_text="+15550177777")
        await expect(live.locator(".turn.agent").first).to_contain_text(
            "front desk", ignore_case=True, timeout=60_000)
        await expect(live.locator(".turn.caller").first).to_contain_text(
            "tomorrow", timeout=60_000)
        await shot(page, "live")
    finally:
        result = await call
    assert result.errors == []
    await expect(live.locator("h2 .sub")).to_contain_text("ended", timeout=15_000)
