"""The web pages: the API Key Management Page (/account, over /v1/keys, /v1/credits,
/v1/usage) and the playground (/playground, over create, the events stream and /v1/tasks)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"

#: The page talks only to this origin and runs only its own script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
JAVASCRIPT = "text/javascript; charset=utf-8"


@router.get("/account", response_class=HTMLResponse)
def account_page() -> HTMLResponse:
    """Sign in with an API key; see and manage the account's keys and balance."""
    return HTMLResponse((STATIC / "account.html").read_text(), headers=SECURITY_HEADERS)


def _asset(name: str, media_type: str, headers: dict[str, str]) -> Response:
    return Response((STATIC / name).read_bytes(), headers=headers, media_type=media_type)


@router.get("/account/app.js")
def shared_script() -> Response:
    """What both pages' scripts share: the key, the API, the alert, signing in (the CSP
    forbids inline code, so every script is a file)."""
    return _asset("app.js", JAVASCRIPT, SECURITY_HEADERS)


@router.get("/account/account.js")
def account_script() -> Response:
    """The API keys page's own script, run after app.js."""
    return _asset("account.js", JAVASCRIPT, SECURITY_HEADERS)


@router.get("/account/app.css")
def account_stylesheet() -> Response:
    """Both pages' only stylesheet (the CSP forbids inline styles)."""
    return _asset("app.css", "text/css; charset=utf-8", SECURITY_HEADERS)


#: The playground shows result images, which may come from the object store's origin.
PLAYGROUND_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self' data:", "img-src 'self' data: https:"
    ),
}


@router.get("/playground", response_class=HTMLResponse)
def playground_page() -> HTMLResponse:
    """Type a prompt, watch the task live, see the image, browse recent tasks."""
    return HTMLResponse((STATIC / "playground.html").read_text(), headers=PLAYGROUND_HEADERS)


@router.get("/playground/playground.js")
def playground_script() -> Response:
    """The playground's own script, run after app.js."""
    return _asset("playground.js", JAVASCRIPT, PLAYGROUND_HEADERS)
