"""GET /docs (Swagger UI served from the package, so it works offline) and GET / (a
pointer to the docs and the account page).

The Swagger UI 5 files (it renders OpenAPI 3.1, which FastAPI writes) come from the
`fastapi-offline` package, which vendors them (Swagger UI is Apache-2.0; the package's
licence files ship with it); they are served under /docs/assets. FastAPI's own /docs
would load them from a CDN that a self-hosted or offline install cannot reach.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

router = APIRouter()
ASSETS = "/docs/assets"
assets = StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static")


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """A person at the root wants the API's documentation."""
    return RedirectResponse("/docs", status_code=307)


@router.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="kreaserve API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": False},
    )
