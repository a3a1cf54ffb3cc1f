"""The API Key Management Page (/account) in a real headless Chromium, against a real
`kreaserve serve`, on SQLite and PostgreSQL.

Driver: Playwright's Python package, pointed at Debian's /usr/bin/chromium (never
`playwright install`). The page must work under its strict Content-Security-Policy, so
every test also fails on a console error, an uncaught script error or a CSP violation."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STORAGE_KEY = "kreaserve.apiKey"
SCREENSHOT = Path("/tmp/kreaserve-account.png")
#: What Chromium logs for a fetch answered 4xx; allowed only where a test expects one.
HTTP_ERROR = re.compile(
    r"Failed to load resource: the server responded with a status of "
    r"(\d{3})"
)
#: Records CSP violations before any page script runs (an init script is not subject to CSP).
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; each test gets a fresh context."""
    if not CHROMIUM.exists() or not shutil.which(str(CHROMIUM)):
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y "
            "chromium` (scripts/bootstrap does this when run as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: run scripts/bootstrap (dev extras)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Ui:
    """A page in its own browser context, with everything it logged."""

    page: Page
    url: str
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def open(self) -> Any:
        response = self.page.goto(f"{self.url}/account")
        self.page.wait_for_selector("body[data-ready='true']")
        return response

    def stored_key(self) -> str | None:
        return self.page.evaluate(f"window.sessionStorage.getItem({STORAGE_KEY!r})")

    def sign_in(self, key: str) -> None:
        self.open()
        self.page.get_by_label("API key", exact=True).fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.settle()

    def settle(self) -> None:
        """Wait until the page's request in flight (if any) has been answered and shown."""
        self.page.wait_for_selector("body[aria-busy='false']")

    def row(self, name: str) -> Any:
        return self.page.locator("#keys-body tr").filter(
            has=self.page.locator(".key-name > span:first-child", has_text=name)
        )

    def errors(self) -> list[str]:
        found = [f"page error: {error}" for error in self.page_errors]
        for message in self.console:
            if message.type != "error":
                continue
            status = HTTP_ERROR.search(message.text)
            if status and int(status.group(1)) in self.allowed_statuses:
                continue
            found.append(f"console {message.type}: {message.text}")
        if not self.page.is_closed():
            found += [
                f"CSP violation: {v}" for v in self.page.evaluate("window.__cspViolations || []")
            ]
        return found


