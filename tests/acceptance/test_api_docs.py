"""/docs in a real headless Chromium with every request off this server refused: Swagger UI
comes from the package, and the create operation shows its request body."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.acceptance.test_account_page import browser  # noqa: F401 - the fixture
from tests.conftest import Server


def test_root_sends_a_person_to_the_docs(api_server: Server) -> None:
    answer = httpx.get(f"{api_server.url}/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/docs"


def test_docs_render_offline_with_the_create_body(browser, api_server: Server) -> None:  # noqa: F811
    origin = urlsplit(api_server.url).netloc
    outside: list[str] = []
    errors: list[str] = []
    context = browser.new_context()

    def only_this_server(route) -> None:  # noqa: ANN001
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{api_server.url}/")  # the root redirects here
        assert page.url.endswith("/docs")
        page.wait_for_selector(".swagger-ui .opblock")
        create = page.locator("#operations-default-create_generation_v1_images_generations_post")
        if not create.count():
            create = page.locator(".opblock-post", has_text="/v1/images/generations").first
        create.locator(".opblock-summary").first.click()
        body = create.locator(".opblock-section-request-body")
        body.wait_for()
        text = body.inner_text()
        assert "a red fox in snow" in text and "krea-2-turbo" in text  # the example
        assert page.locator(".btn.authorize").count() == 1  # the bearer scheme
    finally:
        context.close()
    assert outside == [], f"/docs reached outside this server: {outside}"
    assert errors == []
