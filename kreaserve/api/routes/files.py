"""GET /files/<key>: result images behind HMAC-signed, expiring URLs (no API key needed).

A local file is served; an object in S3 is a redirect to a presigned link of a few
minutes, so the API's own expiry decides, whatever the store enforces."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from kreaserve import images
from kreaserve.api.deps import ServicesDep
from kreaserve.api.errors import APIError
from kreaserve.storage import signing

router = APIRouter()

#: Lifetime of the presigned link a redirect hands out.
REDIRECT_SECONDS = 300


@router.get("/files/{key:path}", response_model=None)
def get_file(
    key: str, services: ServicesDep, expires: str = "", signature: str = ""
) -> FileResponse | RedirectResponse:
    """403 when the signature does not match, 410 once expired, 404 when the file is gone."""
    well_formed = (
        expires.isascii()
        and expires.isdigit()
        and len(expires) <= 12
        and signature.isascii()
        and 0 < len(signature) <= 128
    )
    if not well_formed or not signing.verify(services.url_secret, key, int(expires), signature):
        raise APIError(403, "invalid_signature", "This URL's signature is not valid.")
    if int(expires) < time.time():
        raise APIError(
            410, "url_expired", "This result URL has expired; results are kept for 24 hours."
        )
    try:
        path = services.storage.path(key)
        link = (
            None
            if path
            else services.storage.presigned_url(
                key, min(int(expires), int(time.time()) + REDIRECT_SECONDS)
            )
        )
    except ValueError:
        path = link = None
    if link is not None:
        return RedirectResponse(link, status_code=302, headers={"Cache-Control": "no-store"})
    if path is None:
        raise APIError(404, "file_not_found", "This result file no longer exists.")
    remaining = max(0, int(expires) - int(time.time()))
    return FileResponse(
        path,
        media_type=images.media_type_of(key),
        headers={"Cache-Control": f"private, max-age={remaining}"},
    )
