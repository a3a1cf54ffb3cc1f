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


@router.get("/account", response_class=HTMLResponse)
def account_page() -> HTMLResponse:
    """Sign in with an API key; see and manage the account's keys and balance."""
    return HTMLResponse((STATIC / "account.html").read_text(), headers=SECURITY_HEADERS)


@router.get("/account/app.js")
def account_script() -> Response:
    """The page's only script (the CSP forbids inline code)."""
    return Response(
        (STATIC / "app.js").read_bytes(),
        headers=SECURITY_HEADERS,
        media_type="text/javascript; charset=utf-8",
    )


@router.get("/account/app.css")
def account_stylesheet() -> Response:
    """The page's only stylesheet (the CSP forbids inline styles)."""
    return Response(
        (STATIC / "app.css").read_bytes(),
        headers=SECURITY_HEADERS,
        media_type="text/css; charset=utf-8",
    )


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


@router.get("/playground/app.js")
def playground_script() -> Response:
    """The playground's only script."""
    return Response(
        (STATIC / "playground.js").read_bytes(),
        headers=PLAYGROUND_HEADERS,
        media_type="text/javascript; charset=utf-8",
    )