@pytest.fixture
def ui(browser: Browser, api_server: Server) -> Iterator[Ui]:
    context = browser.new_context(
        viewport={"width": 1100, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.set_default_timeout(10_000)
    state = Ui(page=page, url=api_server.url)
    page.on("console", lambda message: state.console.append(message))
    page.on("pageerror", lambda error: state.page_errors.append(str(error)))

    def on_dialog(dialog: Any) -> None:
        state.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield state
    try:
        assert state.errors() == [], "the page logged errors"
        assert state.dialogs == [], "the page opened a dialog"
    finally:
        context.close()


# --- the API, directly -----------------------------------------------------------------------


def status_with(server: Server, key: str) -> int:
    return httpx.get(
        f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).status_code


def api(server: Server, key: str, method: str, path: str, **kwargs: Any) -> Any:
    with server.client(key) as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def charge_one_task(server: Server, key: str, quality: str) -> None:
    """A task completed and charged (as a worker would), so that usage has a row."""
    from sqlalchemy import update

    from kreaserve import contract, task_queue
    from kreaserve.db.models import Task

    task = api(
        server,
        key,
        "POST",
        "/v1/images/generations",
        json={"model": "krea-2-turbo", "prompt": "a red fox", "quality": quality},
    )
    with server.database().transaction() as session:
        session.execute(
            update(Task)
            .where(Task.id == task["id"])
            .values(status=contract.PROCESSING, worker_id="page-test")
        )
    assert task_queue.complete(server.database(), task["id"], "page-test", [], 60, 1.0)


# --- the tests -------------------------------------------------------------------------------


def test_a_wrong_key_does_not_sign_in(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    ui.allowed_statuses.add(401)
    ui.sign_in("ks_this-is-not-a-real-key")
    alert = ui.page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("That key is not valid or has been revoked")
    expect(ui.page.locator("#signed-out")).to_be_visible()
    expect(ui.page.locator("#signed-in")).to_be_hidden()
    assert ui.stored_key() is None
    assert "ks_" not in ui.page.url

    key = api_server.key()
    ui.page.get_by_label("API key", exact=True).fill(key)
    ui.page.get_by_role("button", name="Sign in").click()
    ui.settle()
    expect(ui.page.locator("#signed-in")).to_be_visible()
    expect(alert).to_be_hidden()
    assert ui.stored_key() == key


def test_the_page_shows_balance_usage_and_keys_as_the_api_does(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    key = api_server.key(credits=100.0)
    api(api_server, key, "POST", "/v1/keys", json={"name": "laptop"})
    api(api_server, key, "POST", "/v1/keys", json={"name": "ci runner"})
    charge_one_task(api_server, key, "1K")
    charge_one_task(api_server, key, "2K")
    api(
        api_server,
        key,
        "POST",
        "/v1/images/generations",
        json={"model": "krea-2-turbo", "prompt": "still pending", "quality": "1K"},
    )
    revoked = api(api_server, key, "POST", "/v1/keys", json={"name": "old"})
    api(api_server, key, "POST", f"/v1/keys/{revoked['id']}/revoke")

    ui.sign_in(key)
    credits = api(api_server, key, "GET", "/v1/credits")
    keys = api(api_server, key, "GET", "/v1/keys")["data"]
    usage = api(api_server, key, "GET", "/v1/usage")
    page = ui.page

    for field_ in ("balance", "reserved", "available"):
        shown = page.locator(f"#balance-{field_}")
        assert float(shown.get_attribute("data-value")) == credits[field_]
        assert shown.inner_text().replace(",", "").startswith(f"{credits[field_]:.2f}")
    assert credits["reserved"] > 0 and credits["balance"] < 100
    expect(page.locator("#balance-group")).to_have_text(credits["user_group"])

    assert usage["total_tasks"] == 2 and len(usage["data"]) == 2
    expect(page.locator("#usage-tasks")).to_have_text(str(usage["total_tasks"]))
    assert (
        float(page.locator("#usage-credits").get_attribute("data-value")) == usage["total_credits"]
    )
    rows = page.locator("#usage-body tr")
    expect(rows).to_have_count(len(usage["data"]))
    for index, item in enumerate(usage["data"]):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert cells[:4] == [item["date"], item["model"], item["quality"], str(item["tasks"])]
        assert float(cells[4].replace(",", "")) == item["credits"]

    expect(page.locator("#keys-body tr")).to_have_count(len(keys))
    assert len(keys) == 4
    for item in keys:
        row = page.locator(f"#keys-body tr[data-key-id='{item['id']}']")
        expect(row.locator(".key-name > span").first).to_have_text(item["name"])
        expect(row.locator(".key-prefix")).to_have_text(item["prefix"] + "…")
        expect(row.locator(".status")).to_have_text("revoked" if item["revoked"] else "active")
        expect(row.locator(".badge")).to_have_count(1 if item["current"] else 0)
        expect(row.get_by_role("button", name="Rotate")).to_have_count(0 if item["revoked"] else 1)
        expect(row.get_by_role("button", name="Revoke")).to_have_count(0 if item["revoked"] else 1)
    current = [item for item in keys if item["current"]]
    assert len(current) == 1 and current[0]["prefix"] == key[:11]
    expect(page.locator("#keys-body .badge")).to_have_text("this key")
    # the key is shown by prefix only, never in full
    assert key not in page.locator("body").inner_text()

    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_created_key_is_shown_once_and_works(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    key = api_server.key()
    ui.sign_in(key)
    page = ui.page
    page.get_by_label("New key name").fill("build server")
    page.get_by_role("button", name="Create key").click()
    ui.settle()

    box = page.locator("#secret-box")
    expect(box).to_be_visible()
    expect(box).to_contain_text("only time")
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("ks_") and secret != key
    assert status_with(api_server, secret) == 200
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#secret-copied")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    expect(ui.row("build server")).to_have_count(1)
    expect(ui.row("build server").locator(".key-prefix")).to_have_text(secret[:11] + "…")
    assert ui.stored_key() == key  # still signed in with the same key

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    ui.settle()
    expect(box).to_be_hidden()
    assert page.locator("#secret-value").input_value() == ""
    assert secret not in page.content()
    expect(ui.row("build server")).to_have_count(1)

    page.get_by_label("New key name").fill("second")
    page.get_by_role("button", name="Create key").click()
    ui.settle()
    expect(box).to_be_visible()
    page.get_by_role("button", name=re.compile("hide")).click()
    expect(box).to_be_hidden()
    assert page.locator("#secret-value").input_value() == ""


def test_rotate_replaces_the_key_and_follows_the_signed_in_one(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    key = api_server.key()
    other = api(api_server, key, "POST", "/v1/keys", json={"name": "worker"})["key"]
    ui.sign_in(key)
    page = ui.page

    ui.row("worker").get_by_role("button", name="Rotate").click()
    ui.settle()
    expect(page.locator("#secret-box")).to_be_visible()
    new_other = page.locator("#secret-value").input_value()
    assert new_other.startswith("ks_") and new_other != other
    assert status_with(api_server, other) == 401
    assert status_with(api_server, new_other) == 200
    worker_rows = ui.row("worker")
    expect(worker_rows).to_have_count(2)
    expect(worker_rows.locator(".status")).to_have_text(["active", "revoked"])
    assert ui.stored_key() == key

    # the signed-in key: the page switches to its new secret by itself
    current = page.locator("#keys-body tr").filter(has=page.locator(".badge"))
    current.get_by_role("button", name="Rotate").click()
    ui.settle()
    new_key = page.locator("#secret-value").input_value()
    assert new_key.startswith("ks_") and new_key not in (key, new_other)
    assert status_with(api_server, key) == 401
    assert status_with(api_server, new_key) == 200
    assert ui.stored_key() == new_key
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(current.locator(".key-prefix")).to_have_text(new_key[:11] + "…")

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    ui.settle()
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#keys-body .badge")).to_have_count(1)
    expect(page.locator("#secret-box")).to_be_hidden()


def test_revoke_asks_first_then_stops_the_key_at_once(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    key = api_server.key()
    other = api(api_server, key, "POST", "/v1/keys", json={"name": "staging"})["key"]
    ui.sign_in(key)
    page = ui.page
    row = ui.row("staging")

    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("Revoke this key?")
    row.get_by_role("button", name="Cancel").click()
    expect(row.get_by_role("button", name="Revoke")).to_be_visible()
    assert status_with(api_server, other) == 200

    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    ui.settle()
    assert status_with(api_server, other) == 401
    expect(row.locator(".status")).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("alert")).to_be_hidden()

    # revoking the key the page is signed in with signs the person out
    current = page.locator("#keys-body tr").filter(has=page.locator(".badge"))
    current.get_by_role("button", name="Revoke").click()
    expect(current).to_contain_text("signed in with")
    current.get_by_role("button", name="Yes, revoke").click()
    ui.settle()
    assert status_with(api_server, key) == 401
    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.locator("#signed-in")).to_be_hidden()
    expect(page.get_by_role("alert")).to_contain_text("signed out")
    assert ui.stored_key() is None


def test_a_key_named_with_html_is_shown_as_text(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    name = "<img src=x onerror=alert(1)>"
    ui.sign_in(api_server.key())
    page = ui.page
    page.get_by_label("New key name").fill(name)
    page.get_by_role("button", name="Create key").click()
    ui.settle()
    expect(page.locator("#secret-name")).to_have_text(f"“{name}”")
    expect(ui.row(name)).to_have_count(1)
    expect(ui.row(name).locator(".key-name > span").first).to_have_text(name)
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    ui.settle()
    expect(ui.row(name)).to_have_count(1)
    assert page.locator("img").count() == 0
    assert ui.dialogs == []


def test_the_page_is_served_under_a_strict_csp_and_works_under_it(
    ui: Ui, api_server: Server
) -> None:
    from playwright.sync_api import expect

    response = ui.open()
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    for path, media_type in (
        ("/account/app.js", "text/javascript"),
        ("/account/account.js", "text/javascript"),
        ("/account/app.css", "text/css"),
    ):
        asset = httpx.get(api_server.url + path, timeout=30)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
        assert asset.headers["content-security-policy"] == csp
        assert asset.headers["x-content-type-options"] == "nosniff"
    html = httpx.get(api_server.url + "/account", timeout=30).text
    assert "<style" not in html and " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/account/app.js" defer>',
        '<script src="/account/account.js" defer>',
    ]
    assert re.findall(r"(?:src|href)=\"(?:https?:)?//", html) == []  # nothing from elsewhere

    # the stylesheet applied and the script ran, under the policy
    page = ui.page
    assert page.evaluate("getComputedStyle(document.querySelector('#signed-in')).display") == "none"
    assert page.evaluate("getComputedStyle(document.querySelector('.card')).borderRadius") == "10px"
    ui.sign_in(api_server.key())
    expect(page.locator("#keys-body tr")).to_have_count(1)
    assert [m for m in ui.console if m.type == "error"] == []
    assert page.evaluate("window.__cspViolations") == []


def test_sign_out_forgets_the_key(ui: Ui, api_server: Server) -> None:
    from playwright.sync_api import expect

    key = api_server.key()
    ui.sign_in(key)
    page = ui.page
    expect(page.locator("#keys-body tr")).to_have_count(1)
    assert ui.stored_key() == key
    assert page.evaluate("window.localStorage.length") == 0
    assert page.context.cookies() == []
    assert key not in page.url

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.locator("#signed-in")).to_be_hidden()
    assert page.evaluate("window.sessionStorage.length") == 0
    expect(page.locator("#keys-body tr")).to_have_count(0)
    expect(page.locator("#balance-balance")).to_have_text("–")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#signed-out")).to_be_visible()
    assert page.evaluate("window.localStorage.length") == 0


def test_blank_fields_are_named_in_the_alert_and_focused(ui: Ui, api_server: Server) -> None:
    """A key or a key name of spaces only is not sent: the alert says what is missing and
    the field gets the focus (app.js `required`)."""
    from playwright.sync_api import expect

    page, alert = ui.page, ui.page.get_by_role("alert")
    ui.open()
    page.get_by_label("API key", exact=True).fill("   ")
    page.get_by_role("button", name="Sign in").click()  # nothing is sent: no busy state
    expect(alert).to_contain_text("Paste an API key to sign in.")
    expect(page.locator("#sign-in-key")).to_be_focused()
    assert ui.stored_key() is None

    ui.sign_in(api_server.key())
    expect(alert).to_be_hidden()
    page.get_by_label("New key name").fill("   ")
    page.get_by_role("button", name="Create key").click()
    expect(alert).to_contain_text("Give the new key a name.")
    expect(page.locator("#create-name")).to_be_focused()
    expect(page.locator("#secret-box")).to_be_hidden()
