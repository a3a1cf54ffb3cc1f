"""The playground (/playground) in a real headless Chromium against a real `kreaserve
serve` that generates (SQLite, embedded worker): sign in, generate, the progress seen
live, the image rendered (checked on a screenshot); a bad key and a moderation refusal
shown as messages. Every test also fails on a console error, a script error or a CSP
violation (see test_account_page.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from kreaserve import contract, images
from tests.acceptance.test_account_page import WATCH_CSP, Ui, browser  # noqa: F401
from tests.conftest import Server, start_server
from tests.integration.test_moderation_api import first

SCREENSHOT = Path("/tmp/kreaserve-playground.png")
#: Records every text the progress line shows (an init script runs before the page's).
WATCH_STATUS = """
window.__statuses = [];
new MutationObserver(() => {
  const line = document.getElementById("run-status");
  const text = line && line.textContent;
  if (text && window.__statuses[window.__statuses.length - 1] !== text) {
    window.__statuses.push(text);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture(scope="module")
def server(weights_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("playground")
    started = start_server(tmp, f"sqlite:///{tmp / 'k.db'}", weights_cache, embedded_worker=True)
    yield started
    started.stop()


@pytest.fixture
def ui(browser: Any, server: Server) -> Iterator[Ui]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1100, "height": 1400})
    context.add_init_script(WATCH_CSP)
    context.add_init_script(WATCH_STATUS)
    page = context.new_page()
    page.set_default_timeout(10_000)
    state = Ui(page=page, url=server.url)
    page.on("console", lambda message: state.console.append(message))
    page.on("pageerror", lambda error: state.page_errors.append(str(error)))
    yield state
    try:
        assert state.errors() == [], "the page logged errors"
    finally:
        context.close()


def sign_in(ui: Ui, key: str) -> None:
    ui.page.goto(f"{ui.url}/playground")
    ui.page.wait_for_selector("body[data-ready='true']")
    ui.page.get_by_label("API key", exact=True).fill(key)
    ui.page.get_by_role("button", name="Sign in").click()
    ui.page.wait_for_selector("body[aria-busy='false']")


def test_the_options_are_the_contracts() -> None:
    page = (Path(contract.__file__).parent / "api/static/playground.html").read_text()

    def options(select: str) -> list[str]:
        block = page.split(f'<select id="{select}"', 1)[1].split("</select>", 1)[0]
        return [part.split("</option>")[0] for part in block.split("<option>")[1:]]

    assert tuple(options("size")) == contract.SIZES
    assert tuple(options("quality")) == contract.QUALITIES
    assert tuple(options("output-format")) == images.FORMATS


def test_generate_shows_the_progress_live_and_the_image(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    sign_in(ui, server.key())
    page = ui.page
    page.get_by_label("Prompt").fill("a lighthouse at dawn, oil painting")
    page.get_by_label("Ratio").select_option("4:3")
    page.get_by_label("Tier").select_option("1K")
    page.get_by_label("Seed (optional)").fill("7")
    page.get_by_label("Format").select_option("webp")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("body[data-ended]", timeout=180_000)
    assert page.evaluate("document.body.dataset.ended") == "completed"
    image = page.locator("#result-image")
    expect(image).to_be_visible()
    page.wait_for_function("document.getElementById('result-image').complete")
    width, height = contract.pixels("4:3", "1K")
    natural = page.evaluate(
        "[document.getElementById('result-image').naturalWidth,"
        " document.getElementById('result-image').naturalHeight]"
    )
    assert natural == [width, height]
    # What the browser drew: the image region of a screenshot is a picture, not blank.
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    shot = Image.open(io.BytesIO(image.screenshot())).convert("RGB")
    spread = ImageStat.Stat(shot).stddev
    assert max(spread) > 10, f"the rendered image is uniform: {spread}"
    statuses = page.evaluate("window.__statuses")
    assert statuses[-1] == "Completed" and any(s.startswith("Processing") for s in statuses), (
        statuses
    )
    task_id = page.evaluate("document.body.dataset.task")
    assert (
        page.evaluate("document.getElementById('result-image').src").split("?")[0].endswith(".webp")
    )
    # The recent tasks show it, newest first.
    first_row = page.locator("#recent-body tr").first
    expect(first_row).to_contain_text(task_id)
    expect(first_row).to_contain_text("completed")
    expect(first_row).to_contain_text("7")


def test_a_bad_key_is_told_and_not_kept(ui: Ui) -> None:
    from playwright.sync_api import expect

    ui.allowed_statuses.add(401)
    sign_in(ui, "ks_not-a-real-key")
    expect(ui.page.get_by_role("alert")).to_contain_text("not valid or has been revoked")
    expect(ui.page.locator("#signed-in")).to_be_hidden()
    assert ui.page.evaluate("window.sessionStorage.getItem('kreaserve.apiKey')") is None


def test_a_refused_prompt_is_shown_as_the_servers_message(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ui.allowed_statuses.add(400)
    sign_in(ui, server.key())
    ui.page.get_by_label("Prompt").fill(first("sexual_minors"))
    with ui.page.expect_response("**/v1/images/generations") as answer:
        ui.page.get_by_role("button", name="Generate").click()
    message = json.loads(answer.value.body())["error"]["message"]
    alert = ui.page.get_by_role("alert")
    expect(alert).to_contain_text(message)
    expect(ui.page.locator("#run")).to_be_hidden()
